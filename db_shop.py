"""The shop's part of the Store: walks, guide books, orders, back orders, restocks, sales."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import notice_texts
import rules
from db_base import StoreBase
from engine import Row, Tx, placeholders
from errors import ConflictError, NotFoundError

if TYPE_CHECKING:  # the records the shop's CSV reader makes; the store needs only their fields
    from shop_import import ShopBook, WalkRow

# The copies of an order line the customer still wants: back-ordered copies they cancelled
# are neither sold, owed, priced nor counted against their limit.
_KEPT = "(l.quantity - l.backorder_cancelled)"


class ShopStore(StoreBase):
    """The guide books, the walks they describe, and what customers order of them."""

    # -- walks and guide books ----------------------------------------------------------------

    def list_areas(self) -> list[Row]:
        """Each area with its number of walks, sorted by area."""
        return self.database.read(
            lambda tx: tx.rows(
                "SELECT MIN(area) AS area, COUNT(*) AS walks FROM walks"
                " GROUP BY area_key ORDER BY area_key"
            )
        )

    def walks(self) -> list[Row]:
        """Every walk with its guide book, by area, distance and name; snapshot.py filters them."""
        found = self.database.read(
            lambda tx: tx.rows(
                "SELECT w.id, w.name, w.area, w.area_key, w.distance_miles, w.difficulty, w.page,"
                " w.ascent_m, w.time_hours, w.route_type, w.start_grid_ref,"
                " b.number, b.title, b.price_pence, b.in_stock"
                " FROM walks w JOIN shop_books b ON b.number = w.book_number"
                " ORDER BY w.area_key, w.distance_miles, w.name_key, w.id"
            )
        )
        return [_walk(r) for r in found]

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

    # -- orders ---------------------------------------------------------------------------

    def place_order(self, user_id: int, requested: dict[int, int], now: int) -> Row:
        """Sell what is in stock and back-order the rest, all or nothing, under row locks."""
        numbers = sorted(requested)

        def work(tx: Tx) -> Row:
            # The customer's row first: their concurrent orders queue here (or, on another
            # Galera node, fail certification and are retried), so the per-customer total
            # read below cannot change before this order commits.
            self._claim_active_member(tx, user_id)
            already = {
                r["book_number"]: int(r["copies"])
                for r in tx.rows(
                    f"SELECT l.book_number, SUM({_KEPT}) AS copies"
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
            receipt = notice_texts.order_placed(
                order_id,
                pricing.total_pence,
                copies=sum(quantity for _, quantity, _, _ in lines),
                backordered=sum(backordered for _, _, _, backordered in lines),
            )
            self._notify(tx, user_id, "order_placed", str(order_id), receipt, now)
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

    def restock(self, number: int, quantity: int, now: int) -> Row:
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
                "SELECT l.id, l.order_id, o.user_id, l.backorder_outstanding FROM order_lines l"
                " JOIN orders o ON o.id = l.order_id"
                " WHERE l.book_number = ? AND l.backorder_outstanding > 0"
                f" ORDER BY l.order_id, l.id{tx.lock}",
                (number,),
            )
            fills, left = rules.allocate_restock(
                quantity, [(r["id"], r["backorder_outstanding"]) for r in outstanding]
            )
            line_of = {r["id"]: r for r in outstanding}
            order_of = {r["id"]: r["order_id"] for r in outstanding}
            for line_id, copies in fills:
                tx.run(
                    "UPDATE order_lines SET backorder_outstanding = backorder_outstanding - ?"
                    " WHERE id = ?",
                    (copies, line_id),
                )
                line = line_of[line_id]
                text = notice_texts.backorder_filled(
                    line["order_id"], number, book["title"], copies
                )
                # One notice per supply: the copies still owed after it tell the fills apart.
                cause = f"{line_id}:{line['backorder_outstanding'] - copies}"
                self._notify(tx, line["user_id"], "backorder_filled", cause, text, now)
            tx.run("UPDATE shop_books SET in_stock = in_stock + ? WHERE number = ?", (left, number))
            return {
                "book": {**book, "in_stock": book["in_stock"] + left},
                "backorders_filled": [
                    {"order_id": order_of[line_id], "quantity": copies} for line_id, copies in fills
                ],
            }

        return self.database.write(work)

    # -- the administrator's reports ------------------------------------------------------------

    def outstanding_backorders(self) -> list[Row]:
        """Every order line still waiting for copies, oldest first."""
        return self.database.read(
            lambda tx: tx.rows(
                "SELECT l.order_id, o.created_at, u.username, l.book_number, b.title,"
                " l.backorder_outstanding FROM order_lines l"
                " JOIN orders o ON o.id = l.order_id JOIN users u ON u.id = o.user_id"
                " JOIN shop_books b ON b.number = l.book_number"
                " WHERE l.backorder_outstanding > 0 ORDER BY l.order_id, l.id"
            )
        )

    def sales(self, since: int | None, until: int | None) -> tuple[Row, list[Row]]:
        """The totals of the orders placed from `since` (inclusive) to `until` (exclusive), in UTC
        seconds, and per book, by number; either bound may be open. Copies cancelled are left out,
        and so is an order or a book with nothing left but cancelled copies."""
        bounds = [("o.created_at >= ?", since), ("o.created_at < ?", until)]
        window = " AND ".join(
            [f"{_KEPT} > 0"] + [sql for sql, value in bounds if value is not None]
        )
        params = [value for _, value in bounds if value is not None]

        def work(tx: Tx) -> tuple[Row, list[Row]]:
            totals = tx.row(
                "SELECT COUNT(*) AS orders, COALESCE(SUM(t.subtotal_pence), 0) AS subtotal_pence,"
                " COALESCE(SUM(t.discount_pence), 0) AS discount_pence,"
                " COALESCE(SUM(t.total_pence), 0) AS total_pence FROM orders t WHERE t.id IN"
                f" (SELECT l.order_id FROM order_lines l JOIN orders o ON o.id = l.order_id WHERE {window})",
                params,
            )
            books = tx.rows(
                f"SELECT l.book_number AS number, b.title, SUM({_KEPT}) AS copies_ordered,"
                f" SUM({_KEPT} - l.backorder_outstanding) AS copies_sent,"
                " SUM(l.backorder_outstanding) AS backorder_outstanding,"
                f" SUM({_KEPT} * l.unit_price_pence) AS line_total_pence"
                " FROM order_lines l JOIN orders o ON o.id = l.order_id"
                f" JOIN shop_books b ON b.number = l.book_number WHERE {window}"
                " GROUP BY l.book_number, b.title ORDER BY l.book_number",
                params,
            )
            assert totals is not None
            return totals, books

        return self.database.read(work)

    def _claim_books(self, tx: Tx, numbers: Sequence[int]) -> None:
        """Write guide books' stock rows, which serialise their sales, back orders and restocks,
        in number order in every transaction, so that two of them queue instead of deadlocking."""
        tx.run(
            f"UPDATE shop_books SET version = version + 1 WHERE number IN ({placeholders(len(numbers))})",
            sorted(numbers),
        )


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
