"""One short handler per command: who may do what, then rules, the store and Open Library.

Handlers take (session, args) with args already type-checked against protocol.COMMANDS,
and return a result dict or raise ProtocolError. They know nothing of sockets or SQL. The
domain errors that rules and the store raise become wire codes here, in one table.
"""

from __future__ import annotations

import difflib
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import reports
import results
import rules
from db import LoginStart, Store
from engine import ConnectionLostError
from errors import (
    ConflictError,
    DomainError,
    ForbiddenError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    OutcomeUnknownError,
    TryAgainError,
    UnavailableError,
    UsernameTakenError,
    WeakPasswordError,
)
from openlibrary import WORK_KEY, OpenLibrary, UpstreamNotFoundError, UpstreamUnavailableError
from passwords import PasswordHasher, hash_token
from protocol import (
    BAD_REQUEST,
    COMMANDS,
    CONFLICT,
    FORBIDDEN,
    INVALID_CREDENTIALS,
    LIMIT_EXCEEDED,
    NOT_FOUND,
    PROTOCOL_VERSION,
    RATE_LIMITED,
    UNAUTHORIZED,
    UNAVAILABLE,
    UPSTREAM_UNAVAILABLE,
    USERNAME_TAKEN,
    WEAK_PASSWORD,
    ProtocolError,
    Request,
    validate_args,
)
from snapshot import EVERYTHING, CatalogueSnapshot
from stats import DatabaseProbe, ServerStats

log = logging.getLogger(__name__)

SERVER_NAME = "waymark"
SERVER_VERSION = "1.0.0"
TOKEN_BYTES = 32  # 256 bits from secrets
MAX_TITLE_LENGTH = 300  # lending_books.title in schema.sql
MAX_AUTHOR_LENGTH = 200


@dataclass
class Session:
    """One connection's login state; lives on the connection, never in a global."""

    address: str
    user: dict[str, Any] | None = None
    token_hash: str | None = None


# The one place a domain error becomes a wire code.
WIRE_CODES: dict[type[DomainError], str] = {
    InvalidInputError: BAD_REQUEST,
    NotFoundError: NOT_FOUND,
    ConflictError: CONFLICT,
    ForbiddenError: FORBIDDEN,
    UnavailableError: UNAVAILABLE,
    LimitExceededError: LIMIT_EXCEEDED,
    WeakPasswordError: WEAK_PASSWORD,
    UsernameTakenError: USERNAME_TAKEN,
    # The client may act on it: nothing changed, and details.retry_after_s says when to retry.
    TryAgainError: UNAVAILABLE,
    OutcomeUnknownError: UNAVAILABLE,  # no retry_after_s: check first, then decide
}


def wire_error(error: DomainError) -> ProtocolError:
    """The wire's error for a domain error, with the same sentence and details."""
    return ProtocolError(WIRE_CODES[type(error)], error.message, error.details)


# A database that cannot be reached is no fault of the request: the client may try again.
# MySQL: cannot connect (2002, 2003, 2005), gone away (2006), lost mid-query (2013, 2055).
# SQLite: the file cannot be opened, or the disk failed under it.
MYSQL_UNREACHABLE = frozenset({2002, 2003, 2005, 2006, 2013, 2055})
SQLITE_UNREACHABLE = ("unable to open", "disk i/o")
DATABASE_UNAVAILABLE = (
    "The database is unavailable just now and nothing was changed; please try again shortly."
)


def database_unavailable(error: BaseException) -> ProtocolError | None:
    """`unavailable` (cause database) when error, or one it came from, means the database
    cannot be reached; None for any other fault, which is `internal`."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        errno = getattr(cause, "errno", None)
        if (
            isinstance(cause, ConnectionLostError)
            or (type(cause).__module__.startswith("mysql.") and errno in MYSQL_UNREACHABLE)
            or (
                isinstance(cause, sqlite3.OperationalError)
                and any(text in str(cause).lower() for text in SQLITE_UNREACHABLE)
            )
        ):
            return ProtocolError(
                UNAVAILABLE, DATABASE_UNAVAILABLE, {"retry_after_s": 1, "cause": "database"}
            )
        cause = cause.__cause__ or cause.__context__
    return None


class Commands:
    """The protocol's commands, dispatched by name."""

    def __init__(
        self,
        store: Store,
        openlibrary: OpenLibrary,
        hasher: PasswordHasher,
        auth: rules.LoginThrottle = rules.HOUSE_THROTTLE,
        clock: Callable[[], float] = time.time,
        snapshot: CatalogueSnapshot | None = None,
        stats: ServerStats | None = None,
    ):
        self.store = store
        self.snapshot = snapshot or CatalogueSnapshot(store)
        self.stats = stats or ServerStats()
        self.database_probe = DatabaseProbe(store.ping if store else lambda: None)
        self.openlibrary = openlibrary
        self.hasher = hasher
        self.auth = auth
        self.clock = clock
        self.handlers: dict[str, Callable[[Session, dict[str, Any]], dict[str, Any]]] = {
            "hello": self.hello,
            "health": self.health,
            "stats": self.server_stats,
            "register": self.register,
            "login": self.login,
            "resume": self.resume,
            "logout": self.logout,
            "whoami": self.whoami,
            "change_password": self.change_password,
            "list_areas": self.list_areas,
            "search_walks": self.search_walks,
            "recommend_books": self.recommend_books,
            "guide_books": self.guide_books,
            "buy": self.buy,
            "orders": self.orders,
            "cancel_backorder": self.cancel_backorder,
            "sales": self.sales,
            "restock": self.restock,
            "backorders": self.backorders,
            "search_books": self.search_books,
            "catalogue": self.catalogue,
            "add_book": self.add_book,
            "borrow": self.borrow,
            "return": self.return_loan,
            "renew": self.renew,
            "history": self.history,
            "overdue": self.overdue,
            "hold": self.hold,
            "holds": self.holds,
            "cancel_hold": self.cancel_hold,
        }

    def handle(self, session: Session, request: Request) -> dict[str, Any]:
        """Authorise, validate and run one request; raises ProtocolError for the client."""
        command = COMMANDS[request.cmd]
        if command.needs_login:
            user = self._require_login(session)
            if command.admin_only and user["role"] != "admin":
                raise ProtocolError(FORBIDDEN, "Only an administrator may do that.")
        args = validate_args(request.cmd, request.args)
        try:
            return self.handlers[request.cmd](session, args)
        except DomainError as error:
            raise wire_error(error) from None
        finally:
            if command.changes_catalogue:
                self.snapshot.drop()

    def _now(self) -> int:
        return int(self.clock())

    def _require_login(self, session: Session) -> dict[str, Any]:
        if session.user is None or session.token_hash is None:
            raise ProtocolError(UNAUTHORIZED, "Please log in first.")
        # Asked of the database each time, so a logout on any connection or server process
        # ends the session everywhere, and a changed role applies at once.
        user = self.store.session_user(session.token_hash, self._now())
        if user is None:
            session.user, session.token_hash = None, None
            raise ProtocolError(
                UNAUTHORIZED, "Your session has expired or ended; please log in again."
            )
        session.user = {"id": user["id"], "username": user["username"], "role": user["role"]}
        return session.user

    @staticmethod
    def _member(session: Session) -> dict[str, Any]:
        """The logged-in user; handle() has already checked the session for this request."""
        assert session.user is not None
        return session.user

    # -- accounts -----------------------------------------------------------------------------

    def hello(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        return {"server": SERVER_NAME, "version": SERVER_VERSION, "protocol": PROTOCOL_VERSION}

    def health(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        database = self.database_probe.healthy()
        return {
            "status": "ok" if database else "degraded",
            "database": database,
            "uptime_s": self.stats.uptime_s(),
            "version": SERVER_VERSION,
        }

    def server_stats(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        return self.stats.snapshot()

    def register(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        username = rules.validate_username(args["username"])
        rules.validate_password(args["password"])
        user = self.store.create_user(username, self.hasher.hash(args["password"]), self._now())
        return {"user": {"id": user["id"], "username": user["username"]}}

    def login(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        # Case folding can lengthen a name ("ß" is "ss"); no real name is near the column's 64.
        key = rules.username_key(args["username"])[:64]
        now = self._now()
        attempt = self._attempt(session, key, now)
        user = attempt.user
        # Without a user, verify against a dummy hash: same time, same answer.
        if not self.hasher.verify(args["password"], user["password_hash"] if user else None):
            raise ProtocolError(INVALID_CREDENTIALS, "The username or password is not right.")
        assert user is not None
        upgraded = (
            self.hasher.hash(args["password"])
            if self.hasher.needs_rehash(user["password_hash"])
            else None
        )
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if self.store.finish_login(attempt, key, hash_token(token), now, upgraded) is None:
            # The password was changed while this login checked it: it is no longer right.
            raise ProtocolError(INVALID_CREDENTIALS, "The username or password is not right.")
        return self._logged_in(session, user, token)

    def _attempt(self, session: Session, key: str, now: int) -> LoginStart:
        """A recorded try at a member's password (login, change_password); rate_limited if
        this name or address has failed too often lately."""
        attempt = self.store.start_login(key, session.address, now, self.auth.failure_window_s)
        wait = rules.login_retry_after_s(
            self.auth,
            [rules.from_seconds(t) for t in attempt.failures_by_user_and_address],
            [rules.from_seconds(t) for t in attempt.failures_by_user],
            [rules.from_seconds(t) for t in attempt.failures_by_address],
            rules.from_seconds(now),
        )
        if wait:
            self.store.finish_login(attempt, key, None, now)  # a refused try does not prolong it
            raise ProtocolError(
                RATE_LIMITED,
                f"Too many failed logins; try again in {wait} seconds.",
                {"retry_after_s": wait},
            )
        return attempt

    def resume(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        token_hash = hash_token(args["token"])
        now = self._now()
        user = self.store.session_user(token_hash, now, causal=True)
        if user is None:
            raise ProtocolError(UNAUTHORIZED, "That session has expired or ended; please log in.")
        return self._logged_in(session, user, args["token"])

    def _logged_in(self, session: Session, user: dict[str, Any], token: str) -> dict[str, Any]:
        session.user = {"id": user["id"], "username": user["username"], "role": user["role"]}
        session.token_hash = hash_token(token)
        return {"token": token, "user": dict(session.user)}

    def logout(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        if session.token_hash:
            self.store.end_session(session.token_hash)
        session.user, session.token_hash = None, None
        return {}

    def whoami(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        return {"user": dict(self._member(session))}

    def change_password(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        rules.validate_password(args["new_password"])
        key = rules.username_key(user["username"])[:64]
        now = self._now()
        # The old password is tried as a login is, so that the same throttle applies to it.
        attempt = self._attempt(session, key, now)
        known = attempt.user
        if known is None or known["id"] != user["id"]:
            raise ProtocolError(UNAUTHORIZED, "Your account was not found; please log in again.")
        wrong = ProtocolError(INVALID_CREDENTIALS, "The old password is not right.")
        if not self.hasher.verify(args["old_password"], known["password_hash"]):
            raise wrong
        token = secrets.token_urlsafe(TOKEN_BYTES)
        new_hash = self.hasher.hash(args["new_password"])
        if self.store.finish_login(attempt, key, hash_token(token), now, new_hash, True) is None:
            raise wrong  # changed meanwhile (another session's change_password won)
        session.token_hash = hash_token(token)
        return {"token": token}

    # -- shop -----------------------------------------------------------------------------------

    def list_areas(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        catalogue = self.snapshot.current()
        return catalogue.answer("list_areas", lambda: {"areas": list(catalogue.areas)})

    def search_walks(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        query = (*_walk_filters(args), args.get("limit", 50), args.get("offset", 0))
        catalogue = self.snapshot.current()

        def page() -> dict[str, Any]:
            walks, total = catalogue.search_walks(*query)
            return {"walks": walks, "total": total}

        return catalogue.answer(("search_walks", *query), page)

    def recommend_books(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        filters, limit = _walk_filters(args), args.get("limit", 10)
        catalogue = self.snapshot.current()

        def ranking() -> dict[str, Any]:
            # The very search of search_walks, so that both match the same walks.
            walks, _ = catalogue.search_walks(*filters, EVERYTHING, 0)
            by_book: dict[int, list[dict[str, Any]]] = {}
            for walk in walks:
                by_book.setdefault(walk["book"]["number"], []).append(walk)
            ranked = rules.rank_guide_books(
                {number: len(found) for number, found in by_book.items()},
                {number: found[0]["book"]["price_pence"] for number, found in by_book.items()},
            )
            return {"books": [results.recommendation(by_book[n]) for n in ranked[:limit]]}

        return catalogue.answer(("recommend_books", *filters, limit), ranking)

    def guide_books(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        catalogue = self.snapshot.current()
        return catalogue.answer("guide_books", lambda: {"books": list(catalogue.guide_books)})

    def buy(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        books = self.snapshot.current().guide_books
        requested = rules.merge_quantities(
            (_resolve_guide(item["book"], books), item["quantity"]) for item in args["items"]
        )
        return {"order": results.order(self.store.place_order(user["id"], requested, self._now()))}

    def orders(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        found = self.store.orders_for(self._member(session)["id"])
        return {"orders": [results.order(r) for r in found]}

    def cancel_backorder(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        order, refund = self.store.cancel_backorder(user["id"], args["order_id"], args["book"])
        return {"order": results.order(order), "refund_pence": refund}

    def sales(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        since, until = _utc_seconds(args, "since"), _utc_seconds(args, "until")
        if since is not None and until is not None and since > until:
            raise ProtocolError(
                BAD_REQUEST,
                "The argument 'since' must not be later than 'until'.",
                {"argument": "since"},
            )
        return results.sales(*reports.sales(self.store.database, since, until))

    def restock(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        number = _resolve_guide(args["book"], self.snapshot.current().guide_books)
        return self.store.restock(number, args["quantity"])

    def backorders(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        found = reports.outstanding_backorders(self.store.database)
        return {"backorders": [results.backorder(r) for r in found]}

    # -- lending --------------------------------------------------------------------------------

    def search_books(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
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

    def catalogue(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
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

    def add_book(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
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

    def borrow(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        now = self._now()
        return {"loan": results.loan(self.store.lend_copy(user["id"], args["book_id"], now), now)}

    def return_loan(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        now = self._now()
        return {"loan": results.loan(self.store.return_loan(user["id"], args["loan_id"], now), now)}

    def renew(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        now = self._now()
        return {"loan": results.loan(self.store.renew_loan(user["id"], args["loan_id"], now), now)}

    def history(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        now = self._now()
        return {"loans": [results.loan(r, now) for r in self.store.loans_for(user["id"])]}

    def overdue(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        now = self._now()
        found = reports.overdue_loans(self.store.database, now)
        return {"loans": [results.overdue_loan(r, now) for r in found]}

    def hold(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        return {
            "hold": results.hold(self.store.place_hold(user["id"], args["book_id"], self._now()))
        }

    def holds(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        now = self._now()
        return {
            "holds": [results.waiting_hold(r, now) for r in self.store.holds_for(user["id"], now)]
        }

    def cancel_hold(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        self.store.cancel_hold(user["id"], args["hold_id"], self._now())
        return {}


def _walk_filters(
    args: dict[str, Any],
) -> tuple[str | None, float | None, float | None, str | None]:
    """(area key, lowest and highest distance, difficulty) for the walk search, from the
    arguments of search_walks or recommend_books."""
    low, high = args.get("min_distance"), args.get("max_distance")
    if low is not None and high is not None and low > high:
        raise ProtocolError(
            BAD_REQUEST,
            "The argument 'min_distance' must not be more than 'max_distance'.",
            {"argument": "min_distance"},
        )
    difficulty = args.get("difficulty")
    return (
        rules.match_key(args["area"]) if args.get("area") else None,
        low,
        high,
        rules.normalise_difficulty(difficulty) if difficulty is not None else None,
    )


def _utc_seconds(args: dict[str, Any], name: str) -> int | None:
    """An ISO-8601 date or time argument as UTC seconds; one without an offset is taken as UTC,
    one with any offset is converted to UTC."""
    text = args.get(name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return rules.to_seconds(moment.astimezone(UTC))
    except (ValueError, OverflowError):
        raise ProtocolError(
            BAD_REQUEST,
            f"The argument '{name}' must be an ISO-8601 date or time in UTC, such as"
            " 2026-11-01 or 2026-11-01T09:30:00Z.",
            {"argument": name},
        ) from None


def _resolve_guide(reference: int | str, books: Sequence[dict[str, Any]]) -> int:
    """A guide book's number from its number or its title (ignoring case and spaces)."""
    if isinstance(reference, int):
        if any(book["number"] == reference for book in books):
            return reference
        raise ProtocolError(NOT_FOUND, f"No guide book numbered {reference}.", {"book": reference})
    wanted = rules.match_key(reference)
    if wanted.isdigit():
        return _resolve_guide(int(wanted), books)
    by_title = {rules.match_key(book["title"]): book["number"] for book in books}
    if wanted in by_title:
        return by_title[wanted]
    close = difflib.get_close_matches(wanted, list(by_title), n=3, cutoff=0.5)
    titles = {rules.match_key(book["title"]): book["title"] for book in books}
    suggestions = [titles[key] for key in close]
    hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    raise ProtocolError(
        NOT_FOUND,
        f"No guide book is called {reference[:80]!r}.{hint}",
        {"book": reference[:80], "suggestions": suggestions},
    )


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
