"""Notices through the real protocol: what each write and each sweep tells a member.

Every test talks to a real server.py process. Loans due soon or overdue, lapsed holds and
empty stock are set up by writing those columns straight into the database, as
tests/test_cluster.py writes rows, since nobody can wait two weeks for a loan to fall due.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import mysql.connector
import pytest

from engine import SQLiteBackend, backend_from_url, mysql_address
from notice_texts import iso
from tests.fake_openlibrary import FakeOpenLibrary
from tests.smtp_relay import wait_for
from tests.wire import ServerProcess, WireClient

DAY_S = 86_400
PASSWORD = "correct horse"
ADMIN, ADMIN_PASSWORD = "librarian", "librarian's own password"


# Helpers: SQL straight to the database, members and an admin over the wire --------------------


def sql(db_url: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the server's database directly (not through a server); its rows."""
    backend = backend_from_url(db_url)
    if isinstance(backend, SQLiteBackend):
        with closing(sqlite3.connect(backend.path, timeout=30)) as lite:
            rows = lite.execute(statement, tuple(params)).fetchall()
            lite.commit()
            return rows
    host, port, user, password, database = mysql_address(db_url)
    connection = mysql.connector.connect(
        host=host, port=port, user=user, password=password, database=database,
        autocommit=True, connection_timeout=5,
    )  # fmt: skip
    try:
        cursor: Any = connection.cursor()
        cursor.execute(statement.replace("?", "%s"), tuple(params))
        return [tuple(row) for row in cursor.fetchall()] if cursor.with_rows else []
    finally:
        connection.close()


def set_due(db_url: str, loan_id: int, due_at: int) -> None:
    sql(db_url, "UPDATE loans SET due_at = ? WHERE id = ?", (due_at, loan_id))


def member(
    stack: ExitStack, server: ServerProcess, username: str, email: str | None = None
) -> tuple[WireClient, int]:
    """Register a member (with an email if given), log a connection in; it and their id."""
    client = stack.enter_context(server.client())
    args: dict[str, Any] = {"username": username, "password": PASSWORD}
    if email is not None:
        args["email"] = email
    client.call("register", **args)
    user = client.call("login", username=username, password=PASSWORD)["user"]
    return client, user["id"]


def admin(stack: ExitStack, server: ServerProcess, create: bool = True) -> WireClient:
    """A connection logged in as the admin (made with server.py create-admin the first time)."""
    if create:
        server.create_admin(ADMIN, ADMIN_PASSWORD)
    client = stack.enter_context(server.client())
    client.call("login", username=ADMIN, password=ADMIN_PASSWORD)
    return client


def notices(client: WireClient, **args: Any) -> list[dict[str, Any]]:
    return client.call("notices", **args)["notices"]


def of_kind(client: WireClient, kind: str) -> list[dict[str, Any]]:
    return [n for n in notices(client) if n["kind"] == kind]


def lending_books(client: WireClient) -> list[dict[str, Any]]:
    return client.call("catalogue", limit=200)["books"]


def borrow(client: WireClient, book_id: int) -> dict[str, Any]:
    return client.call("borrow", book_id=book_id)["loan"]


def check_notice_shape(notice: dict[str, Any]) -> None:
    """Every field of a Notice, with its type; subject and body are sentences for a person."""
    assert set(notice) == {
        "id", "kind", "created_at", "subject", "body", "read", "emailed", "details",
    }  # fmt: skip
    assert isinstance(notice["id"], int)
    assert isinstance(notice["read"], bool) and isinstance(notice["emailed"], bool)
    assert isinstance(notice["details"], dict)
    assert notice["subject"].strip() and notice["body"].strip()
    time.strptime(notice["created_at"], "%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as opened:
        yield opened


# A write's notice: made with the write, read and marked only by its member ---------------------


def test_a_buy_makes_an_order_placed_notice_only_its_member_can_mark_read(
    backend_server: ServerProcess, stack: ExitStack
) -> None:
    alice, _ = member(stack, backend_server, "alice")
    bob, _ = member(stack, backend_server, "bob")
    assert alice.call("notices") == {"notices": [], "unread": 0}

    order = alice.call("buy", items=[{"book": 101, "quantity": 2}])["order"]
    found = alice.call("notices")
    assert found["unread"] == 1 and len(found["notices"]) == 1
    notice = found["notices"][0]
    check_notice_shape(notice)
    assert notice["kind"] == "order_placed"
    assert notice["details"] == {"order_id": order["id"], "total_pence": order["total_pence"]}
    assert notice["read"] is False
    assert notice["emailed"] is False  # no --smtp-url: in-app only
    assert str(order["id"]) in notice["subject"]

    bobs = bob.call("buy", items=[{"book": 102, "quantity": 1}])["order"]
    [bobs_notice] = notices(bob)
    assert bobs_notice["details"]["order_id"] == bobs["id"]
    assert notices(alice) == [notice]  # each member sees only their own

    # One id that is not hers among the ids: not_found, and nothing is marked, hers included.
    error = alice.error("mark_read", ids=[notice["id"], bobs_notice["id"]])
    assert error["code"] == "not_found"
    error = alice.error("mark_read", ids=[bobs_notice["id"]])
    assert error["code"] == "not_found"
    error = alice.error("mark_read", ids=[bobs_notice["id"] + 1000])
    assert error["code"] == "not_found"
    assert alice.call("notices", unread_only=True)["unread"] == 1
    assert [n["read"] for n in notices(alice)] == [False]
    assert [n["read"] for n in notices(bob)] == [False]

    assert alice.call("mark_read", ids=[notice["id"]]) == {"unread": 0}
    assert [n["read"] for n in notices(alice)] == [True]
    assert alice.call("notices", unread_only=True) == {"notices": [], "unread": 0}
    assert alice.call("mark_read", ids=[notice["id"]]) == {"unread": 0}  # again: no change
    assert [n["read"] for n in notices(bob)] == [False]  # bob's untouched by all of it

    second = alice.call("buy", items=[{"book": 103, "quantity": 1}])["order"]
    listed = notices(alice)
    assert [n["details"]["order_id"] for n in listed] == [second["id"], order["id"]]  # newest first
    assert [n["details"]["order_id"] for n in notices(alice, limit=1)] == [second["id"]]
    assert bob.call("mark_read", all=True) == {"unread": 0}
    assert [n["read"] for n in notices(bob)] == [True]
    assert alice.call("notices")["unread"] == 1

    assert alice.error("notices", limit=201)["code"] == "bad_request"
    assert alice.error("mark_read", ids=["one"])["code"] == "bad_request"
    assert alice.error("sweep_notices")["code"] == "forbidden"  # admin only
    with backend_server.client() as anonymous:
        assert anonymous.error("notices")["code"] == "unauthorized"
        assert anonymous.error("mark_read", all=True)["code"] == "unauthorized"


def send_with_key(client: WireClient, cmd: str, key: str, **args: Any) -> dict[str, Any]:
    """A request carrying an idempotency_key; the whole response."""
    client.next_id += 1
    line = {"id": client.next_id, "cmd": cmd, "args": args, "idempotency_key": key}
    client.send_raw((json.dumps(line) + "\n").encode())
    return client.read()


def test_a_refused_or_rolled_back_write_leaves_no_notice(
    backend_server: ServerProcess, stack: ExitStack
) -> None:
    alice, _ = member(stack, backend_server, "alice")

    error = alice.error("buy", items=[{"book": 101, "quantity": 9}])  # over 8 in one order
    assert (error["code"], error["details"]["limit"]) == ("limit_exceeded", 8)
    error = alice.error("buy", items=[{"book": 101, "quantity": 5}, {"book": 101, "quantity": 4}])
    assert error["code"] == "limit_exceeded"
    assert alice.call("notices") == {"notices": [], "unread": 0}

    alice.call("buy", items=[{"book": 101, "quantity": 6}])
    # 6 + 3 breaks the limit per customer: the second line's book makes the whole order fail
    # after the first line's book was checked, and nothing of it stays.
    error = alice.error("buy", items=[{"book": 102, "quantity": 1}, {"book": 101, "quantity": 3}])
    assert (error["code"], error["details"]["allowed"]) == ("limit_exceeded", 2)
    assert alice.error("buy", items=[{"book": 999, "quantity": 1}])["code"] == "not_found"
    assert (
        alice.error("change_password", old_password="wrong one!", new_password="a new one 1")[
            "code"
        ]
        == "invalid_credentials"
    )
    assert (
        alice.error("change_password", old_password=PASSWORD, new_password="short")["code"]
        == "weak_password"
    )
    assert [n["kind"] for n in notices(alice)] == ["order_placed"]

    # A retried buy with the same idempotency key is answered from the store: no second notice.
    first = send_with_key(alice, "buy", "retry-key-0001", items=[{"book": 102, "quantity": 1}])
    again = send_with_key(alice, "buy", "retry-key-0001", items=[{"book": 102, "quantity": 1}])
    assert first["ok"] and again["ok"] and again.get("replayed") is True
    assert [n["kind"] for n in notices(alice)] == ["order_placed", "order_placed"]


# The sweep: due_soon and overdue, once per cause --------------------------------------------


def test_sweeping_twice_in_a_row_creates_nothing_the_second_time(
    backend_server: ServerProcess, stack: ExitStack
) -> None:
    db = backend_server.db_url
    desk = admin(stack, backend_server)
    alice, _ = member(stack, backend_server, "alice")
    books = lending_books(alice)
    soon, late, later, fine = (borrow(alice, b["id"]) for b in books[:4])
    now = int(time.time())
    set_due(db, soon["id"], now + DAY_S)  # within the default 2 days
    set_due(db, late["id"], now - DAY_S - 3600)  # 1 day overdue
    set_due(db, later["id"], now - 8 * DAY_S)  # 8 days: the 7-day step
    set_due(db, fine["id"], now + 3 * DAY_S)  # not yet within 2 days

    assert desk.call("sweep_notices") == {"created": {"due_soon": 1, "overdue": 2, "hold_ready": 0}}
    assert desk.call("sweep_notices") == {"created": {"due_soon": 0, "overdue": 0, "hold_ready": 0}}
    [due] = of_kind(alice, "due_soon")
    check_notice_shape(due)
    assert due["details"] == {"loan_id": soon["id"], "due_at": iso(now + DAY_S)}
    assert books[0]["title"] in due["subject"]
    overdue = sorted(of_kind(alice, "overdue"), key=lambda n: n["details"]["loan_id"])
    assert [n["details"] for n in overdue] == [
        {"loan_id": late["id"], "due_at": iso(now - DAY_S - 3600), "days_overdue": 1},
        {"loan_id": later["id"], "due_at": iso(now - 8 * DAY_S), "days_overdue": 7},
    ]
    assert all(n["read"] is False for n in notices(alice))

    # A new due date (a renewal, or a librarian's change) is reminded of once more.
    set_due(db, soon["id"], now + DAY_S + 7200)
    assert desk.call("sweep_notices")["created"] == {"due_soon": 1, "overdue": 0, "hold_ready": 0}
    assert desk.call("sweep_notices")["created"] == {"due_soon": 0, "overdue": 0, "hold_ready": 0}
    assert sorted(n["details"]["due_at"] for n in of_kind(alice, "due_soon")) == [
        iso(now + DAY_S),
        iso(now + DAY_S + 7200),
    ]
    # A returned loan is never reminded of.
    alice.call("return", loan_id=fine["id"])
    set_due(db, fine["id"], now + 3600)
    assert desk.call("sweep_notices")["created"]["due_soon"] == 0


def test_overdue_reminders_come_at_1_7_and_14_days_one_each_at_most_three(
    server: ServerProcess, stack: ExitStack
) -> None:
    db = server.db_url
    desk = admin(stack, server)
    alice, _ = member(stack, server, "alice")
    books = lending_books(alice)
    loan, late_found = borrow(alice, books[0]["id"]), borrow(alice, books[1]["id"])
    now = int(time.time())

    made = []
    for days_late, new in ((0.5, 0), (1.5, 1), (3, 0), (7.2, 1), (10, 0), (14.1, 1), (40, 0)):
        set_due(db, loan["id"], now - int(days_late * DAY_S))
        made.append(desk.call("sweep_notices")["created"]["overdue"])
        assert made[-1] == new, (days_late, made)
    reminders = [n for n in of_kind(alice, "overdue") if n["details"]["loan_id"] == loan["id"]]
    assert [n["details"]["days_overdue"] for n in reminders] == [14, 7, 1]  # newest first
    assert "14 days overdue" in reminders[0]["subject"]
    assert reminders[0]["details"]["due_at"] == iso(now - int(14.1 * DAY_S))

    # A loan first swept at 10 days late gets the 7-day reminder, then only the 14-day one.
    set_due(db, late_found["id"], now - 10 * DAY_S)
    assert desk.call("sweep_notices")["created"]["overdue"] == 1
    set_due(db, late_found["id"], now - 15 * DAY_S)
    assert desk.call("sweep_notices")["created"]["overdue"] == 1
    set_due(db, late_found["id"], now - 100 * DAY_S)
    assert desk.call("sweep_notices")["created"]["overdue"] == 0
    steps = Counter(
        (n["details"]["loan_id"], n["details"]["days_overdue"]) for n in of_kind(alice, "overdue")
    )
    assert steps == {
        (loan["id"], 1): 1, (loan["id"], 7): 1, (loan["id"], 14): 1,
        (late_found["id"], 7): 1, (late_found["id"], 14): 1,
    }  # fmt: skip


def test_the_server_sweeps_by_itself_every_notice_interval(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary, stack: ExitStack
) -> None:
    db = f"sqlite:///{tmp_path / 'server.db'}"
    server = stack.enter_context(
        ServerProcess(tmp_path, db, openlibrary_fake.url, extra_args=("--notice-interval-s", "0.5"))
    )
    alice, _ = member(stack, server, "alice")
    loan = borrow(alice, lending_books(alice)[0]["id"])
    due = int(time.time()) + DAY_S
    set_due(db, loan["id"], due)
    found = wait_for(lambda: of_kind(alice, "due_soon"), 30, "the server's own sweep")
    assert [n["details"] for n in found] == [{"loan_id": loan["id"], "due_at": iso(due)}]


# Two servers sweeping at the same moment -----------------------------------------------------


def test_two_servers_sweeping_at_the_same_moment_never_make_a_notice_twice(
    tmp_path: Path, db_url: str, openlibrary_fake: FakeOpenLibrary, stack: ExitStack
) -> None:
    servers = [
        stack.enter_context(ServerProcess(tmp_path, db_url, openlibrary_fake.url)) for _ in range(2)
    ]
    race_two_sweeps(
        stack, servers, lambda loan, due: set_due(db_url, loan, due), [db_url], "member"
    )


def race_two_sweeps(
    stack: ExitStack,
    servers: list[ServerProcess],
    set_due_at: Callable[[int, int], None],
    databases: list[str],
    prefix: str,
) -> None:
    """Three rounds of the two servers sweeping at one barrier, over 10 loans due soon and 10
    overdue (a new due date or step each round); then each database holds every cause once."""
    desks = [admin(stack, servers[0]), admin(stack, servers[1], create=False)]
    books = lending_books(desks[0])
    loans: list[dict[str, Any]] = []
    for index in range(4):  # 4 members x 5 loans, each book borrowed once
        client, _ = member(stack, servers[index % 2], f"{prefix}{index}")
        loans += [borrow(client, b["id"]) for b in books[index * 5 : index * 5 + 5]]
    soon, late = loans[:10], loans[10:]
    now = int(time.time())

    for round_, days_late in enumerate((1.5, 7.5, 14.5)):
        for n, loan in enumerate(soon):  # a new due date each round: a new due_soon each
            set_due_at(loan["id"], now + DAY_S + 60 * round_ + n)
        for loan in late:  # the next overdue step each round
            set_due_at(loan["id"], now - int(days_late * DAY_S))
        barrier = threading.Barrier(2)
        answers: list[dict[str, Any]] = [{}, {}]
        threads = [
            threading.Thread(target=sweep_at_once, args=(barrier, desks[i], answers, i))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert all(a.get("ok") for a in answers), answers
        made = Counter[str]()
        for answer in answers:
            made.update(answer["result"]["created"])
        assert (made["due_soon"], made["overdue"], made["hold_ready"]) == (10, 10, 0), (
            round_,
            answers,
        )

    for database in databases:
        rows = sql(
            database, "SELECT kind, details FROM notices WHERE kind IN ('due_soon', 'overdue')"
        )
        causes = Counter(
            (kind, d["loan_id"], d["due_at"] if kind == "due_soon" else d["days_overdue"])
            for kind, d in ((kind, json.loads(details)) for kind, details in rows)
        )
        assert len(causes) == 60 and set(causes.values()) == {1}, causes.most_common(3)


def sweep_at_once(
    barrier: threading.Barrier, desk: WireClient, answers: list[dict[str, Any]], i: int
) -> None:
    barrier.wait(10)
    answers[i] = desk.request("sweep_notices")


# The other kinds and their details ------------------------------------------------------------


def test_hold_ready_when_a_copy_comes_back_and_when_a_kept_copy_lapses(
    server: ServerProcess, stack: ExitStack
) -> None:
    desk = admin(stack, server)
    alice, _ = member(stack, server, "alice")
    bob, _ = member(stack, server, "bob")
    carol, _ = member(stack, server, "carol")
    book = next(b for b in lending_books(alice) if b["copies"] == 1)
    loan = borrow(alice, book["id"])
    bobs_hold = bob.call("hold", book_id=book["id"])["hold"]
    carols_hold = carol.call("hold", book_id=book["id"])["hold"]
    assert notices(bob) == [] and notices(carol) == []

    alice.call("return", loan_id=loan["id"])
    [ready] = notices(bob)
    check_notice_shape(ready)
    [held] = bob.call("holds")["holds"]
    assert held["ready"] is True
    assert ready["kind"] == "hold_ready"
    assert ready["details"] == {
        "hold_id": bobs_hold["id"], "book_id": book["id"], "ready_until": held["ready_until"],
    }  # fmt: skip
    assert book["title"] in ready["subject"]
    assert notices(carol) == [] and notices(alice) == []

    # Bob never collects it: the sweep passes the copy to carol, with her own notice, once.
    sql(server.db_url, "UPDATE holds SET ready_until = ? WHERE id = ?",
        (int(time.time()) - 60, bobs_hold["id"]))  # fmt: skip
    assert desk.call("sweep_notices")["created"]["hold_ready"] == 1
    assert desk.call("sweep_notices")["created"]["hold_ready"] == 0
    [carols] = notices(carol)
    [carols_held] = carol.call("holds")["holds"]
    assert carols["kind"] == "hold_ready"
    assert carols["details"] == {
        "hold_id": carols_hold["id"], "book_id": book["id"],
        "ready_until": carols_held["ready_until"],
    }  # fmt: skip
    assert len(notices(bob)) == 1


def test_backorder_filled_when_a_restock_supplies_owed_copies(
    server: ServerProcess, stack: ExitStack
) -> None:
    desk = admin(stack, server)
    alice, _ = member(stack, server, "alice")
    bob, _ = member(stack, server, "bob")
    sql(server.db_url, "UPDATE shop_books SET in_stock = 0 WHERE number = 103")
    order = alice.call("buy", items=[{"book": 103, "quantity": 3}])["order"]
    assert order["lines"][0]["backordered"] == 3
    [placed] = notices(alice)
    assert placed["details"] == {"order_id": order["id"], "total_pence": order["total_pence"]}
    assert "back-ordered" in placed["body"]

    filled = desk.call("restock", book=103, quantity=2)["backorders_filled"]
    assert filled == [{"order_id": order["id"], "quantity": 2}]
    desk.call("restock", book=103, quantity=5)  # the last copy owed, then stock
    desk.call("restock", book=103, quantity=5)  # nothing owed: no notice
    supplied = of_kind(alice, "backorder_filled")
    for notice in supplied:
        check_notice_shape(notice)
    assert [n["details"] for n in supplied] == [
        {"order_id": order["id"], "book": 103, "quantity": 1},
        {"order_id": order["id"], "book": 103, "quantity": 2},
    ]
    assert notices(bob) == []


def test_password_changed_after_change_password_and_reset_password(
    server: ServerProcess, stack: ExitStack
) -> None:
    desk = admin(stack, server)
    alice, _ = member(stack, server, "alice")
    alice.call("change_password", old_password=PASSWORD, new_password="second password 2")
    [changed] = notices(alice)
    check_notice_shape(changed)
    assert (changed["kind"], changed["details"]) == ("password_changed", {})
    assert "alice" in changed["body"]

    temporary = desk.call("reset_password", username="alice")["temporary_password"]
    again = stack.enter_context(server.client())
    assert again.call("login", username="alice", password=temporary)["must_change_password"]
    again.call("change_password", old_password=temporary, new_password="third password 3")
    listed = notices(again)
    assert [(n["kind"], n["details"]) for n in listed] == [("password_changed", {})] * 3
    for notice in listed:
        for secret in (PASSWORD, "second password 2", temporary, "third password 3"):
            assert secret not in notice["subject"] + notice["body"]
