"""The sample catalogue loaded into an empty database: guide books, walks and lending books.

The files live in data/ inside the project (copied from the original shop's export, warts
and all); catalogue.py cleans them as they are read.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from catalogue import ImportReport, ShopBook, read_book_prices, read_walks

DATA_DIR = Path(__file__).with_name("data")


@cache
def shop_books() -> tuple[ShopBook, ...]:
    """The seven guide books for sale, with their starting stock."""
    return tuple(read_book_prices((DATA_DIR / "books_cost.csv").read_text(encoding="utf-8")))


@cache
def walks() -> ImportReport:
    """The sixteen sample walks, cleaned."""
    text = (DATA_DIR / "circular_walks.csv").read_text(encoding="utf-8")
    return read_walks(text, known_book_titles=[book.title for book in shop_books()])


def lending_books() -> list[dict[str, Any]]:
    """The starter lending catalogue: real Open Library works with 1-3 copies each."""
    books: list[dict[str, Any]] = json.loads(
        (DATA_DIR / "lending_books.json").read_text(encoding="utf-8")
    )
    return [
        {
            "key": book["key"],
            "title": book["title"],
            "authors": list(book["authors"]),
            "first_publish_year": book.get("first_publish_year"),
            "copies": int(book["copies"]),
        }
        for book in books
    ]
