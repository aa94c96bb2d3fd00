"""The administrator's read-only reports (back orders, overdue loans, sales): SQL beside db.py's."""

from __future__ import annotations

from db import LOAN_SELECT, decode_loan
from engine import Database, Row, Tx

# The copies of an order line the customer still wants: back-ordered copies they cancelled
# are neither sold, owed nor priced.
_KEPT = "(l.quantity - l.backorder_cancelled)"


def outstanding_backorders(database: Database) -> list[Row]:
    """Every order line still waiting for copies, oldest first."""
    return database.read(
        lambda tx: tx.rows(
            "SELECT l.order_id, o.created_at, u.username, l.book_number, b.title,"
            " l.backorder_outstanding FROM order_lines l"
            " JOIN orders o ON o.id = l.order_id JOIN users u ON u.id = o.user_id"
            " JOIN shop_books b ON b.number = l.book_number"
            " WHERE l.backorder_outstanding > 0 ORDER BY l.order_id, l.id"
        )
    )


def overdue_loans(database: Database, now: int) -> list[Row]:
    """Every loan past its due date at `now` and not returned, the longest overdue first."""
    found = database.read(
        lambda tx: tx.rows(
            f"{LOAN_SELECT} WHERE l.returned_at IS NULL AND l.due_at < ? ORDER BY l.due_at, l.id",
            (now,),
        )
    )
    return [decode_loan(r) for r in found]


def sales(database: Database, since: int | None, until: int | None) -> tuple[Row, list[Row]]:
    """The totals of the orders placed from `since` (inclusive) to `until` (exclusive), in UTC
    seconds, and per book, by number; either bound may be open. Copies cancelled are left out,
    and so is an order or a book with nothing left but cancelled copies."""
    bounds = [("o.created_at >= ?", since), ("o.created_at < ?", until)]
    window = " AND ".join([f"{_KEPT} > 0"] + [sql for sql, value in bounds if value is not None])
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

    return database.read(work)
