"""A rolling restart with nothing dropped: three servers on one MariaDB behind HAProxy, each
stopped with SIGTERM, taken out by HAProxy's health check, started again and taken back, one at a
time, while console-client links keep buying, borrowing, returning and reading through HAProxy.

The links are the console client's own (client_link.Connection): a write that takes one carries
an idempotency key, and a request whose connection broke is sent again after a reconnect. So the
restarts cost reconnects only: no request fails, no outcome is unknown, and every write the
clients were told was done is in the database exactly once. Run with -s to see the figures.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mysql.connector
import pytest

import rules
from client_link import AnswerLostError, ClientError, Connection
from engine import mysql_address
from tests.fake_openlibrary import FakeOpenLibrary
from tests.haproxy import HAProxy
from tests.wire import ServerProcess

SERVERS = 3
CLIENTS = 6
PASSWORD = "rolling-boots"
GUIDE_BOOKS = (101, 102, 103, 104, 105, 106, 107)
# Each member may buy at most 8 copies of a guide book: one copy a buy, 56 buys in all.
BUYS_PER_MEMBER = rules.MAX_COPIES_PER_CUSTOMER * len(GUIDE_BOOKS)
PAUSE_S = 0.02  # between one client's requests: a steady load, not a flood
SETTLE_S = 1.0  # load before the first restart and after the last
NAMES = [f"waymark{i}" for i in range(1, SERVERS + 1)]


@pytest.fixture
def servers(
    tmp_path: Path, mysql_url: str, openlibrary_fake: FakeOpenLibrary
) -> Iterator[list[ServerProcess]]:
    """Three server.py processes on one fresh MariaDB database, sharing one certificate."""
    processes = [
        ServerProcess(tmp_path, db_url=mysql_url, openlibrary_url=openlibrary_fake.url)
        for _ in range(SERVERS)
    ]
    with ExitStack() as stack:
        for process in processes:  # one after the other: the first loads the sample data
            stack.enter_context(process)
        yield processes


@dataclass
class Figures:
    """What the clients saw, counted by every client thread at once."""

    requests: int = 0
    reconnects: int = 0
    slowest_s: float = 0.0  # the longest a request took, reconnects and resends included
    failures: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def reconnected(self, note: str) -> None:
        if note.startswith("Reconnected"):
            self.add(reconnects=1)


@dataclass
class Member:
    """One client link logged in as one member, and the writes it was told were done."""

    link: Connection
    user_id: int
    book_id: int  # the lending book this member borrows and returns, again and again
    orders: set[int] = field(default_factory=set)
    loans: set[int] = field(default_factory=set)
    returned: set[int] = field(default_factory=set)


class Load:
    """Each member's steady round of writes and reads, until stopped."""

    def __init__(self, members: list[Member], figures: Figures):
        self.members = members
        self.figures = figures
        self.stopping = threading.Event()

    def run(self, member: Member) -> None:
        bought = 0
        loan: int | None = None
        reads = itertools.cycle(
            [
                ("orders", {}),
                ("history", {}),
                ("guide_books", {}),
                ("search_walks", {"area": "peak"}),
                ("catalogue", {"query": "the"}),
            ]
        )
        for round_number in itertools.count():
            if self.stopping.is_set():
                break
            # A buy every other round, so that a member's 56 last through all three restarts.
            if round_number % 2 == 0 and bought < BUYS_PER_MEMBER:
                book = GUIDE_BOOKS[bought % len(GUIDE_BOOKS)]
                bought += 1
                order = self.call(member, "buy", items=[{"book": book, "quantity": 1}])
                if order is not None:
                    member.orders.add(order["order"]["id"])
            if loan is None:
                borrowed = self.call(member, "borrow", book_id=member.book_id)
                if borrowed is not None:
                    loan = borrowed["loan"]["id"]
                    member.loans.add(loan)
            elif self.call(member, "return", loan_id=loan) is not None:
                member.returned.add(loan)
                loan = None
            cmd, args = next(reads)
            self.call(member, cmd, **args)
        if loan is not None and self.call(member, "return", loan_id=loan) is not None:
            member.returned.add(loan)

    def call(self, member: Member, cmd: str, **args: Any) -> dict[str, Any] | None:
        """One request: its result, or None after counting how it failed."""
        time.sleep(PAUSE_S)
        self.figures.add(requests=1)
        started = time.monotonic()
        try:
            return member.link.call(cmd, **args)
        except AnswerLostError as error:
            with self.figures.lock:
                self.figures.unknown.append(f"{cmd}: {error}")
        except ClientError as error:
            with self.figures.lock:
                self.figures.failures.append(f"{cmd}: {type(error).__name__}: {error}")
        finally:
            took = time.monotonic() - started
            with self.figures.lock:
                self.figures.slowest_s = max(self.figures.slowest_s, took)
        return None


def restart_one_at_a_time(servers: list[ServerProcess], proxy: HAProxy) -> list[str]:
    """SIGTERM each server, wait for HAProxy to take it out, start it again, wait for it to be
    taken back, then the next; what happened, one line a server."""
    steps = []
    for server, name in zip(servers, NAMES, strict=True):
        assert server.process is not None
        served = proxy.sessions()[name]
        started = time.monotonic()
        # SIGTERM: the server stops accepting at once (HAProxy's checks fail), finishes the
        # requests in flight, closes its idle connections and exits.
        server.process.send_signal(signal.SIGTERM)
        proxy.wait_for({name: "DOWN"})
        down = time.monotonic()
        code = server.stop()  # waits for the exit (a second SIGTERM, if still draining, is a no-op)
        server.start()  # the same port
        proxy.wait_for({name: "UP"})
        up = time.monotonic()
        assert code == 0, f"{name} exited with {code}:\n{server.log()}"
        steps.append(
            f"{name}: given {served} connections so far; DOWN {down - started:.1f} s after"
            f" SIGTERM, exit code {code}, started again and UP {up - down:.1f} s later"
        )
    return steps


def rows(db_url: str, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    host, port, user, password, database = mysql_address(db_url)
    connection = mysql.connector.connect(
        host=host, port=port, user=user, password=password, database=database, autocommit=True
    )
    try:
        cursor = connection.cursor()
        cursor.execute(statement, params)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        connection.close()


def test_a_rolling_restart_behind_haproxy_drops_nothing(
    servers: list[ServerProcess], mysql_url: str, tmp_path: Path
) -> None:
    figures = Figures()
    with HAProxy(tmp_path, [(s.host, s.port) for s in servers]) as proxy, ExitStack() as stack:
        proxy.wait_for(dict.fromkeys(NAMES, "UP"))
        members = []
        for number in range(CLIENTS):
            link = stack.enter_context(
                Connection(
                    "127.0.0.1", proxy.port, servers[0].cafile, on_reconnect=figures.reconnected
                )
            )
            name = f"roller{number}"
            link.call("register", username=name, password=PASSWORD)
            user = link.call("login", username=name, password=PASSWORD)["user"]
            books = link.call("catalogue", limit=CLIENTS)["books"]
            members.append(Member(link, user["id"], books[number]["id"]))
        assert all(count >= 1 for count in proxy.sessions().values()), proxy.sessions()
        load = Load(members, figures)
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            running = [pool.submit(load.run, member) for member in members]
            try:
                time.sleep(SETTLE_S)
                steps = restart_one_at_a_time(servers, proxy)
                time.sleep(SETTLE_S)
            finally:
                load.stopping.set()
                for future in running:
                    future.result(timeout=120)
        seconds = time.monotonic() - started

    print(
        f"\nrolling restart: {figures.requests} requests, {figures.reconnects} reconnects,"
        f" {len(figures.failures)} failures, {len(figures.unknown)} unknown, {seconds:.1f} s"
    )
    acknowledged = (
        f"acknowledged writes: {sum(len(m.orders) for m in members)} buys,"
        f" {sum(len(m.loans) for m in members)} borrows,"
        f" {sum(len(m.returned) for m in members)} returns;"
        f" slowest request {figures.slowest_s:.2f} s"
    )
    print("\n".join([*steps, acknowledged]))
    assert figures.failures == [], figures.failures
    assert figures.unknown == [], figures.unknown
    assert figures.reconnects >= 1, "no client was on a restarted server"

    # Every write the clients were told was done is stored, and nothing else: exactly once.
    user_ids = tuple(member.user_id for member in members)
    marks = ", ".join(["%s"] * len(user_ids))
    orders = rows(mysql_url, f"SELECT user_id, id FROM orders WHERE user_id IN ({marks})", user_ids)
    loans = rows(
        mysql_url,
        f"SELECT user_id, id, returned_at IS NOT NULL FROM loans WHERE user_id IN ({marks})",
        user_ids,
    )
    for member in members:
        mine = [order_id for user_id, order_id in orders if user_id == member.user_id]
        assert sorted(mine) == sorted(member.orders), member.user_id
        lent = {loan_id for user_id, loan_id, _ in loans if user_id == member.user_id}
        back = {loan_id for user_id, loan_id, done in loans if user_id == member.user_id and done}
        assert (lent, back) == (member.loans, member.returned), member.user_id
