"""The schema's versions: the tables made from schema.sql, an older database brought up to date.

schema.sql always describes the newest version. A database made at an older version (its
schema_version row says which) is brought forward by the statements of each later version.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from engine import Database, DuplicateColumnError, Tx

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("schema.sql")
SCHEMA_VERSION = 4
# Statements that bring a database made at the version before each key up to that version.
# Each is safe to meet twice: a column already added (another process upgraded first) is
# taken as done.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE users ADD COLUMN version BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE shop_books ADD COLUMN version BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE lending_books ADD COLUMN version BIGINT NOT NULL DEFAULT 0",
    ),
    # Back-ordered copies a customer cancelled (cancel_backorder). SQLite cannot add the table
    # CHECK that schema.sql puts beside it, so only the column's own CHECK comes with it here.
    3: (
        "ALTER TABLE order_lines ADD COLUMN backorder_cancelled INTEGER NOT NULL DEFAULT 0"
        " CHECK (backorder_cancelled >= 0)",
    ),
    # PROTOCOL 1.2: a member's email, a block at the desk, a temporary password to change.
    # (The notices, login_names and idempotency tables are new: schema.sql makes them.)
    4: (
        "ALTER TABLE users ADD COLUMN email VARCHAR(254)",
        "ALTER TABLE users ADD COLUMN blocked_reason VARCHAR(200)",
        "ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0",
    ),
}


def create_or_upgrade(database: Database) -> None:
    """Create the tables that are missing, then upgrade an older schema to SCHEMA_VERSION."""
    statements = database.backend.ddl(SCHEMA_PATH.read_text(encoding="utf-8"))

    def work(tx: Tx) -> None:
        for statement in statements:
            tx.run(statement)
        found = tx.value("SELECT version FROM schema_version WHERE id = 1")
        if found is None or int(found) >= SCHEMA_VERSION:
            return  # a new database: the catalogue loader records the version
        for version in range(int(found) + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                _apply(database, tx, statement)
            tx.run(
                "UPDATE schema_version SET version = ?, applied_at = ? WHERE id = 1"
                " AND version < ?",
                (version, int(time.time()), version),
            )
            log.info("upgraded the schema to version %d", version)

    # As a write: SQLite then takes its write lock first, and processes starting together on a
    # new file retry on "database is locked" like any transaction instead of failing. (MySQL
    # commits each DDL statement by itself; the statements are all safe to run twice.)
    database.write(work)


def _apply(database: Database, tx: Tx, statement: str) -> None:
    try:
        tx.run(statement)
    except Exception as error:
        if database.backend.classify(error) is not DuplicateColumnError:
            raise
