"""What each kind of notice says (its subject, body, details), from plain facts.

Pure functions over plain values, as rules.py's are: the store calls them inside the
transaction that makes the notice. No text here ever holds a password or a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import rules

KINDS = (
    "order_placed",
    "backorder_filled",
    "hold_ready",
    "due_soon",
    "overdue",
    "password_changed",
)
# The kinds the sweep makes (time-driven); a write makes the others.
SWEPT_KINDS = ("due_soon", "overdue", "hold_ready")
OVERDUE_STEPS = (1, 7, 14)  # days overdue at which a reminder goes out, once each


@dataclass(frozen=True)
class NoticeText:
    """A notice as the member reads it, and the details a program can act on."""

    subject: str
    body: str
    details: dict[str, Any]


def iso(seconds: int) -> str:
    """UTC seconds as the wire's ISO-8601 time with a Z."""
    return rules.from_seconds(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(seconds: int) -> str:
    return rules.from_seconds(seconds).strftime("%A %d %B %Y").replace(" 0", " ")


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _pounds(pence: int) -> str:
    return f"£{pence // 100}.{pence % 100:02d}"


def order_placed(order_id: int, total_pence: int, copies: int, backordered: int) -> NoticeText:
    """The receipt for an order."""
    later = (
        f" {backordered} of them {'is' if backordered == 1 else 'are'} back-ordered and will be"
        " sent as soon as they arrive."
        if backordered
        else ""
    )
    return NoticeText(
        f"Your order {order_id} is confirmed",
        f"Thank you for your order {order_id}: {_count(copies, 'guide book', 'guide books')},"
        f" {_pounds(total_pence)} in all.{later}",
        {"order_id": order_id, "total_pence": total_pence},
    )


def backorder_filled(order_id: int, number: int, title: str, quantity: int) -> NoticeText:
    """Copies owed on an order line were supplied by a restock."""
    copies = _count(quantity, "copy", "copies")
    return NoticeText(
        f"{title}: back-ordered copies are on their way",
        f"{copies} of {title} that you were waiting for on order {order_id} have arrived and"
        " are on their way to you.",
        {"order_id": order_id, "book": number, "quantity": quantity},
    )


def hold_ready(hold_id: int, book_id: int, title: str, ready_until: int) -> NoticeText:
    """A copy is kept for the member at the front of a book's queue."""
    return NoticeText(
        f"{title} is ready for you",
        f"A copy of {title} is kept for you until {_day(ready_until)}. Borrow it before then;"
        " after that it passes to the next member waiting.",
        {"hold_id": hold_id, "book_id": book_id, "ready_until": iso(ready_until)},
    )


def due_soon(loan_id: int, title: str, due_at: int) -> NoticeText:
    """A loan is due back within the library's warning time."""
    return NoticeText(
        f"{title} is due back on {_day(due_at)}",
        f"Your loan of {title} is due back on {_day(due_at)}. Renew it if you need longer,"
        " or return it by then.",
        {"loan_id": loan_id, "due_at": iso(due_at)},
    )


def overdue(loan_id: int, title: str, due_at: int, days_overdue: int) -> NoticeText:
    """A loan has reached one of the overdue steps."""
    days = _count(days_overdue, "day", "days")
    return NoticeText(
        f"{title} is {days} overdue",
        f"Your loan of {title} was due back on {_day(due_at)} and is now {days} overdue."
        " Please return it, so that other members can borrow it.",
        {"loan_id": loan_id, "due_at": iso(due_at), "days_overdue": days_overdue},
    )


def password_changed(username: str, changed_at: int) -> NoticeText:
    """The member's password was changed, by them or at the desk."""
    return NoticeText(
        "Your Waymark password was changed",
        f"The password of your account {username} was changed on {_day(changed_at)}. If you"
        " did not ask for this, please contact the library at once.",
        {},
    )


def overdue_step(due_at: int, now: int) -> int | None:
    """The highest overdue step a loan due at due_at has reached by now, if any."""
    days = (now - due_at) // 86_400
    reached = [step for step in OVERDUE_STEPS if days >= step]
    return reached[-1] if reached else None
