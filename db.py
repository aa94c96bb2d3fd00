"""The Store: Waymark's data behind one object, composed from one store per domain.

Every statement is written once with "?" placeholders; a Backend supplies only what really
differs (placeholder style, the row-locking clause, DDL details and how a write transaction
starts). Each write runs in one transaction that locks the rows its rules read: MySQL
`SELECT ... FOR UPDATE`, SQLite `BEGIN IMMEDIATE` (one writer at a time). Several server
processes may share the database, so no invariant relies on a Python lock.

The statements live beside their domain: db_accounts.py (users, sessions, login attempts),
db_shop.py (walks, guide books, orders, back orders, sales), db_lending.py (lending
books, loans, holds, overdue loans), db_members.py (the desk: members, blocks, erasing an
account), db_notices.py (notices, the sweep's notices, the mail outbox) and db_keys.py
(idempotency keys), over
db_base.py. This module holds what spans them: opening the database, its schema version
and the first load of the catalogue.

Store methods raise the domain errors of errors.py for outcomes a client must hear about.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import migrations
from db_accounts import AccountStore, LoginStart
from db_base import StoreConfig
from db_keys import KeyStore
from db_members import MemberStore
from db_notices import NoticeStore
from db_shop import ShopStore
from engine import Database, DuplicateKeyError, Tx, backend_from_url

if TYPE_CHECKING:  # the records the shop's CSV reader makes; the store needs only their fields
    from shop_import import ShopBook, WalkRow

__all__ = ["LoginStart", "Store", "StoreConfig"]


class Store(AccountStore, ShopStore, MemberStore, NoticeStore, KeyStore):
    """Waymark's data, with one method per thing the application does."""

    @classmethod
    def open(cls, url: str, config: StoreConfig | None = None) -> Store:
        """Connect and create the schema if missing; ValueError explains a bad URL."""
        config = config or StoreConfig()
        store = cls(Database(backend_from_url(url), config.pool), config)
        migrations.create_or_upgrade(store.database)
        return store

    def close(self) -> None:
        """Close every pooled connection."""
        self.database.close()

    def connections_in_use(self) -> int:
        """The store's pooled connections in use just now (for the metrics)."""
        return self.database.in_use()

    def describe(self) -> str:
        """Which database and driver this store uses (no secrets)."""
        return self.database.describe()

    def ping(self) -> bool:
        """Whether the database can serve the application: a trivial query answers, and a
        Galera node is ready (wsrep_ready ON, so in the primary component). Raises if the
        database cannot be reached at all."""

        def work(tx: Tx) -> bool:
            tx.value("SELECT 1")
            if not self.database.backend.is_cluster_node:
                return True
            # A node cut off from the primary component still answers SELECT 1, but refuses
            # every write and most reads: a load balancer must send its clients elsewhere.
            row = tx.row("SHOW STATUS LIKE 'wsrep_ready'")
            return row is not None and str(row["Value"]).upper() == "ON"

        return self.database.read(work)

    # -- schema -------------------------------------------------------------------------------

    def load_if_empty(
        self,
        shop_books: Sequence[ShopBook],
        walks: Sequence[WalkRow],
        lending_books: Sequence[dict[str, Any]],
    ) -> bool:
        """Load a catalogue into a database never loaded before, once even when several
        processes start together; True if this call loaded it."""

        def work(tx: Tx) -> bool:
            if tx.value("SELECT version FROM schema_version WHERE id = 1") is not None:
                return False
            # The insert takes the row's key first, so a second process starting at the same
            # moment waits here, then fails on the duplicate and leaves the loading to us.
            tx.run(
                "INSERT INTO schema_version (id, version, applied_at) VALUES (1, ?, ?)",
                (migrations.SCHEMA_VERSION, int(time.time())),
            )
            self._upsert_shop_books(tx, shop_books)
            self._upsert_walks(tx, walks, {book.title: book.number for book in shop_books})
            for book in lending_books:
                self._insert_lending_book(tx, **book)
            return True

        try:
            return self.database.write(work)
        except DuplicateKeyError:  # another process loaded it first
            return False

    def schema_version(self) -> int | None:
        """The recorded schema version."""
        return self.database.read(
            lambda tx: tx.value("SELECT version FROM schema_version WHERE id = 1")
        )
