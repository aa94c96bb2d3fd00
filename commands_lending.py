"""The lending command handlers: book search, the catalogue, loans, holds."""

from __future__ import annotations

import logging
from typing import Any

import results
import rules
from commands_base import Handlers, Session
from openlibrary import WORK_KEY, UpstreamNotFoundError, UpstreamUnavailableError
from protocol import (
    BAD_REQUEST,
    NOT_FOUND,
    UPSTREAM_UNAVAILABLE,
    ProtocolError,
)

log = logging.getLogger(__name__)

MAX_TITLE_LENGTH = 300  # lending_books.title in schema.sql
MAX_AUTHOR_LENGTH = 200


class LendingCommands(Handlers):
    """Handlers for the commands this module names."""

    def do_search_books(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        query = rules.normalise_spaces(args["query"])
        if not query:
            raise ProtocolError(
                BAD_REQUEST, "The argument 'query' must not be empty.", {"argument": "query"}
            )
        limit = args.get("limit", 10)
        try:
            answer = self.openlibrary.search(query, limit)
        except UpstreamUnavailableError as error:
            log.warning("Open Library search failed: %s", error)
            return self._search_catalogue_instead(query, limit)
        held = self.store.lending_books_by_key([hit.key for hit in answer.hits], self._now())
        result: dict[str, Any] = {
            "results": [_book_hit(hit, held.get(hit.key)) for hit in answer.hits],
            "source": "cache" if answer.from_cache else "openlibrary",
        }
        if answer.stale:
            result["warning"] = (
                "Open Library could not be reached, so these results come from an earlier search."
            )
        return result

    def _search_catalogue_instead(self, query: str, limit: int) -> dict[str, Any]:
        books, _ = self.store.catalogue(rules.match_key(query), limit, 0, self._now())
        if not books:
            raise ProtocolError(
                UPSTREAM_UNAVAILABLE,
                "Open Library cannot be reached just now and the library's own catalogue has"
                " no match; please try again later.",
            )
        return {
            "results": [
                {
                    "key": book["key"],
                    "title": book["title"],
                    "authors": book["authors"],
                    "first_publish_year": book["first_publish_year"],
                    "held": True,
                    "book_id": book["id"],
                    "copies_available": book["copies_available"],
                }
                for book in books
            ],
            "source": "catalogue",
            "warning": "Open Library cannot be reached just now, so these results come from"
            " the library's own catalogue.",
        }

    def do_catalogue(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        query = args.get("query")
        wanted = (
            rules.match_key(query) if query else None,
            args.get("limit", 50),
            args.get("offset", 0),
        )
        catalogue = self.snapshot.current()

        def page() -> dict[str, Any]:
            books, total = catalogue.catalogue(*wanted)
            return {"books": books, "total": total}

        return catalogue.answer(("catalogue", *wanted), page)

    def do_add_book(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        key, copies = args["key"].strip(), args["copies"]
        if not WORK_KEY.fullmatch(key):
            raise ProtocolError(
                BAD_REQUEST,
                "The argument 'key' must be an Open Library work key like /works/OL45804W.",
                {"argument": "key"},
            )
        book = self.store.add_copies(key, copies, self._now())
        if book is None:
            try:
                work = self.openlibrary.work(key)
            except UpstreamNotFoundError:
                raise ProtocolError(
                    NOT_FOUND, f"Open Library has no work {key}.", {"key": key}
                ) from None
            except UpstreamUnavailableError:
                raise ProtocolError(
                    UPSTREAM_UNAVAILABLE,
                    "Open Library cannot be reached just now to look up a new work;"
                    " please try again later.",
                ) from None
            book = self.store.add_lending_book(
                # work.key, not key: Open Library redirects a merged work to the one it kept.
                work.key,
                work.title[:MAX_TITLE_LENGTH],
                [author[:MAX_AUTHOR_LENGTH] for author in work.authors],
                work.first_publish_year,
                copies,
                self._now(),
            )
        return {"book": book}

    def do_borrow(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        now = self._now()
        return {"loan": results.loan(self.store.lend_copy(user["id"], args["book_id"], now), now)}

    def do_return(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        now = self._now()
        return {"loan": results.loan(self.store.return_loan(user["id"], args["loan_id"], now), now)}

    def do_renew(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        now = self._now()
        return {"loan": results.loan(self.store.renew_loan(user["id"], args["loan_id"], now), now)}

    def do_history(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        now = self._now()
        return {"loans": [results.loan(r, now) for r in self.store.loans_for(user["id"])]}

    def do_overdue(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        now = self._now()
        found = self.store.overdue_loans(now)
        return {"loans": [results.overdue_loan(r, now) for r in found]}

    def do_hold(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        return {
            "hold": results.hold(self.store.place_hold(user["id"], args["book_id"], self._now()))
        }

    def do_holds(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        now = self._now()
        return {
            "holds": [results.waiting_hold(r, now) for r in self.store.holds_for(user["id"], now)]
        }

    def do_cancel_hold(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        self.store.cancel_hold(user["id"], args["hold_id"], self._now())
        return {}


def _book_hit(hit: Any, held: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "key": hit.key,
        "title": hit.title,
        "authors": list(hit.authors),
        "first_publish_year": hit.first_publish_year,
        "held": held is not None,
        "book_id": held["id"] if held else None,
        "copies_available": held["copies_available"] if held else None,
    }
