"""The menus as a newcomer meets them: prices after the discount, one numbering for loans and
guide books, answers checked where they are typed, q and help, the basket, and long lists."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import rules
from client_basket import Basket, GuideBook, copies_ordered
from client_checks import sentence_refused
from client_link import ServerError
from tests.test_client import (
    MEMBER_PASSWORD,
    MENU_IN,
    MENU_OUT,
    PEAK,
    WALKS,
    FakeConnection,
    real_connection,
    run_client,
    run_menu,
)
from tests.wire import ServerProcess

WOLDS = GuideBook(102, "Lincolnshire Wolds", 1099, 3)
SHOP = {"books": [dataclasses.asdict(PEAK), dataclasses.asdict(WOLDS)]}
AREAS = {"areas": [{"area": "North Wales", "walks": 1}, {"area": "Peak District", "walks": 2}]}
SEARCH = {"search_walks": {"walks": WALKS, "total": 3}, "list_areas": AREAS}
BASKET_MENU = {"add": "1", "change": "2", "order": "3", "back": "0"}


def order_of(number: int, quantity: int, **line: Any) -> dict[str, Any]:
    return {
        "id": quantity, "created_at": "2026-01-17T13:05:00Z",
        "lines": [{"book": {"number": number, "title": "More Peak District"},
                   "quantity": quantity, "fulfilled": quantity, "backordered": 0,
                   "unit_price_pence": 1299, "line_total_pence": 1299 * quantity, **line}],
        "subtotal_pence": 1299 * quantity, "discount_pence": 0, "total_pence": 1299 * quantity,
    }  # fmt: skip


def loan_of(loan_id: int, title: str, returned: bool = False) -> dict[str, Any]:
    return {
        "id": loan_id, "book": {"id": loan_id + 100, "title": title, "authors": []},
        "borrowed_at": "2026-01-01T10:00:00Z", "due_at": "2026-01-15T10:00:00Z",
        "returned_at": "2026-01-10T10:00:00Z" if returned else None,
        "overdue": False, "days_overdue": 0,
    }  # fmt: skip


def logged_in(*answers: Any) -> list[Any]:
    return [MENU_OUT["log in"], "ann", *answers]


# 7: the price after the discount, and back orders, before the member commits --------------


def test_the_order_question_gives_the_price_after_the_discount_and_warns_of_back_orders() -> None:
    connection = FakeConnection({"guide_books": SHOP, "buy": ServerError("conflict", "x")})
    transcript = run_menu(
        connection,
        logged_in(
            MENU_IN["buy"], "1", "102", "8", "3", "n", "2", "102", "1", "3", "n", "0", "0", "y"
        ),
        ["pw"],
    )
    assert (
        "There are only 3 copies of Lincolnshire Wolds in stock; 5 will be back-ordered and "
        "sent when more arrive.\n(Stock is as last shown here; others may be buying too.)\n"
        "Order 8 copies for £79.13 (£87.92 less the £8.79 discount)? [Y/n]" in transcript
    )
    assert "Order 1 copy for £10.99? [Y/n]" in transcript  # no discount, no back order
    assert connection.sent("buy") == []
    assert "Discount" in transcript and "-£8.79" in transcript  # the basket shows it too


@pytest.mark.parametrize("copies", [1, 5, 6, 7, 8])
def test_the_basket_prices_as_the_server_does(copies: int) -> None:
    basket = Basket()
    basket.add(GuideBook(200, "Exactly seventy-five", 1250, 9), copies)
    assert basket.pricing == rules.price_order([(copies, 1250)])  # 6 x 1250 = 7500: no discount


def test_against_the_real_server_the_question_matches_the_order(
    server: ServerProcess, tmp_path: Path
) -> None:
    run_client(server, tmp_path, "--user", "sam", "register", password=MEMBER_PASSWORD)
    run_client(server, tmp_path, "--user", "sam", "buy", "101:5", password=MEMBER_PASSWORD)
    with real_connection(server) as connection:
        transcript = run_menu(
            connection,
            [MENU_OUT["log in"], "sam",
             MENU_IN["buy"], "1", "101", "4", "3",  # 4 is past the 3 sam may still have
             "1", "104", "4", "3", "y", "0"],
            [MEMBER_PASSWORD],
        )  # fmt: skip
    assert "How many copies of More Peak District (1-3)?" in transcript
    # 3 x £12.99 + 4 x £12.99 = £90.93, less 10% rounded half up (£9.09)
    assert "Order 7 copies for £81.84 (£90.93 less the £9.09 discount)? [Y/n]" in transcript
    ordered = transcript.rsplit("[Y/n]", 1)[1]
    assert "Total" in ordered and "£81.84" in ordered


# 8: one numbering for loans ---------------------------------------------------------------

LOANS = {"loans": [loan_of(30, "Dune"), loan_of(12, "The Hobbit"), loan_of(7, "Emma", True)]}


def test_loans_carry_one_number_on_every_screen_and_a_return_is_confirmed() -> None:
    returned = {"loan": loan_of(30, "Dune", returned=True)}
    connection = FakeConnection(
        {"history": LOANS, "return": returned, "renew": {"loan": loan_of(12, "The Hobbit")}}
    )
    transcript = run_menu(
        connection,
        logged_in(MENU_IN["loans"], MENU_IN["return"], "1", "30", "n",
                  MENU_IN["return"], "30", "y", MENU_IN["renew"], "12", MENU_IN["history"], "0"),
        ["pw"],
    )  # fmt: skip
    screens = transcript.split("Choose: ")
    my_loans = next(screen for screen in screens if screen.startswith(f"{MENU_IN['loans']}\n"))
    assert (
        "Loan   Title" in my_loans and "  30   Dune" in my_loans and "  12   The Hobbit" in my_loans
    )
    assert "'1' is not a loan number shown; choose 12 or 30." in transcript
    assert "Return Dune? [Y/n] n" in transcript
    assert connection.sent("return") == [{"loan_id": 30}]  # once, after the second yes
    assert connection.sent("renew") == [{"loan_id": 12}]
    history = screens[-2]
    assert "   7   Emma" in history and "  30   Dune" in history


# 9: one numbering for guide books, and the real allowance ----------------------------------


def test_guide_books_are_chosen_by_their_number_up_to_what_the_member_may_still_order() -> None:
    connection = FakeConnection({"orders": {"orders": [order_of(101, 5)]}})
    transcript = run_menu(
        connection,
        logged_in(MENU_IN["buy"], "1", "1", "101", "2", "1", "101", "2", "1", "0", "0", "y"),
        ["pw"],
    )
    assert "'1' is not a book number shown; choose 101 or 105." in transcript
    assert (
        "You have ordered 5 copies of More Peak District before, and each member may have 8."
        in transcript
    )
    assert "How many copies of More Peak District (1-3)?" in transcript
    assert (
        "How many copies of More Peak District (1-1)?" in transcript
    )  # 5 ordered + 2 in the basket
    assert "Book   Title" in transcript and "#" not in transcript


def test_no_room_left_is_said_before_asking() -> None:
    connection = FakeConnection({"orders": {"orders": [order_of(101, 8)]}})
    transcript = run_menu(connection, logged_in(MENU_IN["buy"], "1", "101", "0", "0"), ["pw"])
    assert "You cannot order more copies of More Peak District." in transcript


def test_the_allowance_counts_back_orders_but_not_cancelled_ones() -> None:
    orders = [order_of(101, 3, backordered=2), order_of(101, 4, backorder_cancelled=3)]
    assert copies_ordered(orders) == {101: 4}
    basket = Basket()
    basket.add(PEAK, 2)
    assert basket.room_for(PEAK, already_ordered=4) == 2


# 10: answers checked where they are typed ------------------------------------------------


def test_a_malformed_username_is_refused_before_any_password_is_asked() -> None:
    connection = FakeConnection({"register": {"user": {"id": 1, "username": "ann"}}})
    transcript = run_menu(
        connection, [MENU_OUT["register"], "x", "ann smith", "ann", "", "0"], ["long enough"] * 2
    )
    assert "The username must be 3 to 32 characters long." in transcript
    assert "The username may use only the letters A-Z, digits, '_', '.' and '-'." in transcript
    assert transcript.index("3 to 32 characters") < transcript.index("Password (at least")
    assert connection.sent("register") == [{"username": "ann", "password": "long enough"}]


def test_a_mistyped_area_is_offered_the_likely_one() -> None:
    connection = FakeConnection(SEARCH)
    transcript = run_menu(
        connection,
        [MENU_OUT["find"], "zzz", "peak distrct", "y", "", "", "", "0"],
    )
    assert "No area matches 'zzz'; choose one from the table." in transcript
    assert "No area matches 'peak distrct'. Did you mean Peak District? [Y/n]" in transcript
    assert connection.sent("search_walks") == [{"limit": 200, "area": "Peak District"}]
    assert "No walks match" not in transcript


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ("1e400", "'1e400' is too many miles; enter at most 10,000."),
        ("inf", "'inf' is too many miles; enter at most 10,000."),
        ("20000", "'20000' is too many miles; enter at most 10,000."),
        ("nan", "'nan' is not a number of miles; type one such as 4 or 6.5."),
        ("-inf", "The distance must be zero or more miles."),
    ],
)
def test_impossible_distances_are_answered_at_the_prompt(typed: str, said: str) -> None:
    # at the shortest prompt (then 3), and at the longest after a shortest of 3 (then Enter)
    for answers in ([typed, "3", ""], ["3", typed, ""]):
        connection = FakeConnection(SEARCH)
        transcript = run_menu(connection, [MENU_OUT["find"], "", "", *answers, "0"])
        assert f"{said}\n" in transcript
        assert connection.sent("search_walks") == [{"limit": 200, "min_distance": 3.0}]
        assert "argument" not in transcript


# 11: q and help, the basket, logging out, plain sentences, pages ---------------------------


def test_q_goes_back_and_help_says_what_is_expected() -> None:
    connection = FakeConnection(SEARCH)
    transcript = run_menu(connection, ["help", MENU_OUT["find"], "help", "q", "q"])
    assert "Type the number of a line of the menu; 0 or q quits." in transcript
    assert "Type an area's number from the table, or part of its name (such as peak)" in transcript
    assert connection.sent("search_walks") == []
    assert transcript.rstrip().endswith("Goodbye.")


def test_q_at_a_password_goes_back() -> None:
    connection = FakeConnection({})
    transcript = run_menu(connection, [MENU_OUT["log in"], "ann", "0"], ["q"])
    assert connection.sent("login") == []
    assert "Waymark (not logged in)" in transcript.rsplit("Password:", 1)[1]


def test_the_basket_changes_a_quantity_and_takes_a_line_out() -> None:
    connection = FakeConnection({})
    transcript = run_menu(
        connection,
        logged_in(MENU_IN["buy"], "1", "101", "2", "2", "101", "5", "2", "105", "101", "0", "0",
                  "0"),
        ["pw"],
    )  # fmt: skip
    assert "How many copies of More Peak District (0 takes it out, at most 8)?" in transcript
    assert "Your basket now has 5 copies of More Peak District (£64.95)" in transcript
    assert "'105' is not a book number shown; choose 101." in transcript
    assert "Removed More Peak District." in transcript
    assert "Buy guide books (basket" not in transcript.rsplit("Removed", 1)[1]


def test_logging_out_with_a_full_basket_asks_first() -> None:
    connection = FakeConnection({})
    transcript = run_menu(
        connection,
        logged_in(MENU_IN["buy"], "1", "101", "2", "0", MENU_IN["log out"], "n",
                  MENU_IN["log out"], "y", "0"),
        ["pw"],
    )  # fmt: skip
    question = "Your basket holds 2 copies, not yet ordered. Log out anyway? [Y/n]"
    assert transcript.count(question) == 2
    assert connection.sent("logout") == [{}]
    assert "You are logged out." in transcript


def test_the_servers_argument_wording_becomes_a_sentence() -> None:
    too_long = ServerError(
        "bad_request", "The argument 'query' is longer than 200 characters.", {"argument": "query"}
    )
    connection = FakeConnection({"search_books": too_long})
    transcript = run_menu(connection, [MENU_OUT["search books"], "x" * 201, "dune", "0"])
    assert "That is 201 characters; please keep it to 200." in transcript
    assert "The search must be words to search for, at most 200 characters long." in transcript
    assert "argument" not in transcript


@pytest.mark.parametrize(
    ("cmd", "code", "details", "plain"),
    [
        ("search_walks", "bad_request", {"argument": "min_distance"},
         "The shortest distance must be a number of miles, no more than the longest distance."),
        ("buy", "bad_request", {"argument": "quantity"},
         "The number of copies must be a whole number from 1 to 1,000."),
        ("search_walks", "bad_request", {"argument": "limit"},
         "The number of results must be a whole number from 1 to 200."),
        ("catalogue", "bad_request", {"argument": "offset"},
         "The first result must be a whole number of 0 or more."),
        ("buy", "bad_request", {"argument": "items"}, "The order must hold 1 to 50 entries."),
        ("sales", "bad_request", {"argument": "since"},
         "The first date must be a date such as 2026-11-01 (or a time such as 2026-11-01T09:30), "
         "no later than the last date."),
        ("register", "bad_request", {"argument": "username"},
         "The username must be 3 to 32 letters A-Z, digits, '_', '.' or '-'."),
        ("search_walks", "bad_request", {"argument": "difficulty"},
         "The difficulty must be easy, medium or hard."),
        ("buy", "not_found", {"book": 999}, "No guide book numbered 999."),
        ("buy", "bad_request", {}, "No guide book numbered 999."),
    ],
)  # fmt: skip
def test_refusals_in_plain_words_from_their_details(
    cmd: str, code: str, details: dict[str, Any], plain: str
) -> None:
    # The server's own wording is never read: only its code, details and the command's row.
    error = ServerError(code, "No guide book numbered 999.", details, cmd)
    assert sentence_refused(error) == plain


def test_long_lists_of_loans_and_orders_come_ten_at_a_time() -> None:
    loans = {"loans": [loan_of(number, f"Book {number}") for number in range(100, 77, -1)]}
    orders = {"orders": [order_of(101, 1) | {"id": number} for number in range(12, 0, -1)]}
    connection = FakeConnection({"history": loans, "orders": orders})
    transcript = run_menu(
        connection,
        logged_in(MENU_IN["loans"], "n", "", MENU_IN["orders"], "n", "0"),
        ["pw"],
    )
    assert "13 more loans: n for the next 10, Enter to stop: n" in transcript
    assert "3 more loans: n for the next 3, Enter to stop: \n" in transcript
    assert "Book 81" in transcript and "Book 80" not in transcript
    assert "2 more orders: n for the next 2, Enter to stop: n" in transcript
    assert "Order 1, placed" in transcript
