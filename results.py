"""The wire's result shapes: each command's answer declared, with the rows shaped into it.

The store answers in plain values (UTC seconds, flat rows); this is where they become ISO-8601
strings with a Z, nested book objects and the fields each command's answer promises. Each row
of protocol.COMMANDS names its answer's shape here (`result`), and a test holds every answer
to its shape's keys.
"""

from __future__ import annotations

from typing import Any, TypedDict

import rules

Row = dict[str, Any]

_WALK_EXTRAS = ("ascent_m", "time_hours", "route_type", "start_grid_ref")


def iso(timestamp: int | None) -> str | None:
    """UTC seconds as an ISO-8601 string with a Z suffix."""
    if timestamp is None:
        return None
    return rules.from_seconds(timestamp).strftime("%Y-%m-%dT%H:%M:%SZ")


def walk(r: Row) -> Row:
    """A Walk, with its guide book; the optional route details only where known."""
    shaped = {
        "id": r["id"],
        "name": r["name"],
        "area": r["area"],
        "distance_miles": r["distance_miles"],
        "difficulty": r["difficulty"],
        "page": r["page"],
        "book": {
            "number": r["number"],
            "title": r["title"],
            "price_pence": r["price_pence"],
            "in_stock": r["in_stock"],
        },
    }
    shaped.update({k: r[k] for k in _WALK_EXTRAS if r[k] is not None})
    return shaped


def recommendation(walks: list[Row]) -> Row:
    """A guide book with the matching walks it covers, from the Walks of that book."""
    return {
        "book": walks[0]["book"],
        "matching_walks": len(walks),
        "walks": [{k: v for k, v in w.items() if k != "book"} for w in walks],
    }


def order(r: Row) -> Row:
    """An Order with its lines, each with its back orders outstanding and cancelled, and the
    line total over the copies not cancelled (so the lines add up to the subtotal)."""
    return {
        "id": r["id"],
        "created_at": iso(r["created_at"]),
        "lines": [
            {
                "book": {"number": line["book_number"], "title": line["title"]},
                "quantity": line["quantity"],
                "fulfilled": line["fulfilled"],
                "backordered": line["backordered"],
                "backorder_outstanding": line["backorder_outstanding"],
                "backorder_cancelled": line["backorder_cancelled"],
                "unit_price_pence": line["unit_price_pence"],
                "line_total_pence": (line["quantity"] - line["backorder_cancelled"])
                * line["unit_price_pence"],
            }
            for line in r["lines"]
        ],
        "subtotal_pence": r["subtotal_pence"],
        "discount_pence": r["discount_pence"],
        "total_pence": r["total_pence"],
    }


def backorder(r: Row) -> Row:
    """One order line still waiting for copies, for the librarian's list."""
    return {
        "order_id": r["order_id"],
        "created_at": iso(r["created_at"]),
        "username": r["username"],
        "book": {"number": r["book_number"], "title": r["title"]},
        "outstanding": r["backorder_outstanding"],
    }


def loan(r: Row, now: int) -> Row:
    """A Loan, with whether (and by how many days) it is overdue at `now`."""
    late = (
        0
        if r["returned_at"] is not None
        else rules.days_overdue(rules.from_seconds(r["due_at"]), rules.from_seconds(now))
    )
    return {
        "id": r["id"],
        "book": {"id": r["book_id"], "title": r["title"], "authors": r["authors"]},
        "borrowed_at": iso(r["borrowed_at"]),
        "due_at": iso(r["due_at"]),
        "returned_at": iso(r["returned_at"]),
        "renewals": r["renewals"],
        "overdue": late > 0,
        "days_overdue": late,
    }


def overdue_loan(r: Row, now: int) -> Row:
    """A Loan with the member who has it (the overdue report, a check-in at the desk)."""
    return {**loan(r, now), "member": {"id": r["user_id"], "username": r["username"]}}


def sales(totals: Row, books: list[Row]) -> Row:
    """The sales report: order totals, then each book's copies and takings."""
    counts = ("copies_ordered", "copies_sent", "backorder_outstanding", "line_total_pence")
    # int(): MySQL answers a SUM() of integers as a Decimal.
    return {
        **{k: int(v) for k, v in totals.items()},
        "books": [
            {"number": b["number"], "title": b["title"], **{k: int(b[k]) for k in counts}}
            for b in books
        ],
    }


def hold(r: Row) -> Row:
    """A new hold: its place in the queue."""
    return {
        "id": r["id"],
        "book": {"id": r["book_id"], "title": r["title"]},
        "position": r["position"],
        "created_at": iso(r["created_at"]),
    }


def waiting_hold(r: Row, now: int) -> Row:
    """A hold in the member's list: also whether a copy is kept for them, and until when."""
    ready = r["ready_until"] is not None and r["ready_until"] > now
    return {**hold(r), "ready": ready, "ready_until": iso(r["ready_until"])}


# ---------------------------------------------------------------------------------------------
# Each command's answer, as protocol.COMMANDS names it. Values are the wire objects above.


class Empty(TypedDict):
    """Nothing to say beyond success."""


class Hello(TypedDict):
    server: str
    version: str
    protocol: int


class Health(TypedDict):
    status: str
    database: bool
    uptime_s: int
    version: str
    pid: int


class Stats(TypedDict):
    connections: int
    requests: dict[str, int]
    errors: dict[str, int]
    uptime_s: int
    notices: dict[str, int]  # emails pending and failed


class UserAnswer(TypedDict):
    user: Row


class _Session(TypedDict):
    token: str
    user: Row


class LoggedIn(_Session, total=False):
    must_change_password: bool  # only when a temporary password must be changed first


class NewToken(TypedDict):
    token: str


class Areas(TypedDict):
    areas: list[Row]


class WalkPage(TypedDict):
    walks: list[Row]
    total: int


class GuideBooks(TypedDict):
    books: list[Row]


class Recommendations(TypedDict):
    books: list[Row]


class OrderAnswer(TypedDict):
    order: Row


class Orders(TypedDict):
    orders: list[Row]


class Refund(TypedDict):
    order: Row
    refund_pence: int


class Sales(TypedDict):
    orders: int
    subtotal_pence: int
    discount_pence: int
    total_pence: int
    books: list[Row]


class Restocked(TypedDict):
    book: Row
    backorders_filled: list[Row]


class Backorders(TypedDict):
    backorders: list[Row]


class _BookHits(TypedDict):
    results: list[Row]
    source: str


class BookSearch(_BookHits, total=False):
    warning: str  # only when the answer is not Open Library's own, fresh


class CataloguePage(TypedDict):
    books: list[Row]
    total: int


class BookAnswer(TypedDict):
    book: Row


class LoanAnswer(TypedDict):
    loan: Row


class Loans(TypedDict):
    loans: list[Row]


class HoldAnswer(TypedDict):
    hold: Row


class Holds(TypedDict):
    holds: list[Row]


class NoticeList(TypedDict):
    notices: list[Row]
    unread: int


class Unread(TypedDict):
    unread: int


class SweepCounts(TypedDict):
    created: dict[str, int]


class MemberPage(TypedDict):
    members: list[Row]
    total: int


class MemberFile(TypedDict):
    user: Row
    loans: list[Row]
    holds: list[Row]
    orders: list[Row]


class TemporaryPassword(TypedDict):
    temporary_password: str


class MyData(TypedDict):
    user: Row
    loans: list[Row]
    holds: list[Row]
    orders: list[Row]
    notices: list[Row]


def notice(r: Row) -> Row:
    """A Notice: what the member was told, whether they read it, whether it was emailed."""
    return {
        "id": r["id"],
        "kind": r["kind"],
        "created_at": iso(r["created_at"]),
        "subject": r["subject"],
        "body": r["body"],
        "read": r["read_at"] is not None,
        "emailed": r["emailed_at"] is not None,
        "details": r["details"],
    }


def member(r: Row) -> Row:
    """A Member as the desk sees them; blocked_reason only while blocked."""
    shaped = {
        "id": r["id"],
        "username": r["username"],
        "role": r["role"],
        "email": r["email"],
        "blocked": r["blocked_reason"] is not None,
        "active_loans": int(r["active_loans"]),
        "overdue_loans": int(r["overdue_loans"]),
    }
    if r["blocked_reason"] is not None:
        shaped["blocked_reason"] = r["blocked_reason"]
    return shaped
