"""Notices on a 3-node Galera cluster: two servers on two nodes sweeping at the same moment
make each notice once, and two mail senders on two nodes send each notice once."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

import mailer
from tests.fake_openlibrary import FakeOpenLibrary
from tests.galera import GaleraCluster, galera_cluster  # noqa: F401 - the session fixture
from tests.smtp_relay import SMTPRelay
from tests.test_cluster import node_cursor, with_database
from tests.test_mail import MAIL_WAIT_S, mail_server, relay, wait_for  # noqa: F401 - fixture
from tests.test_notices import (
    DAY_S,
    admin,
    borrow,
    lending_books,
    member,
    race_two_sweeps,
    sql,
    stack,  # noqa: F401 - the fixture
)
from tests.wire import ServerProcess

pytestmark = pytest.mark.cluster


def set_due(url: str, loan_id: int, due_at: int) -> None:
    """Set a loan's due date through a node, once that node has every write made before (the
    loan may have been made through another node a moment ago)."""
    with node_cursor(url, galera=False) as cursor:
        cursor.execute("SET SESSION wsrep_sync_wait = 7")  # reads, updates and inserts wait
        cursor.execute("UPDATE loans SET due_at = %s WHERE id = %s", (due_at, loan_id))
        assert cursor.rowcount == 1, loan_id


@pytest.fixture
def node_urls(galera_cluster: GaleraCluster) -> Iterator[list[str]]:  # noqa: F811
    """A fresh database on the cluster, as each node's URL."""
    database = f"waymark_notices_{secrets.token_hex(3)}"
    with node_cursor(galera_cluster.urls[0], galera=False) as cursor:
        cursor.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
    try:
        yield [with_database(url, database) for url in galera_cluster.urls]
    finally:
        with node_cursor(galera_cluster.urls[0], galera=False) as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database}")


def test_two_nodes_sweeping_at_the_same_moment_never_make_a_notice_twice(
    tmp_path: Path,
    node_urls: list[str],
    openlibrary_fake: FakeOpenLibrary,
    stack: ExitStack,  # noqa: F811
) -> None:
    servers = [
        stack.enter_context(ServerProcess(tmp_path, url, openlibrary_fake.url))
        for url in node_urls[:2]
    ]
    # Due dates set through node 1 once it has every loan; every node must hold each cause once.
    race_two_sweeps(
        stack, servers, lambda loan, due: set_due(node_urls[0], loan, due), node_urls, "galera"
    )


def test_two_senders_on_two_nodes_send_each_notice_once(
    tmp_path: Path,
    node_urls: list[str],
    openlibrary_fake: FakeOpenLibrary,
    relay: SMTPRelay,  # noqa: F811
    stack: ExitStack,  # noqa: F811
) -> None:
    senders = [
        mail_server(stack, tmp_path, url, openlibrary_fake, relay.url) for url in node_urls[:2]
    ]
    desk = admin(stack, senders[0])
    books = lending_books(desk)
    loans = []
    for index in range(5):  # 5 members x 5 loans: each of the 25 starter books once
        client, _ = member(
            stack, senders[index % 2], f"mailed{index}", f"mailed{index}@example.org"
        )
        loans += [borrow(client, b["id"])["id"] for b in books[index * 5 : index * 5 + 5]]
    due = int(time.time()) + DAY_S
    for loan in loans:
        set_due(node_urls[0], loan, due)
    assert desk.call("sweep_notices")["created"]["due_soon"] == 25
    ids = [int(r[0]) for r in sql(node_urls[0], "SELECT id FROM notices WHERE kind = 'due_soon'")]

    def sent() -> int:
        return int(
            sql(node_urls[0], "SELECT COUNT(*) FROM notices WHERE mail_state = 'sent'")[0][0]
        )

    wait_for(lambda: sent() == 25, MAIL_WAIT_S * 2, "all 25 notices marked sent")
    time.sleep(3)  # a pass longer than one poll: any second send would have happened by now
    got = Counter(m.message_id for m in relay.messages if "due back" in str(m.message["Subject"]))
    assert got == Counter({mailer.message_id(i, "waymark@localhost"): 1 for i in ids})
