"""The wire's shapes, in-process: store rows shaped by results.py, reply lines read by protocol."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

import protocol
import results
from protocol import Reply, decode_reply

NOW = 1_700_000_000  # 2023-11-14T22:13:20Z
DAY = 86_400


# Times ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "text"),
    [
        (None, None),
        (0, "1970-01-01T00:00:00Z"),
        (NOW, "2023-11-14T22:13:20Z"),
        (-1, "1969-12-31T23:59:59Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
    ],
)
def test_iso_is_utc_with_a_z(timestamp: int | None, text: str | None) -> None:
    assert results.iso(timestamp) == text


# Walks ----------------------------------------------------------------------------------------

WALK_ROW = {
    "id": 7,
    "name": "Lord’s Seat",
    "area": "Lake District",
    "distance_miles": 5.5,
    "difficulty": "medium",
    "page": 42,
    "number": 104,
    "title": "Lakeland Fells",
    "price_pence": 1299,
    "in_stock": 3,
    "ascent_m": 380,
    "time_hours": 3.5,
    "route_type": None,
    "start_grid_ref": None,
    "area_key": "lake district",  # a column the wire does not show
}
WALK = {
    "id": 7,
    "name": "Lord’s Seat",
    "area": "Lake District",
    "distance_miles": 5.5,
    "difficulty": "medium",
    "page": 42,
    "book": {"number": 104, "title": "Lakeland Fells", "price_pence": 1299, "in_stock": 3},
    "ascent_m": 380,
    "time_hours": 3.5,
}


def test_a_walk_nests_its_book_and_shows_only_the_route_details_known() -> None:
    assert results.walk(WALK_ROW) == WALK
    every = {**WALK_ROW, "route_type": "circular", "start_grid_ref": "NY 204 262"}
    assert results.walk(every) == {**WALK, "route_type": "circular", "start_grid_ref": "NY 204 262"}
    none = {**WALK_ROW, "ascent_m": None, "time_hours": None}
    assert set(results.walk(none)) == set(WALK) - {"ascent_m", "time_hours"}


def test_a_recommendation_is_the_book_once_with_its_walks_without_it() -> None:
    second = {**WALK, "id": 8, "name": "Barf"}
    assert results.recommendation([WALK, second]) == {
        "book": WALK["book"],
        "matching_walks": 2,
        "walks": [
            {k: v for k, v in WALK.items() if k != "book"},
            {k: v for k, v in second.items() if k != "book"},
        ],
    }
    assert results.recommendation([second])["book"] == WALK["book"]


# Orders ---------------------------------------------------------------------------------------


def _line(number: int, quantity: int, fulfilled: int, cancelled: int, price: int) -> dict:
    backordered = quantity - fulfilled
    return {
        "book_number": number,
        "title": f"Book {number}",
        "quantity": quantity,
        "fulfilled": fulfilled,
        "backordered": backordered,
        "backorder_outstanding": backordered - cancelled,
        "backorder_cancelled": cancelled,
        "unit_price_pence": price,
    }


def test_an_order_totals_each_line_over_the_copies_not_cancelled() -> None:
    row = {
        "id": 12,
        "created_at": NOW,
        "lines": [_line(101, 5, 2, 1, 1299), _line(104, 1, 1, 0, 999)],
        "subtotal_pence": 6195,
        "discount_pence": 0,
        "total_pence": 6195,
    }
    assert results.order(row) == {
        "id": 12,
        "created_at": "2023-11-14T22:13:20Z",
        "lines": [
            {
                "book": {"number": 101, "title": "Book 101"},
                "quantity": 5,
                "fulfilled": 2,
                "backordered": 3,
                "backorder_outstanding": 2,
                "backorder_cancelled": 1,
                "unit_price_pence": 1299,
                "line_total_pence": 4 * 1299,
            },
            {
                "book": {"number": 104, "title": "Book 104"},
                "quantity": 1,
                "fulfilled": 1,
                "backordered": 0,
                "backorder_outstanding": 0,
                "backorder_cancelled": 0,
                "unit_price_pence": 999,
                "line_total_pence": 999,
            },
        ],
        "subtotal_pence": 6195,
        "discount_pence": 0,
        "total_pence": 6195,
    }
    shaped = results.order(row)
    assert sum(line["line_total_pence"] for line in shaped["lines"]) == shaped["subtotal_pence"]


def test_a_backorder_names_the_customer_and_what_is_owed() -> None:
    row = {
        "order_id": 12,
        "created_at": NOW,
        "username": "ann",
        "book_number": 101,
        "title": "Book 101",
        "backorder_outstanding": 2,
        "quantity": 5,  # the line's other columns stay in the store
    }
    assert results.backorder(row) == {
        "order_id": 12,
        "created_at": "2023-11-14T22:13:20Z",
        "username": "ann",
        "book": {"number": 101, "title": "Book 101"},
        "outstanding": 2,
    }


def test_sales_are_plain_integers_even_from_mysql_decimals() -> None:
    totals = {
        "orders": Decimal(3),
        "subtotal_pence": Decimal(9000),
        "discount_pence": 150,
        "total_pence": 8850,
    }
    book = {
        "number": 101,
        "title": "Book 101",
        "copies_ordered": Decimal(6),
        "copies_sent": Decimal(4),
        "backorder_outstanding": 2,
        "line_total_pence": Decimal(7794),
        "price_pence": 1299,  # not part of the report
    }
    shaped = results.sales(totals, [book])
    assert shaped == {
        "orders": 3,
        "subtotal_pence": 9000,
        "discount_pence": 150,
        "total_pence": 8850,
        "books": [
            {
                "number": 101,
                "title": "Book 101",
                "copies_ordered": 6,
                "copies_sent": 4,
                "backorder_outstanding": 2,
                "line_total_pence": 7794,
            }
        ],
    }
    numbers = [v for k, v in shaped.items() if k != "books"] + [
        v for k, v in shaped["books"][0].items() if k != "title"
    ]
    assert all(type(v) is int for v in numbers)  # json.dumps cannot write a Decimal
    assert results.sales(totals, [])["books"] == []


# Loans and holds ------------------------------------------------------------------------------


def _loan_row(due_at: int, returned_at: int | None = None) -> dict:
    return {
        "id": 5,
        "book_id": 9,
        "title": "The Hobbit",
        "authors": ["J. R. R. Tolkien"],
        "borrowed_at": due_at - 14 * DAY,
        "due_at": due_at,
        "returned_at": returned_at,
        "renewals": 1,
        "user_id": 2,
        "username": "ann",
    }


def test_a_loan_on_time_is_not_overdue() -> None:
    assert results.loan(_loan_row(NOW + DAY), NOW) == {
        "id": 5,
        "book": {"id": 9, "title": "The Hobbit", "authors": ["J. R. R. Tolkien"]},
        "borrowed_at": "2023-11-01T22:13:20Z",
        "due_at": "2023-11-15T22:13:20Z",
        "returned_at": None,
        "renewals": 1,
        "overdue": False,
        "days_overdue": 0,
    }


@pytest.mark.parametrize(
    ("due_at", "returned_at", "days"),
    [
        (NOW, None, 0),  # due this very second: not late yet
        (NOW - 1, None, 1),  # a second late is a day late
        (NOW - DAY, None, 1),
        (NOW - DAY - 1, None, 2),
        (NOW - 30 * DAY, NOW - 20 * DAY, 0),  # returned late, but returned: nothing overdue now
    ],
)
def test_a_loan_counts_whole_days_overdue_until_returned(
    due_at: int, returned_at: int | None, days: int
) -> None:
    shaped = results.loan(_loan_row(due_at, returned_at), NOW)
    assert (shaped["overdue"], shaped["days_overdue"]) == (days > 0, days)
    assert shaped["returned_at"] == results.iso(returned_at)


def test_an_overdue_loan_also_names_the_member() -> None:
    row = _loan_row(NOW - 3 * DAY)
    assert results.overdue_loan(row, NOW) == {
        **results.loan(row, NOW),
        "member": {"id": 2, "username": "ann"},
    }
    assert results.overdue_loan(row, NOW)["days_overdue"] == 3


HOLD_ROW = {"id": 4, "book_id": 9, "title": "The Hobbit", "position": 2, "created_at": NOW}


def test_a_hold_says_its_place_in_the_queue() -> None:
    assert results.hold(HOLD_ROW) == {
        "id": 4,
        "book": {"id": 9, "title": "The Hobbit"},
        "position": 2,
        "created_at": "2023-11-14T22:13:20Z",
    }


@pytest.mark.parametrize(
    ("ready_until", "ready"),
    [
        (None, False),  # still waiting for a copy
        (NOW + 1, True),
        (NOW, False),  # kept until this second: it has just lapsed
        (NOW - DAY, False),
    ],
)
def test_a_waiting_hold_is_ready_until_its_expiry_second(
    ready_until: int | None, ready: bool
) -> None:
    row = {**HOLD_ROW, "ready_until": ready_until}
    assert results.waiting_hold(row, NOW) == {
        **results.hold(row),
        "ready": ready,
        "ready_until": results.iso(ready_until),
    }


# Replies, as a client reads them --------------------------------------------------------------


def test_a_success_reply_gives_its_id_and_result() -> None:
    line = protocol.encode(protocol.ok_response("a1", {"total": 2}))
    assert decode_reply(line) == Reply("a1", True, result={"total": 2})
    assert decode_reply(b'{"ok": true, "result": [1]}') == Reply(None, True, result={})
    assert decode_reply(b'{"id": 3, "ok": true}') == Reply(3, True, result={})


def test_an_error_reply_gives_its_code_message_and_details() -> None:
    error = protocol.ProtocolError(protocol.NOT_FOUND, "No book numbered 999.", {"book": 999})
    line = protocol.encode(protocol.error_response(7, error))
    assert decode_reply(line) == Reply(
        7, False, code="not_found", message="No book numbered 999.", details={"book": 999}
    )


@pytest.mark.parametrize(
    "error",
    [None, "broken", [], {}, {"code": "", "message": "", "details": []}, {"details": None}],
)
def test_a_malformed_error_reply_still_reads_as_an_internal_error(error: object) -> None:
    line = json.dumps({"id": 1, "ok": False, "error": error}).encode()
    assert decode_reply(line) == Reply(
        1, False, code="internal", message="The server reported an error.", details={}
    )


def test_error_fields_that_are_not_text_are_made_text() -> None:
    line = json.dumps({"ok": False, "error": {"code": 5, "message": 6, "details": {"a": 1}}})
    assert decode_reply(line.encode()) == Reply(
        None, False, code="5", message="6", details={"a": 1}
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{broken", "The reply is not valid JSON."),
        (b"[" * 100_000, "The reply is not valid JSON."),
        (b"[1]", "The reply is not a response object with an 'ok' field."),
        (b'{"id": 1}', "The reply is not a response object with an 'ok' field."),
        (b'{"id": 1, "ok": 1}', "The reply is not a response object with an 'ok' field."),
        (b'{"id": 1, "ok": "true"}', "The reply is not a response object with an 'ok' field."),
    ],
)
def test_a_line_that_is_no_reply_is_a_value_error(line: bytes, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        decode_reply(line)
    assert str(caught.value) == message


# Notices and members --------------------------------------------------------------------------

NOTICE_ROW = {
    "id": 3,
    "user_id": 2,  # the store's own column: not on the wire
    "kind": "due_soon",
    "created_at": NOW,
    "subject": "The Hobbit is due back soon",
    "body": "Please return it by 15 November.",
    "read_at": None,
    "emailed_at": None,
    "details": {"loan_id": 5},
}


@pytest.mark.parametrize(
    ("read_at", "emailed_at"), [(None, None), (NOW + 60, None), (None, NOW + 5), (NOW, NOW)]
)
def test_a_notice_says_whether_it_was_read_and_emailed(
    read_at: int | None, emailed_at: int | None
) -> None:
    row = {**NOTICE_ROW, "read_at": read_at, "emailed_at": emailed_at}
    assert results.notice(row) == {
        "id": 3,
        "kind": "due_soon",
        "created_at": "2023-11-14T22:13:20Z",
        "subject": "The Hobbit is due back soon",
        "body": "Please return it by 15 November.",
        "read": read_at is not None,
        "emailed": emailed_at is not None,
        "details": {"loan_id": 5},
    }


MEMBER_ROW = {
    "id": 2,
    "username": "ann",
    "role": "member",
    "email": "ann@example.org",
    "blocked_reason": None,
    "active_loans": Decimal(2),  # MySQL counts in Decimals
    "overdue_loans": 1,
    "password_hash": "not for the wire",
}
MEMBER = {
    "id": 2,
    "username": "ann",
    "role": "member",
    "email": "ann@example.org",
    "blocked": False,
    "active_loans": 2,
    "overdue_loans": 1,
}


def test_a_member_shows_the_reason_only_while_blocked() -> None:
    shaped = results.member(MEMBER_ROW)
    assert shaped == MEMBER
    assert type(shaped["active_loans"]) is int
    blocked = {**MEMBER_ROW, "blocked_reason": "Lost two books", "overdue_loans": Decimal(0)}
    assert results.member(blocked) == {
        **MEMBER,
        "blocked": True,
        "blocked_reason": "Lost two books",
        "overdue_loans": 0,
    }
    assert type(results.member(blocked)["overdue_loans"]) is int
    assert results.member({**MEMBER_ROW, "email": None})["email"] is None
