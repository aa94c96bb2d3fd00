"""Faults on a three-node Galera cluster under a keyed workload, judged by tests/faults.py.

One Waymark server per node (server N on node N, each with --db-timeout-s 10). Five faults, one
run each: a node cut off from the other two; a partition with servers on both sides; a node
paused; two nodes killed within a second; the whole cluster restarted. During each, members and
an admin keep writing through every server with idempotency keys, and retry what they could not
know. After healing, with every node Synced, the checker reads the database: nothing
acknowledged is lost or doubled, no invariant is broken, every node has the same tables. Every
server must answer within its deadline and never `internal`, say `degraded` while its node
cannot serve, and `ok` again after.

One more test pins the moment a node leaves the primary component in the middle of a write:
the write is refused, and nothing of it may be committed later. A last test plants a fault
(servers whose member-row version write is removed) and shows that the checker catches it. The
table is printed at the end (visible with -s).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import textwrap
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import mysql.connector
import pytest

from engine import mysql_address
from tests.faults import (
    ANSWER_TIMEOUT_S,
    GUIDE_BOOKS,
    OK,
    REFUSED,
    RETRY_FOR_S,
    UNKNOWN,
    LinkDownError,
    NoAnswerError,
    Operation,
    Session,
    Verdict,
    Workload,
    check,
    leftover_rules,
    node_cursor,
    partition,
    stock_held,
)
from tests.galera import HOST, ClusterError, GaleraCluster, galera_cluster  # noqa: F401 - the session fixture
from tests.wire import PROJECT_DIR, ServerProcess, WireClient

pytestmark = pytest.mark.cluster

FAULT_S = 12.0  # how long a node stays cut off, paused or killed
LEAD_S = 2.0  # the workload runs this long before the fault
TAIL_S = 3.0  # and this long after healing
DB_TIMEOUT_S = 10
# The slowest answer allowed: the first database call that meets a node cut off or paused
# fails at the deadline (--db-timeout-s, "past it the answer is unavailable"), plus time for
# the rest of the request on a machine the cluster keeps busy.
ANSWER_BOUND_S = DB_TIMEOUT_S + 5.0
SYNC_TIMEOUT_S = 180.0
HEALTH_WAIT_S = 15.0
STOCK = 40  # of each guide book at the start of a run: enough sell out that back orders happen
ADMIN = ("faultadmin", "admin horse")


@dataclass
class Shop:
    """Three servers, server N on node N, sharing one database of the cluster."""

    cluster: GaleraCluster
    servers: list[ServerProcess]
    node_urls: list[str]
    lending_ids: list[int]


def with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{database}", "", ""))


def start_shop(
    cluster: GaleraCluster, workdir: Path, env: dict[str, str] | None = None
) -> tuple[str, list[str], list[ServerProcess]]:
    """A new database on the cluster and a server on each node: (database, node URLs, servers),
    the servers not yet started."""
    database = f"waymark_faults_{os.getpid()}_{secrets.token_hex(3)}"
    with node_cursor(cluster.urls[0]) as cursor:
        cursor.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
    node_urls = [with_database(url, database) for url in cluster.urls]
    servers = [
        ServerProcess(
            workdir, db_url=url, extra_args=("--db-timeout-s", str(DB_TIMEOUT_S)), env=env
        )
        for url in node_urls
    ]
    return database, node_urls, servers


def drop_database(cluster: GaleraCluster, database: str) -> None:
    with node_cursor(cluster.urls[0]) as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {database}")


def lending_ids(node_url: str) -> list[int]:
    with node_cursor(node_url) as cursor:
        cursor.execute("SELECT id FROM lending_books ORDER BY id")
        return [int(book_id) for (book_id,) in cursor.fetchall()]


@pytest.fixture(scope="module")
def shop(
    galera_cluster: GaleraCluster,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shop]:
    database, node_urls, servers = start_shop(galera_cluster, tmp_path_factory.mktemp("faults"))
    try:
        with ExitStack() as stack:
            for server in servers:  # one after the other: the first loads the sample data
                stack.enter_context(server)
            servers[0].create_admin(*ADMIN)
            yield Shop(galera_cluster, servers, node_urls, lending_ids(node_urls[0]))
    finally:
        drop_database(galera_cluster, database)


# The table -------------------------------------------------------------------------------------


@dataclass
class FaultRow:
    """One fault's runs: what the workload did and what the checker and the servers showed."""

    fault: str
    runs: int
    operations: int
    acknowledged: int
    lost_or_duplicated: int
    breaks: int
    worst_s: float
    internal: int

    def line(self) -> str:
        return (
            f"| {self.fault} | {self.runs} | {self.operations} | {self.acknowledged} |"
            f" {self.lost_or_duplicated} | {self.breaks} | {self.worst_s:.1f} | {self.internal} |"
        )


ROWS: list[FaultRow] = []
PLANTED: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def fault_table() -> Iterator[None]:
    """Print every fault's row once the module is done (visible with -s)."""
    yield
    if ROWS:
        print(
            "\n\n| fault | runs | operations | acknowledged writes | lost or duplicated |"
            " invariant breaks | worst answer s | internal |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for row in ROWS:
            print(row.line())
    for line in PLANTED:
        print(line)


# Watching the servers and nodes ------------------------------------------------------------------


@dataclass
class Observed:
    """What a fault saw of the cluster and the servers' health, and what was not as it must be."""

    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)  # when the fault took hold, when it was healed


def health(server: ServerProcess) -> str:
    """The server's health status ("ok", "degraded"), or what went wrong asking."""
    try:
        with WireClient(server.host, server.port, server.cafile, timeout_s=5) as client:
            response = client.request("health")
    except (OSError, ValueError) as error:
        return f"no answer ({type(error).__name__})"
    return response["result"]["status"] if response["ok"] else response["error"]["code"]


def expect_health(
    shop: Shop, index: int, wanted: str, observed: Observed, why: str, within_s: float = 5.0
) -> None:
    """Server index+1's health must say wanted within within_s; else a problem is recorded."""
    deadline = time.monotonic() + within_s
    seen = []
    while True:
        status = health(shop.servers[index])
        seen.append(status)
        if status == wanted:
            observed.notes.append(f"server {index + 1} health {wanted} ({why})")
            return
        if time.monotonic() > deadline:
            observed.problems.append(
                f"server {index + 1} health said {seen} for {within_s:.0f} s, not {wanted!r}, {why}"
            )
            return
        time.sleep(0.5)


def wait_not_ready(shop: Shop, number: int, observed: Observed, within_s: float) -> bool:
    """Wait until node number is out of the primary component (wsrep_ready OFF, or no answer
    while paused); True then, else a problem is recorded."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        status = shop.cluster.status(shop.cluster.node(number))
        if status is None or status.get("wsrep_ready") == "OFF":
            state = "not answering" if status is None else "wsrep_ready OFF"
            observed.notes.append(f"node {number} {state} after {time.monotonic() - started:.1f} s")
            return True
        time.sleep(0.3)
    observed.problems.append(f"node {number} still ready {within_s:.0f} s into the fault")
    return False


def hold_until(started: float, seconds: float) -> None:
    time.sleep(max(0.0, started + seconds - time.monotonic()))


# The faults -------------------------------------------------------------------------------------


def cut_off(number: int) -> Callable[[Shop, Observed], None]:
    """Node number cut off from the other two for FAULT_S; its server must say degraded."""

    def fault(shop: Shop, observed: Observed) -> None:
        with partition(shop.cluster, number) as firewall:
            started = time.monotonic()
            observed.notes.append(f"{len(firewall.rules())} iptables rules in WAYMARK_FAULTS")
            if wait_not_ready(shop, number, observed, FAULT_S):
                observed.window = (time.monotonic(), 0.0)
                expect_health(shop, number - 1, "degraded", observed, f"node {number} cut off")
                for other in range(len(shop.servers)):
                    if other != number - 1:
                        expect_health(shop, other, "ok", observed, "on the majority side")
            hold_until(started, FAULT_S)
            observed.window = (observed.window[0], time.monotonic())
        left = leftover_rules()
        if left:
            observed.problems.append(f"iptables rules of ours left after healing: {left}")

    return fault


def pause(number: int) -> Callable[[Shop, Observed], None]:
    """Node number stopped with SIGSTOP for FAULT_S, then continued."""

    def fault(shop: Shop, observed: Observed) -> None:
        shop.cluster.pause(number)
        started = time.monotonic()
        try:
            if wait_not_ready(shop, number, observed, FAULT_S):
                expect_health(shop, number - 1, "degraded", observed, f"node {number} paused")
            hold_until(started, FAULT_S)
        finally:
            shop.cluster.resume(number)

    return fault


def kill_two(numbers: list[int]) -> Callable[[Shop, Observed], None]:
    """Nodes killed within a second; the survivor loses quorum; FAULT_S later they restart."""

    def fault(shop: Shop, observed: Observed) -> None:
        shop.cluster.kill_together(numbers, within_s=1.0)
        started = time.monotonic()
        try:
            (survivor,) = (n.number for n in shop.cluster.nodes if n.number not in numbers)
            if wait_not_ready(shop, survivor, observed, FAULT_S):
                for index in range(len(shop.servers)):
                    expect_health(shop, index, "degraded", observed, "without quorum")
            hold_until(started, FAULT_S)
        finally:
            seconds, how = shop.cluster.recover(numbers)
            observed.notes.append(f"nodes {numbers} back and Synced in {seconds:.1f} s ({how})")

    return fault


def restart_cluster(shop: Shop, observed: Observed) -> None:
    """Every node stopped in turn, then the cluster started again from the last to leave."""
    started = time.monotonic()
    try:
        shop.cluster.stop_in_turn()
        observed.notes.append(f"all nodes stopped in {time.monotonic() - started:.1f} s")
        for index in range(len(shop.servers)):
            expect_health(shop, index, "degraded", observed, "with every node stopped")
    finally:
        first = shop.cluster.safe_to_bootstrap()
        seconds = shop.cluster.start(first=first.number)
        observed.notes.append(f"started again from node {first.number} in {seconds:.1f} s")


# One run of a fault ------------------------------------------------------------------------------


def prepare(shop: Shop) -> dict[int, int]:
    """Stock every guide book, end every loan and hold, and return the stock held (the baseline
    of stock_held) before the workload."""
    now = int(time.time())
    with node_cursor(shop.node_urls[0]) as cursor:
        cursor.execute("UPDATE shop_books SET in_stock = %s", (STOCK,))
        cursor.execute(
            "UPDATE loans SET returned_at = %s, active_user_id = NULL WHERE returned_at IS NULL",
            (now,),
        )
        cursor.execute(
            "UPDATE holds SET ended_at = %s, end_reason = 'cancelled', active_user_id = NULL"
            " WHERE ended_at IS NULL",
            (now,),
        )
        return stock_held(cursor)


def acknowledged_between(
    operations: list[Operation], servers: set[int], window: tuple[float, float]
) -> int:
    """Writes acknowledged through these servers (by their last attempt) inside the window."""
    start, end = window
    return sum(
        1
        for op in operations
        if op.acknowledged and op.attempts[-1].server in servers and start <= op.ended_at <= end
    )


def run_fault(
    shop: Shop,
    name: str,
    fault: Callable[[Shop, Observed], None],
    spread: bool = False,
    majority: set[int] | None = None,
) -> None:
    """Run the workload through the fault, heal, wait for Synced, check; then assert."""
    baseline = prepare(shop)
    prefix = f"f{len(ROWS) + 1}{secrets.token_hex(2)}-"
    workload = Workload(
        shop.servers, prefix, shop.lending_ids, admin=ADMIN, spread=spread, seed=len(ROWS)
    )
    observed = Observed()
    started = time.monotonic()
    # Stopped below, once healed; this bound holds only if a fault never ends.
    workload.start(seconds=LEAD_S + FAULT_S + TAIL_S + SYNC_TIMEOUT_S)
    try:
        try:
            time.sleep(LEAD_S)
            fault(shop, observed)
            time.sleep(TAIL_S)
        finally:
            workload.stop()
        shop.cluster.wait_synced(shop.cluster.nodes, time.monotonic() + SYNC_TIMEOUT_S)
    except ClusterError:
        print(f"\n{name}: the cluster did not heal; logs kept in {keep_logs(shop, name)}")
        raise
    observed.notes.append(f"every node Synced {time.monotonic() - started:.0f} s after the start")
    for index in range(len(shop.servers)):
        expect_health(shop, index, "ok", observed, "after healing", within_s=HEALTH_WAIT_S)
    verdict = check(shop.node_urls, workload.operations, prefix, baseline)
    internal = workload.internal()
    row = FaultRow(
        name, 1, len(workload.operations), verdict.acknowledged, verdict.lost_or_duplicated,
        len(verdict.breaks), workload.worst_s(), len(internal),
    )  # fmt: skip
    ROWS.append(row)
    if majority is not None:
        during = acknowledged_between(workload.operations, majority, observed.window)
        observed.notes.append(f"{during} writes acknowledged on the majority side while cut")
        if not during:
            observed.problems.append(
                "the majority side acknowledged no write while the node was cut"
            )
    print(f"\n{row.line()}\n{describe(workload, observed, verdict)}")
    slow = [
        f"server {i + 1} answered in {stats.worst_s:.1f} s (over {ANSWER_BOUND_S:.0f} s):"
        f" {stats.slowest}"
        for i, stats in enumerate(workload.stats)
        if stats.worst_s > ANSWER_BOUND_S
    ]
    failures = [
        *(f"workload: {error}" for error in workload.errors),
        *(f"internal answer: {answer}" for answer in internal),
        *([] if verdict.passed else verdict.report().splitlines()),
        *slow,
        *observed.problems,
        *([] if verdict.acknowledged else ["the workload got no write acknowledged at all"]),
    ]
    if failures:
        logged = server_log_lines(shop.servers, failures)
        logged.append(f"server and node logs kept in {keep_logs(shop, name)}")
        print("\n".join(f"  {line}" for line in logged))
        failures += logged
    assert not failures, "\n".join(failures)


def keep_logs(shop: Shop, name: str) -> Path:
    """Copy the servers' and nodes' logs where neither pytest's clean-up of old runs nor the
    cluster's removal at the end of the session will remove them."""
    kept = Path(tempfile.gettempdir()) / f"waymark-faults-{os.getpid()}" / re.sub(r"\W+", "-", name)
    kept.mkdir(parents=True, exist_ok=True)
    for number, server in enumerate(shop.servers, start=1):
        (kept / f"server{number}.log").write_text(server.log())
    for node in shop.cluster.nodes:
        if node.error_log.exists():
            shutil.copy(node.error_log, kept / f"node{node.number}-error.log")
    return kept


def server_log_lines(servers: list[ServerProcess], answers: list[str]) -> list[str]:
    """The servers' log lines about the references in these answers: the error line, the
    project's frames of its traceback, and the database's own error, when the log has them."""
    found = []
    references = set(re.findall(r"(?:reference|request_id) ([0-9a-f]{12})", " ".join(answers)))
    for number, server in enumerate(servers, start=1):
        lines = server.log().splitlines()
        for index, line in enumerate(lines):
            if not any(reference in line for reference in references):
                continue
            found.append(f"server {number} log: {line}")
            following = lines[index + 1 : index + 80]
            end = next((i for i, text in enumerate(following) if text[:4].isdigit()), None)
            traceback = following[:end]
            frames = [
                f"{Path(m[1]).name}:{m[2]} {m[3]}"
                for m in (re.match(r'\s*File "(.+)", line (\d+), in (\w+)', t) for t in traceback)
                if m and str(PROJECT_DIR) in m[1] and ".venv" not in m[1]
            ]
            if frames:
                found.append(f"server {number} log:   {' > '.join(frames)}")
            if traceback:
                found.append(f"server {number} log:   {traceback[-1]}")
    return found


def describe(workload: Workload, observed: Observed, verdict: Verdict) -> str:
    servers = "; ".join(
        f"server {i + 1}: worst {s.worst_s:.1f} s, {s.no_answer} unanswered, {dict(s.codes)}"
        for i, s in enumerate(workload.stats)
    )
    unknown = [op for op in workload.operations if op.outcome == UNKNOWN]
    retried = sum(len(op.attempts) > 1 for op in workload.operations)
    replayed = sum(a.answer == "ok replayed" for op in workload.operations for a in op.attempts)
    return (
        f"  outcomes {dict(workload.outcomes())}, {retried} sent again ({replayed} replayed);"
        f" {servers}\n  "
        + "\n  ".join(observed.notes + [f"PROBLEM: {p}" for p in observed.problems])
        + f"\n  unknown outcomes: {len(unknown)}"
        + "".join(f"\n    {op.describe()}" for op in unknown[:5])
        + f"\n  checker: {verdict.report()}"
    )


# The tests -----------------------------------------------------------------------------------


def test_one_node_cut_off_from_the_other_two(shop: Shop) -> None:
    run_fault(shop, "node 1 cut off", cut_off(1))


def test_a_partition_with_servers_on_both_sides(shop: Shop) -> None:
    # Every member sends each request through a random server, so members write on both sides.
    run_fault(shop, "node 3 cut off, servers both sides", cut_off(3), spread=True, majority={0, 1})


def test_a_node_paused(shop: Shop) -> None:
    run_fault(shop, f"node 2 paused {FAULT_S:.0f} s", pause(2))


def test_two_nodes_killed_within_a_second(shop: Shop) -> None:
    run_fault(shop, "nodes 2, 3 killed within 1 s", kill_two([2, 3]))


def test_the_whole_cluster_restarted(shop: Shop) -> None:
    run_fault(shop, "whole cluster restarted", restart_cluster)


MIDWAY_BOOK = 106
FOLLOWING_BUYS = 20
# The buy must still be waiting when node 3 leaves the primary (about 6 s after the cut), so its
# server gets a deadline that outlives that; the fault runs keep the default 10 s.
MIDWAY_DB_TIMEOUT_S = 30


def test_a_write_refused_as_its_node_leaves_the_primary_stays_undone(
    shop: Shop, tmp_path: Path
) -> None:
    """A keyed buy on node 3 waits on a row lock while node 3 is cut off. Once node 3 is out of
    the primary component the lock goes, and the buy's next statement is refused (1047): its
    client hears `unavailable`, nothing changed. After healing nothing of it may remain: no
    transaction left open on node 3, no row committed later, and the same buy sent again with
    its key is done."""
    baseline = prepare(shop)
    prefix = f"f{len(ROWS) + 1}{secrets.token_hex(2)}-"
    server = ServerProcess(
        tmp_path, db_url=shop.node_urls[2],
        extra_args=("--db-timeout-s", str(MIDWAY_DB_TIMEOUT_S)),
    )  # fmt: skip
    with server:
        workload = Workload([server], prefix, shop.lending_ids)
        buyer, other = (Session(workload, f"{prefix}{name}") for name in ("buyer", "other"))
        try:
            assert workload.join(buyer, 0) and workload.join(other, 0)
            verdict, observed = buy_as_the_node_leaves(shop, workload, buyer, other, baseline)
        finally:
            buyer.close()
            other.close()
        internal = workload.internal()
        row = FaultRow(
            "buy refused as node 3 leaves", 1, len(workload.operations), verdict.acknowledged,
            verdict.lost_or_duplicated, len(verdict.breaks), workload.worst_s(), len(internal),
        )  # fmt: skip
        ROWS.append(row)
        print(f"\n{row.line()}\n{describe(workload, observed, verdict)}")
        failures = [
            *(f"workload: {error}" for error in workload.errors),
            *([] if verdict.passed else verdict.report().splitlines()),
            *(f"internal answer: {answer}" for answer in internal),
            *observed.problems,
        ]
        if failures:
            logged = server_log_lines([server], failures + observed.notes)
            print("\n".join(f"  {line}" for line in logged))
            failures += observed.notes + logged
    assert not failures, "\n".join(failures)


def buy_as_the_node_leaves(
    shop: Shop, workload: Workload, buyer: Session, other: Session, baseline: dict[int, int]
) -> tuple[Verdict, Observed]:
    """The buy held on a row lock through the cut, FOLLOWING_BUYS more by another member, the
    buy sent again with its key; what was left on node 3, and the checker's verdict."""
    observed = Observed()
    node = shop.cluster.node(3)
    holder = mysql.connector.connect(
        host=HOST, port=node.port, user="root", database=mysql_address(shop.node_urls[2])[4],
        autocommit=True, connection_timeout=5,
    )  # fmt: skip
    holder.cursor().execute("START TRANSACTION")
    holder.cursor().execute(
        "UPDATE shop_books SET version = version + 1 WHERE number = %s", (MIDWAY_BOOK,)
    )
    sent: list[Operation | None] = []
    buy = {"items": [{"book": MIDWAY_BOOK, "quantity": 1}]}
    thread = threading.Thread(
        target=workload.guarded,
        args=(lambda: sent.append(workload.perform(buyer, "buy", buy, 0)),),
        daemon=True,
    )
    thread.start()
    try:
        waiting = wait_for_lock_wait(node.url)
        observed.notes.append(f"the buy waits on the row lock: {waiting}")
        with partition(shop.cluster, 3):
            wait_not_ready(shop, 3, observed, FAULT_S)
            holder.close()  # its lock goes; the buy goes on, on a node out of the primary
            thread.join(RETRY_FOR_S + ANSWER_TIMEOUT_S)
    finally:
        holder.close()  # a second close does nothing
    shop.cluster.wait_synced(shop.cluster.nodes, time.monotonic() + SYNC_TIMEOUT_S)
    assert sent and sent[0] is not None, f"the buy was not sent: {workload.errors}"
    op = sent[0]
    observed.notes.append(f"the buy: {op.describe()}")
    if op.outcome != REFUSED:
        observed.problems.append(f"the buy was not refused as node 3 left: {op.describe()}")
    others = [b for b in GUIDE_BOOKS if b not in (MIDWAY_BOOK, 105)]
    for count in range(FOLLOWING_BUYS):  # through the server's pooled connections, in turn
        book = others[count % len(others)]
        workload.perform(other, "buy", {"items": [{"book": book, "quantity": 1}]}, 0)
    for trx in open_writes(node.url):
        observed.problems.append(f"a transaction is still open on node 3 after healing: {trx}")
    try:
        response = workload.send(0, buyer.link(0), "buy", op.key, op.args)
        done, again = response["ok"] and not response.get("replayed"), json.dumps(response)
    except (NoAnswerError, LinkDownError) as error:
        done, again = False, f"no answer ({error})"
    observed.notes.append(f"the buy sent again with its key: {again[:400]}")
    if not done:  # refused before, so not replayed: done now
        observed.problems.append(f"the refused buy sent again with its key got {again[:400]}")
    else:
        # The key's request ends done, by this resend: the checker must find it exactly once,
        # with this answer (and nothing left from the refused first try beside it).
        op.outcome, op.code, op.result = OK, None, response["result"]
    return check(shop.node_urls, workload.operations, workload.prefix, baseline), observed


def open_writes(url: str) -> list[str]:
    """The transactions open on a node that have changed rows (none, once every request has
    been answered)."""
    with node_cursor(url) as cursor:
        cursor.execute(
            "SELECT trx_id, trx_started, trx_state, trx_rows_modified, trx_rows_locked,"
            " trx_query FROM information_schema.innodb_trx WHERE trx_rows_modified > 0"
        )
        return [
            f"trx {trx} started {started}, {state}, {modified} rows changed, {locked} locked,"
            f" running {query!r}"
            for trx, started, state, modified, locked, query in cursor.fetchall()
        ]


def wait_for_lock_wait(url: str, within_s: float = 10.0) -> str:
    """Wait until a transaction on the node waits for a row lock; what InnoDB says of it."""
    deadline = time.monotonic() + within_s
    with node_cursor(url) as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT trx_id, trx_query FROM information_schema.innodb_trx"
                " WHERE trx_state = 'LOCK WAIT'"
            )
            rows = cursor.fetchall()
            if rows:
                return f"{rows[0][1]}"
            time.sleep(0.1)
    raise AssertionError(f"no transaction waited for the row lock within {within_s:.0f} s")


# The checker is not blind ------------------------------------------------------------------------

PLANTED_ROUNDS = 4
PLANTED_BOOK = 105
# Removes the member row's version write, which serialises a member's orders and loans across
# nodes (StoreBase._claim_member in db_base.py); the server is otherwise unchanged. A server
# whose code no longer has it stops at once, saying so, rather than run unplanted.
SHIM = """
import importlib
import os
import sys

for name in ("db_base", "store_base"):
    try:
        base = importlib.import_module(name).StoreBase
    except (ImportError, AttributeError):
        continue
    if hasattr(base, "_claim_member"):
        base._claim_member = lambda self, tx, user_id: None
        break
else:
    sys.stderr.write("planted fault: no StoreBase._claim_member to remove (tests/test_faults.py)\\n")
    os._exit(70)
"""


def test_the_checker_catches_a_planted_fault(
    galera_cluster: GaleraCluster,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(textwrap.dedent(SHIM))
    env = {"PYTHONPATH": os.pathsep.join([str(shim), str(PROJECT_DIR)])}
    database, node_urls, servers = start_shop(galera_cluster, tmp_path, env=env)
    try:
        with ExitStack() as stack:
            for server in servers:
                stack.enter_context(server)
            with node_cursor(node_urls[0]) as cursor:
                # Out of stock: every copy is back-ordered, so no buy writes the stock row.
                cursor.execute(
                    "UPDATE shop_books SET in_stock = 0 WHERE number = %s", (PLANTED_BOOK,)
                )
                baseline = stock_held(cursor)
            prefix = f"planted{secrets.token_hex(2)}-"
            workload = Workload(servers, prefix, lending_ids(node_urls[0]))
            buy = {"items": [{"book": PLANTED_BOOK, "quantity": 3}]}
            for round_number in range(PLANTED_ROUNDS):
                member = Session(workload, f"{prefix}r{round_number}")
                assert workload.join(member, round_number % len(servers))
                workload.race(member, "buy", buy, [i % len(servers) for i in range(9)])
            verdict = check(node_urls, workload.operations, prefix, baseline)
    finally:
        drop_database(galera_cluster, database)
    caught = not verdict.passed
    answers = Counter(op.attempts[-1].answer for op in workload.operations if op.cmd == "buy")
    PLANTED.append(
        f"\nplanted fault (member row's version write removed, one member's 9 buys of 3 copies"
        f" raced across 3 nodes, {PLANTED_ROUNDS} rounds; answers {dict(answers)}): caught"
        f" {'yes' if caught else 'NO'}; the checker said:\n{verdict.report(limit=5)}"
    )
    assert not workload.errors, workload.errors
    assert caught, "the checker passed a build whose member row is never written"
