"""The desk's part of the Store: finding members, blocking them, erasing an account."""

from __future__ import annotations

from typing import Any

from db_base import NOBODY_KEY
from db_lending import LendingStore, escape_like
from engine import Row, Tx
from errors import ConflictError

_MEMBER_SELECT = (
    "SELECT u.id, u.username, u.role, u.email, u.blocked_reason, u.created_at,"
    " (SELECT COUNT(*) FROM loans l WHERE l.user_id = u.id AND l.returned_at IS NULL)"
    "  AS active_loans,"
    " (SELECT COUNT(*) FROM loans l WHERE l.user_id = u.id AND l.returned_at IS NULL"
    "  AND l.due_at < ?) AS overdue_loans"
    " FROM users u"
)


class MemberStore(LendingStore):
    """Members as the desk sees them; erasing one reaches into loans, holds and orders."""

    def members(
        self, query_key: str | None, limit: int, offset: int, now: int
    ) -> tuple[list[Row], int]:
        """Accounts whose name holds query_key, by name, with their loan counts; and the count."""
        where = "u.username_key <> ? AND u.username_key LIKE ? ESCAPE '!'"
        params: list[Any] = [NOBODY_KEY, f"%{escape_like(query_key or '')}%"]

        def work(tx: Tx) -> tuple[list[Row], int]:
            total = tx.value(f"SELECT COUNT(*) FROM users u WHERE {where}", params)
            found = tx.rows(
                f"{_MEMBER_SELECT} WHERE {where} ORDER BY u.username_key, u.id LIMIT ? OFFSET ?",
                [now, *params, limit, offset],
            )
            return found, int(total)

        return self.database.read(work)

    def member(self, username_key: str, now: int) -> Row | None:
        """One account by its name (ignoring case), with its loan counts; None if none."""
        return self.database.read(
            lambda tx: tx.row(
                f"{_MEMBER_SELECT} WHERE u.username_key = ? AND u.username_key <> ?",
                (now, username_key, NOBODY_KEY),
            )
        )

    def set_blocked(self, username_key: str, reason: str | None, now: int) -> Row | None:
        """Block a member with a reason, or (None) unblock them; the member, or None if none."""

        def work(tx: Tx) -> Row | None:
            changed, _ = tx.run(
                "UPDATE users SET blocked_reason = ?, version = version + 1"
                " WHERE username_key = ? AND username_key <> ?",
                (reason, username_key, NOBODY_KEY),
            )
            if changed != 1:
                return None
            return tx.row(f"{_MEMBER_SELECT} WHERE u.username_key = ?", (now, username_key))

        return self.database.write(work)

    def delete_account(self, user_id: int, username_key: str, now: int) -> None:
        """Erase an account: its sessions, holds, notices, keys and email go; its past loans and
        orders stay for the reports, unlinked. ConflictError while loans are out or back-ordered
        copies are still owed."""

        def work(tx: Tx) -> None:
            self._claim_member(tx, user_id)
            active = int(
                tx.value(
                    "SELECT COUNT(*) FROM loans WHERE user_id = ? AND returned_at IS NULL",
                    (user_id,),
                )
            )
            owed = int(
                tx.value(
                    "SELECT COALESCE(SUM(l.backorder_outstanding), 0) FROM order_lines l"
                    " JOIN orders o ON o.id = l.order_id WHERE o.user_id = ?",
                    (user_id,),
                )
            )
            if active or owed:
                raise ConflictError(
                    "The account cannot be deleted yet: return every book on loan and wait for"
                    " (or cancel) every back-ordered copy first.",
                    {"active_loans": active, "backorder_outstanding": owed},
                )
            waiting = [
                r["book_id"]
                for r in tx.rows(
                    "SELECT DISTINCT book_id FROM holds WHERE user_id = ? AND ended_at IS NULL"
                    " ORDER BY book_id",
                    (user_id,),
                )
            ]
            for book_id in waiting:
                self._lock_book(tx, book_id)
            tx.run("DELETE FROM holds WHERE user_id = ?", (user_id,))
            for book_id in waiting:  # a copy kept for this member passes to the next in line
                self._settle_holds(tx, book_id, now)
            nobody = self._nobody(tx, now)
            tx.run("UPDATE loans SET user_id = ? WHERE user_id = ?", (nobody, user_id))
            tx.run("UPDATE orders SET user_id = ? WHERE user_id = ?", (nobody, user_id))
            for table in ("notices", "sessions", "idempotency_keys"):
                tx.run(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))
            tx.run("DELETE FROM login_failures WHERE username_key = ?", (username_key,))
            tx.run("DELETE FROM users WHERE id = ?", (user_id,))

        self.database.write(work)
