"""Waymark load generator: the transport ceiling, the database ceiling and the real server.

    python bench/load.py [--db sqlite|mysql|URL] [--clients 16] [--seconds 10]
                         [--mix read|buy|login|mixed] [--bcrypt-cost 12] [--json]
    python bench/load.py --pool-check [--db mysql|URL] [--clients 16] [--cycles 2000]
    python bench/load.py --bcrypt-check [--db sqlite|mysql|URL] [--clients 16] [--seconds 5]

The default mode runs the same request mix three times, each with N closed-loop clients (send one
request, wait for its answer, repeat) for a warm-up plus --seconds:
  transport  through bench/echo_server.py: TLS and threads only, the ceiling of the transport;
  db         as direct Store calls from N threads: the ceiling of the database;
  server     through the real server.py, one TLS connection per client.
Servers are subprocesses on 127.0.0.1, port 0; every database is fresh (a temporary SQLite file,
or a MySQL database created and dropped here). Nothing connects anywhere but 127.0.0.1.
See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import platform
import random
import secrets
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

import bcrypt  # noqa: E402
import mysql.connector  # noqa: E402
import mysql.connector.pooling  # noqa: E402

import passwords  # noqa: E402
import rules  # noqa: E402
import seed  # noqa: E402
import tls  # noqa: E402
from db import Store, StoreConfig  # noqa: E402
from engine import Database, MySQLBackend, PoolConfig, backend_from_url  # noqa: E402
from passwords import hash_token  # noqa: E402
from protocol import ProtocolError  # noqa: E402
from settings import ServerConfig, load_config  # noqa: E402

HOST = "127.0.0.1"
DEFAULT_MYSQL = f"mysql://root@{HOST}:3306/"
OFFLINE_OPENLIBRARY = f"http://{HOST}:9"  # the discard port: no request here reaches the internet
PASSWORD = "bench password"  # noqa: S105 - every bench member's password
REQUEST_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0
PLENTY = 10_000_000  # stock per guide book, so every bench purchase is sold, not back-ordered
HASH_CHECK_S = 3.0  # how long --bcrypt-check hashes with each thread count
HASH_CHECK_COST = passwords.PRODUCTION_COST
READER_MIX = {"search_walks": 1}  # what the other clients do during --bcrypt-check's login burst

MIXES: dict[str, dict[str, int]] = {
    "read": {"search_walks": 1, "catalogue": 1},
    "buy": {"buy": 1},
    "login": {"login": 1},
    "mixed": {"search_walks": 40, "catalogue": 40, "buy": 15, "login": 5},
}
AREAS = sorted({walk.area for walk in seed.walks().walks})
BOOKS = [book.number for book in seed.shop_books()]
CATALOGUE_QUERIES = sorted({book["title"].split()[-1].lower() for book in seed.lending_books()})


class BenchError(Exception):
    """A request that got an error answer (or a wrong echo)."""


# ---------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Options:
    """What to run; db is "sqlite" or a MySQL server URL on 127.0.0.1."""

    mode: str
    db: str
    clients: int
    seconds: float
    mix: str
    bcrypt_cost: int
    max_requests: int
    cycles: int
    json: bool

    @property
    def warmup(self) -> float:
        """Seconds run before measuring, so connections, caches and pools are warm."""
        return min(1.0, self.seconds / 5)


def database_option(value: str) -> str:
    """--db: sqlite, mysql, or mysql://user:password@127.0.0.1:PORT/ (a server, not a database)."""
    if value == "sqlite":
        return value
    url = DEFAULT_MYSQL if value == "mysql" else value
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb"):
        raise argparse.ArgumentTypeError("use sqlite, mysql or mysql://user:password@host:port/")
    if parts.hostname != HOST:
        raise argparse.ArgumentTypeError(f"the bench only connects to {HOST}, not {parts.hostname}")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/", "", ""))


def bounded(kind: type, low: float, high: float) -> Callable[[str], Any]:
    """An argparse type: a number within [low, high]."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    parse.__name__ = kind.__name__  # argparse says "invalid int value: 'x'"
    return parse


def parse_options(argv: Sequence[str] | None) -> Options:
    """The command line as Options."""
    parser = argparse.ArgumentParser(
        prog="bench/load.py",
        description="Waymark load generator: transport, database and server side by side.",
        epilog="See bench/README.md. Everything runs on 127.0.0.1 and stops by itself.",
    )
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument(
        "--pool-check",
        dest="mode",
        action="store_const",
        const="pool",
        help="MySQL only: cost of a pooled checkout, db.py's QueuePool vs mysql.connector.pooling",
    )
    modes.add_argument(
        "--bcrypt-check",
        dest="mode",
        action="store_const",
        const="bcrypt",
        help="bcrypt hashes/s with 1 vs 4 threads, and how a login burst slows other requests",
    )
    parser.add_argument(
        "--db",
        type=database_option,
        default="sqlite",
        help="sqlite (a temporary file), mysql (root@127.0.0.1:3306) or a MySQL server URL;"
        " a fresh database is created and dropped there [sqlite]",
    )
    parser.add_argument("--clients", type=bounded(int, 1, 256), default=16, help="[16]")
    parser.add_argument(
        "--seconds", type=bounded(float, 0.5, 600), default=10.0, help="per stage [10]"
    )
    parser.add_argument("--mix", choices=sorted(MIXES), default="read", help="[read]")
    parser.add_argument(
        "--bcrypt-cost",
        type=bounded(int, 4, 14),
        # A string default goes through `type` too, so a bad variable is reported like a bad option.
        default=os.environ.get("WAYMARK_BCRYPT_COST", str(passwords.PRODUCTION_COST)),
        help="bcrypt cost of the bench members' passwords and of the server"
        " [WAYMARK_BCRYPT_COST, else 12]",
    )
    parser.add_argument(
        "--max-requests",
        type=bounded(int, 1, 10_000_000),
        default=2_000_000,
        help="stop a stage early after this many requests [2000000]",
    )
    parser.add_argument(
        "--cycles", type=bounded(int, 100, 100_000), default=2000, help="for --pool-check [2000]"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if args.mode == "pool" and args.db == "sqlite":
        parser.error("--pool-check measures MySQL pools: add --db mysql (or a MySQL URL)")
    return Options(
        mode=args.mode or "load",
        db=args.db,
        clients=args.clients,
        seconds=args.seconds,
        mix=args.mix,
        bcrypt_cost=args.bcrypt_cost,
        max_requests=args.max_requests,
        cycles=args.cycles,
        json=args.json,
    )


# ---------------------------------------------------------------------------------------------
# Measuring


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of sorted values; None when there are none."""
    if not ordered:
        return None
    return ordered[max(math.ceil(fraction * len(ordered)), 1) - 1]


@dataclass(frozen=True)
class Window:
    """When clients start, when measuring starts (after the warm-up), and when it ends."""

    start: float
    measure_from: float
    deadline: float

    @classmethod
    def starting_soon(cls, warmup: float, seconds: float) -> Window:
        start = time.perf_counter() + 0.1  # time for the client threads to start
        return cls(start, start + warmup, start + warmup + seconds)


def sleep_until(moment: float) -> None:
    """Sleep until time.perf_counter() reaches moment."""
    time.sleep(max(moment - time.perf_counter(), 0))


class Budget:
    """The count bound: at most `limit` requests in a stage, shared by all its clients."""

    def __init__(self, limit: int):
        self._left = limit
        self._lock = threading.Lock()

    def take(self) -> bool:
        """True if one more request may be sent."""
        with self._lock:
            self._left -= 1
            return self._left >= 0

    @property
    def exhausted(self) -> bool:
        return self._left < 0


@dataclass
class Tally:
    """One client's record: latencies of requests started after the warm-up, by operation."""

    latencies: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    completed: Counter[str] = field(default_factory=Counter)  # finished inside the window
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None
    last_end: float = 0.0

    def record(self, op: str, started: float, ended: float, window: Window) -> None:
        if started >= window.measure_from:
            self.latencies[op].append(ended - started)
        if window.measure_from <= ended <= window.deadline:
            self.completed[op] += 1
        self.last_end = max(self.last_end, ended)

    def fail(self, op: str, error: Exception) -> None:
        self.errors[op] += 1
        self.first_error = self.first_error or f"{op}: {type(error).__name__}: {error}"


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far by this process and by a child, and the whole machine's ticks."""

    at: float
    bench_s: float
    child_s: float
    busy_ticks: int
    total_ticks: int

    @classmethod
    def take(cls, child_pid: int | None) -> CpuSample:
        times = os.times()
        busy, total = _machine_ticks()
        child = _process_cpu_s(child_pid) if child_pid else 0.0
        return cls(time.perf_counter(), times.user + times.system, child, busy, total)


def _machine_ticks() -> tuple[int, int]:
    # /proc/stat "cpu user nice system idle iowait irq softirq steal ...": busy is all but idle+iowait.
    try:
        ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def _process_cpu_s(pid: int) -> float:
    # /proc/PID/stat: utime and stime are fields 14 and 15, counted after the ")" of the name.
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuUse:
    """CPU used in the measured window: each process as % of one core and in µs per request,
    the whole machine as % of all its cores. CPU per request is the figure least moved by
    noisy neighbours. "server" is the stage's server process, if it has one."""

    server_pct: float | None
    server_us_per_request: float | None
    bench_pct: float
    bench_us_per_request: float | None
    machine_pct: float | None

    @classmethod
    def between(cls, before: CpuSample, after: CpuSample, requests: int) -> CpuUse:
        wall = after.at - before.at
        server_s = after.child_s - before.child_s if after.child_s else None
        bench_s = after.bench_s - before.bench_s
        ticks = after.total_ticks - before.total_ticks

        def per_request(cpu_s: float | None) -> float | None:
            return cpu_s * 1e6 / requests if cpu_s is not None and requests else None

        return cls(
            server_pct=None if server_s is None else 100 * server_s / wall,
            server_us_per_request=per_request(server_s),
            bench_pct=100 * bench_s / wall,
            bench_us_per_request=per_request(bench_s),
            machine_pct=100 * (after.busy_ticks - before.busy_ticks) / ticks if ticks else None,
        )


@dataclass(frozen=True)
class OpStats:
    """Throughput and latency of one operation (or of all of them) in a stage."""

    requests: int
    errors: int
    per_s: float
    p50_ms: float | None
    p99_ms: float | None

    @classmethod
    def of(cls, latencies: list[float], completed: int, errors: int, seconds: float) -> OpStats:
        ordered = sorted(latencies)
        p50, p99 = percentile(ordered, 0.50), percentile(ordered, 0.99)
        return cls(
            requests=completed,
            errors=errors,
            per_s=completed / seconds,
            p50_ms=None if p50 is None else p50 * 1000,
            p99_ms=None if p99 is None else p99 * 1000,
        )


@dataclass(frozen=True)
class StageResult:
    """One stage's numbers: overall and per operation."""

    name: str
    seconds: float
    overall: OpStats
    ops: dict[str, OpStats]
    cpu: CpuUse
    capped: bool
    first_error: str | None

    @classmethod
    def collect(
        cls,
        name: str,
        tallies: list[Tally],
        window: Window,
        cpu: tuple[CpuSample, CpuSample],
        capped: bool,
    ) -> StageResult:
        last_end = max((t.last_end for t in tallies), default=window.deadline)
        seconds = max(min(window.deadline, last_end) - window.measure_from, 1e-9)
        ops = sorted({op for t in tallies for op in (*t.latencies, *t.errors)})
        by_op = {
            op: OpStats.of(
                [x for t in tallies for x in t.latencies[op]],
                sum(t.completed[op] for t in tallies),
                sum(t.errors[op] for t in tallies),
                seconds,
            )
            for op in ops
        }
        overall = OpStats.of(
            [x for t in tallies for values in t.latencies.values() for x in values],
            sum(s.requests for s in by_op.values()),
            sum(s.errors for s in by_op.values()),
            seconds,
        )
        first_error = next((t.first_error for t in tallies if t.first_error), None)
        cpu_use = CpuUse.between(*cpu, overall.requests)
        return cls(name, seconds, overall, by_op, cpu_use, capped, first_error)


# ---------------------------------------------------------------------------------------------
# Connections


class LineClient:
    """One TLS connection that sends a line and reads the answer line."""

    def __init__(self, port: int, context: ssl.SSLContext):
        raw = socket.create_connection((HOST, port), timeout=REQUEST_TIMEOUT_S)
        self.sock = context.wrap_socket(raw, server_hostname=HOST)
        self.buffer = bytearray()
        self.next_id = 0

    def close(self) -> None:
        self.sock.close()

    def roundtrip(self, line: bytes) -> bytes:
        """Send one line and return the next answer line, without its newline."""
        self.sock.sendall(line)
        while (end := self.buffer.find(b"\n")) == -1:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        answer = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        return answer

    def request_line(self, cmd: str, args: dict[str, Any]) -> tuple[int, bytes]:
        """A request line with the next id."""
        self.next_id += 1
        request = {"id": self.next_id, "cmd": cmd, "args": args}
        return self.next_id, json.dumps(request, separators=(",", ":")).encode() + b"\n"

    def call(self, cmd: str, args: dict[str, Any]) -> None:
        """One request that must succeed; BenchError carries the server's error."""
        request_id, line = self.request_line(cmd, args)
        answer = self.roundtrip(line)
        # The server writes compact JSON with "id" then "ok" first, so a success is recognised
        # without decoding the whole (possibly long) answer; anything else is decoded.
        if not answer.startswith(b'{"id":%d,"ok":true,' % request_id):
            check_answer(json.loads(answer), request_id)

    def echo(self, line: bytes) -> None:
        """One line through the echo server; it must come back unchanged."""
        if self.roundtrip(line) != line[:-1]:
            raise BenchError("the echo differs from the line sent")


def check_answer(answer: dict[str, Any], request_id: int) -> None:
    """Raise BenchError unless the answer is a success for this request."""
    if answer.get("id") != request_id:
        raise BenchError(f"answer for id {answer.get('id')!r}, expected {request_id}")
    if not answer.get("ok"):
        error = answer.get("error", {})
        raise BenchError(f"{error.get('code')}: {error.get('message')}")


# ---------------------------------------------------------------------------------------------
# Subprocesses


class Service:
    """A child process that prints "listening on HOST:PORT" when ready; SIGTERM stops it."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.command = command
        self.log_path = log_path
        self.env = env
        self.port = 0
        self.process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> Service:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                env=self.env,
                cwd=self.log_path.parent,
            )
        try:
            self.port = self._wait_until_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_line(self, containing: str) -> str | None:
        """The first line of the child's log (stderr) holding this text."""
        lines = self.log_path.read_text().splitlines()
        return next((line for line in lines if containing in line), None)

    def _wait_until_listening(self) -> int:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if not ready:
                continue
            line = self.process.stdout.readline()
            if "listening on" in line:
                return int(line.rsplit(":", 1)[1])
            if not line:
                break
        log = self.log_path.read_text()[-3000:]
        raise RuntimeError(f"{Path(self.command[1]).name} did not start; its log ends:\n{log}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 30 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


def echo_service(workdir: Path, cert: Path, key: Path) -> Service:
    """bench/echo_server.py on a free port."""
    script = Path(__file__).with_name("echo_server.py")
    command = [sys.executable, str(script), "--cert", str(cert), "--key", str(key)]
    return Service(command, workdir / "echo.log")


def server_environment(options: Options, extra: dict[str, str] | None = None) -> dict[str, str]:
    """server.py's environment: ours, with the bench's bcrypt cost and any extras."""
    return {
        **os.environ,
        "WAYMARK_BCRYPT_COST": str(options.bcrypt_cost),
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }


def server_service(url: str, workdir: Path, cert: Path, key: Path, env: dict[str, str]) -> Service:
    """server.py on a free port of 127.0.0.1, with Open Library pointed at nowhere."""
    command = [
        sys.executable, str(PROJECT_DIR / "server.py"),
        "--host", HOST, "--port", "0", "--db", url, "--cert", str(cert), "--key", str(key),
        "--openlibrary-url", OFFLINE_OPENLIBRARY,
    ]  # fmt: skip
    return Service(command, workdir / "server.log", env)


def settings_of(env: dict[str, str]) -> ServerConfig:
    """The settings server.py will run with in this environment (what the report shows)."""
    return load_config({}, env)


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key."""
    cert, key = workdir / "server.crt", workdir / "server.key"
    tls.ensure_certificate(cert, key)
    return cert, key


# ---------------------------------------------------------------------------------------------
# Databases and bench members


def mysql_admin(server_url: str) -> Any:
    """A root-ish connection to the MySQL server of a URL (no database selected)."""
    parts = urllib.parse.urlsplit(server_url)
    return mysql.connector.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=urllib.parse.unquote(parts.username or "root"),
        password=urllib.parse.unquote(parts.password or ""),
        autocommit=True,
        connection_timeout=10,
    )


@contextmanager
def fresh_database(db: str, workdir: Path, label: str) -> Iterator[str]:
    """The URL of a new, empty database: a file in workdir, or a MySQL database dropped after."""
    if db == "sqlite":
        yield f"sqlite:///{workdir / f'{label}.db'}"
        return
    name = f"waymark_bench_{os.getpid()}_{label}_{secrets.token_hex(3)}"
    parts = urllib.parse.urlsplit(db)
    with closing(mysql_admin(db)) as admin:
        cursor = admin.cursor()
        cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        try:
            yield urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
        finally:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")


@contextmanager
def seeded_store(url: str, pool_size: int) -> Iterator[Store]:
    """A Store on the database with the sample catalogue and stock enough for any run."""
    store = seed.open_store(url, StoreConfig(pool=PoolConfig(pool_size=pool_size)))
    try:
        for number in BOOKS:
            store.restock(number, PLENTY)
        yield store
    finally:
        store.close()


@dataclass
class Account:
    """A bench member, with how many more copies of each guide book they may still buy."""

    user_id: int
    username: str
    token: str
    left: dict[int, int] = field(
        default_factory=lambda: dict.fromkeys(BOOKS, rules.MAX_COPIES_PER_CUSTOMER)
    )

    def can_buy(self) -> bool:
        return any(self.left.values())

    def take_book(self, rng: random.Random) -> int:
        book = rng.choice([number for number, left in self.left.items() if left])
        self.left[book] -= 1
        return book


class Accounts:
    """Makes bench members straight in the database, each with a session token (untimed).

    A member may buy at most 8 copies of each book, so a buying client moves on to a new member
    every 8 x 7 purchases. Without a store (the echo stage) the members are only names.
    """

    def __init__(self, store: Store | None, password_hash: str = ""):
        self.store = store
        self.password_hash = password_hash
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def new(self) -> Account:
        with self._lock:
            username = f"bench{next(self._numbers):06d}"
        if self.store is None:
            return Account(0, username, "")
        now = int(time.time())
        user = self.store.create_user(username, self.password_hash, now)
        token = secrets.token_urlsafe(32)
        self.store.create_session(user["id"], hash_token(token), now)
        return Account(user["id"], username, token)


# ---------------------------------------------------------------------------------------------
# The workload


def make_request(op: str, rng: random.Random, account: Account) -> tuple[str, dict[str, Any]]:
    """The protocol command and arguments for one operation of the mix."""
    if op == "search_walks":
        area = rng.choice([None, *AREAS])
        return op, {"area": area} if area else {}
    if op == "catalogue":
        query = rng.choice([None, *CATALOGUE_QUERIES])
        return op, {"query": query} if query else {}
    if op == "buy":
        return op, {"items": [{"book": account.take_book(rng), "quantity": 1}]}
    if op == "login":
        return op, {"username": account.username, "password": PASSWORD}
    raise ValueError(f"unknown operation {op!r}")


Request = Callable[[], object]


class Worker:
    """One client: prepare() does untimed work and returns the request to time.

    The constructor already acts as a first member (adopt), so a subclass sets up its
    connection before calling it.
    """

    def __init__(self, accounts: Accounts):
        self.accounts = accounts
        self.account = accounts.new()
        self.adopt(self.account)

    def prepare(self, op: str, rng: random.Random) -> Request:
        if op == "buy" and not self.account.can_buy():
            self.account = self.accounts.new()
            self.adopt(self.account)
        cmd, args = make_request(op, rng, self.account)
        return self.bind(cmd, args)

    def adopt(self, account: Account) -> None:
        """Act as this member from now on."""

    def bind(self, cmd: str, args: dict[str, Any]) -> Request:
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection."""


class EchoWorker(Worker):
    """Sends the very lines the server stage sends, to the echo server."""

    def __init__(self, client: LineClient, accounts: Accounts):
        self.client = client
        super().__init__(accounts)

    def bind(self, cmd: str, args: dict[str, Any]) -> Request:
        _, line = self.client.request_line(cmd, args)
        return functools.partial(self.client.echo, line)

    def close(self) -> None:
        self.client.close()


class ServerWorker(Worker):
    """Sends requests to server.py over its own TLS connection."""

    def __init__(self, client: LineClient, accounts: Accounts):
        self.client = client
        super().__init__(accounts)

    def adopt(self, account: Account) -> None:
        self.client.call("resume", {"token": account.token})

    def bind(self, cmd: str, args: dict[str, Any]) -> Request:
        return functools.partial(self.client.call, cmd, args)

    def close(self) -> None:
        self.client.close()


class StoreWorker(Worker):
    """Makes the Store calls that commands.py makes for each request, minus bcrypt."""

    def __init__(self, store: Store, accounts: Accounts):
        self.store = store
        self.handlers: dict[str, Callable[[dict[str, Any]], object]] = {
            "search_walks": self.search_walks,
            "catalogue": self.catalogue,
            "buy": self.buy,
            "login": self.login,
        }
        super().__init__(accounts)

    def bind(self, cmd: str, args: dict[str, Any]) -> Request:
        return functools.partial(self.handlers[cmd], args)

    def search_walks(self, args: dict[str, Any]) -> object:
        area = args.get("area")
        return self.store.search_walks(
            area_key=rules.match_key(area) if area else None,
            min_distance=None,
            max_distance=None,
            difficulty=None,
            limit=50,
            offset=0,
        )

    def catalogue(self, args: dict[str, Any]) -> object:
        query = args.get("query")
        return self.store.catalogue(
            rules.match_key(query) if query else None, 50, 0, int(time.time())
        )

    def buy(self, args: dict[str, Any]) -> object:
        (item,) = args["items"]
        # commands checks the session in the database, then reads the books to resolve titles.
        self.store.session_user(hash_token(self.account.token), int(time.time()))
        self.store.shop_books()
        return self.store.place_order(
            self.account.user_id, {item["book"]: item["quantity"]}, int(time.time())
        )

    def login(self, args: dict[str, Any]) -> object:
        now = int(time.time())
        key = rules.username_key(args["username"])
        window = rules.HOUSE_THROTTLE.failure_window_s
        attempt = self.store.record_login_attempt(key, HOST, now, keep_s=window)
        self.store.login_failures(key, HOST, since=now - window, other_than=attempt)
        user = self.store.user_for_login(key)
        assert user is not None
        self.store.clear_login_failures(key)
        return self.store.create_session(user["id"], hash_token(secrets.token_urlsafe(32)), now)


# ---------------------------------------------------------------------------------------------
# Running a stage


def client_loop(
    worker: Worker,
    mix: dict[str, int],
    rng: random.Random,
    window: Window,
    budget: Budget,
    tally: Tally,
) -> None:
    """Closed loop: one request at a time until the deadline or the budget runs out."""
    ops, weights = list(mix), list(mix.values())
    sleep_until(window.start)
    while time.perf_counter() < window.deadline and budget.take():
        op = rng.choices(ops, weights)[0]
        try:
            request = worker.prepare(op, rng)
            started = time.perf_counter()
            request()
            ended = time.perf_counter()
        except (BenchError, ProtocolError) as error:  # an error answer: carry on
            tally.fail(op, error)
            continue
        except Exception as error:  # noqa: BLE001 - a broken connection or a bug: stop this client
            tally.fail(op, error)
            return
        tally.record(op, started, ended, window)


def run_stage(
    name: str,
    clients: list[tuple[Worker, dict[str, int]]],
    options: Options,
    server_pid: int | None = None,
) -> StageResult:
    """Run every client in its own thread for the warm-up plus options.seconds."""
    print(f"  {name}: {len(clients)} clients, {options.seconds:g} s ...", file=sys.stderr)
    budget = Budget(options.max_requests)
    window = Window.starting_soon(options.warmup, options.seconds)
    tallies = [Tally() for _ in clients]
    threads = [
        threading.Thread(
            target=client_loop,
            args=(worker, mix, random.Random(number), window, budget, tally),
            daemon=True,
        )
        for number, ((worker, mix), tally) in enumerate(zip(clients, tallies, strict=True))
    ]
    try:
        for thread in threads:
            thread.start()
        sleep_until(window.measure_from)
        before = CpuSample.take(server_pid)
        sleep_until(window.deadline)
        after = CpuSample.take(server_pid)
        give_up_at = time.perf_counter() + REQUEST_TIMEOUT_S + 5  # a request in flight may finish
        for thread in threads:
            thread.join(timeout=max(give_up_at - time.perf_counter(), 0))
        if any(thread.is_alive() for thread in threads):
            raise RuntimeError(f"stage {name}: a client did not stop within its timeout")
    finally:
        for worker, _ in clients:
            worker.close()
    return StageResult.collect(name, tallies, window, (before, after), budget.exhausted)


def transport_stage(options: Options, workdir: Path, cert: Path, key: Path) -> StageResult:
    """The mix's request lines through the bare TLS echo server."""
    mix = MIXES[options.mix]
    with echo_service(workdir, cert, key) as echo:
        context = tls.client_context(cert)
        accounts = Accounts(None)
        clients: list[tuple[Worker, dict[str, int]]] = [
            (EchoWorker(LineClient(echo.port, context), accounts), mix)
            for _ in range(options.clients)
        ]
        return run_stage("transport", clients, options, echo.pid)


def database_stage(
    options: Options, workdir: Path, settings: ServerConfig, password_hash: str
) -> StageResult:
    """The mix's Store calls from N threads, on a pool as large as the server's."""
    mix = MIXES[options.mix]
    with (
        fresh_database(options.db, workdir, "db") as url,
        seeded_store(url, settings.pool_size) as store,
    ):
        accounts = Accounts(store, password_hash)
        clients: list[tuple[Worker, dict[str, int]]] = [
            (StoreWorker(store, accounts), mix) for _ in range(options.clients)
        ]
        return run_stage("db", clients, options)


def server_stage(
    options: Options, workdir: Path, cert: Path, key: Path, password_hash: str
) -> tuple[StageResult, str | None]:
    """The mix through server.py on its own fresh database; also its log line on its data."""
    mix = MIXES[options.mix]
    with (
        fresh_database(options.db, workdir, "server") as url,
        seeded_store(url, pool_size=4) as store,
        server_service(url, workdir, cert, key, server_environment(options)) as service,
    ):
        context = tls.client_context(cert)
        accounts = Accounts(store, password_hash)
        clients: list[tuple[Worker, dict[str, int]]] = [
            (ServerWorker(LineClient(service.port, context), accounts), mix)
            for _ in range(options.clients)
        ]
        result = run_stage("server", clients, options, service.pid)
        data_line = service.log_line("data in ")
    return result, data_line and data_line.split("data in ", 1)[1]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def run_load(options: Options) -> dict[str, Any]:
    """The three stages and their ratios."""
    settings = settings_of(server_environment(options))
    with tempfile.TemporaryDirectory(prefix="waymark-bench-") as tmp:
        workdir = Path(tmp)
        cert, key = make_certificate(workdir)
        password_hash = passwords.PasswordHasher(options.bcrypt_cost, 1).hash(PASSWORD)
        transport = transport_stage(options, workdir, cert, key)
        db = database_stage(options, workdir, settings, password_hash)
        served, server_data = server_stage(options, workdir, cert, key, password_hash)
    stages = [transport, db, served]
    return {
        "mode": "load",
        "meta": {**describe_run(options, settings), "server_data": server_data},
        "stages": [asdict(stage) for stage in stages],
        "ratios": {
            "server/transport": {
                "per_s": ratio(served.overall.per_s, transport.overall.per_s),
                "p50": ratio(served.overall.p50_ms, transport.overall.p50_ms),
            },
            "server/db": {
                "per_s": ratio(served.overall.per_s, db.overall.per_s),
                "p50": ratio(served.overall.p50_ms, db.overall.p50_ms),
            },
        },
    }


def describe_run(options: Options, settings: ServerConfig) -> dict[str, Any]:
    """What ran: versions, machine, database, driver, bcrypt cost and the server's limits."""
    return {
        "mix": options.mix,
        "mix_weights": MIXES[options.mix],
        "clients": options.clients,
        "seconds": options.seconds,
        "warmup_s": options.warmup,
        "db": "sqlite (temporary file)" if options.db == "sqlite" else safe_url(options.db),
        "mysql_driver": mysql_driver(),
        "bcrypt_cost": settings.bcrypt_cost,
        "hash_concurrency": settings.hash_concurrency,
        "server_pool_size": settings.pool_size,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def safe_url(url: str) -> str:
    """A URL without its password."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = f"{parts.username}@" if parts.username else ""
    return urllib.parse.urlunsplit((parts.scheme, user + netloc, parts.path, "", ""))


def mysql_driver() -> dict[str, Any]:
    """Which MySQL driver runs: mysql-connector-python, with its C extension or pure Python."""
    return {
        "package": "mysql-connector-python",
        "version": mysql.connector.__version__,
        "HAVE_CEXT": bool(mysql.connector.HAVE_CEXT),
    }


# ---------------------------------------------------------------------------------------------
# --pool-check: what a pooled checkout costs on MySQL

POOL_ROUNDS = 4  # each variant runs in this many interleaved batches, so noise falls on all alike


def pool_check(options: Options) -> dict[str, Any]:
    """checkout + SELECT 1 + return: db.py's QueuePool vs mysql.connector.pooling, 1 and N threads."""
    with (
        tempfile.TemporaryDirectory(prefix="waymark-bench-") as tmp,
        fresh_database(options.db, Path(tmp), "pool") as url,
        closing(AdminCommands(options.db)) as counter,
    ):
        runs = [
            measure_pools(url, counter, threads, options.cycles)
            for threads in sorted({1, options.clients})
        ]
        version = counter.server_version()
    return {
        "mode": "pool",
        "meta": {
            "db": safe_url(options.db),
            "server_version": version,
            "mysql_driver": mysql_driver(),
            "cycles": options.cycles,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "runs": runs,
    }


class AdminCommands:
    """The server's Com_admin_commands counter: pings, session resets and the like.

    It counts every client of the server, so other traffic would inflate it.
    """

    def __init__(self, server_url: str):
        self._connection = mysql_admin(server_url)
        self._cursor = self._connection.cursor()  # kept: each new C-extension cursor pings

    def read(self) -> int:
        self._cursor.execute("SHOW GLOBAL STATUS LIKE 'Com_admin_commands'")
        return int(self._cursor.fetchone()[1])

    def server_version(self) -> str:
        self._cursor.execute("SELECT VERSION()")
        return str(self._cursor.fetchone()[0])

    def close(self) -> None:
        self._connection.close()


@dataclass
class PoolVariant:
    """One way to run checkout + SELECT 1 + return, and what it cost."""

    name: str
    cycle: Callable[[int], None]  # takes the thread's number
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    admin_commands: int = 0


def select_one(cursor: Any) -> None:
    cursor.execute("SELECT 1")
    cursor.fetchall()


def measure_pools(url: str, counter: AdminCommands, threads: int, cycles: int) -> dict[str, Any]:
    """Each variant's cycles with `threads` threads at once, against one held connection each."""
    backend = backend_from_url(url)
    assert isinstance(backend, MySQLBackend)
    database = Database(backend, PoolConfig(pool_size=threads))
    connector_pool = mysql.connector.pooling.MySQLConnectionPool(
        pool_name=f"bench{threads}",
        pool_size=min(threads, 32),  # the connector's maximum
        pool_reset_session=True,
        **backend.connect_options(),
    )
    held = [backend.connect() for _ in range(threads)]
    held_cursors = [connection.cursor() for connection in held]

    def queue_pool(thread: int) -> None:
        # Database.read is what every Store read does: a QueuePool checkout as engine.py
        # configures it (no pre-ping, no reset on return), the work on the kept cursor, return.
        database.read(lambda tx: tx.value("SELECT 1"))

    def connector_pooling(thread: int) -> None:
        connection = connector_pool.get_connection()  # pings the server
        try:
            cursor = connection.cursor()  # the C extension pings again
            select_one(cursor)
            cursor.close()
        finally:
            connection.close()  # resets the session, then puts it back in the pool

    variants = [
        PoolVariant("held connection (no pool)", lambda thread: select_one(held_cursors[thread])),
        PoolVariant("QueuePool as in engine.py", queue_pool),
        PoolVariant("mysql.connector.pooling", connector_pooling),
    ]
    try:
        for variant in variants:  # untimed: open every pooled connection first
            time_cycles(variant.cycle, threads, threads, [])
        for round_number in range(POOL_ROUNDS):
            for variant in variants if round_number % 2 == 0 else variants[::-1]:
                before = counter.read()
                batch = cycles // POOL_ROUNDS
                variant.wall_s += time_cycles(variant.cycle, threads, batch, variant.latencies)
                variant.admin_commands += counter.read() - before
    finally:
        database.close()
        for connection in held:
            connection.close()
    return {"threads": threads, "variants": pool_results(variants)}


def pool_results(variants: list[PoolVariant]) -> dict[str, dict[str, float]]:
    """Throughput, latency and the overhead over the first variant (the held connection)."""
    baseline = percentile(sorted(variants[0].latencies), 0.5) or 0.0
    results = {}
    for variant in variants:
        ordered = sorted(variant.latencies)
        p50 = percentile(ordered, 0.5) or 0.0
        results[variant.name] = {
            "cycles": len(ordered),
            "per_s": len(ordered) / variant.wall_s,
            "p50_us": p50 * 1e6,
            "p99_us": (percentile(ordered, 0.99) or 0.0) * 1e6,
            "overhead_p50_us": (p50 - baseline) * 1e6,
            "admin_commands_per_cycle": variant.admin_commands / len(ordered),
        }
    return results


def time_cycles(
    cycle: Callable[[int], None], threads: int, cycles: int, latencies: list[float]
) -> float:
    """Run `cycles` cycles spread over `threads` threads; append each one's time; return wall."""
    per_thread = max(cycles // threads, 1)
    results: list[list[float]] = [[] for _ in range(threads)]

    def loop(thread: int) -> None:
        for _ in range(per_thread):
            started = time.perf_counter()
            cycle(thread)
            results[thread].append(time.perf_counter() - started)

    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    for values in results:
        latencies.extend(values)
    return wall


# ---------------------------------------------------------------------------------------------
# --bcrypt-check: hashing rate, and what a login burst does to everyone else


def bcrypt_check(options: Options) -> dict[str, Any]:
    """Hashes/s with 1 and 4 threads at cost 12; then a login burst through server.py."""
    rates = {threads: hash_rate(threads, HASH_CHECK_S) for threads in (1, 4)}
    phases = login_burst(options)
    return {
        "mode": "bcrypt",
        "meta": {
            "cost": HASH_CHECK_COST,
            "bcrypt": bcrypt.__version__,
            "cpus": os.cpu_count(),
            "default_hash_concurrency": passwords.default_concurrency(),
            "db": "sqlite (temporary file)" if options.db == "sqlite" else safe_url(options.db),
            "seconds": options.seconds,
            "python": platform.python_version(),
        },
        "hash_rates": [{"threads": threads, **rate} for threads, rate in rates.items()],
        "burst": phases,
    }


def hash_rate(threads: int, seconds: float) -> dict[str, float]:
    """bcrypt hashes per second at HASH_CHECK_COST with this many threads hashing at once."""
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def loop(thread: int) -> None:
        while time.perf_counter() < deadline:
            bcrypt.hashpw(b"a bench password", bcrypt.gensalt(HASH_CHECK_COST))
            counts[thread] += 1

    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    hashes = sum(counts)
    # Each thread hashes back to back, so one hash takes threads x wall / hashes seconds.
    return {"hashes": hashes, "per_s": hashes / wall, "ms_per_hash": 1000 * threads * wall / hashes}


def login_burst(options: Options) -> list[dict[str, Any]]:
    """Readers alone, then readers beside a login burst at the default and a high hash_concurrency."""
    readers = max(options.clients // 2, 1)
    logins = max(options.clients - readers, 1)
    phases = [
        ("readers alone", 0, None),
        ("readers + login burst", logins, None),
        ("readers + login burst", logins, logins),
    ]
    burst_options = replace(options, bcrypt_cost=HASH_CHECK_COST)
    results = []
    with tempfile.TemporaryDirectory(prefix="waymark-bench-") as tmp:
        workdir = Path(tmp)
        cert, key = make_certificate(workdir)
        password_hash = passwords.PasswordHasher(HASH_CHECK_COST, 1).hash(PASSWORD)
        with (
            fresh_database(options.db, workdir, "burst") as url,
            seeded_store(url, pool_size=4) as store,
        ):
            accounts = Accounts(store, password_hash)
            for name, login_clients, concurrency in phases:
                extra = {"WAYMARK_HASH_CONCURRENCY": str(concurrency)} if concurrency else {}
                env = server_environment(burst_options, extra)
                with server_service(url, workdir, cert, key, env) as service:
                    context = tls.client_context(cert)
                    clients: list[tuple[Worker, dict[str, int]]] = [
                        (ServerWorker(LineClient(service.port, context), accounts), mix)
                        for mix in [READER_MIX] * readers + [MIXES["login"]] * login_clients
                    ]
                    stage = run_stage(name, clients, burst_options, service.pid)
                results.append(burst_phase(stage, readers, login_clients, settings_of(env)))
    return results


def burst_phase(
    stage: StageResult, readers: int, logins: int, settings: ServerConfig
) -> dict[str, Any]:
    """One phase of the burst: the readers' numbers and the logins' numbers, separately."""
    return {
        "phase": stage.name,
        "readers": readers,
        "login_clients": logins,
        "hash_concurrency": settings.hash_concurrency,
        "reads": asdict(stage.ops["search_walks"]),
        "logins": asdict(stage.ops["login"]) if "login" in stage.ops else None,
        "cpu": asdict(stage.cpu),
        "errors": stage.overall.errors,
        "first_error": stage.first_error,
    }


# ---------------------------------------------------------------------------------------------
# Reports


def number(value: float | None, digits: int = 1) -> str:
    """A number for a table, '-' when missing."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def stats_cells(label: str, stats: dict[str, Any]) -> list[str]:
    """Table cells for one OpStats."""
    return [
        label,
        f"{stats['requests']:,}",
        number(stats["per_s"]),
        number(stats["p50_ms"], 2),
        number(stats["p99_ms"], 2),
        str(stats["errors"]),
    ]


STAGE_HEADERS = ["stage", "requests", "req/s", "p50 ms", "p99 ms", "errors"]
CPU_HEADERS = ["server cpu%", "server us/req", "bench cpu%", "bench us/req", "machine cpu%"]


def stage_rows(stage: dict[str, Any]) -> list[list[str]]:
    """A stage's overall row, then one row per operation when the mix has several."""
    cpu = stage["cpu"]
    cpu_cells = [
        number(cpu["server_pct"], 0),
        number(cpu["server_us_per_request"], 0),
        number(cpu["bench_pct"], 0),
        number(cpu["bench_us_per_request"], 0),
        number(cpu["machine_pct"], 0),
    ]
    name = stage["name"] + (" (capped)" if stage["capped"] else "")
    rows = [stats_cells(name, stage["overall"]) + cpu_cells]
    if len(stage["ops"]) > 1:
        blank = [""] * len(cpu_cells)
        rows += [stats_cells(f"  {op}", stats) + blank for op, stats in stage["ops"].items()]
    return rows


def describe_driver(driver: dict[str, Any]) -> str:
    kind = "C extension" if driver["HAVE_CEXT"] else "pure Python"
    return f"{driver['package']} {driver['version']}, HAVE_CEXT={driver['HAVE_CEXT']} ({kind})"


def load_report(result: dict[str, Any]) -> str:
    meta = result["meta"]
    weights = " : ".join(f"{op} {w}" for op, w in meta["mix_weights"].items())
    rows = [row for stage in result["stages"] for row in stage_rows(stage)]
    ratios = result["ratios"]
    lines = [
        f"Waymark load: mix {meta['mix']} ({weights}), {meta['clients']} clients,"
        f" {meta['seconds']:g} s per stage after a {meta['warmup_s']:g} s warm-up",
        f"database: {meta['db']}; MySQL driver: {describe_driver(meta['mysql_driver'])}",
        f"server.py logged: data in {meta['server_data']}",
        f"server: bcrypt cost {meta['bcrypt_cost']}, hash_concurrency {meta['hash_concurrency']},"
        f" pool_size {meta['server_pool_size']}; Python {meta['python']}, {meta['cpus']} CPUs",
        "",
        table(STAGE_HEADERS + CPU_HEADERS, rows),
        "",
        f"server/transport: {number(ratios['server/transport']['per_s'], 2)}x req/s,"
        f" {number(ratios['server/transport']['p50'], 2)}x p50",
        f"server/db:        {number(ratios['server/db']['per_s'], 2)}x req/s,"
        f" {number(ratios['server/db']['p50'], 2)}x p50",
        "cpu: server process (the echo server in the transport stage) and bench process as % of"
        " one core and CPU µs per request; machine as % of all cores.",
    ]
    if "login" in meta["mix_weights"]:
        lines.append(
            "The db stage's login is its Store calls only; the server's also runs bcrypt"
            f" at cost {meta['bcrypt_cost']} (see --bcrypt-check)."
        )
    lines += [
        f"first error in {s['name']}: {s['first_error']}"
        for s in result["stages"]
        if s["first_error"]
    ]
    return "\n".join(lines)


def pool_report(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"Pooled checkout on MySQL {meta['server_version']} at {meta['db']};"
        f" driver {describe_driver(meta['mysql_driver'])}",
        f"{meta['cycles']:,} cycles of checkout + SELECT 1 + return per variant,"
        f" interleaved in {POOL_ROUNDS} rounds; Python {meta['python']}, {meta['cpus']} CPUs",
    ]
    headers = ["variant", "cycles/s", "p50 us", "p99 us", "overhead p50 us", "admin cmds/cycle"]
    for run in result["runs"]:
        rows = [
            [
                name,
                number(v["per_s"], 0),
                number(v["p50_us"], 0),
                number(v["p99_us"], 0),
                number(v["overhead_p50_us"], 0),
                number(v["admin_commands_per_cycle"], 2),
            ]
            for name, v in run["variants"].items()
        ]
        lines += ["", f"{run['threads']} thread(s):", table(headers, rows)]
    lines += [
        "",
        "overhead = p50 of the cycle minus p50 of SELECT 1 on a connection already held.",
        "admin cmds/cycle = the server's Com_admin_commands (pings, session resets) per cycle.",
    ]
    return "\n".join(lines)


def bcrypt_report(result: dict[str, Any]) -> str:
    meta = result["meta"]
    rates = [
        [str(r["threads"]), str(r["hashes"]), number(r["per_s"], 2), number(r["ms_per_hash"], 0)]
        for r in result["hash_rates"]
    ]
    phases = []
    for phase in result["burst"]:
        logins = phase["logins"] or {}
        phases.append(
            [
                phase["phase"],
                str(phase["hash_concurrency"]) if phase["login_clients"] else "-",
                number(phase["reads"]["per_s"]),
                number(phase["reads"]["p50_ms"], 2),
                number(phase["reads"]["p99_ms"], 2),
                number(logins.get("per_s"), 2),
                number(logins.get("p50_ms"), 0),
                number(logins.get("p99_ms"), 0),
                number(phase["cpu"]["server_pct"], 0),
                str(phase["errors"]),
            ]
        )
    first = result["burst"][-1]
    return "\n".join(
        [
            f"bcrypt {meta['bcrypt']} at cost {meta['cost']}, {meta['cpus']} CPUs,"
            f" Python {meta['python']}",
            "",
            table(["threads", "hashes", "hashes/s", "ms/hash (per thread)"], rates),
            "",
            f"Login burst through server.py ({meta['db']}, bcrypt cost {meta['cost']},"
            f" {meta['seconds']:g} s per phase): {first['readers']} clients running"
            f" search_walks beside {first['login_clients']} clients logging in;"
            f" default hash_concurrency here is {meta['default_hash_concurrency']}.",
            "",
            table(
                [
                    "phase",
                    "hash conc.",
                    "searches/s",
                    "search p50 ms",
                    "search p99 ms",
                    "logins/s",
                    "login p50 ms",
                    "login p99 ms",
                    "server cpu%",
                    "errors",
                ],  # fmt: skip
                phases,
            ),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    runners = {"load": run_load, "pool": pool_check, "bcrypt": bcrypt_check}
    reports = {"load": load_report, "pool": pool_report, "bcrypt": bcrypt_report}
    try:
        result = runners[options.mode](options)
    except (RuntimeError, ValueError) as error:  # a server that did not start, a bad setting
        print(f"bench/load.py: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if options.json else reports[options.mode](result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
