"""What a newcomer found wrong in the client (issue 17, item 6), each driven as a person would:
through the menus, or through a subcommand on the command line."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import client
from client_link import ServerError, TokenFile, UsageError
from client_views import format_local_time
from protocol import COMMANDS
from tests.test_client import (
    MEMBER_PASSWORD,
    MENU_ADMIN,
    MENU_IN,
    MENU_OUT,
    USER,
    FakeConnection,
    Terminal,
    real_connection,
    run_client,
    run_json,
    run_menu,
)
from tests.wire import ServerProcess

ADMIN = {"id": 2, "username": "boss", "role": "admin"}
KING = "The Return of the King"  # one copy in the sample catalogue
KING_BOOK = {
    "id": 5, "key": "/works/OL27479W", "title": KING, "authors": ["J. R. R. Tolkien"],
    "first_publish_year": 1955, "copies": 1, "copies_available": 0,
}  # fmt: skip
KEPT = {
    "id": 9, "book": {"id": 5, "title": KING}, "position": 1,
    "created_at": "2026-01-10T10:00:00Z", "ready": True, "ready_until": "2026-01-20T10:00:00Z",
}  # fmt: skip
KING_LOAN = {
    "id": 21, "book": {"id": 5, "title": KING, "authors": ["J. R. R. Tolkien"]},
    "borrowed_at": "2026-01-18T10:00:00Z", "due_at": "2026-02-01T10:00:00Z",
    "returned_at": None, "renewals": 0, "overdue": False, "days_overdue": 0,
}  # fmt: skip


def logged_in(*answers: Any) -> list[Any]:
    return [MENU_OUT["log in"], "ann", *answers]


def cells(transcript: str, starting: str) -> list[str]:
    """The words of the last line of a table that starts with starting (after spaces)."""
    rows = [line.split() for line in transcript.splitlines() if line.strip().startswith(starting)]
    assert rows, f"no row starts with {starting!r}:\n{transcript}"
    return rows[-1]


# 1: a copy kept for the member can be borrowed from the menus -------------------------------


def test_a_copy_kept_for_the_member_is_offered_to_borrow_from_the_catalogue() -> None:
    queue_again = ServerError("conflict", "You already hold a place in the queue for this book.")
    connection = FakeConnection(
        {"catalogue": {"books": [KING_BOOK], "total": 1}, "holds": {"holds": [KEPT]},
         "borrow": {"loan": KING_LOAN}, "hold": queue_again}
    )  # fmt: skip
    transcript = run_menu(
        connection, logged_in(MENU_IN["borrow"], "return of the king", "1", "y", "0"), ["pw"]
    )
    until = format_local_time(KEPT["ready_until"])
    assert f"A copy of {KING} is kept for you until {until}. Borrow it? [Y/n]" in transcript
    assert connection.sent("borrow") == [{"book_id": 5}]
    assert connection.sent("hold") == []
    assert f"You have borrowed {KING}" in transcript


def test_the_holds_screen_borrows_the_kept_copy() -> None:
    connection = FakeConnection({"holds": {"holds": [KEPT]}, "borrow": {"loan": KING_LOAN}})
    transcript = run_menu(connection, logged_in(MENU_IN["holds"], "1", "y", "0"), ["pw"])
    assert f"Borrow the copy of {KING} kept for you? [Y/n]" in transcript
    assert connection.sent("borrow") == [{"book_id": 5}]
    assert connection.sent("cancel_hold") == []


def test_against_the_real_server_a_kept_copy_is_borrowed_from_the_menus(
    server: ServerProcess, tmp_path: Path
) -> None:
    for name in ("sam", "kim"):
        run_json(server, tmp_path, "register", "--user", name, password=MEMBER_PASSWORD)
    [book] = run_json(server, tmp_path, "catalogue", "return", "of", "the", "king")["books"]
    as_sam = ("--user", "sam")
    loan = run_json(server, tmp_path, "borrow", str(book["id"]), *as_sam, password=MEMBER_PASSWORD)
    run_json(server, tmp_path, "hold", str(book["id"]), "--user", "kim", password=MEMBER_PASSWORD)
    run_json(server, tmp_path, "return", str(loan["loan"]["id"]), *as_sam, password=MEMBER_PASSWORD)
    with real_connection(server) as connection:
        transcript = run_menu(
            connection,
            [MENU_OUT["log in"], "kim", MENU_IN["holds"], "",
             MENU_IN["borrow"], "return of the king", "1", "y", "0"],
            [MEMBER_PASSWORD],
        )  # fmt: skip
    holds = transcript.split(f"Choose: {MENU_IN['holds']}\n", 1)[1]
    assert "a copy is kept for you until " in holds
    assert f"A copy of {KING} is kept for you until " in transcript
    assert f"You have borrowed {KING}; it is due back" in transcript
    assert "already hold a place" not in transcript


# 2: logging out forgets only this session's remembered token --------------------------------


def test_log_out_in_the_menus_keeps_another_programs_remembered_login(tmp_path: Path) -> None:
    token_file = TokenFile(tmp_path / "token", "127.0.0.1:7443")
    connection = FakeConnection({}, token_file=token_file)
    transcript = run_menu(
        connection,
        # meanwhile, another program runs `login --user bob --remember`
        logged_in(lambda: token_file.save("bob-token"), MENU_IN["log out"], "0"),
        ["pw"],
    )
    assert "You are logged out." in transcript
    assert token_file.load() == "bob-token"


def test_the_logout_subcommand_keeps_another_members_remembered_login(
    server: ServerProcess, tmp_path: Path
) -> None:
    for name in ("sam", "kim"):
        run_json(server, tmp_path, "register", "--user", name, password=MEMBER_PASSWORD)
    run_json(server, tmp_path, "login", "--user", "kim", "--remember", password=MEMBER_PASSWORD)
    run_json(server, tmp_path, "logout", "--user", "sam", password=MEMBER_PASSWORD)
    assert run_json(server, tmp_path, "whoami")["user"]["username"] == "kim"
    run_json(server, tmp_path, "logout")  # kim's own remembered session: forgotten
    assert not (tmp_path / "token").exists()


# 3: an order's copies add up after a restock fills its back order ---------------------------


def test_copies_sent_by_a_restock_count_as_sent() -> None:
    filled = {
        "id": 4, "created_at": "2026-01-17T13:05:00Z",
        "lines": [{"book": {"number": 101, "title": "More Peak District"}, "quantity": 8,
                   "fulfilled": 7, "backordered": 1, "backorder_outstanding": 0,
                   "backorder_cancelled": 0, "unit_price_pence": 1299,
                   "line_total_pence": 10392}],
        "subtotal_pence": 10392, "discount_pence": 1039, "total_pence": 9353,
    }  # fmt: skip
    connection = FakeConnection({"orders": {"orders": [filled]}})
    transcript = run_menu(connection, logged_in(MENU_IN["orders"], "0"), ["pw"])
    header = cells(transcript, "Guide book")
    assert header[:5] == ["Guide", "book", "Copies", "Sent", "Awaited"]
    assert cells(transcript, "101 More Peak District")[4:7] == ["8", "8", "0"]


# 4: the last day of a sales window is included ----------------------------------------------


def test_sales_in_the_menus_include_the_last_day() -> None:
    sales = {"orders": 0, "subtotal_pence": 0, "discount_pence": 0, "total_pence": 0, "books": []}
    connection = FakeConnection({"login": {"token": "t", "user": ADMIN}, "sales": sales})
    transcript = run_menu(
        connection,
        [MENU_OUT["log in"], "boss", MENU_ADMIN["sales"], "2026-11-01", "2026-11-01",
         MENU_ADMIN["sales"], "", "2026-11-30T09:30", "0"],
        ["pw"],
    )  # fmt: skip
    assert connection.sent("sales") == [
        {"since": "2026-11-01", "until": "2026-11-02"},
        {"until": "2026-11-30T09:30"},
    ]
    assert "Sales on 2026-11-01" in transcript
    assert "Sales before 2026-11-30T09:30" in transcript


def test_the_sales_subcommand_includes_the_last_day_and_says_which_days(
    server: ServerProcess, tmp_path: Path
) -> None:
    server.create_admin("boss", "admin-password")
    run_json(server, tmp_path, "register", "--user", "sam", password=MEMBER_PASSWORD)
    run_json(server, tmp_path, "buy", "101:2", "--user", "sam", password=MEMBER_PASSWORD)
    today = datetime.now(UTC).date().isoformat()
    window = ("--since", today, "--until", today, "--user", "boss")
    assert run_json(server, tmp_path, "sales", *window, password="admin-password")["orders"] == 1
    shown = run_client(server, tmp_path, "sales", *window, password="admin-password")
    assert shown.returncode == 0, shown.stderr
    assert f"Sales on {today}" in shown.stdout
    assert client.request_for(client.build_parser().parse_args(["sales", "--until", "2026-11-30"]))[
        1
    ] == {"until": "2026-12-01"}


# 5: usage errors exit 2 with a sentence ----------------------------------------------------


def test_usage_errors_the_client_can_see_exit_2(server: ServerProcess, tmp_path: Path) -> None:
    run_json(server, tmp_path, "register", "--user", "sam", password=MEMBER_PASSWORD)
    refused = {
        "since": ["sales", "--since", "nope", "--user", "sam"],
        "backwards": ["sales", "--since", "2026-11-05", "--until", "2026-11-01", "--user", "sam"],
        "empty": ["search-books", ""],
        "nine": ["buy", "103:9", "--user", "sam"],
        "nine in two": ["buy", "103:5", "103:4", "--user", "sam"],
    }
    said = {}
    for what, argv in refused.items():
        result = run_client(server, tmp_path, *argv, password=MEMBER_PASSWORD)
        assert result.returncode == 2, (what, result)
        said[what] = " ".join(result.stderr.split())
    assert "'nope' is not a date; give one such as 2026-11-01." in said["since"]
    assert "--since (2026-11-05) must not be later than --until (2026-11-01)." in said["backwards"]
    assert "QUERY must not be empty: give words to search for." in said["empty"]
    assert (
        "One order may hold at most 8 copies of a guide book; '103:9' asks for 9." in said["nine"]
    )
    assert "these items ask for 9 copies of book 103." in said["nine in two"]
    assert all("Traceback" not in text and "argument '" not in text for text in said.values())
    assert run_json(server, tmp_path, "orders", "--user", "sam", password=MEMBER_PASSWORD) == {
        "orders": []
    }


# 6: a mistyped area gets the menus' suggestion on the command line too ---------------------


def test_search_walks_suggests_the_area_a_typo_meant(server: ServerProcess, tmp_path: Path) -> None:
    shown = run_client(server, tmp_path, "search-walks", "--area", "peak distrct")
    assert shown.returncode == 0, shown.stderr
    assert "No area matches 'peak distrct'. Did you mean Peak District?" in shown.stdout
    nothing = run_client(server, tmp_path, "recommend", "--area", "zzz")
    assert "No area matches 'zzz'; the areas subcommand lists them." in nothing.stdout
    found = run_client(server, tmp_path, "search-walks", "--area", "peak", "--difficulty", "hard")
    assert "Did you mean" not in found.stdout and "No area" not in found.stdout


# 8: the refund screen says when the order loses its discount ------------------------------


def test_cancelling_a_back_order_says_the_order_loses_its_discount() -> None:
    # 8 x £13.99 = £111.92, £11.19 off: £100.73. Five kept: £69.95, no discount.
    placed = {
        "id": 7, "created_at": "2026-01-17T13:05:00Z",
        "lines": [{"book": {"number": 105, "title": "Snowdonia"}, "quantity": 8, "fulfilled": 5,
                   "backordered": 3, "backorder_outstanding": 3, "backorder_cancelled": 0,
                   "unit_price_pence": 1399, "line_total_pence": 11192}],
        "subtotal_pence": 11192, "discount_pence": 1119, "total_pence": 10073,
    }  # fmt: skip
    after = dict(placed, subtotal_pence=6995, discount_pence=0, total_pence=6995)
    after["lines"] = [dict(placed["lines"][0], backorder_outstanding=0, backorder_cancelled=3,
                           line_total_pence=6995)]  # fmt: skip
    connection = FakeConnection(
        {"orders": {"orders": [placed]},
         "cancel_backorder": {"order": after, "refund_pence": 10073 - 6995}}
    )  # fmt: skip
    transcript = run_menu(
        connection, logged_in(MENU_IN["cancel back order"], "7", "105", "y", "0"), ["pw"]
    )
    lost = "The order loses its £11.19 discount, because it no longer comes to more than £75.00."
    assert f"You will be refunded £30.78. {lost} [Y/n]" in transcript
    assert f"You will be refunded £30.78. {lost}\n" in transcript  # and after, with the total


# 9: holds say until when a copy is kept, loans say how many renewals are used ---------------


def test_holds_say_until_when_and_loans_say_the_renewals_used() -> None:
    renewed = dict(KING_LOAN, renewals=1)
    connection = FakeConnection({"holds": {"holds": [KEPT]}, "history": {"loans": [renewed]}})
    transcript = run_menu(
        connection, logged_in(MENU_IN["holds"], "", MENU_IN["loans"], "0"), ["pw"]
    )
    until = format_local_time(KEPT["ready_until"])
    assert f"a copy is kept for you until {until}" in transcript
    assert "Renewals" in cells(transcript, "Loan")
    assert cells(transcript, "21")[-3:] == ["1", "of", "2"]


# 10: a password too short is refused at once --------------------------------------------


def test_a_too_short_password_is_refused_before_it_is_typed_again() -> None:
    connection = FakeConnection({"register": {"user": USER}})
    transcript = run_menu(
        connection, [MENU_OUT["register"], "ann", "", "0"], ["short", "long enough", "long enough"]
    )
    assert (
        "Password (at least 8 characters): \nThe password must be at least 8 characters long.\n"
        "Password (at least 8 characters): \nThe same password again: \n"
    ) in transcript
    assert connection.sent("register") == [{"username": "ann", "password": "long enough"}]


def test_a_script_at_a_terminal_refuses_a_short_new_password_at_once() -> None:
    prompts: list[str] = []

    def typed(prompt: str) -> str:
        prompts.append(prompt)
        return "short"

    streams = client.Streams(Terminal(), io.StringIO(), io.StringIO(), typed)
    with pytest.raises(UsageError, match="at least 8 characters"):
        client.read_new_password(streams)
    with pytest.raises(UsageError, match="at least 8 characters"):
        client.read_password({}, streams, twice=True)
    assert prompts == ["New password: ", "Password: "]


# Part A: the client reads the one command table ------------------------------------------


def test_the_servers_refusal_is_worded_from_its_details_not_its_message() -> None:
    # However the server words it, the argument it names gives the person's sentence.
    reworded = ServerError("bad_request", "Query: too long (max 200).", {"argument": "query"})
    connection = FakeConnection({"search_books": reworded})
    transcript = run_menu(connection, [MENU_OUT["search books"], "dune", "0"])
    assert "The search must be words to search for, at most 200 characters long." in transcript
    assert "Query: too long" not in transcript


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_the_token_is_kept_for_just_the_commands_the_table_says_return_one(cmd: str) -> None:
    connection = FakeConnection({cmd: {"token": "from-" + cmd, "user": USER}})
    connection.token = "before"
    connection.call(cmd)
    expected = "from-" + cmd if COMMANDS[cmd].returns_token else "before"
    assert connection.token == (None if cmd == "logout" else expected)


def test_json_reports_a_lost_answer_with_its_own_code() -> None:
    from client_link import AnswerLostError  # noqa: PLC0415 (the name this change gives it)

    out = io.StringIO()
    client.report_failure(AnswerLostError("lost"), True, client.Streams(io.StringIO(), out, out))
    assert json.loads(out.getvalue())["error"]["code"] == "outcome_unknown"
