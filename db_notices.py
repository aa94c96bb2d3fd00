"""The notices' part of the Store: a member's messages, the time-driven sweep, the mail outbox."""

from __future__ import annotations

import json

import notice_texts
from db_base import StoreBase
from engine import Row, Tx, placeholders
from errors import NotFoundError

NOTICE_COLUMNS = "id, kind, created_at, subject, body, details, read_at, mail_state, emailed_at"


class NoticeStore(StoreBase):
    """What the server told each member, and the rows the mail sender claims and marks."""

    # -- a member's notices ---------------------------------------------------------------

    def notices_for(
        self, user_id: int, unread_only: bool = False, limit: int = 50
    ) -> tuple[list[Row], int]:
        """This member's notices, newest first, and how many are unread."""
        unread_clause = " AND read_at IS NULL" if unread_only else ""

        def work(tx: Tx) -> tuple[list[Row], int]:
            found = tx.rows(
                f"{tx.causal}SELECT {NOTICE_COLUMNS} FROM notices"
                f" WHERE user_id = ?{unread_clause} ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            )
            unread = tx.value(
                "SELECT COUNT(*) FROM notices WHERE user_id = ? AND read_at IS NULL", (user_id,)
            )
            return [_decode(r) for r in found], int(unread)

        return self.database.read(work)

    def mark_read(self, user_id: int, ids: list[int] | None, every: bool, now: int) -> int:
        """Mark these notices (or all of them) read; NotFoundError, and nothing marked, if one
        is not this member's. Returns how many stay unread."""
        wanted = sorted(set(ids or []))

        def work(tx: Tx) -> int:
            if wanted:
                mine = {
                    r["id"]
                    for r in tx.rows(
                        f"SELECT id FROM notices WHERE user_id = ? AND id IN"
                        f" ({placeholders(len(wanted))})",
                        (user_id, *wanted),
                    )
                }
                missing = [i for i in wanted if i not in mine]
                if missing:
                    raise NotFoundError(
                        f"You have no notice numbered {missing[0]}; nothing was marked.",
                        {"id": missing[0]},
                    )
                tx.run(
                    f"UPDATE notices SET read_at = ? WHERE read_at IS NULL AND user_id = ?"
                    f" AND id IN ({placeholders(len(wanted))})",
                    (now, user_id, *wanted),
                )
            if every:
                tx.run(
                    "UPDATE notices SET read_at = ? WHERE user_id = ? AND read_at IS NULL",
                    (now, user_id),
                )
            return int(
                tx.value(
                    "SELECT COUNT(*) FROM notices WHERE user_id = ? AND read_at IS NULL", (user_id,)
                )
            )

        return self.database.write(work)

    # -- the sweep --------------------------------------------------------------------------

    def notify_due_soon(self, now: int, within_s: int) -> int:
        """A due_soon notice for each loan not returned and due within within_s; the count made."""

        def work(tx: Tx) -> int:
            loans = tx.rows(
                "SELECT l.id, l.user_id, l.due_at, b.title FROM loans l"
                " JOIN lending_books b ON b.id = l.book_id"
                " WHERE l.returned_at IS NULL AND l.due_at > ? AND l.due_at <= ? ORDER BY l.id",
                (now, now + within_s),
            )
            made = 0
            for loan in loans:
                text = notice_texts.due_soon(loan["id"], loan["title"], loan["due_at"])
                # Per loan and due date: a renewed loan is reminded again of its new date.
                cause = f"{loan['id']}:{loan['due_at']}"
                made += self._notify(tx, loan["user_id"], "due_soon", cause, text, now)
            return made

        return self.database.write(work)

    def notify_overdue(self, now: int) -> int:
        """An overdue notice for each loan that reached a new step (1, 7, 14 days); the count."""
        first_step = notice_texts.OVERDUE_STEPS[0] * 86_400

        def work(tx: Tx) -> int:
            loans = tx.rows(
                "SELECT l.id, l.user_id, l.due_at, b.title FROM loans l"
                " JOIN lending_books b ON b.id = l.book_id"
                " WHERE l.returned_at IS NULL AND l.due_at <= ? ORDER BY l.id",
                (now - first_step,),
            )
            made = 0
            for loan in loans:
                step = notice_texts.overdue_step(loan["due_at"], now)
                assert step is not None
                text = notice_texts.overdue(loan["id"], loan["title"], loan["due_at"], step)
                cause = f"{loan['id']}:{step}"
                made += self._notify(tx, loan["user_id"], "overdue", cause, text, now)
            return made

        return self.database.write(work)

    def anonymise_loans(self, returned_before: int, now: int) -> int:
        """Unlink loans returned before that time from their members; the count unlinked."""

        def work(tx: Tx) -> int:
            nobody = self._nobody(tx, now)
            changed, _ = tx.run(
                "UPDATE loans SET user_id = ? WHERE returned_at IS NOT NULL AND returned_at < ?"
                " AND user_id <> ?",
                (nobody, returned_before, nobody),
            )
            return max(changed, 0)

        return self.database.write(work)

    # -- the mail outbox -------------------------------------------------------------------

    def claim_mail(self, now: int, lease_s: int, batch: int) -> list[Row]:
        """Claim up to batch notices due for sending, for lease_s seconds; each with its
        member's address. A notice claimed here is claimed by no other sender meanwhile."""

        def work(tx: Tx) -> list[Row]:
            due = tx.rows(
                "SELECT n.id, n.created_at, n.subject, n.body, n.mail_attempts, u.email"
                " FROM notices n JOIN users u ON u.id = n.user_id"
                " WHERE n.mail_state = 'pending' AND n.mail_next_at <= ?"
                " AND (n.mail_claimed_until IS NULL OR n.mail_claimed_until <= ?)"
                f" ORDER BY n.id LIMIT ?{tx.lock}",
                (now, now, batch),
            )
            claimed = []
            for notice in due:
                # The write is the claim: on a cluster, two senders' claims of one row cannot
                # both commit (the second fails certification and is retried, finding it taken).
                changed, _ = tx.run(
                    "UPDATE notices SET mail_claimed_until = ? WHERE id = ?"
                    " AND mail_state = 'pending'"
                    " AND (mail_claimed_until IS NULL OR mail_claimed_until <= ?)",
                    (now + lease_s, notice["id"], now),
                )
                if changed == 1 and notice["email"]:
                    claimed.append(notice)
                elif changed == 1:  # the member took their address away meanwhile
                    tx.run("UPDATE notices SET mail_state = 'none' WHERE id = ?", (notice["id"],))
            return claimed

        return self.database.write(work)

    def mail_sent(self, notice_id: int, now: int) -> None:
        """The relay accepted the notice's email."""
        self.database.write(
            lambda tx: tx.run(
                "UPDATE notices SET mail_state = 'sent', emailed_at = ?,"
                " mail_claimed_until = NULL, mail_attempts = mail_attempts + 1 WHERE id = ?",
                (now, notice_id),
            )
        )

    def mail_not_sent(self, notice_id: int, next_at: int | None) -> None:
        """The relay did not take it: try again at next_at, or (None) give up for good."""
        state = "pending" if next_at is not None else "failed"
        self.database.write(
            lambda tx: tx.run(
                "UPDATE notices SET mail_state = ?, mail_next_at = ?, mail_claimed_until = NULL,"
                " mail_attempts = mail_attempts + 1 WHERE id = ?",
                (state, next_at, notice_id),
            )
        )

    def mail_counts(self) -> dict[str, int]:
        """How many notices wait to be emailed, and how many could not be."""
        found = self.database.read(
            lambda tx: tx.rows(
                "SELECT mail_state, COUNT(*) AS n FROM notices"
                " WHERE mail_state IN ('pending', 'failed') GROUP BY mail_state"
            )
        )
        counts = {"pending": 0, "failed": 0}
        counts.update({r["mail_state"]: int(r["n"]) for r in found})
        return counts


def _decode(r: Row) -> Row:
    return {**r, "details": json.loads(r["details"])}
