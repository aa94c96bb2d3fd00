"""The library's part of the Store: lending books, loans, holds, overdue loans."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import notice_texts
import rules
from db_base import StoreBase
from engine import DuplicateKeyError, Row, Tx, placeholders
from errors import ConflictError, NotFoundError, UnavailableError


class LendingStore(StoreBase):
    """The library's books, who has them on loan, and who waits for them."""

    # -- catalogue ----------------------------------------------------------------------

    def catalogue(
        self, query_key: str | None, limit: int, offset: int, now: int
    ) -> tuple[list[Row], int]:
        """Lending books whose title or authors hold every word, sorted by title, and the count."""
        # Every word must appear somewhere in the title or authors, as Open Library matches.
        words = query_key.split() if query_key else []
        where = " AND ".join(["1 = 1"] + ["b.search_key LIKE ? ESCAPE '!'"] * len(words))
        params: list[Any] = [f"%{escape_like(word)}%" for word in words]

        def work(tx: Tx) -> tuple[list[Row], int]:
            total = tx.value(f"SELECT COUNT(*) FROM lending_books b WHERE {where}", params)
            found = tx.rows(
                f"{_CATALOGUE_SELECT} WHERE {where} ORDER BY b.title_key, b.id LIMIT ? OFFSET ?",
                [now, *params, limit, offset],
            )
            return [_catalogue_book(r) for r in found], int(total)

        return self.database.read(work)

    def lending_books_by_key(self, keys: Sequence[str], now: int) -> dict[str, Row]:
        """Held books among Open Library work keys, by key."""
        if not keys:
            return {}
        found = self.database.read(
            lambda tx: tx.rows(
                f"{_CATALOGUE_SELECT} WHERE b.ol_key IN ({placeholders(len(keys))})",
                [now, *keys],
            )
        )
        return {r["ol_key"]: _catalogue_book(r) for r in found}

    def add_copies(self, key: str, copies: int, now: int) -> Row | None:
        """Add copies to a held work; None if the library does not hold it."""

        def work(tx: Tx) -> Row | None:
            book_id = self._add_copies(tx, key, copies, now)
            return None if book_id is None else self._catalogue_book(tx, book_id, now)

        return self.database.write(work)

    def add_lending_book(
        self, key: str, title: str, authors: Sequence[str], first_publish_year: int | None,
        copies: int, now: int,
    ) -> Row:  # fmt: skip
        """Hold a new work with this many copies (or add copies if another admin just did)."""

        def work(tx: Tx) -> Row:
            book_id = self._add_copies(tx, key, copies, now)
            if book_id is None:
                book_id = self._insert_lending_book(
                    tx, key=key, title=title, authors=list(authors),
                    first_publish_year=first_publish_year, copies=copies,
                )  # fmt: skip
            return self._catalogue_book(tx, book_id, now)

        try:
            return self.database.write(work)
        except DuplicateKeyError:
            return self.database.write(work)  # two admins added the same new work at once

    def _add_copies(self, tx: Tx, key: str, copies: int, now: int) -> int | None:
        """The held work's id after adding copies (the queue served first), or None."""
        book = tx.row(f"SELECT id FROM lending_books WHERE ol_key = ?{tx.lock}", (key,))
        if book is None:
            return None
        tx.run("UPDATE lending_books SET copies = copies + ? WHERE id = ?", (copies, book["id"]))
        self._settle_holds(tx, book["id"], now)
        return int(book["id"])

    def _insert_lending_book(
        self, tx: Tx, key: str | None, title: str, authors: list[str],
        first_publish_year: int | None, copies: int,
    ) -> int:  # fmt: skip
        search_key = rules.book_search_key(title, authors)
        _, book_id = tx.run(
            "INSERT INTO lending_books (ol_key, title, title_key, authors, search_key,"
            " first_publish_year, copies) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, title, rules.match_key(title), json.dumps(authors), search_key,
             first_publish_year, copies),
        )  # fmt: skip
        assert book_id is not None
        return book_id

    def _catalogue_book(self, tx: Tx, book_id: int, now: int) -> Row:
        found = tx.row(f"{_CATALOGUE_SELECT} WHERE b.id = ?", (now, book_id))
        assert found is not None
        return _catalogue_book(found)

    # -- circulation --------------------------------------------------------------------

    def lend_copy(self, user_id: int, book_id: int, now: int) -> Row:
        """Lend a copy: the member's kept copy if a hold is ready, else a free one."""

        def work(tx: Tx) -> Row:
            book = self._take_up(tx, user_id, book_id, now)
            active = tx.value(
                "SELECT COUNT(*) FROM loans WHERE user_id = ? AND returned_at IS NULL", (user_id,)
            )
            rules.check_can_borrow(int(active), self.config.lending)
            my_hold = tx.row(
                "SELECT id, ready_until FROM holds WHERE book_id = ? AND active_user_id = ?",
                (book_id, user_id),
            )
            if my_hold and my_hold["ready_until"] is not None:
                tx.run(
                    "UPDATE holds SET ended_at = ?, end_reason = 'borrowed', active_user_id = NULL"
                    " WHERE id = ?",
                    (now, my_hold["id"]),
                )
            elif self._free_copies(tx, book_id, book["copies"], now) <= 0:
                raise UnavailableError(
                    f"Every copy of {book['title']!r} is out or kept for a member with a hold;"
                    " you can place a hold.",
                    {"book_id": book_id},
                )
            due = rules.to_seconds(rules.due_date(rules.from_seconds(now), self.config.lending))
            _, loan_id = tx.run(
                "INSERT INTO loans (user_id, book_id, borrowed_at, due_at, active_user_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (user_id, book_id, now, due, user_id),
            )
            assert loan_id is not None
            return self._loan(tx, loan_id)

        try:
            return self.database.write(work)
        except DuplicateKeyError:
            raise ConflictError("You already have this book on loan.") from None

    def return_loan(self, user_id: int, loan_id: int, now: int) -> Row:
        """End a loan; the copy goes to the first member waiting, if any."""

        return self.database.write(lambda tx: self._end_loan(tx, user_id, loan_id, now))

    def checkin(self, loan_id: int, now: int) -> Row:
        """The desk takes back any member's loan, as return_loan does for the member's own."""
        return self.database.write(lambda tx: self._end_loan(tx, None, loan_id, now))

    def _end_loan(self, tx: Tx, user_id: int | None, loan_id: int, now: int) -> Row:
        loan = self._lock_active_loan(tx, user_id, loan_id)
        tx.run(
            "UPDATE loans SET returned_at = ?, active_user_id = NULL WHERE id = ?",
            (now, loan_id),
        )
        self._settle_holds(tx, loan["book_id"], now)
        return self._loan(tx, loan_id)

    def renew_loan(self, user_id: int, loan_id: int, now: int) -> Row:
        """Extend a loan unless another member is waiting or it was renewed twice."""

        def work(tx: Tx) -> Row:
            self._claim_active_member(tx, user_id)
            loan = self._lock_active_loan(tx, user_id, loan_id)
            self._settle_holds(tx, loan["book_id"], now)
            waiting = tx.value(
                "SELECT COUNT(*) FROM holds WHERE book_id = ? AND ended_at IS NULL AND user_id <> ?",
                (loan["book_id"], user_id),
            )
            rules.check_can_renew(
                loan["renewals"], held_by_others=int(waiting) > 0, policy=self.config.lending
            )
            due = rules.renewed_due_date(
                rules.from_seconds(now), rules.from_seconds(loan["due_at"]), self.config.lending
            )
            tx.run(
                "UPDATE loans SET due_at = ?, renewals = renewals + 1 WHERE id = ?",
                (rules.to_seconds(due), loan_id),
            )
            return self._loan(tx, loan_id)

        return self.database.write(work)

    def loans_for(self, user_id: int) -> list[Row]:
        """Every loan of this member, current and returned, newest first."""
        found = self.database.read(
            # Causal: the member's own history must show a loan just made through another node.
            lambda tx: tx.rows(
                f"{tx.causal}{_LOAN_SELECT} WHERE l.user_id = ? ORDER BY l.id DESC", (user_id,)
            )
        )
        return [_decode_loan(r) for r in found]

    def place_hold(self, user_id: int, book_id: int, now: int) -> Row:
        """Join a book's queue; only when no copy is free to borrow."""

        def work(tx: Tx) -> Row:
            book = self._take_up(tx, user_id, book_id, now)
            if tx.value(
                "SELECT id FROM holds WHERE book_id = ? AND active_user_id = ?", (book_id, user_id)
            ):
                raise ConflictError(f"You already hold a place in the queue for {book['title']!r}.")
            if self._free_copies(tx, book_id, book["copies"], now) > 0:
                raise ConflictError(
                    f"A copy of {book['title']!r} is free: borrow it instead.",
                    {"book_id": book_id},
                )
            _, hold_id = tx.run(
                "INSERT INTO holds (user_id, book_id, created_at, active_user_id) VALUES (?, ?, ?, ?)",
                (user_id, book_id, now, user_id),
            )
            return self._holds(tx, "h.id = ?", (hold_id,))[0]

        try:
            return self.database.write(work)
        except DuplicateKeyError:
            raise ConflictError("You already hold a place in the queue for this book.") from None

    def holds_for(self, user_id: int, now: int) -> list[Row]:
        """This member's open holds with queue positions, settling expired reservations first."""

        def work(tx: Tx) -> list[Row]:
            book_ids = [
                r["book_id"]
                for r in tx.rows(
                    "SELECT book_id FROM holds WHERE user_id = ? AND ended_at IS NULL ORDER BY book_id",
                    (user_id,),
                )
            ]
            for book_id in book_ids:
                self._lock_book(tx, book_id)
                self._settle_holds(tx, book_id, now)
            return self._holds(tx, "h.user_id = ?", (user_id,))

        return self.database.write(work)

    def cancel_hold(self, user_id: int, hold_id: int, now: int) -> None:
        """Leave a queue; a copy kept for this member passes to the next."""

        def work(tx: Tx) -> None:
            hold = self._owned(tx, "holds", hold_id, user_id, "book_id")
            self._lock_book(tx, hold["book_id"])
            # Read again under the book's lock: another cancel or a borrow may have ended it.
            ended_at = tx.value("SELECT ended_at FROM holds WHERE id = ?", (hold_id,))
            if ended_at is not None:
                raise ConflictError(f"Hold {hold_id} has already ended.")
            tx.run(
                "UPDATE holds SET ended_at = ?, end_reason = 'cancelled', active_user_id = NULL"
                " WHERE id = ?",
                (now, hold_id),
            )
            self._settle_holds(tx, hold["book_id"], now)

        self.database.write(work)

    # -- the administrator's report -------------------------------------------------------------

    def overdue_loans(self, now: int) -> list[Row]:
        """Every loan past its due date at `now` and not returned, the longest overdue first."""
        found = self.database.read(
            lambda tx: tx.rows(
                f"{_LOAN_SELECT} WHERE l.returned_at IS NULL AND l.due_at < ? ORDER BY l.due_at, l.id",
                (now,),
            )
        )
        return [_decode_loan(r) for r in found]

    def _take_up(self, tx: Tx, user_id: int, book_id: int, now: int) -> Row:
        """The start of a borrow or a hold: the member (not blocked), then the book, locked in
        that order everywhere; its queue settled; ConflictError if they have it out already."""
        self._claim_active_member(tx, user_id)
        book = self._lock_book(tx, book_id)
        self._settle_holds(tx, book_id, now)
        if tx.value(
            "SELECT id FROM loans WHERE book_id = ? AND active_user_id = ?", (book_id, user_id)
        ):
            raise ConflictError(f"You already have {book['title']!r} on loan.")
        return book

    def _lock_book(self, tx: Tx, book_id: int) -> Row:
        """Write (and so lock) a lending book's row: it serialises its loans and queue.

        A SELECT ... FOR UPDATE alone would lock it only on this Galera node.
        """
        tx.run("UPDATE lending_books SET version = version + 1 WHERE id = ?", (book_id,))
        book = tx.row(
            f"SELECT id, title, copies FROM lending_books WHERE id = ?{tx.lock}", (book_id,)
        )
        if book is None:
            raise NotFoundError(f"No book numbered {book_id}.", {"book_id": book_id})
        return book

    def _lock_active_loan(self, tx: Tx, user_id: int | None, loan_id: int) -> Row:
        """This member's (or, with no member, anyone's) unreturned loan, read under its book's
        lock."""
        columns = "book_id, due_at, returned_at, renewals"
        self._lock_book(tx, self._owned(tx, "loans", loan_id, user_id, columns)["book_id"])
        # Read again under the book's lock: under READ COMMITTED the first read may predate
        # a return or renewal that committed while this transaction waited for the lock.
        loan = self._owned(tx, "loans", loan_id, user_id, columns)
        if loan["returned_at"] is not None:
            raise ConflictError(f"Loan {loan_id} was already returned.")
        return loan

    def _free_copies(self, tx: Tx, book_id: int, copies: int, now: int) -> int:
        on_loan = tx.value(
            "SELECT COUNT(*) FROM loans WHERE book_id = ? AND returned_at IS NULL", (book_id,)
        )
        kept = tx.value(
            "SELECT COUNT(*) FROM holds WHERE book_id = ? AND ended_at IS NULL AND ready_until > ?",
            (book_id, now),
        )
        return rules.free_copies(copies, int(on_loan), int(kept))

    def settle_lapsed_holds(self, now: int) -> int:
        """Pass on every copy whose reservation lapsed; the count of holds made ready."""

        def work(tx: Tx) -> int:
            books = [
                r["book_id"]
                for r in tx.rows(
                    "SELECT DISTINCT book_id FROM holds WHERE ended_at IS NULL"
                    " AND ready_until IS NOT NULL AND ready_until <= ? ORDER BY book_id",
                    (now,),
                )
            ]
            made = 0
            for book_id in books:
                self._lock_book(tx, book_id)
                made += self._settle_holds(tx, book_id, now)
            return made

        return self.database.write(work)

    def _settle_holds(self, tx: Tx, book_id: int, now: int) -> int:
        """Expire reservations not collected in time, then keep free copies for the queue;
        the count of holds made ready (each with its hold_ready notice)."""
        tx.run(
            "UPDATE holds SET ended_at = ?, end_reason = 'expired', active_user_id = NULL"
            " WHERE book_id = ? AND ended_at IS NULL AND ready_until IS NOT NULL AND ready_until <= ?",
            (now, book_id, now),
        )
        copies = tx.value("SELECT copies FROM lending_books WHERE id = ?", (book_id,))
        free = self._free_copies(tx, book_id, int(copies), now)
        if free <= 0:
            return 0
        waiting = tx.rows(
            "SELECT h.id, h.user_id, b.title FROM holds h JOIN lending_books b ON b.id = h.book_id"
            " WHERE h.book_id = ? AND h.ended_at IS NULL AND h.ready_until IS NULL"
            " ORDER BY h.id LIMIT ?",
            (book_id, free),
        )
        ready_until = rules.to_seconds(rules.from_seconds(now) + self.config.lending.hold_kept_for)
        for hold in waiting:
            tx.run("UPDATE holds SET ready_until = ? WHERE id = ?", (ready_until, hold["id"]))
            text = notice_texts.hold_ready(hold["id"], book_id, hold["title"], ready_until)
            self._notify(tx, hold["user_id"], "hold_ready", str(hold["id"]), text, now)
        return len(waiting)

    def _loan(self, tx: Tx, loan_id: int) -> Row:
        found = tx.row(f"{_LOAN_SELECT} WHERE l.id = ?", (loan_id,))
        assert found is not None
        return _decode_loan(found)

    def _holds(self, tx: Tx, where: str, params: Sequence[Any]) -> list[Row]:
        found = tx.rows(
            "SELECT h.id, h.book_id, b.title, h.created_at, h.ready_until,"
            " (SELECT COUNT(*) FROM holds q WHERE q.book_id = h.book_id AND q.ended_at IS NULL"
            "  AND q.id <= h.id) AS position"
            " FROM holds h JOIN lending_books b ON b.id = h.book_id"
            f" WHERE {where} AND h.ended_at IS NULL ORDER BY h.id",
            params,
        )
        return [{**r, "position": int(r["position"])} for r in found]


def escape_like(text: str) -> str:
    """text for a LIKE pattern with ESCAPE '!': its %, _ and ! match only themselves."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


_CATALOGUE_SELECT = (
    "SELECT b.id, b.ol_key, b.title, b.authors, b.first_publish_year, b.copies,"
    " (SELECT COUNT(*) FROM loans l WHERE l.book_id = b.id AND l.returned_at IS NULL) AS on_loan,"
    # Waiting holds count as kept too: a lapsed reservation passes its copy to the next in line.
    " (SELECT COUNT(*) FROM holds h WHERE h.book_id = b.id AND h.ended_at IS NULL"
    "  AND (h.ready_until IS NULL OR h.ready_until > ?)) AS kept"
    " FROM lending_books b"
)


def _catalogue_book(r: Row) -> Row:
    return {
        "id": r["id"],
        "key": r["ol_key"],
        "title": r["title"],
        "authors": json.loads(r["authors"]),
        "first_publish_year": r["first_publish_year"],
        "copies": r["copies"],
        "copies_available": rules.free_copies(r["copies"], int(r["on_loan"]), int(r["kept"])),
    }


_LOAN_SELECT = (
    "SELECT l.id, l.book_id, b.title, b.authors, l.borrowed_at, l.due_at, l.returned_at,"
    " l.renewals, l.user_id, u.username FROM loans l"
    " JOIN lending_books b ON b.id = l.book_id JOIN users u ON u.id = l.user_id"
)


def _decode_loan(r: Row) -> Row:
    """A loan row with its authors as a list."""
    return {**r, "authors": json.loads(r["authors"])}
