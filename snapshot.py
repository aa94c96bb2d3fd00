"""The rarely changing catalogue (walks, areas, guide books, lending books) held in memory.

Each server process answers walk searches, area lists, the guide-book list and the lending
catalogue from a snapshot instead of a database round trip. A snapshot is at most `max_age_s`
old (other processes' changes show within that), and a change made through this process drops
it at once, so the process that made a change never shows the number it replaced. buy and
borrow still decide under their row locks: nothing is sold or lent on a shown number.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import results
import rules
from db import Store
from encoded import PreEncoded

Row = dict[str, Any]
EVERYTHING = 2**31 - 1  # a page size no catalogue reaches: every match
MAX_ANSWERS = 1024  # distinct answers kept per snapshot (it lasts a second)


@dataclass(frozen=True)
class _Walk:
    area_key: str
    distance_miles: float
    difficulty: str
    shaped: Row  # the wire's Walk


@dataclass(frozen=True)
class Catalogue:
    """One consistent view of the catalogue, in the wire's shapes and sort orders."""

    walks: tuple[_Walk, ...]
    areas: tuple[Row, ...]
    guide_books: tuple[Row, ...]
    lending: tuple[tuple[str, Row], ...]  # (match key of title and authors, CatalogueBook)
    loaded_at: float
    # Answers already made from this snapshot, encoded once; bounded, since a query is free text.
    answers: dict[Hashable, PreEncoded] = field(default_factory=dict, compare=False)

    def answer(self, key: Hashable, make: Callable[[], Row]) -> PreEncoded:
        """The answer for key, made (and encoded) at most once while this snapshot lasts."""
        found = self.answers.get(key)
        if found is None:
            found = PreEncoded(make())
            if len(self.answers) < MAX_ANSWERS:
                self.answers[key] = found
        return found

    def search_walks(
        self,
        area_key: str | None,
        low: float | None,
        high: float | None,
        difficulty: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Row], int]:
        """The one walk search: the walks passing every filter given, in the store's order;
        one page and the count. area_key is part of an area's key; low and high are inclusive."""
        found = [
            walk.shaped
            for walk in self.walks
            if (area_key is None or area_key in walk.area_key)
            and (low is None or walk.distance_miles >= low)
            and (high is None or walk.distance_miles <= high)
            and (difficulty is None or walk.difficulty == difficulty)
        ]
        return found[offset : offset + limit], len(found)

    def catalogue(self, query_key: str | None, limit: int, offset: int) -> tuple[list[Row], int]:
        """Lending books whose title or authors hold every word, by title: a page and the count."""
        words = query_key.split() if query_key else []
        found = [book for key, book in self.lending if all(word in key for word in words)]
        return found[offset : offset + limit], len(found)


class CatalogueSnapshot:
    """Loads the catalogue when the last load is too old or was dropped; thread-safe."""

    def __init__(
        self,
        store: Store,
        max_age_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.max_age_s = max_age_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._current: Catalogue | None = None
        self._generation = 0
        self._loading = threading.Lock()

    def age_s(self) -> float:
        """Seconds since the snapshot in use was loaded (0 when none is loaded yet)."""
        snapshot = self._current
        return 0.0 if snapshot is None else self._clock() - snapshot.loaded_at

    def drop(self) -> None:
        """Forget the snapshot: this process just changed the catalogue."""
        self._generation += 1
        self._current = None

    def current(self) -> Catalogue:
        """A snapshot no older than max_age_s and newer than this process's last change."""
        snapshot = self._current
        if snapshot is not None and self._clock() - snapshot.loaded_at < self.max_age_s:
            return snapshot
        with self._loading:  # one load at a time; the threads waiting here share its result
            snapshot = self._current
            if snapshot is not None and self._clock() - snapshot.loaded_at < self.max_age_s:
                return snapshot
            generation = self._generation
            snapshot = self._load()
            # A change made while this load ran may be missing from it: use it for this
            # answer only, and load again next time.
            if generation == self._generation:
                self._current = snapshot
            return snapshot

    def _load(self) -> Catalogue:
        loaded_at = self._clock()
        walks = self.store.walks()
        lending, _ = self.store.catalogue(None, EVERYTHING, 0, int(self._wall_clock()))
        return Catalogue(
            walks=searchable_walks(walks),
            areas=tuple(self.store.list_areas()),
            guide_books=tuple(self.store.shop_books()),
            lending=tuple(
                (rules.book_search_key(book["title"], book["authors"]), book) for book in lending
            ),
            loaded_at=loaded_at,
        )


def searchable_walks(rows: list[Row]) -> tuple[_Walk, ...]:
    """The Store's walk rows as Catalogue.search_walks searches them."""
    return tuple(
        _Walk(r["area_key"], r["distance_miles"], r["difficulty"], results.walk(r)) for r in rows
    )
