"""Writes that are safe to retry, from the client's side: a real server behind a proxy that loses
answers or closes, the client's menus and subcommands in front (PROTOCOL.md 1.2, idempotency_key).

A write whose answer was lost is sent again with its key until the server answers, so a person
sees the answer, never "not known", and the server does it once; only a server out of reach for
longer than --retry-s leaves the outcome unknown. A refused write is never sent again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mysql.connector
import pytest

from client_link import AnswerLostError, Connection, ServerError
from engine import mysql_address
from tests.fake_openlibrary import FakeOpenLibrary
from tests.tcp_proxy import TcpProxy
from tests.test_client import CLIENT, MEMBER_PASSWORD, MENU_IN, MENU_OUT, run_menu
from tests.wire import SOCKET_TIMEOUT_S, ServerProcess

BOOK = 101  # More Peak District, £12.99, in stock in the sample catalogue
UNKNOWN_WORDS = ("not known", "unknown")


def link(proxy: TcpProxy, server: ServerProcess, **options: Any) -> Connection:
    """The console client's own link, to the server through the proxy."""
    return Connection("127.0.0.1", proxy.port, server.cafile, timeout=SOCKET_TIMEOUT_S, **options)


def orders_of(server: ServerProcess, username: str) -> list[dict[str, Any]]:
    """The member's orders, asked of the server straight, not through the proxy."""
    with server.client() as client:
        client.call("login", username=username, password=MEMBER_PASSWORD)
        orders: list[dict[str, Any]] = client.call("orders")["orders"]
        return orders


def register(server: ServerProcess, username: str) -> None:
    with server.client() as client:
        client.call("register", username=username, password=MEMBER_PASSWORD)


# Through the menus: the proxy loses the order's answer ----------------------------------------


def test_a_buy_whose_answer_was_lost_is_shown_once_and_done_once(server: ServerProcess) -> None:
    notes: list[str] = []
    with (
        TcpProxy(server.host, server.port) as proxy,
        link(proxy, server, on_reconnect=notes.append) as connection,
    ):
        transcript = run_menu(
            connection,
            [
                MENU_OUT["register"], "walker", "",  # no email
                MENU_IN["buy"], "1", str(BOOK), "2", "3",
                proxy.drop_next_answer,  # the server places the order; its answer is lost
                "y",
                MENU_IN["orders"],
                "0",
            ],
            [MEMBER_PASSWORD, MEMBER_PASSWORD],
        )  # fmt: skip
        assert proxy.answers_dropped == 1
    assert notes == ["Reconnected to the server and resumed your session."]
    assert not any(word in transcript.lower() for word in UNKNOWN_WORDS), transcript
    after = transcript.split("for £25.98? [Y/n] y\n", 1)[1]  # 2 copies at £12.99
    assert after.lstrip().startswith("Order 1, placed"), transcript  # the answer, as it came
    assert " 3  Buy guide books\n" in after  # the basket was emptied: the order went through
    assert "Messages (1 new)" in after  # one receipt: one order
    orders = orders_of(server, "walker")
    assert len(orders) == 1, orders
    assert orders[0]["total_pence"] == 2 * 1299


def test_a_refused_buy_is_not_sent_again_even_when_its_refusal_was_lost(
    server: ServerProcess,
) -> None:
    register(server, "limited")
    with TcpProxy(server.host, server.port) as proxy, link(proxy, server) as connection:
        connection.call("login", username="limited", password=MEMBER_PASSWORD)
        connection.call("buy", items=[{"book": BOOK, "quantity": 8}])
        too_many = [{"book": BOOK, "quantity": 1}]
        started = time.monotonic()
        with pytest.raises(ServerError) as refused:
            connection.call("buy", items=too_many)
        assert refused.value.code == "limit_exceeded"
        assert (proxy.accepted, time.monotonic() - started < 1) == (1, True)
        # Only a successful answer is stored with the key: the lost refusal's resend is
        # refused again, not replayed and not unknown.
        proxy.drop_next_answer()
        with pytest.raises(ServerError) as again:
            connection.call("buy", items=too_many)
        assert again.value.code == "limit_exceeded"
        assert (proxy.answers_dropped, proxy.accepted) == (1, 2)
    assert len(orders_of(server, "limited")) == 1


def test_a_server_out_of_reach_longer_than_retry_s_leaves_the_outcome_unknown(
    server: ServerProcess,
) -> None:
    register(server, "stranded")
    with TcpProxy(server.host, server.port) as proxy:
        with link(proxy, server, retry_s=2) as connection:
            connection.call("login", username="stranded", password=MEMBER_PASSWORD)
            proxy.drop_next_answer(close_port=True)  # the answer is lost and the port closed
            started = time.monotonic()
            with pytest.raises(AnswerLostError, match="check your orders") as raised:
                connection.call("buy", items=[{"book": BOOK, "quantity": 1}])
            waited = time.monotonic() - started
        proxy.restore()
    assert 2 <= waited < 4, waited
    assert "could not be reached again within 2 seconds" in str(raised.value)
    assert len(orders_of(server, "stranded")) == 1  # done, as "not known" allowed


# Through the subcommand, a real client process: the order is cut while the server is at it ----


@contextmanager
def book_locked(db_url: str, book: int) -> Iterator[None]:
    """Hold the shop row of book, so that a buy of it waits inside the server until the end."""
    host, port, user, password, database = mysql_address(db_url)
    connection = mysql.connector.connect(
        host=host, port=port, user=user, password=password, database=database,
        connection_timeout=5,
    )  # fmt: skip
    try:
        cursor = connection.cursor()
        cursor.execute("START TRANSACTION")
        cursor.execute("SELECT in_stock FROM shop_books WHERE number = %s FOR UPDATE", (book,))
        cursor.fetchall()
        yield
    finally:
        connection.rollback()
        connection.close()


def wait_for_a_waiting_write(db_url: str, timeout_s: float = 5.0) -> None:
    """Return once a statement of this database's waits on the locked shop row: the buy is
    under way. (The process list, not INNODB_TRX: MariaDB refreshes that table's cache only
    now and then, and missed a waiting buy for longer than the server's 10 s database timeout.)"""
    host, port, user, password, database = mysql_address(db_url)
    connection = mysql.connector.connect(
        host=host, port=port, user=user, password=password, autocommit=True
    )
    try:
        cursor = connection.cursor()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.processlist"
                " WHERE db = %s AND command = 'Query' AND info LIKE 'UPDATE shop_books%'",
                (database,),
            )
            (waiting,) = cursor.fetchone()  # type: ignore[misc]
            if waiting:
                return
            time.sleep(0.05)
    finally:
        connection.close()
    raise AssertionError("the buy never reached the database")


@pytest.fixture
def mysql_server(
    tmp_path: Path, mysql_url: str, openlibrary_fake: FakeOpenLibrary
) -> Iterator[ServerProcess]:
    """A real server.py on its own MySQL database (whose rows a test can lock)."""
    with ServerProcess(tmp_path, db_url=mysql_url, openlibrary_url=openlibrary_fake.url) as process:
        yield process


@contextmanager
def client_process(
    port: int, cafile: Path, home: Path, *argv: str
) -> Iterator[subprocess.Popen[str]]:
    """`client.py ARGV --json` as a script runs it, against 127.0.0.1:port, password from env;
    killed on the way out if a failed test left it running."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WAYMARK_")}
    environ |= {
        "HOME": str(home),
        "WAYMARK_PORT": str(port),
        "WAYMARK_CAFILE": str(cafile),
        "WAYMARK_PASSWORD": MEMBER_PASSWORD,
    }
    with subprocess.Popen(
        [sys.executable, str(CLIENT), *argv, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=environ,
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()


def test_a_subcommand_buy_cut_mid_order_is_answered_once(
    mysql_server: ServerProcess, mysql_url: str, tmp_path: Path
) -> None:
    register(mysql_server, "scripted")
    argv = ("buy", f"{BOOK}:3", "--user", "scripted")
    with (
        TcpProxy(mysql_server.host, mysql_server.port) as proxy,
        client_process(proxy.port, mysql_server.cafile, tmp_path, *argv) as buy,
    ):
        with book_locked(mysql_url, BOOK):
            wait_for_a_waiting_write(mysql_url)
            proxy.cut()  # the order is in the server's hands; the client's connection is gone
            time.sleep(0.5)  # a few refused reconnects, then the way is open again
            proxy.restore()
        out, err = buy.communicate(timeout=60)
    assert buy.returncode == 0, (out, err)
    assert not any(word in (out + err).lower() for word in UNKNOWN_WORDS), (out, err)
    order = json.loads(out)["order"]
    assert [order["id"]] == [o["id"] for o in orders_of(mysql_server, "scripted")]
    assert order["total_pence"] == 3 * 1299


def test_a_subcommand_gives_up_after_retry_s_and_says_the_outcome_is_unknown(
    mysql_server: ServerProcess, mysql_url: str, tmp_path: Path
) -> None:
    register(mysql_server, "patient")
    argv = ("buy", f"{BOOK}:1", "--user", "patient", "--retry-s", "2")
    with (
        TcpProxy(mysql_server.host, mysql_server.port) as proxy,
        client_process(proxy.port, mysql_server.cafile, tmp_path, *argv) as buy,
    ):
        with book_locked(mysql_url, BOOK):
            wait_for_a_waiting_write(mysql_url)
            # Before the cut: the client's window opens when it sees its link go, which can be
            # before this thread runs again after cut() on a busy machine.
            started = time.monotonic()
            proxy.cut()  # and it stays closed
            out, err = buy.communicate(timeout=60)
            waited = time.monotonic() - started
        proxy.restore()
    assert buy.returncode == 1, (out, err)
    assert 2 <= waited < 5, waited
    error = json.loads(out)["error"]
    assert error["code"] == "outcome_unknown"
    assert "could not be reached again within 2 seconds" in error["message"]
    assert len(orders_of(mysql_server, "patient")) == 1  # it was done: "unknown" was honest
