"""The basket: guide books a person has chosen but not yet bought, within the shop's limits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import rules
from client_link import ClientError, JsonDict


@dataclass(frozen=True)
class GuideBook:
    """A walking-guide book for sale."""

    number: int
    title: str
    price_pence: int
    in_stock: int

    @classmethod
    def from_json(cls, book: Mapping[str, Any]) -> GuideBook:
        """A guide book from the server's Book object."""
        return cls(book["number"], book["title"], book["price_pence"], book["in_stock"])


def guide_books_in(walks: Iterable[Mapping[str, Any]]) -> list[GuideBook]:
    """The guide books the walks appear in, by number."""
    books = {}
    for walk in walks:
        book = GuideBook.from_json(walk["book"])
        books[book.number] = book
    return sorted(books.values(), key=lambda book: book.number)


def copies_ordered(orders: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    """Copies of each book a member has ordered, back orders included, cancelled ones not:
    what the per-customer limit counts (PROTOCOL.md 1.1 adds backorder_cancelled to lines)."""
    ordered: dict[int, int] = {}
    for order in orders:
        for line in order["lines"]:
            number = line["book"]["number"]
            copies = line["quantity"] - line.get("backorder_cancelled", 0)
            ordered[number] = ordered.get(number, 0) + copies
    return ordered


@dataclass
class BasketLine:
    """Copies of one guide book in the basket."""

    book: GuideBook
    quantity: int

    @property
    def total_pence(self) -> int:
        """What the line costs before any discount."""
        return self.book.price_pence * self.quantity


class BasketError(ClientError):
    """The basket cannot take that (no copies, or too many of one book)."""


class Basket:
    """Guide books chosen but not yet bought; copies of one book add up, to at most 8."""

    def __init__(self) -> None:
        self.lines: list[BasketLine] = []

    def __len__(self) -> int:
        return len(self.lines)

    def line_for(self, number: int) -> BasketLine | None:
        """The line for the book with that number, if the basket has one."""
        return next((line for line in self.lines if line.book.number == number), None)

    def room_for(self, book: GuideBook, already_ordered: int = 0) -> int:
        """How many more copies of book may go in: one order's limit, and the member's limit
        less the copies they have already ordered."""
        line = self.line_for(book.number)
        in_basket = line.quantity if line else 0
        per_order = rules.MAX_COPIES_PER_ORDER - in_basket
        per_member = rules.MAX_COPIES_PER_CUSTOMER - already_ordered - in_basket
        return max(0, min(per_order, per_member))

    def add(self, book: GuideBook, quantity: int) -> BasketLine:
        """Add copies, merging with a line for the same book; BasketError past the limit."""
        if quantity < 1:
            raise BasketError("Choose at least one copy.")
        room = self.room_for(book)
        if quantity > room:
            raise BasketError(
                f"One order may hold at most {rules.MAX_COPIES_PER_ORDER} copies of "
                f"{book.title}; there is room for {room} more."
            )
        if (line := self.line_for(book.number)) is not None:
            line.quantity += quantity
            return line
        self.lines.append(BasketLine(book, quantity))
        return self.lines[-1]

    def set_quantity(self, number: int, quantity: int) -> BasketLine | None:
        """Change the copies of a book already in the basket; 0 takes its line out.

        Returns the line, or None once removed; BasketError past one order's limit.
        """
        line = self.line_for(number)
        if line is None:
            raise BasketError(f"Your basket has no book numbered {number}.")
        if not 0 <= quantity <= rules.MAX_COPIES_PER_ORDER:
            raise BasketError(
                f"One order may hold from 1 to {rules.MAX_COPIES_PER_ORDER} copies of a book."
            )
        if quantity == 0:
            self.lines.remove(line)
            return None
        line.quantity = quantity
        return line

    def refresh(self, books: Iterable[GuideBook]) -> None:
        """Take the latest price and stock of the books in the basket."""
        latest = {book.number: book for book in books}
        for line in self.lines:
            line.book = latest.get(line.book.number, line.book)

    def clear(self) -> None:
        """Empty the basket."""
        self.lines.clear()

    @property
    def copies(self) -> int:
        """Copies in the basket."""
        return sum(line.quantity for line in self.lines)

    @property
    def subtotal_pence(self) -> int:
        """What the basket costs before any discount."""
        return self.pricing.subtotal_pence

    @property
    def pricing(self) -> rules.Pricing:
        """Subtotal, discount and total, by the server's own rule (rules.py is pure)."""
        return rules.price_order((line.quantity, line.book.price_pence) for line in self.lines)

    def shortfalls(self) -> list[tuple[BasketLine, int]]:
        """(line, copies that would be back-ordered) where the stock last fetched is short."""
        short = []
        for line in self.lines:
            _, backordered = rules.split_fulfilment(line.quantity, line.book.in_stock)
            if backordered:
                short.append((line, backordered))
        return short

    def items(self) -> list[JsonDict]:
        """The basket as buy's items argument."""
        return [{"book": line.book.number, "quantity": line.quantity} for line in self.lines]
