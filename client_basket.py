"""The basket: guide books a person has chosen but not yet bought, within one order's limits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from client_link import ClientError, JsonDict

MAX_COPIES_PER_ORDER = 8  # PROTOCOL.md: at most 8 copies of one book in one order


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

    def room_for(self, book: GuideBook) -> int:
        """How many more copies of book one order may still take."""
        return MAX_COPIES_PER_ORDER - sum(
            line.quantity for line in self.lines if line.book.number == book.number
        )

    def add(self, book: GuideBook, quantity: int) -> BasketLine:
        """Add copies, merging with a line for the same book; BasketError past the limit."""
        if quantity < 1:
            raise BasketError("Choose at least one copy.")
        room = self.room_for(book)
        if quantity > room:
            raise BasketError(
                f"One order may hold at most {MAX_COPIES_PER_ORDER} copies of {book.title}; "
                f"there is room for {room} more."
            )
        for line in self.lines:
            if line.book.number == book.number:
                line.quantity += quantity
                return line
        self.lines.append(BasketLine(book, quantity))
        return self.lines[-1]

    def remove(self, index: int) -> BasketLine:
        """Take out the line at index (0-based)."""
        return self.lines.pop(index)

    def clear(self) -> None:
        """Empty the basket."""
        self.lines.clear()

    @property
    def copies(self) -> int:
        """Copies in the basket."""
        return sum(line.quantity for line in self.lines)

    @property
    def subtotal_pence(self) -> int:
        """What the basket costs before any discount (the server decides the discount)."""
        return sum(line.total_pence for line in self.lines)

    def items(self) -> list[JsonDict]:
        """The basket as buy's items argument."""
        return [{"book": line.book.number, "quantity": line.quantity} for line in self.lines]
