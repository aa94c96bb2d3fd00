"""Opens the store, loading the sample catalogue (guide books, walks, lending books) once.

The files live in data/ inside the project (copied from the original shop's export, warts
and all); shop_import.py cleans them as they are read.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

from db import Store, StoreConfig
from shop_import import ImportReport, ShopBook, read_book_prices, read_walks

DATA_DIR = Path(__file__).with_name("data")

log = logging.getLogger(__name__)


def open_store(url: str, config: StoreConfig | None = None) -> Store:
    """The store at url with its schema, holding the sample catalogue if it was empty."""
    store = Store.open(url, config)
    try:
        if store.load_if_empty(shop_books(), walks().walks, lending_books()):
            log.info("loaded the sample catalogue into %s", store.describe())
    except BaseException:
        store.close()
        raise
    return store


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
