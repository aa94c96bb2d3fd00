"""The 1.1 commands in the client: recommend, change password, cancel a back order, overdue
loans and sales, in the menus and as subcommands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from client_link import ServerError, TokenFile
from tests.test_client import (
    MEMBER_PASSWORD,
    MENU_ADMIN,
    MENU_IN,
    MENU_OUT,
    FakeConnection,
    run_client,
    run_json,
    run_menu,
)
from tests.wire import ServerProcess

ADMIN = {"id": 2, "username": "boss", "role": "admin"}
AREAS = {"areas": [{"area": "Peak District", "walks": 2}]}
RECOMMENDED = {
    "books": [{
        "book": {"number": 101, "title": "More Peak District", "price_pence": 1299, "in_stock": 3},
        "matching_walks": 2,
        "walks": [
            {"id": 1, "name": "Hathersage", "area": "Peak District", "distance_miles": 7,
             "difficulty": "easy", "page": 20},
            {"id": 2, "name": "Lord's Seat", "area": "Peak District", "distance_miles": 5,
             "difficulty": "easy", "page": 31},
        ],
    }]
}  # fmt: skip


def order_with_backorder(price: int, quantity: int, outstanding: int) -> dict[str, Any]:
    subtotal = price * quantity
    discount = (subtotal + 5) // 10 if subtotal > 7500 else 0
    return {
        "id": 7, "created_at": "2026-01-17T13:05:00Z",
        "lines": [{"book": {"number": 105, "title": "Snowdonia"}, "quantity": quantity,
                   "fulfilled": quantity - outstanding, "backordered": outstanding,
                   "backorder_outstanding": outstanding, "backorder_cancelled": 0,
                   "unit_price_pence": price, "line_total_pence": subtotal}],
        "subtotal_pence": subtotal, "discount_pence": discount, "total_pence": subtotal - discount,
    }  # fmt: skip


def test_menu_recommends_guide_books_for_the_walks_wanted() -> None:
    connection = FakeConnection({"list_areas": AREAS, "recommend_books": RECOMMENDED})
    transcript = run_menu(
        connection,
        [MENU_OUT["log in"], "ann", MENU_IN["recommend"], "peak", "e", "", "", "101", "2", "0",
         "0", "y"],
        ["pw"],
    )  # fmt: skip
    assert connection.sent("recommend_books") == [
        {"limit": 50, "area": "peak", "difficulty": "easy"}
    ]
    assert "Matching walks" in transcript and "£12.99" in transcript
    assert "Walks in 101 More Peak District" in transcript and "Lord's Seat" in transcript
    assert "Your basket now has 2 copies of More Peak District" in transcript
    assert "Which guide book covers my walks?" in transcript


def test_menu_changes_the_password_and_keeps_the_new_token(tmp_path: Path) -> None:
    token_file = TokenFile(tmp_path / "token", "127.0.0.1:7443")
    wrong = ServerError("invalid_credentials", "The old password is not right.")
    connection = FakeConnection(
        {"change_password": [wrong, {"token": "new-token"}]}, token_file=token_file, remember=True
    )
    transcript = run_menu(
        connection,
        [MENU_OUT["log in"], "ann", MENU_IN["change password"], MENU_IN["change password"], "0"],
        ["pw", "bad", "short", "new-password", "new-password",  # "short" is refused at once
         "pw", "new-password", "new-password"],
    )  # fmt: skip
    assert "The old password is not right." in transcript
    assert "The password must be at least 8 characters long." in transcript
    assert "Your password is changed; any other session of yours has ended." in transcript
    assert connection.sent("change_password") == [
        {"old_password": "bad", "new_password": "new-password"},
        {"old_password": "pw", "new_password": "new-password"},
    ]
    assert connection.token == "new-token"
    assert token_file.load() == "new-token"


def test_menu_cancels_a_back_order_and_says_when_the_total_rises() -> None:
    # 20 copies at £3.76 are £75.20 with £7.52 off; one fewer is £71.44, with no discount.
    placed = order_with_backorder(price=376, quantity=20, outstanding=1)
    after = dict(placed, subtotal_pence=7144, discount_pence=0, total_pence=7144)
    after["lines"] = [dict(placed["lines"][0], backorder_outstanding=0, backorder_cancelled=1,
                           line_total_pence=7144)]  # fmt: skip
    connection = FakeConnection(
        {"orders": {"orders": [placed]},
         "cancel_backorder": {"order": after, "refund_pence": placed["total_pence"] - 7144}}
    )  # fmt: skip
    transcript = run_menu(
        connection,
        [MENU_OUT["log in"], "ann", MENU_IN["cancel back order"], "8", "7", "105", "y", "0"],
        ["pw"],
    )  # fmt: skip
    assert "'8' is not an order number shown; choose 7." in transcript
    assert (
        "Cancel the 1 awaited copy of Snowdonia on order 7? This is not a refund: the order's "
        "total goes up by £3.76, because the order no longer gets the discount. [Y/n]"
    ) in transcript
    assert connection.sent("cancel_backorder") == [{"order_id": 7, "book": 105}]
    assert "The awaited copies of Snowdonia on order 7 are cancelled." in transcript
    assert "Order 7's total is now £71.44." in transcript
    assert "Cancelled" in transcript  # the order's table shows the cancelled copies


def test_menu_cancel_tells_the_refund() -> None:
    placed = order_with_backorder(price=1399, quantity=8, outstanding=3)  # £111.92, £11.19 off
    after = dict(placed, subtotal_pence=6995, discount_pence=0, total_pence=6995)
    connection = FakeConnection(
        {"orders": {"orders": [placed]},
         "cancel_backorder": {"order": after, "refund_pence": placed["total_pence"] - 6995}}
    )  # fmt: skip
    transcript = run_menu(
        connection,
        [MENU_OUT["log in"], "ann", MENU_IN["cancel back order"], "7", "105", "n", "0"],
        ["pw"],
    )  # fmt: skip
    assert "Cancel the 3 awaited copies of Snowdonia on order 7? You will be refunded £30.78." in (
        transcript
    )
    assert connection.sent("cancel_backorder") == []  # said no


def test_menu_cancel_says_when_nothing_is_awaited() -> None:
    transcript = run_menu(
        FakeConnection({}), [MENU_OUT["log in"], "ann", MENU_IN["cancel back order"], "0"], ["pw"]
    )
    assert "None of your orders has copies still awaited." in transcript


def test_admin_menu_shows_overdue_loans_and_sales() -> None:
    overdue = {"loans": [{
        "id": 3, "book": {"id": 5, "title": "Dune", "authors": []},
        "borrowed_at": "2026-01-01T10:00:00Z", "due_at": "2026-01-15T10:00:00Z",
        "returned_at": None, "overdue": True, "days_overdue": 4,
        "member": {"id": 1, "username": "ann"},
    }]}  # fmt: skip
    sales = {"orders": 2, "subtotal_pence": 8000, "discount_pence": 800, "total_pence": 7200,
             "books": [{"number": 101, "title": "More Peak District", "copies_ordered": 5,
                        "copies_sent": 4, "backorder_outstanding": 1,
                        "line_total_pence": 8000}]}  # fmt: skip
    connection = FakeConnection(
        {"login": {"token": "t", "user": ADMIN}, "overdue": overdue, "sales": sales}
    )
    transcript = run_menu(
        connection,
        [MENU_OUT["log in"], "boss", MENU_ADMIN["overdue"], MENU_ADMIN["sales"], "Nov 1",
         "2026-11-01", "", "0"],
        ["pw"],
    )  # fmt: skip
    assert "Days overdue" in transcript and "ann" in transcript and "Dune" in transcript
    assert "'Nov 1' is not a date" in transcript
    assert connection.sent("sales") == [{"since": "2026-11-01"}]
    assert "Sales since 2026-11-01" in transcript
    assert "Subtotal (2 orders)" in transcript and "-£8.00" in transcript
    assert "£72.00" in transcript


# Subcommands against the real server -------------------------------------------------------


def test_recommend_subcommand(server: ServerProcess, tmp_path: Path) -> None:
    answer = run_json(server, tmp_path, "recommend", "--area", "peak", "--limit", "2")
    books = answer["books"]
    assert 1 <= len(books) <= 2
    assert books[0]["matching_walks"] == len(books[0]["walks"])
    assert {walk["area"] for walk in books[0]["walks"]} == {"Peak District"}
    shown = run_client(server, tmp_path, "recommend", "--difficulty", "easy")
    assert shown.returncode == 0 and "Matching walks" in shown.stdout
    assert "Walks in " in shown.stdout
    too_many = run_client(server, tmp_path, "recommend", "--limit", "51")
    assert too_many.returncode == 2 and "from 1 to 50" in too_many.stderr
    crossed = run_client(
        server, tmp_path, "recommend", "--min-distance", "5", "--max-distance", "2"
    )
    assert crossed.returncode == 2


def test_change_password_subcommand(server: ServerProcess, tmp_path: Path) -> None:
    run_json(server, tmp_path, "register", "--user", "sam", password=MEMBER_PASSWORD)
    new = "new-walking-boots"
    changed = run_json(
        server, tmp_path, "change-password", "--user", "sam", stdin=f"{MEMBER_PASSWORD}\n{new}\n"
    )
    assert changed["token"]
    assert run_client(server, tmp_path, "orders", "--user", "sam", password=new).returncode == 0
    old = run_json(server, tmp_path, "orders", "--user", "sam", status=1, password=MEMBER_PASSWORD)
    assert old["error"]["code"] == "invalid_credentials"
    # A remembered session carries on under the new token, in its file too.
    run_json(server, tmp_path, "login", "--user", "sam", "--remember", password=new)
    before = json.loads((tmp_path / "token").read_text())["token"]
    shown = run_client(server, tmp_path, "change-password", stdin=f"{new}\n{MEMBER_PASSWORD}\n")
    assert shown.returncode == 0, shown.stderr
    assert "Your password is changed" in shown.stdout
    assert json.loads((tmp_path / "token").read_text())["token"] != before
    assert run_json(server, tmp_path, "whoami")["user"]["username"] == "sam"
    weak = run_client(server, tmp_path, "change-password", stdin=f"{MEMBER_PASSWORD}\nshort\n")
    assert weak.returncode == 2 and "at least 8 characters" in weak.stderr
    wrong = run_json(server, tmp_path, "change-password", status=1, stdin=f"not-it-at-all\n{new}\n")
    assert wrong["error"]["code"] == "invalid_credentials"


def test_cancel_backorder_subcommand(server: ServerProcess, tmp_path: Path) -> None:
    run_json(server, tmp_path, "register", "--user", "sam", password=MEMBER_PASSWORD)
    as_sam = {"password": MEMBER_PASSWORD}
    run_json(server, tmp_path, "register", "--user", "kim", password=MEMBER_PASSWORD)
    run_json(server, tmp_path, "buy", "102:8", "--user", "kim", password=MEMBER_PASSWORD)
    order = run_json(server, tmp_path, "buy", "102:8", "--user", "sam", **as_sam)["order"]
    line = order["lines"][0]
    assert line["backordered"] > 0
    cancelled = run_json(
        server, tmp_path, "cancel-backorder", str(order["id"]), "102", "--user", "sam", **as_sam
    )
    assert cancelled["refund_pence"] == order["total_pence"] - cancelled["order"]["total_pence"]
    assert cancelled["order"]["lines"][0]["backorder_cancelled"] == line["backordered"]
    again = run_client(
        server, tmp_path, "cancel-backorder", str(order["id"]), "102", "--user", "sam", **as_sam
    )
    assert again.returncode == 1 and again.stderr.strip()
    assert run_client(server, tmp_path, "cancel-backorder", "x", "102").returncode == 2
    assert run_client(server, tmp_path, "cancel-backorder", str(order["id"])).returncode == 2


def test_overdue_and_sales_subcommands(server: ServerProcess, tmp_path: Path) -> None:
    server.create_admin("boss", "admin-password")
    as_boss = {"password": "admin-password"}
    run_json(server, tmp_path, "register", "--user", "sam", password=MEMBER_PASSWORD)
    run_json(server, tmp_path, "buy", "101:2", "--user", "sam", password=MEMBER_PASSWORD)
    assert run_json(server, tmp_path, "overdue", "--user", "boss", **as_boss) == {"loans": []}
    shown = run_client(server, tmp_path, "overdue", "--user", "boss", **as_boss)
    assert shown.returncode == 0 and "No loan is overdue." in shown.stdout
    forbidden = run_json(
        server, tmp_path, "overdue", "--user", "sam", status=1, password=MEMBER_PASSWORD
    )
    assert forbidden["error"]["code"] == "forbidden"
    sales = run_json(server, tmp_path, "sales", "--user", "boss", **as_boss)
    assert sales["orders"] == 1 and sales["books"][0]["copies_ordered"] == 2
    assert sales["subtotal_pence"] == 2 * 1299
    later = run_json(
        server, tmp_path, "sales", "--since", "2999-01-01", "--user", "boss", **as_boss
    )
    assert later["orders"] == 0 and later["books"] == []
    table = run_client(server, tmp_path, "sales", "--user", "boss", **as_boss)
    assert table.returncode == 0 and "Copies ordered" in table.stdout and "£25.98" in table.stdout
    bad = run_client(server, tmp_path, "sales", "--since", "soon", "--user", "boss", **as_boss)
    assert bad.returncode == 2 and "'soon' is not a date" in bad.stderr  # the client's to see
    assert run_client(server, tmp_path, "sales", "--until", "9" * 65).returncode == 2
