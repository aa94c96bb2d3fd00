"""All SQL: the Store over two backends (MySQL/MariaDB and embedded SQLite).

Every statement is written once with "?" placeholders; a Backend supplies only what really
differs (placeholder style, the row-locking clause, DDL details and how a write transaction
starts). Each write runs in one transaction that locks the rows its rules read: MySQL
`SELECT ... FOR UPDATE`, SQLite `BEGIN IMMEDIATE` (one writer at a time). Several server
processes may share the database, so no invariant relies on a Python lock.

Store methods raise the domain errors of errors.py for outcomes a client must hear about.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import migrations
import rules
from engine import Database, DuplicateKeyError, PoolConfig, Row, Tx, backend_from_url, placeholders
from errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
    UsernameTakenError,
)

if TYPE_CHECKING:  # the records the shop's CSV reader makes; db.py needs only their fields
    from shop_import import ShopBook, WalkRow

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The store


@dataclass(frozen=True)
class LoginStart:
    """A recorded login attempt, the user it names (None if none), and the times of earlier
    failures: this username from this address, this username from anywhere, this address."""

    attempt_id: int
    user: Row | None
    failures_by_user_and_address: list[int]
    failures_by_user: list[int]
    failures_by_address: list[int]


@dataclass(frozen=True)
class StoreConfig:
    """Pool, retry, session and lending settings; every limit has a safe default."""

    pool: PoolConfig = PoolConfig()
    session_ttl_s: int = 12 * 3600
    lending: rules.LendingPolicy = rules.HOUSE_RULES


class Store:
    """Waymark's data, with one method per thing the application does."""

    def __init__(self, database: Database, config: StoreConfig | None = None):
        self.database = database
        self.config = config or StoreConfig()

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

    def describe(self) -> str:
        """Which database and driver this store uses (no secrets)."""
        return self.database.describe()

    def ping(self) -> None:
        """Run a trivial query; raises if the database cannot answer it."""
        self.database.read(lambda tx: tx.value("SELECT 1"))

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

    # -- accounts -----------------------------------------------------------------------------

    def create_user(self, username: str, password_hash: str, now: int, role: str = "member") -> Row:
        """A new user; username_taken if the name exists ignoring case."""

        def work(tx: Tx) -> Row:
            user_id = self._insert_user(tx, username, password_hash, role, now)
            return {"id": user_id, "username": username, "role": role}

        try:
            return self.database.write(work)
        except DuplicateKeyError:
            raise UsernameTakenError(f"The username {username!r} is already taken.", {}) from None

    def make_admin(self, username: str, password_hash: str, now: int) -> tuple[Row, bool]:
        """Create an admin, or promote an existing user and set the password; (user, created)."""

        def work(tx: Tx) -> tuple[Row, bool]:
            key = rules.username_key(username)
            found = tx.row(
                f"SELECT id, username FROM users WHERE username_key = ?{tx.lock}", (key,)
            )
            if found:
                tx.run(
                    "UPDATE users SET role = 'admin', password_hash = ? WHERE id = ?",
                    (password_hash, found["id"]),
                )
                return {"id": found["id"], "username": found["username"], "role": "admin"}, False
            user_id = self._insert_user(tx, username, password_hash, "admin", now)
            return {"id": user_id, "username": username, "role": "admin"}, True

        return self.database.write(work)

    def _insert_user(self, tx: Tx, username: str, password_hash: str, role: str, now: int) -> int:
        _, user_id = tx.run(
            "INSERT INTO users (username, username_key, password_hash, role, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (username, rules.username_key(username), password_hash, role, now),
        )
        assert user_id is not None
        return user_id

    def start_login(self, username_key: str, address: str, now: int, keep_s: int) -> LoginStart:
        """Record a login attempt as failed until it succeeds, and read what the throttle needs.

        Recording before checking means parallel guesses all see each other, so they cannot
        slip past the throttle together. Attempts older than keep_s are forgotten here.
        """

        def work(tx: Tx) -> LoginStart:
            tx.run("DELETE FROM login_failures WHERE failed_at < ?", (now - keep_s,))
            _, attempt_id = tx.run(
                "INSERT INTO login_failures (username_key, address, failed_at) VALUES (?, ?, ?)",
                (username_key, address, now),
            )
            assert attempt_id is not None
            since = now - keep_s
            # Earlier failures in the window, this attempt left out: (username, address) pairs.
            failures = tx.rows(
                "SELECT username_key, address, failed_at FROM login_failures"
                " WHERE (username_key = ? OR address = ?) AND failed_at >= ? AND id <> ?"
                " ORDER BY failed_at",
                (username_key, address, since, attempt_id),
            )
            user = tx.row(
                "SELECT id, username, role, password_hash FROM users WHERE username_key = ?",
                (username_key,),
            )
            return LoginStart(
                attempt_id,
                user,
                failures_by_user_and_address=[
                    r["failed_at"]
                    for r in failures
                    if r["username_key"] == username_key and r["address"] == address
                ],
                failures_by_user=[
                    r["failed_at"] for r in failures if r["username_key"] == username_key
                ],
                failures_by_address=[r["failed_at"] for r in failures if r["address"] == address],
            )

        return self.database.write(work)

    def finish_login(
        self,
        attempt: LoginStart,
        username_key: str,
        token_hash: str | None,
        now: int,
        new_password_hash: str | None = None,
        end_sessions: bool = False,
    ) -> int | None:
        """End a login: with a token, clear the name's failures, store the session (returns its
        expiry) and, if given, replace the password hash (a cost upgrade, or with end_sessions
        a change of password that ends every other session); without one, forget an attempt
        refused before its password was checked. A wrong password needs no call: its attempt
        stays recorded as a failure. None, and nothing stored, if the password changed since
        start_login read it (the password just proven is no longer the member's)."""
        expires_at = now + self.config.session_ttl_s

        def work(tx: Tx) -> int | None:
            if token_hash is None or attempt.user is None:
                tx.run("DELETE FROM login_failures WHERE id = ?", (attempt.attempt_id,))
                return None
            # Writing the member's row orders this against a change of password on any node.
            # A concurrent cost upgrade also changes the hash; that rare login is just refused.
            claimed, _ = tx.run(
                "UPDATE users SET version = version + 1, password_hash = COALESCE(?, password_hash)"
                " WHERE id = ? AND password_hash = ?",
                (new_password_hash, attempt.user["id"], attempt.user["password_hash"]),
            )
            if claimed != 1:
                return None
            tx.run("DELETE FROM login_failures WHERE username_key = ?", (username_key,))
            if end_sessions:
                tx.run("DELETE FROM sessions WHERE user_id = ?", (attempt.user["id"],))
            self._insert_session(tx, attempt.user["id"], token_hash, now, expires_at)
            return expires_at

        return self.database.write(work)

    def create_session(self, user_id: int, token_hash: str, now: int) -> int:
        """Store a session by the hash of its token; returns its expiry."""
        expires_at = now + self.config.session_ttl_s
        self.database.write(
            lambda tx: self._insert_session(tx, user_id, token_hash, now, expires_at)
        )
        return expires_at

    def _insert_session(
        self, tx: Tx, user_id: int, token_hash: str, now: int, expires_at: int
    ) -> None:
        tx.run("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        tx.run(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (token_hash, user_id, now, expires_at),
        )

    def session_user(self, token_hash: str, now: int, causal: bool = False) -> Row | None:
        """The user of an unexpired session (with its expires_at), or None.

        causal: also see a session made a moment ago through another cluster node (resume).
        """
        return self.database.read(
            lambda tx: tx.row(
                f"{tx.causal if causal else ''}SELECT u.id, u.username, u.role, s.expires_at"
                " FROM sessions s JOIN users u ON u.id = s.user_id"
                " WHERE s.token_hash = ? AND s.expires_at > ?",
                (token_hash, now),
            )
        )

    def end_session(self, token_hash: str) -> None:
        """Delete a session so its token stops working."""
        self.database.write(
            lambda tx: tx.run("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
        )

    # -- shop: walks ----------------------------------------------------------------------------

    def list_areas(self) -> list[Row]:
        """Each area with its number of walks, sorted by area."""
        return self.database.read(
            lambda tx: tx.rows(
                "SELECT MIN(area) AS area, COUNT(*) AS walks FROM walks"
                " GROUP BY area_key ORDER BY area_key"
            )
        )

    def search_walks(
        self,
        area_key: str | None,
        min_distance: float | None,
        max_distance: float | None,
        difficulty: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Row], int]:
        """One page of matching walks and the count of all matches."""
        filters = [
            ("w.area_key LIKE ? ESCAPE '!'", f"%{_escape_like(area_key)}%" if area_key else None),
            ("w.distance_miles >= ?", min_distance),
            ("w.distance_miles <= ?", max_distance),
            ("w.difficulty = ?", difficulty or None),
        ]
        where = " AND ".join(["1 = 1"] + [sql for sql, value in filters if value is not None])
        params = [value for _, value in filters if value is not None]

        def work(tx: Tx) -> tuple[list[Row], int]:
            total = tx.value(f"SELECT COUNT(*) FROM walks w WHERE {where}", params)
            found = tx.rows(
                "SELECT w.id, w.name, w.area, w.area_key, w.distance_miles, w.difficulty, w.page,"
                " w.ascent_m, w.time_hours, w.route_type, w.start_grid_ref,"
                " b.number, b.title, b.price_pence, b.in_stock"
                f" FROM walks w JOIN shop_books b ON b.number = w.book_number WHERE {where}"
                " ORDER BY w.area_key, w.distance_miles, w.name_key, w.id LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
            return [_walk(r) for r in found], int(total)

        return self.database.read(work)

    def shop_books(self) -> list[Row]:
        """Every guide book for sale: number, title, price_pence, in_stock."""
        return self.database.read(
            lambda tx: tx.rows(
                "SELECT number, title, price_pence, in_stock FROM shop_books ORDER BY number"
            )
        )

    def import_walks(self, books: Sequence[ShopBook], walks: Sequence[WalkRow]) -> dict[str, int]:
        """Add or update guide books and walks (matched by book and walk name); idempotent."""

        def work(tx: Tx) -> dict[str, int]:
            books_changed = self._upsert_shop_books(tx, books)
            known = {
                r["title"]: r["number"] for r in tx.rows("SELECT number, title FROM shop_books")
            }
            return {"books": books_changed, **self._upsert_walks(tx, walks, known)}

        return self.database.write(work)

    def _upsert_shop_books(self, tx: Tx, books: Iterable[ShopBook]) -> int:
        changed = 0
        for book in books:
            existing = tx.row(
                f"SELECT title, price_pence FROM shop_books WHERE number = ?{tx.lock}",
                (book.number,),
            )
            if existing is None:
                tx.run(
                    "INSERT INTO shop_books (number, title, title_key, price_pence, in_stock)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        book.number,
                        book.title,
                        rules.match_key(book.title),
                        book.price_pence,
                        book.in_stock,
                    ),
                )
                changed += 1
            elif (existing["title"], existing["price_pence"]) != (book.title, book.price_pence):
                # Re-importing updates titles and prices but never touches live stock.
                tx.run(
                    "UPDATE shop_books SET title = ?, title_key = ?, price_pence = ? WHERE number = ?",
                    (book.title, rules.match_key(book.title), book.price_pence, book.number),
                )
                changed += 1
        return changed

    def _upsert_walks(
        self, tx: Tx, walks: Iterable[WalkRow], book_numbers: dict[str, int]
    ) -> dict[str, int]:
        by_title_key = {rules.match_key(title): number for title, number in book_numbers.items()}
        added = updated = 0
        for walk in walks:
            number = by_title_key[rules.match_key(walk.book_title)]
            values = (
                walk.name, rules.match_key(walk.area), walk.area, walk.distance_miles,
                walk.difficulty, walk.page, walk.ascent_m, walk.time_hours, walk.route_type,
                walk.start_grid_ref,
            )  # fmt: skip
            existing = tx.row(
                "SELECT id, name, area_key, area, distance_miles, difficulty, page, ascent_m,"
                f" time_hours, route_type, start_grid_ref FROM walks"
                f" WHERE book_number = ? AND name_key = ?{tx.lock}",
                (number, rules.match_key(walk.name)),
            )
            if existing is None:
                tx.run(
                    "INSERT INTO walks (name, area_key, area, distance_miles, difficulty, page,"
                    " ascent_m, time_hours, route_type, start_grid_ref, name_key, book_number)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, rules.match_key(walk.name), number),
                )
                added += 1
            elif _walk_values(existing) != values:
                tx.run(
                    "UPDATE walks SET name = ?, area_key = ?, area = ?, distance_miles = ?,"
                    " difficulty = ?, page = ?, ascent_m = ?, time_hours = ?, route_type = ?,"
                    " start_grid_ref = ? WHERE id = ?",
                    (*values, existing["id"]),
                )
                updated += 1
        return {"walks_added": added, "walks_updated": updated}

    # -- shop: orders ---------------------------------------------------------------------------

    def place_order(self, user_id: int, requested: dict[int, int], now: int) -> Row:
        """Sell what is in stock and back-order the rest, all or nothing, under row locks."""
        numbers = sorted(requested)

        def work(tx: Tx) -> Row:
            # The customer's row first: their concurrent orders queue here (or, on another
            # Galera node, fail certification and are retried), so the per-customer total
            # read below cannot change before this order commits.
            self._claim_member(tx, user_id)
            already = {
                r["book_number"]: int(r["copies"])
                for r in tx.rows(
                    "SELECT l.book_number, SUM(l.quantity - l.backorder_cancelled) AS copies"
                    " FROM order_lines l JOIN orders o ON o.id = l.order_id"
                    f" WHERE o.user_id = ? AND l.book_number IN ({placeholders(len(numbers))})"
                    " GROUP BY l.book_number",
                    (user_id, *numbers),
                )
            }
            rules.check_copy_limits(requested, already)
            self._claim_books(tx, numbers)
            books = {
                r["number"]: r
                for r in tx.rows(
                    "SELECT number, title, price_pence, in_stock FROM shop_books"
                    f" WHERE number IN ({placeholders(len(numbers))}) ORDER BY number{tx.lock}",
                    numbers,
                )
            }
            missing = [n for n in numbers if n not in books]
            if missing:
                raise NotFoundError(f"No guide book numbered {missing[0]}.", {"book": missing[0]})
            lines = []
            for number, quantity in requested.items():
                book = books[number]
                fulfilled, backordered = rules.split_fulfilment(quantity, book["in_stock"])
                book["in_stock"] -= fulfilled
                lines.append((book, quantity, fulfilled, backordered))
            pricing = rules.price_order((q, b["price_pence"]) for b, q, _, _ in lines)
            _, order_id = tx.run(
                "INSERT INTO orders (user_id, created_at, subtotal_pence, discount_pence, total_pence)"
                " VALUES (?, ?, ?, ?, ?)",
                (user_id, now, pricing.subtotal_pence, pricing.discount_pence, pricing.total_pence),
            )
            for book, quantity, fulfilled, backordered in lines:
                if fulfilled:
                    # The WHERE clause is a second guard: stock can never go below zero.
                    changed, _ = tx.run(
                        "UPDATE shop_books SET in_stock = in_stock - ? WHERE number = ? AND in_stock >= ?",
                        (fulfilled, book["number"], fulfilled),
                    )
                    if changed != 1:
                        raise RuntimeError(f"stock of book {book['number']} changed under a lock")
                tx.run(
                    "INSERT INTO order_lines (order_id, book_number, quantity, fulfilled,"
                    " backordered, backorder_outstanding, unit_price_pence)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (order_id, book["number"], quantity, fulfilled, backordered, backordered,
                     book["price_pence"]),
                )  # fmt: skip
            assert order_id is not None
            return self._orders(tx, "o.id = ?", (order_id,))[0]

        return self.database.write(work)

    def orders_for(self, user_id: int) -> list[Row]:
        """This user's orders, newest first, with back orders still outstanding per line."""
        return self.database.read(
            lambda tx: self._orders(tx, "o.user_id = ?", (user_id,), causal=True)
        )

    def cancel_backorder(self, user_id: int, order_id: int, number: int) -> tuple[Row, int]:
        """Cancel a book's copies still owed on this member's order; (the order repriced, refund)."""

        def work(tx: Tx) -> tuple[Row, int]:
            self._owned(tx, "orders", order_id, user_id, "id")
            # The locks of buy and restock, in their order: the member's row (their copy limit),
            # the book's stock row (a restock supplying this line), then the line itself.
            self._claim_member(tx, user_id)
            self._claim_books(tx, [number])
            owed = tx.value(
                "SELECT backorder_outstanding FROM order_lines"
                f" WHERE order_id = ? AND book_number = ?{tx.lock}",
                (order_id, number),
            )
            if owed is None:
                raise NotFoundError(
                    f"Order {order_id} has no copies of book {number}.", {"book": number}
                )
            if owed == 0:
                raise ConflictError(
                    f"No copies of book {number} are still owed on order {order_id}."
                )
            # MySQL assigns left to right: the owed copies are added before they are zeroed.
            tx.run(
                "UPDATE order_lines SET backorder_cancelled = backorder_cancelled"
                " + backorder_outstanding, backorder_outstanding = 0"
                " WHERE order_id = ? AND book_number = ?",
                (order_id, number),
            )
            order = self._orders(tx, "o.id = ?", (order_id,))[0]
            pricing, refund = rules.reprice_cancelled(
                order["total_pence"],
                [
                    (r["quantity"], r["backorder_cancelled"], r["unit_price_pence"])
                    for r in order["lines"]
                ],
            )
            tx.run(
                "UPDATE orders SET subtotal_pence = ?, discount_pence = ?, total_pence = ? WHERE id = ?",
                (pricing.subtotal_pence, pricing.discount_pence, pricing.total_pence, order_id),
            )
            return {**order, **asdict(pricing)}, refund

        return self.database.write(work)

    def _orders(self, tx: Tx, where: str, params: Sequence[Any], causal: bool = False) -> list[Row]:
        # causal: a member's own list must show the order they just placed through another node.
        found = tx.rows(
            f"{tx.causal if causal else ''}SELECT o.id AS order_id, o.created_at, o.subtotal_pence, o.discount_pence,"
            " o.total_pence, l.book_number, b.title, l.quantity, l.fulfilled, l.backordered,"
            " l.backorder_outstanding, l.backorder_cancelled, l.unit_price_pence"
            " FROM orders o JOIN order_lines l ON l.order_id = o.id"
            " JOIN shop_books b ON b.number = l.book_number"
            f" WHERE {where} ORDER BY o.id DESC, l.id",
            params,
        )
        orders: dict[int, Row] = {}
        order_columns = ("created_at", "subtotal_pence", "discount_pence", "total_pence")
        for r in found:
            order = orders.setdefault(
                r["order_id"],
                {"id": r["order_id"], **{k: r[k] for k in order_columns}, "lines": []},
            )
            order["lines"].append({k: v for k, v in r.items() if k not in order_columns})
        return list(orders.values())

    def restock(self, number: int, quantity: int) -> Row:
        """Supply outstanding back orders oldest first, then add the rest to stock."""

        def work(tx: Tx) -> Row:
            self._claim_books(tx, [number])
            book = tx.row(
                f"SELECT number, title, in_stock FROM shop_books WHERE number = ?{tx.lock}",
                (number,),
            )
            if book is None:
                raise NotFoundError(f"No guide book numbered {number}.", {"book": number})
            outstanding = tx.rows(
                "SELECT id, order_id, backorder_outstanding FROM order_lines"
                " WHERE book_number = ? AND backorder_outstanding > 0"
                f" ORDER BY order_id, id{tx.lock}",
                (number,),
            )
            fills, left = rules.allocate_restock(
                quantity, [(r["id"], r["backorder_outstanding"]) for r in outstanding]
            )
            order_of = {r["id"]: r["order_id"] for r in outstanding}
            for line_id, copies in fills:
                tx.run(
                    "UPDATE order_lines SET backorder_outstanding = backorder_outstanding - ?"
                    " WHERE id = ?",
                    (copies, line_id),
                )
            tx.run("UPDATE shop_books SET in_stock = in_stock + ? WHERE number = ?", (left, number))
            return {
                "book": {**book, "in_stock": book["in_stock"] + left},
                "backorders_filled": [
                    {"order_id": order_of[line_id], "quantity": copies} for line_id, copies in fills
                ],
            }

        return self.database.write(work)

    # -- lending: catalogue ----------------------------------------------------------------------

    def catalogue(
        self, query_key: str | None, limit: int, offset: int, now: int
    ) -> tuple[list[Row], int]:
        """Lending books whose title or authors hold every word, sorted by title, and the count."""
        # Every word must appear somewhere in the title or authors, as Open Library matches.
        words = query_key.split() if query_key else []
        where = " AND ".join(["1 = 1"] + ["b.search_key LIKE ? ESCAPE '!'"] * len(words))
        params: list[Any] = [f"%{_escape_like(word)}%" for word in words]

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

    # -- lending: circulation --------------------------------------------------------------------

    def lend_copy(self, user_id: int, book_id: int, now: int) -> Row:
        """Lend a copy: the member's kept copy if a hold is ready, else a free one."""

        def work(tx: Tx) -> Row:
            # Lock order everywhere: the member (their cap on active loans), then the book.
            self._claim_member(tx, user_id)
            book = self._lock_book(tx, book_id)
            self._settle_holds(tx, book_id, now)
            if tx.value(
                "SELECT id FROM loans WHERE book_id = ? AND active_user_id = ?", (book_id, user_id)
            ):
                raise ConflictError(f"You already have {book['title']!r} on loan.")
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

        def work(tx: Tx) -> Row:
            loan = self._lock_active_loan(tx, user_id, loan_id)
            tx.run(
                "UPDATE loans SET returned_at = ?, active_user_id = NULL WHERE id = ?",
                (now, loan_id),
            )
            self._settle_holds(tx, loan["book_id"], now)
            return self._loan(tx, loan_id)

        return self.database.write(work)

    def renew_loan(self, user_id: int, loan_id: int, now: int) -> Row:
        """Extend a loan unless another member is waiting or it was renewed twice."""

        def work(tx: Tx) -> Row:
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
                f"{tx.causal}{LOAN_SELECT} WHERE l.user_id = ? ORDER BY l.id DESC", (user_id,)
            )
        )
        return [decode_loan(r) for r in found]

    def place_hold(self, user_id: int, book_id: int, now: int) -> Row:
        """Join a book's queue; only when no copy is free to borrow."""

        def work(tx: Tx) -> Row:
            book = self._lock_book(tx, book_id)
            self._settle_holds(tx, book_id, now)
            if tx.value(
                "SELECT id FROM loans WHERE book_id = ? AND active_user_id = ?", (book_id, user_id)
            ):
                raise ConflictError(f"You already have {book['title']!r} on loan.")
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

    def _claim_member(self, tx: Tx, user_id: int) -> None:
        """Write the member's row: it serialises their orders and loans, on every node."""
        tx.run("UPDATE users SET version = version + 1 WHERE id = ?", (user_id,))

    def _claim_books(self, tx: Tx, numbers: Sequence[int]) -> None:
        """Write guide books' stock rows, which serialise their sales, back orders and restocks,
        in number order in every transaction, so that two of them queue instead of deadlocking."""
        tx.run(
            f"UPDATE shop_books SET version = version + 1 WHERE number IN ({placeholders(len(numbers))})",
            sorted(numbers),
        )

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

    def _lock_active_loan(self, tx: Tx, user_id: int, loan_id: int) -> Row:
        """This member's unreturned loan, read under its book's lock."""
        columns = "book_id, due_at, returned_at, renewals"
        self._lock_book(tx, self._owned(tx, "loans", loan_id, user_id, columns)["book_id"])
        # Read again under the book's lock: under READ COMMITTED the first read may predate
        # a return or renewal that committed while this transaction waited for the lock.
        loan = self._owned(tx, "loans", loan_id, user_id, columns)
        if loan["returned_at"] is not None:
            raise ConflictError(f"Loan {loan_id} was already returned.")
        return loan

    def _owned(self, tx: Tx, table: str, row_id: int, user_id: int, columns: str) -> Row:
        """A loan, hold or order of this member (table is a constant); else not_found or forbidden."""
        noun = table.removesuffix("s")
        found = tx.row(f"SELECT user_id, {columns} FROM {table} WHERE id = ?", (row_id,))
        if found is None:
            raise NotFoundError(f"No {noun} numbered {row_id}.", {f"{noun}_id": row_id})
        if found["user_id"] != user_id:
            raise ForbiddenError(f"{noun.capitalize()} {row_id} belongs to another member.")
        return found

    def _free_copies(self, tx: Tx, book_id: int, copies: int, now: int) -> int:
        on_loan = tx.value(
            "SELECT COUNT(*) FROM loans WHERE book_id = ? AND returned_at IS NULL", (book_id,)
        )
        kept = tx.value(
            "SELECT COUNT(*) FROM holds WHERE book_id = ? AND ended_at IS NULL AND ready_until > ?",
            (book_id, now),
        )
        return rules.free_copies(copies, int(on_loan), int(kept))

    def _settle_holds(self, tx: Tx, book_id: int, now: int) -> None:
        """Expire reservations not collected in time, then keep free copies for the queue."""
        tx.run(
            "UPDATE holds SET ended_at = ?, end_reason = 'expired', active_user_id = NULL"
            " WHERE book_id = ? AND ended_at IS NULL AND ready_until IS NOT NULL AND ready_until <= ?",
            (now, book_id, now),
        )
        copies = tx.value("SELECT copies FROM lending_books WHERE id = ?", (book_id,))
        free = self._free_copies(tx, book_id, int(copies), now)
        if free <= 0:
            return
        waiting = tx.rows(
            "SELECT id FROM holds WHERE book_id = ? AND ended_at IS NULL AND ready_until IS NULL"
            " ORDER BY id LIMIT ?",
            (book_id, free),
        )
        ready_until = rules.to_seconds(rules.from_seconds(now) + self.config.lending.hold_kept_for)
        for hold in waiting:
            tx.run("UPDATE holds SET ready_until = ? WHERE id = ?", (ready_until, hold["id"]))

    def _loan(self, tx: Tx, loan_id: int) -> Row:
        found = tx.row(f"{LOAN_SELECT} WHERE l.id = ?", (loan_id,))
        assert found is not None
        return decode_loan(found)

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


def _escape_like(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


def _walk_values(r: Row) -> tuple[Any, ...]:
    return (
        r["name"], r["area_key"], r["area"], float(r["distance_miles"]), r["difficulty"], r["page"],
        r["ascent_m"], None if r["time_hours"] is None else float(r["time_hours"]),
        r["route_type"], r["start_grid_ref"],
    )  # fmt: skip


def _walk(r: Row) -> Row:
    # MySQL answers DECIMAL columns as Decimal; the wire wants plain numbers.
    return {
        **r,
        "distance_miles": _number(r["distance_miles"]),
        "time_hours": _number(r["time_hours"]),
    }


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


LOAN_SELECT = (
    "SELECT l.id, l.book_id, b.title, b.authors, l.borrowed_at, l.due_at, l.returned_at,"
    " l.renewals, l.user_id, u.username FROM loans l"
    " JOIN lending_books b ON b.id = l.book_id JOIN users u ON u.id = l.user_id"
)


def decode_loan(r: Row) -> Row:
    """A loan row with its authors as a list."""
    return {**r, "authors": json.loads(r["authors"])}
