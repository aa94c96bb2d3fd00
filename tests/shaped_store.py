"""A Store whose answers are shaped as commands.py shapes them, so store tests read like the wire."""

from __future__ import annotations

from typing import Any

import results
from db import Store
from snapshot import CatalogueSnapshot


class ShapedStore:
    """Passes every call to the Store; the calls that answer rows answer wire objects instead."""

    def __init__(self, store: Store):
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def search_walks(self, *args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], int]:
        """The walk search as the server answers it: over a snapshot loaded now."""
        return CatalogueSnapshot(self.store).current().search_walks(*args, **kwargs)

    def place_order(self, user_id: int, requested: dict[int, int], now: int) -> dict[str, Any]:
        return results.order(self.store.place_order(user_id, requested, now))

    def orders_for(self, user_id: int) -> list[dict[str, Any]]:
        return [results.order(r) for r in self.store.orders_for(user_id)]

    def outstanding_backorders(self) -> list[dict[str, Any]]:
        return [results.backorder(r) for r in self.store.outstanding_backorders()]

    def cancel_backorder(
        self, user_id: int, order_id: int, number: int
    ) -> tuple[dict[str, Any], int]:
        order, refund = self.store.cancel_backorder(user_id, order_id, number)
        return results.order(order), refund

    def lend_copy(self, user_id: int, book_id: int, now: int) -> dict[str, Any]:
        return results.loan(self.store.lend_copy(user_id, book_id, now), now)

    def return_loan(self, user_id: int, loan_id: int, now: int) -> dict[str, Any]:
        return results.loan(self.store.return_loan(user_id, loan_id, now), now)

    def renew_loan(self, user_id: int, loan_id: int, now: int) -> dict[str, Any]:
        return results.loan(self.store.renew_loan(user_id, loan_id, now), now)

    def loans_for(self, user_id: int, now: int) -> list[dict[str, Any]]:
        return [results.loan(r, now) for r in self.store.loans_for(user_id)]

    def place_hold(self, user_id: int, book_id: int, now: int) -> dict[str, Any]:
        return results.hold(self.store.place_hold(user_id, book_id, now))

    def holds_for(self, user_id: int, now: int) -> list[dict[str, Any]]:
        return [results.waiting_hold(r, now) for r in self.store.holds_for(user_id, now)]
