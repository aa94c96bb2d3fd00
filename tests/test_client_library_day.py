"""A day at the library with the 1.2 commands (issue 17, item 5), driven as people would: a
member's messages, email, data and account deletion, a temporary password replaced before
anything else, and the librarians' Members menu; then the same as subcommands for scripts."""

from __future__ import annotations

import io
import json
import re
import stat
from datetime import date
from pathlib import Path
from typing import Any

import pytest

import client
import client_sentences as sentences
from client_checks import sentence_refused
from client_link import ServerError
from tests.test_client import (
    MEMBER_PASSWORD,
    MENU_ADMIN,
    MENU_IN,
    MENU_OUT,
    USER,
    FakeConnection,
    real_connection,
    run_client,
    run_json,
    run_menu,
)
from tests.wire import ServerProcess

ADMIN_PASSWORD = "admin-password"
NEW_PASSWORD = "a-new-walking-password"
ACCOUNT = {"email": "1", "remove email": "2", "my data": "3", "delete": "4", "back": "0"}
DESK = {"find": "1", "by name": "2", "check in": "3", "sweep": "4", "back": "0"}
FILE = {"lend": "1", "check in": "2", "reset": "3", "block": "4", "back": "0"}


def as_sam(
    server: ServerProcess, home: Path, *argv: str, password: str = MEMBER_PASSWORD, **options: Any
) -> dict[str, Any]:
    """A subcommand run by the member sam, with --json; its answer."""
    return run_json(server, home, *argv, "--user", "sam", password=password, **options)


def as_boss(server: ServerProcess, home: Path, *argv: str, **options: Any) -> dict[str, Any]:
    """A subcommand run by the librarian boss, with --json; its answer."""
    return run_json(server, home, *argv, "--user", "boss", password=ADMIN_PASSWORD, **options)


def book_id(server: ServerProcess, home: Path, title: str) -> int:
    """The library's id for a lending book, from the catalogue."""
    return int(run_json(server, home, "catalogue", title)["books"][0]["id"])


def session(server: ServerProcess, answers: list[Any], passwords: list[str]) -> str:
    """A whole menu session against the real server; what the person saw."""
    with real_connection(server) as connection:
        return run_menu(connection, answers, passwords)


def after_choice(transcript: str, choice: str, nth: int = 1) -> str:
    """What the menus showed after the nth time choice was typed at the main menu's 'Choose: '."""
    return transcript.split(f"Choose: {choice}\n")[nth]


def menu_line(transcript: str, number: str) -> str:
    """The label of the first main-menu line numbered number in this part of a transcript."""
    found = re.search(rf"^ *{number}  (.*)$", transcript, re.MULTILINE)
    assert found, transcript
    return found.group(1)


@pytest.fixture
def sam(server: ServerProcess, tmp_path: Path) -> ServerProcess:
    """The server, with the member sam registered."""
    run_json(server, tmp_path, "register", "--user", "sam", password=MEMBER_PASSWORD)
    return server


@pytest.fixture
def desk(sam: ServerProcess) -> ServerProcess:
    """The server, with sam and the librarian boss."""
    sam.create_admin("boss", ADMIN_PASSWORD)
    return sam


# Messages ------------------------------------------------------------------------------------


def test_the_messages_line_counts_new_ones_and_reading_them_marks_them_read(
    sam: ServerProcess, tmp_path: Path
) -> None:
    as_sam(sam, tmp_path, "buy", "101:1")
    as_sam(sam, tmp_path, "buy", "102:1")
    subjects = [notice["subject"] for notice in as_sam(sam, tmp_path, "messages")["notices"]]
    assert len(subjects) == 2
    messages = MENU_IN["messages"]
    transcript = session(
        sam, [MENU_OUT["log in"], "sam", messages, messages, "0"], [MEMBER_PASSWORD]
    )
    logged_in = after_choice(transcript, MENU_OUT["log in"])
    assert menu_line(logged_in, messages) == "Messages (2 new)"
    first = after_choice(transcript, messages, 1).split("Waymark (")[0]
    assert first.index(subjects[0]) < first.index(subjects[1])  # newest first, as the server gives
    assert first.count("  NEW  ") == 2
    assert "(2 new messages are now marked read.)" in first
    assert menu_line(after_choice(transcript, messages, 1), messages) == "Messages"
    second = after_choice(transcript, messages, 2)
    assert subjects[0] in second and "NEW" not in second and "marked read" not in second
    assert as_sam(sam, tmp_path, "messages", "--unread")["notices"] == []


def test_messages_left_half_way_mark_only_those_shown() -> None:
    notices = [
        {"id": number, "kind": "order_placed", "created_at": "2026-01-17T13:05:00Z",
         "subject": f"Your order {number} is confirmed", "body": "Thank you.", "read": False,
         "emailed": False, "details": {}}
        for number in range(12, 0, -1)
    ]  # fmt: skip
    connection = FakeConnection(
        {"notices": {"notices": notices, "unread": 12}, "mark_read": {"unread": 2}}
    )
    transcript = run_menu(
        connection, [MENU_OUT["log in"], "ann", MENU_IN["messages"], "", "0"], ["pw"]
    )
    assert connection.sent("mark_read") == [{"ids": list(range(12, 2, -1))}]
    assert "2 more messages: n for the next 2, Enter to stop:" in transcript
    assert "(10 new messages are now marked read. 2 messages still new.)" in transcript
    assert "Your order 2 is" not in transcript


def test_the_messages_line_does_without_a_count_the_server_cannot_give() -> None:
    connection = FakeConnection({"notices": ServerError("internal", "Something went wrong.")})
    transcript = run_menu(connection, [MENU_OUT["log in"], "ann", "0"], ["pw"])
    assert menu_line(transcript.split("Welcome, ann!")[1], MENU_IN["messages"]) == "Messages"
    assert "Something went wrong" not in transcript


# My account: email, my data, deleting it -----------------------------------------------------


def test_my_account_shows_sets_and_removes_the_email(sam: ServerProcess, tmp_path: Path) -> None:
    transcript = session(
        sam,
        [MENU_OUT["log in"], "sam", MENU_IN["my account"],
         ACCOUNT["email"], "sam at home", "sam@example.org",
         ACCOUNT["remove email"], "y",
         ACCOUNT["email"], "sam@walkers.example", ACCOUNT["back"], "0"],
        [MEMBER_PASSWORD],
    )  # fmt: skip
    assert "My account: sam (member)" in transcript
    assert "You have no email address: your messages are only here, under Messages." in transcript
    assert "The email address must be like name@example.org" in transcript  # checked as typed
    assert "Your email is sam@example.org: when the library sends email" in transcript
    assert "1  Change my email" in transcript
    assert "Remove sam@example.org from your account? [Y/n]" in transcript
    assert "Your email is removed." in transcript
    assert as_sam(sam, tmp_path, "whoami")["user"]["email"] == "sam@walkers.example"


def test_download_my_data_writes_a_json_file_here_and_never_over_another(
    sam: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_sam(sam, tmp_path, "buy", "101:1")
    as_sam(sam, tmp_path, "borrow", str(book_id(sam, tmp_path, "hobbit")))
    folder = tmp_path / "downloads"
    folder.mkdir()
    monkeypatch.chdir(folder)
    default = folder / f"waymark-data-sam-{date.today().isoformat()}.json"
    transcript = session(
        sam,
        [MENU_OUT["log in"], "sam", MENU_IN["my account"], ACCOUNT["my data"], "",
         ACCOUNT["my data"], "", "nowhere/mine.json", "mine.json", ACCOUNT["back"], "0"],
        [MEMBER_PASSWORD],
    )  # fmt: skip
    assert f"Save to which file? (Enter for {default.name}): " in transcript
    assert f"(1 loan, 0 holds, 1 order and 1 message) to {default}." in transcript
    assert f"{default} already exists, and it is not replaced; choose another name." in transcript
    assert f"There is no folder {folder / 'nowhere'} to save mine.json in." in transcript
    assert f"to {folder / 'mine.json'}." in transcript
    data = json.loads(default.read_text(encoding="utf-8"))
    assert set(data) == {"user", "loans", "holds", "orders", "notices"}
    assert data["user"]["username"] == "sam"
    assert [loan["book"]["title"] for loan in data["loans"]] == ["The Hobbit"]
    assert len(data["orders"]) == 1 and len(data["notices"]) == 1
    assert stat.S_IMODE(default.stat().st_mode) == 0o600  # personal data: the owner's alone
    assert json.loads((folder / "mine.json").read_text(encoding="utf-8")) == data


def test_deleting_my_account_needs_the_password_nothing_owed_and_a_yes(
    sam: ServerProcess, tmp_path: Path
) -> None:
    loan = as_sam(sam, tmp_path, "borrow", str(book_id(sam, tmp_path, "hobbit")))["loan"]
    delete = MENU_IN["my account"], ACCOUNT["delete"]
    transcript = session(
        sam,
        [MENU_OUT["log in"], "sam", *delete, "y", ACCOUNT["delete"], "y",
         ACCOUNT["delete"], "",  # Enter is no: a deletion cannot be undone
         lambda: as_sam(sam, tmp_path, "return", str(loan["id"])),
         ACCOUNT["delete"], "yes", "0"],
        [MEMBER_PASSWORD, "not-my-password", MEMBER_PASSWORD, MEMBER_PASSWORD, MEMBER_PASSWORD],
    )  # fmt: skip
    assert sentences.DELETION_WARNING in transcript
    assert "Delete the account sam for ever? [y/N]" in transcript
    assert "That password is not right, so your account is kept." in transcript
    assert (
        "Your account cannot be deleted while you have 1 book on loan. First return the book. "
        "Nothing was deleted." in transcript
    )
    assert "Nothing was deleted.\n" in transcript
    assert sentences.ACCOUNT_DELETED in transcript
    assert "Waymark (not logged in)" in transcript.split(sentences.ACCOUNT_DELETED)[1]
    gone = run_json(sam, tmp_path, "whoami", "--user", "sam", password=MEMBER_PASSWORD, status=1)
    assert gone["error"]["code"] == "invalid_credentials"
    run_json(sam, tmp_path, "register", "--user", "sam", password=MEMBER_PASSWORD)  # free again


# A temporary password is replaced before anything else ----------------------------------------


def test_after_a_reset_the_menus_ask_for_a_new_password_first(
    desk: ServerProcess, tmp_path: Path
) -> None:
    temporary = as_boss(desk, tmp_path, "reset-password", "sam")["temporary_password"]
    transcript = session(
        desk,
        [MENU_OUT["log in"], "sam", "1", MENU_IN["orders"], "0"],
        [temporary, "q",  # not now: the menus offer nothing else
         temporary, NEW_PASSWORD, NEW_PASSWORD],
    )  # fmt: skip
    assert sentences.CHOOSE_NEW_FIRST in transcript
    restricted = transcript.split("Waymark (logged in as sam)")[1].split("Choose:")[0]
    assert [line.split(None, 1)[1] for line in restricted.strip().splitlines()] == [
        "Choose a new password (the library gave you a temporary one)",
        "Log out",
        "Quit",
    ]
    assert "The temporary password the library gave you: " in transcript
    assert "Your new password is set." in transcript
    assert "You have no orders yet." in after_choice(transcript, MENU_IN["orders"])
    assert as_sam(desk, tmp_path, "whoami", password=NEW_PASSWORD)["user"]["username"] == "sam"


def test_a_login_with_the_temporary_password_goes_straight_to_a_new_one(
    desk: ServerProcess, tmp_path: Path
) -> None:
    temporary = as_boss(desk, tmp_path, "reset-password", "sam")["temporary_password"]
    transcript = session(
        desk,
        [MENU_OUT["log in"], "sam", MENU_IN["messages"], "0"],
        [temporary, NEW_PASSWORD, NEW_PASSWORD],  # the temporary one is not asked again
    )
    assert transcript.index(sentences.CHOOSE_NEW_FIRST) < transcript.index("Your new password")
    assert menu_line(transcript.split("Your new password is set.")[1], MENU_IN["log out"]) == (
        "Log out"
    )
    assert after_choice(transcript, MENU_IN["messages"]).count("  NEW  ") == 2  # reset, changed


# The librarians' Members menu ------------------------------------------------------------------


def test_the_desk_finds_a_member_blocks_unblocks_lends_checks_in_and_resets(
    desk: ServerProcess, tmp_path: Path
) -> None:
    run_json(desk, tmp_path, "register", "--user", "kim", password=MEMBER_PASSWORD)
    hobbit = as_sam(desk, tmp_path, "borrow", str(book_id(desk, tmp_path, "hobbit")))["loan"]
    as_sam(desk, tmp_path, "set-email", "sam@example.org")
    members = MENU_ADMIN["members"]
    first = session(
        desk,
        [MENU_OUT["log in"], "boss", members, DESK["find"], "", "", DESK["find"], "SA", "1",
         FILE["block"], "Three books overdue", FILE["back"], DESK["back"], "0"],
        [ADMIN_PASSWORD],
    )  # fmt: skip
    assert "Members: find, lend, check in, reset, block (admin)" in first
    everyone = first.split("Part of a username (Enter for every member): \n")[1]
    assert [row.split()[1] for row in everyone.splitlines()[3:6]] == ["boss", "kim", "sam"]
    sam_file = first.split("Choose a member by number (Enter to go back): 1\n")[1]
    assert "sam (member, sam@example.org): 1 book on loan, 0 overdue." in sam_file
    assert "The Hobbit" in sam_file and "No holds." in sam_file and "No orders." in sam_file
    assert "sam is blocked (Three books overdue)." in sam_file
    assert "BLOCKED: Three books overdue" in sam_file
    assert "4  Unblock sam" in sam_file

    blocked = session(
        desk, [MENU_OUT["log in"], "sam", MENU_IN["borrow"], "dune", "1", "y", "0"],
        [MEMBER_PASSWORD],
    )  # fmt: skip
    said = "Your account is blocked by the library: Three books overdue."
    assert said in blocked
    refused = run_client(desk, tmp_path, "buy", "101", "--user", "sam", password=MEMBER_PASSWORD)
    assert refused.returncode == 1 and refused.stderr.startswith(said)

    second = session(
        desk,
        [MENU_OUT["log in"], "boss", members, DESK["by name"], "nobody", DESK["by name"], "sam",
         FILE["lend"], "dune", "1", "y",  # refused: blocked
         FILE["block"], "y", FILE["lend"], "dune", "1", "y",
         FILE["check in"], str(hobbit["id"]),
         FILE["reset"], "y", "",
         FILE["back"], DESK["check in"], str(hobbit["id"] + 1), DESK["sweep"], DESK["back"], "0"],
        [ADMIN_PASSWORD],
    )  # fmt: skip
    assert "No member is called 'nobody'." in second
    assert "That member is blocked: Three books overdue. Unblock them before lending" in second
    assert "sam is unblocked: they may borrow, renew, hold and buy again." in second
    assert f"Lent Dune to sam as loan {hobbit['id'] + 1}; it is due back " in second
    assert f"Checked in loan {hobbit['id']}: The Hobbit is back." in second
    assert f"Checked in loan {hobbit['id'] + 1}: Dune is back." in second
    assert "Nothing was due: the sweep made no new notices." in second
    assert "sam's password is reset, and every session of theirs has ended." in second
    temporary = re.findall(r"Temporary password: +(\S+)", second)
    assert len(temporary) == 1 and second.count(temporary[0]) == 1  # shown once, clearly
    assert "Hand it to the member now: it is shown only this once" in second
    assert "Press Enter once sam has it: \n\nsam (member" in second
    logged_in = as_sam(desk, tmp_path, "login", password=temporary[0])
    assert logged_in["must_change_password"] is True
    written = [
        p for p in tmp_path.rglob("*") if p.is_file() and temporary[0].encode() in p.read_bytes()
    ]
    assert written == []  # neither the client nor the server kept it in a file or a log
    loans = as_boss(desk, tmp_path, "member", "sam")["loans"]
    assert all(loan["returned_at"] for loan in loans) and len(loans) == 2


# Subcommands -----------------------------------------------------------------------------------


def test_member_subcommands_messages_email_and_my_data(sam: ServerProcess, tmp_path: Path) -> None:
    run_json(sam, tmp_path, "register", "--user", "kim", "--email", "kim@example.org",
             password=MEMBER_PASSWORD)  # fmt: skip
    kim = run_json(sam, tmp_path, "whoami", "--user", "kim", password=MEMBER_PASSWORD)["user"]
    assert kim["email"] == "kim@example.org"
    bad = run_client(sam, tmp_path, "register", "--user", "lee", "--email", "lee", password="x" * 9)
    assert bad.returncode == 2 and "The email address must be like name@example.org" in bad.stderr

    as_sam(sam, tmp_path, "buy", "101:1")
    listed = as_sam(sam, tmp_path, "messages")
    assert listed["unread"] == 1 and listed["notices"][0]["kind"] == "order_placed"
    shown = run_client(sam, tmp_path, "messages", "--user", "sam", password=MEMBER_PASSWORD)
    assert shown.returncode == 0 and "NEW  " + listed["notices"][0]["subject"] in shown.stdout
    assert "(1 new message; --mark-read marks them read.)" in shown.stdout
    marked = as_sam(sam, tmp_path, "messages", "--unread", "--mark-read")
    assert (marked["marked_read"], marked["unread"]) == (1, 0)
    assert as_sam(sam, tmp_path, "messages", "--unread")["notices"] == []

    assert as_sam(sam, tmp_path, "set-email", "sam@example.org")["user"]["email"] == (
        "sam@example.org"
    )
    assert as_sam(sam, tmp_path, "set-email", "--remove")["user"]["email"] is None
    for argv, said in (
        (["set-email"], "Give an email ADDRESS to set, or --remove"),
        (["set-email", "a@b.org", "--remove"], "Give an email ADDRESS to set, or --remove"),
        (["set-email", "a@b"], "The email address must be like name@example.org"),
    ):
        refused = run_client(sam, tmp_path, *argv, "--user", "sam", password=MEMBER_PASSWORD)
        assert refused.returncode == 2 and said in refused.stderr, argv

    out = tmp_path / "sam.json"
    saved = as_sam(sam, tmp_path, "my-data", "--out", str(out))
    assert saved == {"file": str(out), "loans": 0, "holds": 0, "orders": 1, "notices": 1}
    assert set(json.loads(out.read_text(encoding="utf-8"))) == {
        "user", "loans", "holds", "orders", "notices"
    }  # fmt: skip
    again = run_client(sam, tmp_path, "my-data", "--out", str(out), "--user", "sam",
                       password=MEMBER_PASSWORD)  # fmt: skip
    assert again.returncode == 2 and f"{out} already exists, and it is not replaced" in again.stderr
    here = tmp_path / "here"
    here.mkdir()
    plain = run_client(sam, tmp_path, "my-data", "--user", "sam", password=MEMBER_PASSWORD,
                       cwd=here)  # fmt: skip
    default = here / f"waymark-data-sam-{date.today().isoformat()}.json"
    assert plain.returncode == 0 and f"to {default}." in plain.stdout
    assert json.loads(default.read_text(encoding="utf-8"))["user"]["username"] == "sam"


def test_the_delete_account_subcommand(sam: ServerProcess, tmp_path: Path) -> None:
    loan = as_sam(sam, tmp_path, "borrow", str(book_id(sam, tmp_path, "hobbit")))["loan"]
    run_json(sam, tmp_path, "login", "--user", "sam", "--remember", password=MEMBER_PASSWORD)
    wrong = run_json(sam, tmp_path, "delete-account", "--yes", password="not-mine-1", status=1)
    assert wrong["error"]["code"] == "invalid_credentials"
    owed = run_json(sam, tmp_path, "delete-account", "--yes", password=MEMBER_PASSWORD, status=1)
    assert owed["error"]["code"] == "conflict"
    assert owed["error"]["details"] == {"active_loans": 1, "backorder_outstanding": 0}
    said = run_client(sam, tmp_path, "delete-account", "--yes", password=MEMBER_PASSWORD)
    assert said.returncode == 1
    assert said.stderr.startswith("Your account cannot be deleted while you have 1 book on loan.")
    unasked = run_client(sam, tmp_path, "delete-account", stdin=MEMBER_PASSWORD + "\n")
    assert unasked.returncode == 2 and "add --yes in a script" in unasked.stderr
    run_json(sam, tmp_path, "return", str(loan["id"]))
    assert run_json(sam, tmp_path, "delete-account", "--yes", stdin=MEMBER_PASSWORD + "\n") == {}
    assert not (tmp_path / "token").exists()  # the remembered session went with the account
    gone = run_json(sam, tmp_path, "whoami", "--user", "sam", password=MEMBER_PASSWORD, status=1)
    assert gone["error"]["code"] == "invalid_credentials"


def test_the_desk_subcommands(desk: ServerProcess, tmp_path: Path) -> None:
    found = as_boss(desk, tmp_path, "members", "SA")
    assert [member["username"] for member in found["members"]] == ["sam"] and found["total"] == 1
    listed = run_client(desk, tmp_path, "members", "--user", "boss", password=ADMIN_PASSWORD)
    assert listed.returncode == 0 and "2 of 2 members." in listed.stdout
    hobbit = book_id(desk, tmp_path, "hobbit")

    blocked = as_boss(desk, tmp_path, "block", "sam", "--reason", "Lost the map")["user"]
    assert blocked["blocked"] is True and blocked["blocked_reason"] == "Lost the map"
    refused = as_sam(desk, tmp_path, "borrow", str(hobbit), status=1)["error"]
    assert refused["code"] == "forbidden" and refused["details"]["reason"] == "Lost the map"
    said = run_client(desk, tmp_path, "borrow", str(hobbit), "--user", "sam",
                      password=MEMBER_PASSWORD)  # fmt: skip
    assert said.returncode == 1 and said.stderr.startswith(
        "Your account is blocked by the library: Lost the map. You can still return books"
    )
    assert as_boss(desk, tmp_path, "unblock", "sam")["user"]["blocked"] is False

    loan = as_boss(desk, tmp_path, "lend", "sam", str(hobbit))["loan"]
    file = as_boss(desk, tmp_path, "member", "sam")
    assert set(file) == {"user", "loans", "holds", "orders"}
    assert [item["id"] for item in file["loans"]] == [loan["id"]]
    shown = run_client(desk, tmp_path, "member", "sam", "--user", "boss", password=ADMIN_PASSWORD)
    assert "sam (member, no email): 1 book on loan, 0 overdue." in shown.stdout
    assert as_boss(desk, tmp_path, "checkin", str(loan["id"]))["loan"]["returned_at"]
    again = as_boss(desk, tmp_path, "checkin", str(loan["id"]), status=1)
    assert again["error"]["code"] == "conflict"

    assert set(as_boss(desk, tmp_path, "sweep-notices")["created"]) >= {"due_soon", "overdue"}
    swept = run_client(desk, tmp_path, "sweep-notices", "--user", "boss", password=ADMIN_PASSWORD)
    assert swept.stdout.strip() == "Nothing was due: the sweep made no new notices."

    reset = run_client(desk, tmp_path, "reset-password", "sam", "--user", "boss",
                       password=ADMIN_PASSWORD)  # fmt: skip
    assert reset.returncode == 0
    temporary = re.findall(r"Temporary password: +(\S+)", reset.stdout)
    assert len(temporary) == 1 and reset.stdout.count(temporary[0]) == 1
    assert reset.stdout.startswith("sam's password is reset, and every session of theirs")
    first = run_client(desk, tmp_path, "login", "--user", "sam", password=temporary[0])
    assert sentences.CHOOSE_NEW_FIRST_SCRIPT in first.stdout
    held_back = run_client(desk, tmp_path, "orders", "--user", "sam", password=temporary[0])
    assert held_back.returncode == 1
    assert held_back.stderr.strip() == sentences.CHOOSE_NEW_FIRST_SCRIPT
    changed = run_client(desk, tmp_path, "change-password", "--user", "sam",
                         stdin=f"{temporary[0]}\n{NEW_PASSWORD}\n")  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert as_sam(desk, tmp_path, "orders", password=NEW_PASSWORD) == {"orders": []}

    forbidden = run_client(desk, tmp_path, "members", "--user", "sam", password=NEW_PASSWORD)
    assert forbidden.returncode == 1 and "Only an administrator" in forbidden.stderr
    unknown = as_boss(desk, tmp_path, "member", "nobody", status=1)
    assert unknown["error"]["code"] == "not_found"
    no_reason = run_client(desk, tmp_path, "block", "sam", "--user", "boss")
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    empty_reason = run_client(desk, tmp_path, "block", "sam", "--reason", "", "--user", "boss")
    assert empty_reason.returncode == 2
    assert "must be 1 to 200 characters long" in empty_reason.stderr


# Sentences a person understands ---------------------------------------------------------------


def test_refusals_of_the_1_2_commands_are_said_from_their_details() -> None:
    blocked = {"blocked": True, "reason": "Lost the map"}
    assert sentence_refused(ServerError("forbidden", "x", blocked, "renew")).startswith(
        "Your account is blocked by the library: Lost the map."
    )
    assert sentence_refused(ServerError("forbidden", "x", blocked, "lend")).startswith(
        "That member is blocked: Lost the map. Unblock them"
    )
    owed = {"active_loans": 2, "backorder_outstanding": 3}
    assert sentence_refused(ServerError("conflict", "x", owed, "delete_account")) == (
        "Your account cannot be deleted while you have 2 books on loan and 3 back-ordered guide "
        "books still to be sent to you. First return the books and wait for the back-ordered "
        "copies or cancel them. Nothing was deleted."
    )
    assert sentences.sentence_sweep({"due_soon": 1, "overdue": 2, "hold_ready": 0}) == (
        "The sweep made 3 notices now: 1 due-soon reminder and 2 overdue notices."
    )


def test_a_declined_deletion_at_a_terminal_deletes_nothing() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    connection = FakeConnection({"login": {"token": "t", "user": USER}})
    options = client.build_parser().parse_args(["delete-account", "--user", "ann"])
    streams = client.Streams(Terminal("no\n"), io.StringIO(), io.StringIO(), lambda _: "pw")
    with pytest.raises(client.DeclinedError, match="Nothing was deleted."):
        client.delete_account_args(connection, options, {}, streams)
    assert "Delete the account ann for ever? Type yes: " in streams.stderr.getvalue()
    assert connection.sent("delete_account") == []
