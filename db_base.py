"""The base of every domain store: the database, the settings, the locks they share.

Each domain module (db_accounts, db_shop, db_lending) holds a mixin over StoreBase;
db.py composes them into the one Store. This module imports none of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import rules
from engine import Database, PoolConfig, Row, Tx
from errors import ForbiddenError, NotFoundError
from notice_texts import NoticeText

# The one account that names no one: past loans and orders of a deleted account, and loans
# anonymised by the sweep, belong to it. '#' is in no username, so nobody can register it,
# and login never finds it (see start_login).
NOBODY_KEY = "#nobody"


@dataclass(frozen=True)
class StoreConfig:
    """Pool, retry, session and lending settings; every limit has a safe default."""

    pool: PoolConfig = PoolConfig()
    session_ttl_s: int = 12 * 3600
    lending: rules.LendingPolicy = rules.HOUSE_RULES
    # Notices of members with an email wait for the mail sender only when there is one.
    mail_enabled: bool = False


class StoreBase:
    """The database and settings every domain store works with."""

    def __init__(self, database: Database, config: StoreConfig | None = None):
        self.database = database
        self.config = config or StoreConfig()

    def _claim_member(self, tx: Tx, user_id: int) -> None:
        """Write the member's row: it serialises their orders and loans, on every node."""
        tx.run("UPDATE users SET version = version + 1 WHERE id = ?", (user_id,))

    def _claim_active_member(self, tx: Tx, user_id: int) -> None:
        """Claim the member's row, refusing one blocked at the desk (borrow, renew, hold, buy)."""
        self._claim_member(tx, user_id)
        reason = tx.value("SELECT blocked_reason FROM users WHERE id = ?", (user_id,))
        if reason is not None:
            raise ForbiddenError(
                f"The account is blocked at the library's desk ({reason}); please speak to the"
                " library.",
                {"blocked": True, "reason": reason},
            )

    def _notify(
        self, tx: Tx, user_id: int, kind: str, cause: str, text: NoticeText, now: int
    ) -> bool:
        """Make a notice in the caller's transaction, once per cause; True if it is new.

        cause names what the notice is about (a loan and its step, an order); the unique key on
        it makes a second notice for one cause, from any server or node, a no-op.
        """
        # The member's email decides at once whether the notice waits for the mail sender.
        changed, _ = tx.run(
            f"{self.database.backend.insert_ignore} INTO notices"
            " (user_id, kind, dedupe_key, created_at, subject, body, details, mail_state,"
            " mail_next_at)"
            " SELECT id, ?, ?, ?, ?, ?, ?,"
            " CASE WHEN email IS NOT NULL AND ? = 1 THEN 'pending' ELSE 'none' END, ?"
            " FROM users WHERE id = ?",
            (
                kind,
                f"{kind}:{cause}"[:100],
                now,
                text.subject[:200],
                text.body,
                json.dumps(text.details),
                int(self.config.mail_enabled),
                now,
                user_id,
            ),
        )
        return changed == 1

    def _nobody(self, tx: Tx, now: int) -> int:
        """The id of the account that names no one, made the first time it is needed."""
        tx.run(
            f"{self.database.backend.insert_ignore} INTO users"
            " (username, username_key, password_hash, role, created_at)"
            " VALUES ('(no one)', ?, '!', 'member', ?)",
            (NOBODY_KEY, now),
        )
        return int(tx.value("SELECT id FROM users WHERE username_key = ?", (NOBODY_KEY,)))

    def _owned(self, tx: Tx, table: str, row_id: int, user_id: int | None, columns: str) -> Row:
        """A loan, hold or order of this member (table is a constant); else not_found or
        forbidden. With no member (the desk), anyone's."""
        noun = table.removesuffix("s")
        found = tx.row(f"SELECT user_id, {columns} FROM {table} WHERE id = ?", (row_id,))
        if found is None:
            raise NotFoundError(f"No {noun} numbered {row_id}.", {f"{noun}_id": row_id})
        if user_id is not None and found["user_id"] != user_id:
            raise ForbiddenError(f"{noun.capitalize()} {row_id} belongs to another member.")
        return found
