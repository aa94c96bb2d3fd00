"""The shop's command handlers: walks, guide books, orders, stock, sales."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import results
import rules
from commands_base import Handlers, Session
from protocol import (
    BAD_REQUEST,
    NOT_FOUND,
    ProtocolError,
)
from snapshot import EVERYTHING


class ShopCommands(Handlers):
    """Handlers for the commands this module names."""

    def do_list_areas(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        catalogue = self.snapshot.current()
        return catalogue.answer("list_areas", lambda: {"areas": list(catalogue.areas)})

    def do_search_walks(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        query = (*_walk_filters(args), args.get("limit", 50), args.get("offset", 0))
        catalogue = self.snapshot.current()

        def page() -> dict[str, Any]:
            walks, total = catalogue.search_walks(*query)
            return {"walks": walks, "total": total}

        return catalogue.answer(("search_walks", *query), page)

    def do_recommend_books(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
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

    def do_guide_books(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        catalogue = self.snapshot.current()
        return catalogue.answer("guide_books", lambda: {"books": list(catalogue.guide_books)})

    def do_buy(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        books = self.snapshot.current().guide_books
        requested = rules.merge_quantities(
            (_resolve_guide(item["book"], books), item["quantity"]) for item in args["items"]
        )
        return {"order": results.order(self.store.place_order(user["id"], requested, self._now()))}

    def do_orders(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        found = self.store.orders_for(self._member(session)["id"])
        return {"orders": [results.order(r) for r in found]}

    def do_cancel_backorder(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        order, refund = self.store.cancel_backorder(user["id"], args["order_id"], args["book"])
        return {"order": results.order(order), "refund_pence": refund}

    def do_sales(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        since, until = _utc_seconds(args, "since"), _utc_seconds(args, "until")
        if since is not None and until is not None and since > until:
            raise ProtocolError(
                BAD_REQUEST,
                "The argument 'since' must not be later than 'until'.",
                {"argument": "since"},
            )
        return results.sales(*self.store.sales(since, until))

    def do_restock(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        number = _resolve_guide(args["book"], self.snapshot.current().guide_books)
        return self.store.restock(number, args["quantity"], self._now())

    def do_backorders(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        found = self.store.outstanding_backorders()
        return {"backorders": [results.backorder(r) for r in found]}


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
