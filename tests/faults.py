"""Faults for the Galera cluster, a workload that lives through them, and the checker that judges
what they left behind. tests/test_faults.py runs them; `scripts/cluster partition N` and
`scripts/cluster heal` use the firewall by hand.

Firewall: iptables rules in a chain of our own, WAYMARK_FAULTS, jumped to from INPUT and OUTPUT
on the loopback interface. cut(N) drops node N's group channel (its port both ways, and the
connections it opens to the others' ports, told apart by its own address 127.0.0.N) and its IST
and SST ports. The chain is removed on exit, and one left by a run that died is removed on entry,
so no rule outlives its test.

Workload: members on every server buy, cancel back orders, borrow, return, hold and cancel holds;
an admin restocks; new members register and log in. Every request carries an idempotency key. An
outcome the client cannot know (no answer, or `unavailable` with details.outcome "unknown") is
sent again with the same key, through any server, for up to 30 s, as the console client does.
Each request's invocation, attempts and final outcome are kept.

check(): after healing, the invariants read from the database (stock conserved, the per-customer
limit, loans within copies, one active loan per member and book, the same CHECKSUM TABLE on every
node), and every acknowledged write found exactly once by its key, with nothing stored for a
refused request and nothing stored that no request asked for.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import mysql.connector

import rules
from engine import mysql_address
from tests.galera import GaleraCluster
from tests.wire import ServerProcess, WireClient

CHAIN = "WAYMARK_FAULTS"
HOOKS = (("INPUT", "-i"), ("OUTPUT", "-o"))

# An outcome the client cannot know is sent again for this long, as the console client does.
RETRY_FOR_S = 30.0
# A request unanswered this long counts as no answer (an unknown outcome), and is retried.
ANSWER_TIMEOUT_S = 35.0
PASSWORD = "correct horse"
GUIDE_BOOKS = (101, 102, 103, 104, 105, 106, 107)

OK, REFUSED, UNKNOWN = "ok", "refused", "unknown"
# The writes a client is told the outcome of, and which of them take an idempotency key.
KEYED = ("buy", "cancel_backorder", "borrow", "return", "hold", "cancel_hold", "restock")
WRITES = (*KEYED, "register")


class FaultError(Exception):
    """A fault could not be set up (no iptables, not root, an old cluster); the message says why."""


# The firewall ----------------------------------------------------------------------------------


def ensure_iptables() -> str:
    """The iptables program, installed with apt-get when missing and we are root; else FaultError."""
    found = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "iptables"],
        ):
            subprocess.run(command, env=environment, capture_output=True, timeout=900, check=False)
        found = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
    if found is None or os.geteuid() != 0:
        raise FaultError(
            "Cutting a cluster node off needs iptables and root: install iptables (Debian/Ubuntu:"
            " apt-get install iptables) and run the fault tests as root."
        )
    return found


class Firewall:
    """The WAYMARK_FAULTS chain on loopback: cut nodes off, heal, and leave nothing behind."""

    def __init__(self) -> None:
        self.program = ensure_iptables()

    def __enter__(self) -> Firewall:
        self.install()
        return self

    def install(self) -> None:
        """Make the chain, empty, and jump to it from INPUT and OUTPUT on loopback."""
        self.remove()  # a chain left by a run that died
        self._iptables("-N", CHAIN)
        for hook, flag in HOOKS:
            self._iptables("-I", hook, "1", flag, "lo", "-j", CHAIN)

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Delete the jumps to the chain, then the chain; quiet when there is none."""
        for hook, flag in HOOKS:
            for _ in range(10):  # one jump each, more only if runs that died left theirs
                if self._iptables("-D", hook, flag, "lo", "-j", CHAIN, check=False):
                    break
        self._iptables("-F", CHAIN, check=False)
        self._iptables("-X", CHAIN, check=False)

    def cut(self, cluster: GaleraCluster, number: int) -> None:
        """Drop every packet of node number's group channel, IST and SST to and from the others."""
        node = cluster.node(number)
        others = [other for other in cluster.nodes if other is not node]
        if any(other.group_host == node.group_host for other in others):
            raise FaultError(
                f"The cluster in {cluster.directory} was made before each node had a group"
                " address of its own (127.0.0.N), so one node's traffic cannot be told from"
                " another's: stop it and start a new one."
            )
        matches: list[tuple[str, ...]] = []
        # Connections to the node's own ports, whoever opened them.
        for port in (node.group_port, node.ist_port, node.sst_port):
            matches += [("--dport", str(port)), ("--sport", str(port))]
        # Connections the node opens to the others' group ports: they come from its address.
        for other in others:
            theirs = str(other.group_port)
            matches.append(("-s", node.group_host, "-d", other.group_host, "--dport", theirs))
            matches.append(("-s", other.group_host, "-d", node.group_host, "--sport", theirs))
        for match in matches:
            self._iptables("-A", CHAIN, "-p", "tcp", *match, "-j", "DROP")

    def heal(self) -> None:
        """Remove every rule of the chain (the chain and its jumps stay until exit)."""
        self._iptables("-F", CHAIN)

    def rules(self) -> list[str]:
        """The chain's rules as `iptables -S` prints them (empty when there is no chain)."""
        done = subprocess.run(
            [self.program, "-w", "5", "-S", CHAIN],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return [line for line in done.stdout.splitlines() if line.startswith("-A")]

    def _iptables(self, *args: str, check: bool = True) -> int:
        done = subprocess.run(
            [self.program, "-w", "5", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check and done.returncode != 0:
            raise FaultError(f"iptables {' '.join(args)} failed: {done.stderr.strip()}")
        return done.returncode


def leftover_rules() -> list[str]:
    """Every iptables line that names our chain (none once a Firewall has exited)."""
    done = subprocess.run(
        [ensure_iptables(), "-w", "5", "-S"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return [line for line in done.stdout.splitlines() if CHAIN in line]


@contextmanager
def partition(cluster: GaleraCluster, number: int) -> Iterator[Firewall]:
    """Node number cut off from the others for the block; healed and cleaned up in any case."""
    with Firewall() as firewall:
        firewall.cut(cluster, number)
        try:
            yield firewall
        finally:
            firewall.heal()


# The workload ------------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One sending of a request: through which server, how long until the answer, and what."""

    server: int
    took_s: float
    answer: str  # "ok", "ok replayed", an error code, or "no answer (ExceptionName)"


@dataclass
class Operation:
    """One request as the client meant it, its attempts, and the outcome it finally knew."""

    cmd: str
    args: dict[str, Any]
    key: str
    username: str
    user_id: int | None
    server: int  # the server it was first sent to
    invoked_at: float  # time.monotonic()
    ended_at: float = 0.0
    outcome: str = UNKNOWN
    code: str | None = None
    result: dict[str, Any] | None = None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return self.outcome == OK and self.cmd in WRITES

    def describe(self) -> str:
        tries = ", ".join(
            f"server {a.server + 1} {a.answer} in {a.took_s:.1f} s" for a in self.attempts
        )
        return (
            f"{self.cmd} {json.dumps(self.args, sort_keys=True)} key {self.key} by {self.username}:"
            f" {self.outcome}{f' ({self.code})' if self.code else ''} [{tries}]"
        )


@dataclass
class ServerStats:
    """What one server answered during a workload."""

    answers: int = 0
    no_answer: int = 0
    worst_s: float = 0.0
    slowest: str = ""  # the request answered in worst_s, and its answer
    codes: Counter[str] = field(default_factory=Counter)
    internal: list[str] = field(default_factory=list)  # each request with its whole answer


class LinkDownError(Exception):
    """No logged-in connection to that server could be made just now; nothing was sent."""


class NoAnswerError(Exception):
    """A request was sent and no answer came (the connection broke or timed out)."""


class Session:
    """One member's (or the admin's) connections, at most one per server, on one login."""

    def __init__(self, workload: Workload, username: str, password: str = PASSWORD):
        self.workload = workload
        self.username = username
        self.password = password
        self.user_id: int | None = None
        self.token: str | None = None
        self.links: dict[int, WireClient] = {}

    def twin(self) -> Session:
        """Another set of connections on the same login (for one member racing themselves)."""
        other = Session(self.workload, self.username, self.password)
        other.user_id, other.token = self.user_id, self.token
        return other

    def link(self, server: int) -> WireClient:
        """A connection to the server, logged in by resuming the token; else LinkDownError."""
        client = self.links.get(server)
        if client is not None:
            return client
        process = self.workload.servers[server]
        try:
            client = WireClient(process.host, process.port, process.cafile, ANSWER_TIMEOUT_S)
        except OSError as error:
            raise LinkDownError(f"connect: {error}") from error
        self.links[server] = client
        if self.token is not None:
            try:
                response = self.workload.send(server, client, "resume", None, {"token": self.token})
            except NoAnswerError as error:
                self.drop(server)
                raise LinkDownError("resume: no answer") from error
            if not response["ok"]:
                self.drop(server)
                raise LinkDownError(f"resume: {response['error']['code']}")
        return client

    def drop(self, server: int) -> None:
        client = self.links.pop(server, None)
        if client is not None:
            client.close()

    def close(self) -> None:
        for server in list(self.links):
            self.drop(server)


@dataclass
class MemberState:
    """What a member knows they have, from their acknowledged writes, to choose what to do next."""

    owed: set[tuple[int, int]] = field(default_factory=set)  # (order id, book) with copies owed
    loans: dict[int, int] = field(default_factory=dict)  # loan id: book id
    holds: dict[int, int] = field(default_factory=dict)  # hold id: book id

    def learn(self, op: Operation) -> None:
        result = op.result or {}
        if op.cmd == "buy" and op.outcome == OK:
            order = result["order"]
            for line in order["lines"]:
                if line["backorder_outstanding"]:
                    self.owed.add((order["id"], line["book"]["number"]))
        elif op.cmd == "cancel_backorder":
            self.owed.discard((op.args["order_id"], op.args["book"]))
        elif op.cmd == "borrow" and op.outcome == OK:
            self.loans[result["loan"]["id"]] = result["loan"]["book"]["id"]
        elif op.cmd == "return":
            self.loans.pop(op.args["loan_id"], None)
        elif op.cmd == "hold" and op.outcome == OK:
            self.holds[result["hold"]["id"]] = result["hold"]["book"]["id"]
        elif op.cmd == "cancel_hold":
            self.holds.pop(op.args["hold_id"], None)


class Workload:
    """Members and an admin sending keyed writes through every server, until stopped.

    Each member thread registers, logs in, does MEMBER_OPS things, and starts again as a new
    member; spread sends each request to a random server instead of the member's own, so one
    member writes on both sides of a partition.
    """

    MEMBER_OPS = 25
    MAX_OPS_PER_THREAD = 400

    def __init__(
        self,
        servers: Sequence[ServerProcess],
        prefix: str,
        lending_ids: Sequence[int],
        admin: tuple[str, str] | None = None,
        members_per_server: int = 2,
        spread: bool = False,
        seed: int = 0,
    ):
        self.servers = list(servers)
        self.prefix = prefix  # of every username and key of this workload
        self.lending_ids = list(lending_ids)
        self.admin = admin
        self.members_per_server = members_per_server
        self.spread = spread
        self.seed = seed
        self.operations: list[Operation] = []
        self.stats = [ServerStats() for _ in self.servers]
        self.errors: list[str] = []  # the workload's own failures (a bug here, not a server's)
        self._lock = threading.Lock()
        self._keys = iter(range(1, 10**9))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- running ----------------------------------------------------------------------------

    def start(self, seconds: float) -> None:
        """Start the threads; they stop starting new requests after seconds (or at stop())."""
        self._until = time.monotonic() + seconds
        targets: list[Callable[[], None]] = [
            functools.partial(self._member, slot)
            for slot in range(len(self.servers) * self.members_per_server)
        ]
        if self.admin is not None:
            targets.append(self._restocker)
        self._threads = [
            threading.Thread(target=self.guarded, args=(t,), daemon=True) for t in targets
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = RETRY_FOR_S + 2 * ANSWER_TIMEOUT_S) -> None:
        """Start no new request, and wait for those under way (each bounded) to end."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        hung = sum(thread.is_alive() for thread in self._threads)
        if hung:
            self.errors.append(
                f"{hung} workload threads still running {timeout_s:.0f} s after stop"
            )

    def going(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._until

    def guarded(self, target: Callable[[], None]) -> None:
        """Run target, keeping any exception it raises in errors (for a thread of the workload)."""
        try:
            target()
        except Exception as error:  # noqa: BLE001 - reported by the test, never lost in a thread
            with self._lock:
                self.errors.append(f"{type(error).__name__}: {error}")

    # -- requests -----------------------------------------------------------------------------

    def new_key(self) -> str:
        with self._lock:
            return f"{self.prefix}{next(self._keys):06d}"

    def send(
        self, server: int, client: WireClient, cmd: str, key: str | None, args: dict[str, Any]
    ) -> dict[str, Any]:
        """One request and its answer, timed and counted for the server; else NoAnswerError."""
        started = time.monotonic()
        try:
            response = client.keyed(cmd, key, **args) if key else client.request(cmd, **args)
        except (OSError, ValueError, AssertionError) as error:
            took = time.monotonic() - started
            with self._lock:
                stats = self.stats[server]
                stats.no_answer += 1
                if took > stats.worst_s:
                    stats.worst_s = took
                    stats.slowest = f"{cmd} {json.dumps(args)} key {key}: no answer ({error})"
            raise NoAnswerError(f"{type(error).__name__}: {error}") from error
        took = time.monotonic() - started
        code = "ok" if response["ok"] else response["error"]["code"]
        with self._lock:
            stats = self.stats[server]
            stats.answers += 1
            if took > stats.worst_s:
                stats.worst_s = took
                stats.slowest = f"{cmd} {json.dumps(args)} key {key}: {json.dumps(response)[:300]}"
            stats.codes[code] += 1
            if code == "internal":
                stats.internal.append(
                    f"server {server + 1}: {cmd} {json.dumps(args)} key {key}, answered in"
                    f" {took:.1f} s: {json.dumps(response)}"
                )
        return response

    def perform(
        self, session: Session, cmd: str, args: dict[str, Any], server: int
    ) -> Operation | None:
        """Send one keyed request and settle its outcome; None if it could not even be sent.

        An unknown outcome is sent again with the same key through the next servers in turn,
        for RETRY_FOR_S after the first unknown, until an answer settles it; a retry answered
        "unavailable, nothing changed" settles nothing, since the first sending may have been done.
        """
        try:
            client = session.link(server)
        except LinkDownError:
            return None
        op = Operation(
            cmd, args, self.new_key(), session.username, session.user_id, server, time.monotonic()
        )
        with self._lock:
            self.operations.append(op)
        settled = self._try(op, session, server, client, first=True)
        give_up_at = time.monotonic() + RETRY_FOR_S
        tries = 0
        while not settled and time.monotonic() < give_up_at:
            tries += 1
            time.sleep(min(1.0, 0.2 * tries))
            target = (server + tries) % len(self.servers)
            try:
                client = session.link(target)
            except LinkDownError:
                continue
            settled = self._try(op, session, target, client, first=False)
        op.ended_at = time.monotonic()
        return op

    def _try(
        self, op: Operation, session: Session, server: int, client: WireClient, first: bool
    ) -> bool:
        started = time.monotonic()
        try:
            response = self.send(server, client, op.cmd, op.key, op.args)
        except NoAnswerError as error:
            session.drop(server)
            op.attempts.append(Attempt(server, time.monotonic() - started, f"no answer ({error})"))
            return False
        took = time.monotonic() - started
        if response["ok"]:
            op.attempts.append(
                Attempt(server, took, "ok replayed" if response.get("replayed") else "ok")
            )
            op.outcome, op.code, op.result = OK, None, response["result"]
            return True
        refusal = response["error"]
        code, details = refusal["code"], refusal.get("details") or {}
        told = ", ".join(
            f"{k} {details[k]}" for k in ("cause", "outcome", "request_id") if k in details
        )
        op.attempts.append(Attempt(server, took, f"{code} ({told})" if told else code))
        if code == "internal" or details.get("outcome") == UNKNOWN:
            return False  # nothing promised: the work may have been done
        if (
            not first
            and code == "unavailable"
            and details.get("cause") in ("database", "contention")
        ):
            return False  # this sending changed nothing, but the first may have been done
        if not first and op.cmd == "register" and code == "username_taken":
            op.outcome, op.code = UNKNOWN, "username_taken after no answer"
            return True  # the first sending most likely made the account
        op.outcome, op.code, op.result = REFUSED, code, refusal
        return True

    # -- the members and the admin --------------------------------------------------------------

    def join(self, session: Session, server: int) -> bool:
        """Register and log in as a new member; True when logged in."""
        credentials = {"username": session.username, "password": session.password}
        registered = self.perform(session, "register", credentials, server)
        if registered is None or registered.outcome == REFUSED:
            return False
        return self.log_in(session, server)

    def log_in(self, session: Session, server: int) -> bool:
        """Log in (with a login operation recorded); True when logged in."""
        credentials = {"username": session.username, "password": session.password}
        login = self.perform(session, "login", credentials, server)
        session.close()  # only the connection that got the answer is logged in: resume anew
        if login is None or login.outcome != OK:
            return False
        assert login.result is not None
        session.token, session.user_id = login.result["token"], login.result["user"]["id"]
        return True

    def _member(self, slot: int) -> None:
        rng = random.Random(self.seed * 1000 + slot)
        home = slot % len(self.servers)
        done = 0
        for generation in range(self.MAX_OPS_PER_THREAD):
            if not self.going() or done >= self.MAX_OPS_PER_THREAD:
                return
            session = Session(self, f"{self.prefix}m{slot}g{generation}")
            if not self.join(session, home):
                session.close()
                time.sleep(0.5)
                continue
            state = MemberState()
            try:
                for _ in range(self.MEMBER_OPS):
                    if not self.going():
                        return
                    cmd, args = self._choose(rng, state)
                    server = rng.randrange(len(self.servers)) if self.spread else home
                    if cmd == "login":  # again, as a member opening another window would
                        self.log_in(session, server)
                        done += 1
                        continue
                    op = self.perform(session, cmd, args, server)
                    if op is None:
                        time.sleep(0.3)
                        continue
                    done += 1
                    state.learn(op)
                    time.sleep(rng.uniform(0.02, 0.1))
            finally:
                session.close()

    def _choose(self, rng: random.Random, state: MemberState) -> tuple[str, dict[str, Any]]:
        choices: list[tuple[str, float]] = [("buy", 4), ("borrow", 3), ("hold", 1), ("login", 0.3)]
        if state.loans:
            choices.append(("return", 3))
        if state.holds:
            choices.append(("cancel_hold", 1))
        if state.owed:
            choices.append(("cancel_backorder", 2))
        cmd = rng.choices([c for c, _ in choices], [w for _, w in choices])[0]
        if cmd == "buy":
            books = rng.sample(GUIDE_BOOKS, rng.choice((1, 1, 2)))
            return cmd, {"items": [{"book": b, "quantity": rng.randint(1, 3)} for b in books]}
        if cmd == "borrow":
            return cmd, {"book_id": rng.choice(self.lending_ids)}
        if cmd == "hold":
            return cmd, {"book_id": rng.choice(self.lending_ids)}
        if cmd == "return":
            return cmd, {"loan_id": rng.choice(sorted(state.loans))}
        if cmd == "cancel_hold":
            return cmd, {"hold_id": rng.choice(sorted(state.holds))}
        if cmd == "cancel_backorder":
            order_id, book = rng.choice(sorted(state.owed))
            return cmd, {"order_id": order_id, "book": book}
        return cmd, {}  # login: the member's own credentials, sent by log_in

    def _restocker(self) -> None:
        assert self.admin is not None
        rng = random.Random(self.seed * 1000 + 999)
        session = Session(self, *self.admin)
        try:
            for count in range(self.MAX_OPS_PER_THREAD):
                if not self.going():
                    return
                server = count % len(self.servers)
                if session.token is None and not self.log_in(session, server):
                    time.sleep(0.5)
                    continue
                args = {"book": rng.choice(GUIDE_BOOKS), "quantity": rng.randint(1, 4)}
                if self.perform(session, "restock", args, server) is None:
                    time.sleep(0.3)
                time.sleep(rng.uniform(0.2, 0.4))
        finally:
            session.close()

    def race(
        self, session: Session, cmd: str, args: dict[str, Any], servers: Sequence[int]
    ) -> list[Operation | None]:
        """One logged-in member sends the same write once through each server given, all at
        once (each on connections of its own, each with its own key)."""
        twins = [session.twin() for _ in servers]
        for twin, server in zip(twins, servers, strict=True):
            twin.link(server)  # connected and resumed before the race starts
        barrier = threading.Barrier(len(twins), timeout=30)
        done: list[Operation | None] = [None] * len(twins)

        def send(index: int) -> None:
            barrier.wait()
            done[index] = self.perform(twins[index], cmd, args, servers[index])

        threads = [
            threading.Thread(target=self.guarded, args=(lambda i=i: send(i),), daemon=True)
            for i in range(len(twins))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(RETRY_FOR_S + 2 * ANSWER_TIMEOUT_S)
        for twin in twins:
            twin.close()
        return done

    # -- what happened ----------------------------------------------------------------------------

    def worst_s(self) -> float:
        return max(stats.worst_s for stats in self.stats)

    def internal(self) -> list[str]:
        return [line for stats in self.stats for line in stats.internal]

    def outcomes(self) -> Counter[str]:
        return Counter(op.outcome for op in self.operations)


# The checker ---------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the checker found: writes lost or doubled, and invariants broken, as sentences."""

    operations: int
    acknowledged: int
    lost: list[str] = field(default_factory=list)  # acknowledged, then missing or changed
    duplicated: list[str] = field(default_factory=list)  # stored though refused, or by no request
    breaks: list[str] = field(default_factory=list)  # invariants broken

    @property
    def lost_or_duplicated(self) -> int:
        return len(self.lost) + len(self.duplicated)

    @property
    def passed(self) -> bool:
        return not (self.lost or self.duplicated or self.breaks)

    def report(self, limit: int = 10) -> str:
        """Every finding, a sentence a line (at most limit of each kind)."""
        lines = []
        for title, found in (
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("invariant broken", self.breaks),
        ):
            lines += [f"{title}: {sentence}" for sentence in found[:limit]]
            if len(found) > limit:
                lines.append(f"{title}: ... and {len(found) - limit} more")
        return "\n".join(lines) or "no write lost or duplicated, no invariant broken"


@contextmanager
def node_cursor(url: str) -> Iterator[Any]:
    """A cursor on one node, straight through; on Galera each read waits for the node to apply
    every write committed before it (wsrep_sync_wait), so a node a moment behind is not wrong."""
    host, port, user, password, database = mysql_address(url)
    connection = mysql.connector.connect(
        host=host, port=port, user=user, password=password, database=database or None,
        autocommit=True, connection_timeout=5, read_timeout=60, write_timeout=30,
    )  # fmt: skip
    try:
        cursor = connection.cursor()
        # Not a Galera node: every read is up to date anyway.
        with suppress(mysql.connector.Error):
            cursor.execute("SET SESSION wsrep_sync_wait = 1")
        yield cursor
    finally:
        connection.close()


def stock_held(cursor: Any) -> dict[int, int]:
    """Per guide book: copies in stock plus copies sent (sold from stock or supplied to a back
    order). A buy or a cancelled back order moves copies within this sum; a restock adds to it."""
    cursor.execute(
        "SELECT b.number, b.in_stock + COALESCE(SUM(l.fulfilled + l.backordered"
        " - l.backorder_outstanding - l.backorder_cancelled), 0)"
        " FROM shop_books b LEFT JOIN order_lines l ON l.book_number = b.number"
        " GROUP BY b.number, b.in_stock"
    )
    return {int(number): int(held) for number, held in cursor.fetchall()}


def table_checksums(url: str) -> dict[str, int]:
    """CHECKSUM TABLE of every table of the URL's database on that node, once it caught up."""
    with node_cursor(url) as cursor:
        cursor.execute("SELECT 1")  # under wsrep_sync_wait: once the node has caught up
        cursor.fetchall()
        cursor.execute("SHOW TABLES")
        tables = sorted(str(name) for (name,) in cursor.fetchall())
        cursor.execute(f"CHECKSUM TABLE {', '.join(f'`{table}`' for table in tables)}")
        return {str(name).split(".", 1)[1]: int(value) for name, value in cursor.fetchall()}


def differing_tables(node_urls: Sequence[str], tries: int = 3) -> list[str]:
    """The tables whose CHECKSUM TABLE is not the same on every node, as sentences.

    Asked again after a second when they differ: a sweep of a server may write between the
    nodes' answers; a real difference stays.
    """
    for attempt in range(tries):
        sums = [table_checksums(url) for url in node_urls]
        differing = sorted(t for t in sums[0] if len({s.get(t) for s in sums}) > 1)
        if not differing:
            return []
        if attempt + 1 < tries:
            time.sleep(1)
    return [
        f"table {table} differs between the nodes: "
        + ", ".join(f"node {i + 1} checksum {s.get(table)}" for i, s in enumerate(sums))
        for table in differing
    ]


@dataclass
class Stored:
    """What the database holds of one workload's members and keys."""

    keys: dict[str, tuple[int, str, dict[str, Any]]]  # key: (user id, command, stored answer)
    users: dict[str, int]  # username: id
    orders: dict[int, tuple[int, dict[int, tuple[int, ...]]]]  # id: (user, {book: line})
    loans: dict[int, tuple[int, int, bool]]  # id: (user, book, returned)
    holds: dict[int, tuple[int, int, bool]]  # id: (user, book, ended)

    @classmethod
    def read(cls, cursor: Any, prefix: str) -> Stored:
        like = (f"{prefix}%",)
        cursor.execute(
            "SELECT user_id, idem_key, cmd, result FROM idempotency_keys WHERE idem_key LIKE %s",
            like,
        )
        keys = {
            str(key): (int(user), str(cmd), json.loads(result) if result else {})
            for user, key, cmd, result in cursor.fetchall()
        }
        cursor.execute("SELECT username, id FROM users WHERE username LIKE %s", like)
        users = {str(name): int(user) for name, user in cursor.fetchall()}
        cursor.execute(
            "SELECT o.id, o.user_id, l.book_number, l.quantity, l.fulfilled, l.backordered,"
            " l.backorder_outstanding, l.backorder_cancelled FROM orders o"
            " JOIN users u ON u.id = o.user_id LEFT JOIN order_lines l ON l.order_id = o.id"
            " WHERE u.username LIKE %s",
            like,
        )
        orders: dict[int, tuple[int, dict[int, tuple[int, ...]]]] = {}
        for order_id, user, book, *line in cursor.fetchall():
            lines = orders.setdefault(int(order_id), (int(user), {}))[1]
            if book is not None:
                lines[int(book)] = tuple(int(value) for value in line)
        found = []
        for table, ended in (("loans", "returned_at"), ("holds", "ended_at")):
            cursor.execute(
                f"SELECT t.id, t.user_id, t.book_id, t.{ended} IS NOT NULL FROM {table} t"
                " JOIN users u ON u.id = t.user_id WHERE u.username LIKE %s",
                like,
            )
            found.append(
                {
                    int(i): (int(user), int(book), bool(over))
                    for i, user, book, over in cursor.fetchall()
                }
            )
        return cls(keys, users, orders, found[0], found[1])


def _made(cmd: str, answer: dict[str, Any] | None) -> tuple[str, int] | None:
    """The row a write made, named by its answer: ("order", id), ("loan", id) or ("hold", id)."""
    noun = {"buy": "order", "borrow": "loan", "hold": "hold"}.get(cmd)
    if noun is None or not answer or noun not in answer:
        return None
    return noun, int(answer[noun]["id"])


def check(
    node_urls: Sequence[str],
    operations: Sequence[Operation],
    prefix: str,
    baseline: dict[int, int],
) -> Verdict:
    """Judge a workload after healing, on a cluster whose every node is Synced.

    baseline is stock_held() before the workload began; prefix starts every username and key
    the workload used.
    """
    verdict = Verdict(len(operations), sum(op.acknowledged for op in operations))
    verdict.breaks += differing_tables(node_urls)
    with node_cursor(node_urls[0]) as cursor:
        stored = Stored.read(cursor, prefix)
        _check_writes(verdict, operations, stored)
        _check_invariants(verdict, cursor, operations, stored, baseline)
    return verdict


def _check_writes(verdict: Verdict, operations: Sequence[Operation], stored: Stored) -> None:
    by_key = {op.key: op for op in operations}
    named: dict[tuple[str, int], str] = {}
    for key, (user, cmd, answer) in sorted(stored.keys.items()):
        op = by_key.get(key)
        if op is None or op.cmd != cmd or (op.user_id is not None and op.user_id != user):
            verdict.duplicated.append(
                f"key {key} ({cmd}, user {user}) is stored, but no request sent it"
            )
            continue
        if op.outcome == REFUSED:
            verdict.duplicated.append(f"{op.describe()}: refused, yet done (stored {answer})")
        made = _made(cmd, answer)
        if made is not None:
            if made in named:
                verdict.duplicated.append(
                    f"{made[0]} {made[1]} is named by keys {named[made]} and {key}"
                )
            named[made] = key
    for op in operations:
        if op.cmd in KEYED:
            _check_keyed(verdict, op, stored)
    for noun, rows in (("order", stored.orders), ("loan", stored.loans), ("hold", stored.holds)):
        for row_id, row in sorted(rows.items()):
            if (noun, row_id) not in named:
                verdict.duplicated.append(
                    f"{noun} {row_id} of user {row[0]} is stored, but no request's key made it"
                )
    sent = {
        op.args["username"] for op in operations if op.cmd == "register" and op.outcome != REFUSED
    }
    for op in operations:
        if op.cmd == "register" and op.outcome == OK:
            assert op.result is not None
            if stored.users.get(op.args["username"]) != op.result["user"]["id"]:
                verdict.lost.append(f"{op.describe()}: acknowledged, but the account is not stored")
    for username in sorted(set(stored.users) - sent):
        verdict.duplicated.append(f"account {username} exists, but its registration was refused")


def _check_keyed(verdict: Verdict, op: Operation, stored: Stored) -> None:
    """An acknowledged keyed write: its answer stored by its key, and its effect in the rows."""
    if op.outcome != OK:
        return
    assert op.result is not None
    row = stored.keys.get(op.key)
    if row is None:
        verdict.lost.append(f"{op.describe()}: acknowledged, but its key and answer are not stored")
        return
    if _made(op.cmd, row[2]) != _made(op.cmd, op.result):
        verdict.lost.append(f"{op.describe()}: acknowledged as {op.result}, stored as {row[2]}")
        return
    problem = _effect_missing(op, stored)
    if problem:
        verdict.lost.append(f"{op.describe()}: acknowledged, but {problem}")


def _effect_missing(op: Operation, stored: Stored) -> str | None:
    """Why the rows do not show an acknowledged write's effect, or None when they do."""
    result, args = op.result or {}, op.args
    if op.cmd == "buy":
        order = result["order"]
        found = stored.orders.get(order["id"])
        told = {
            line["book"]["number"]: (line["quantity"], line["fulfilled"], line["backordered"])
            for line in order["lines"]
        }
        if found is None:
            return f"order {order['id']} is not stored"
        if found[0] != op.user_id or {b: line[:3] for b, line in found[1].items()} != told:
            return f"order {order['id']} is stored as {found}, not as told {told}"
    elif op.cmd == "borrow":
        loan = stored.loans.get(result["loan"]["id"])
        if loan is None or loan[:2] != (op.user_id, result["loan"]["book"]["id"]):
            return f"loan {result['loan']['id']} is stored as {loan}"
    elif op.cmd == "return":
        loan = stored.loans.get(args["loan_id"])
        if loan is None or not loan[2]:
            return f"loan {args['loan_id']} is not returned ({loan})"
    elif op.cmd == "hold":
        hold = stored.holds.get(result["hold"]["id"])
        if hold is None or hold[:2] != (op.user_id, result["hold"]["book"]["id"]):
            return f"hold {result['hold']['id']} is stored as {hold}"
    elif op.cmd == "cancel_hold":
        hold = stored.holds.get(args["hold_id"])
        if hold is None or not hold[2]:
            return f"hold {args['hold_id']} has not ended ({hold})"
    elif op.cmd == "cancel_backorder":
        order = stored.orders.get(args["order_id"])
        told = next(
            line["backorder_cancelled"]
            for line in result["order"]["lines"]
            if line["book"]["number"] == args["book"]
        )
        line = order[1].get(args["book"]) if order else None
        if line is None or line[3] != 0 or line[4] != told:
            return f"order {args['order_id']} book {args['book']} is stored as {line}, told {told} cancelled"
    return None


def _check_invariants(
    verdict: Verdict,
    cursor: Any,
    operations: Sequence[Operation],
    stored: Stored,
    baseline: dict[int, int],
) -> None:
    restocked: Counter[int] = Counter()
    for op in operations:
        if op.cmd == "restock" and op.key in stored.keys:  # done, whatever the client heard
            restocked[op.args["book"]] += op.args["quantity"]
    held = stock_held(cursor)
    for book, before in sorted(baseline.items()):
        if held.get(book) != before + restocked[book]:
            verdict.breaks.append(
                f"guide book {book}: in stock + sent is {held.get(book)}, but it was {before}"
                f" and {restocked[book]} copies were restocked"
            )
    queries = (
        (
            "SELECT o.user_id, l.book_number, SUM(l.quantity - l.backorder_cancelled)"
            " FROM orders o JOIN order_lines l ON l.order_id = o.id"
            " GROUP BY o.user_id, l.book_number HAVING SUM(l.quantity - l.backorder_cancelled) > %s",
            (rules.MAX_COPIES_PER_CUSTOMER,),
            "customer {0} has {2} copies of guide book {1} (at most 8 allowed)",
        ),
        (
            "SELECT b.id, b.copies, COUNT(l.id) FROM lending_books b"
            " JOIN loans l ON l.book_id = b.id AND l.returned_at IS NULL"
            " GROUP BY b.id, b.copies HAVING COUNT(l.id) > b.copies",
            (),
            "lending book {0} has {2} copies on loan but owns {1}",
        ),
        (
            "SELECT b.id, b.copies, COUNT(h.id) + (SELECT COUNT(*) FROM loans l"
            " WHERE l.book_id = b.id AND l.returned_at IS NULL) FROM lending_books b"
            " JOIN holds h ON h.book_id = b.id AND h.ended_at IS NULL AND h.ready_until > %s"
            " GROUP BY b.id, b.copies HAVING COUNT(h.id) + (SELECT COUNT(*) FROM loans l"
            " WHERE l.book_id = b.id AND l.returned_at IS NULL) > b.copies",
            (int(time.time()),),
            "lending book {0} has {2} copies on loan or kept for a hold but owns {1}",
        ),
        (
            "SELECT user_id, book_id, COUNT(*) FROM loans WHERE returned_at IS NULL"
            " GROUP BY user_id, book_id HAVING COUNT(*) > 1",
            (),
            "member {0} has {2} active loans of lending book {1}",
        ),
        (
            "SELECT user_id, COUNT(*), 0 FROM loans WHERE returned_at IS NULL"
            " GROUP BY user_id HAVING COUNT(*) > %s",
            (rules.HOUSE_RULES.max_active_loans,),
            "member {0} has {1} books on loan at once",
        ),
        (
            "SELECT id, user_id, active_user_id FROM loans WHERE (returned_at IS NULL AND"
            " (active_user_id IS NULL OR active_user_id <> user_id))"
            " OR (returned_at IS NOT NULL AND active_user_id IS NOT NULL)",
            (),
            "loan {0} of member {1} has active_user_id {2}, which disagrees with returned_at",
        ),
        (
            "SELECT user_id, book_id, COUNT(*) FROM holds WHERE ended_at IS NULL"
            " GROUP BY user_id, book_id HAVING COUNT(*) > 1",
            (),
            "member {0} has {2} open holds on lending book {1}",
        ),
    )
    for statement, params, sentence in queries:
        cursor.execute(statement, params)
        for row in cursor.fetchall():
            verdict.breaks.append(sentence.format(*row))
