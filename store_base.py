"""The base of every domain store: the database, the settings, the locks they share.

Each domain module (store_accounts, store_shop, store_lending) holds a mixin over StoreBase;
db.py composes them into the one Store. This module imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import rules
from engine import Database, PoolConfig, Row, Tx
from errors import ForbiddenError, NotFoundError


@dataclass(frozen=True)
class StoreConfig:
    """Pool, retry, session and lending settings; every limit has a safe default."""

    pool: PoolConfig = PoolConfig()
    session_ttl_s: int = 12 * 3600
    lending: rules.LendingPolicy = rules.HOUSE_RULES


class StoreBase:
    """The database and settings every domain store works with."""

    def __init__(self, database: Database, config: StoreConfig | None = None):
        self.database = database
        self.config = config or StoreConfig()

    def _claim_member(self, tx: Tx, user_id: int) -> None:
        """Write the member's row: it serialises their orders and loans, on every node."""
        tx.run("UPDATE users SET version = version + 1 WHERE id = ?", (user_id,))

    def _owned(self, tx: Tx, table: str, row_id: int, user_id: int, columns: str) -> Row:
        """A loan, hold or order of this member (table is a constant); else not_found or forbidden."""
        noun = table.removesuffix("s")
        found = tx.row(f"SELECT user_id, {columns} FROM {table} WHERE id = ?", (row_id,))
        if found is None:
            raise NotFoundError(f"No {noun} numbered {row_id}.", {f"{noun}_id": row_id})
        if found["user_id"] != user_id:
            raise ForbiddenError(f"{noun.capitalize()} {row_id} belongs to another member.")
        return found
