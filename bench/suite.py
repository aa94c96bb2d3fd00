"""--suite and --smoke: the performance suite on each database, its ceilings in the same run.

On each database in turn, one fresh database serves every stage:
  sweep  search_walks (area "peak"), catalogue and list_areas at each connection count, through
         server.py ("waymark") and as direct Store calls ("store"); the search also through the
         FastAPI peer loading the walks on every call ("peer"), the FastAPI peer searching the
         same 1 s snapshot as server.py ("peer-snapshot") and, as its request line, the TLS
         echo server ("echo");
  buy    one copy per order through server.py, through the snapshot peer's POST /buy (the same
         transaction) and as direct Store calls;
  storm  searches alone, then beside clients logging in non-stop, on a server at bcrypt cost 12;
  idle   many TLS connections opened, used once and left silent: the server's RSS and CPU.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import ssl
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import passwords
import tls
from bench import chart
from bench.harness import (
    Service,
    describe_db,
    echo_service,
    fresh_database,
    make_certificate,
    mysql_driver,
    peer_service,
    seeded_store,
    server_environment,
    server_service,
    settings_of,
    started_together,
)
from bench.measurement import (
    Client,
    StageResult,
    percentile,
    process_cpu_s,
    process_memory,
    run_stage,
    sleep_until,
)
from bench.options import MIXES, Options
from bench.progress import StageBar
from bench.workload import (
    PASSWORD,
    PEAK,
    Accounts,
    EchoWorker,
    LineClient,
    PeerBuyWorker,
    PeerWorker,
    ServerWorker,
    StoreWorker,
)
from db import Store

# What answers each operation of the sweep; "waymark" is the one measured, the rest are ceilings.
SWEEP_TARGETS = {
    "search_peak": ("waymark", "peer", "peer-snapshot", "echo", "store"),
    "catalogue": ("waymark", "store"),
    "list_areas": ("waymark", "store"),
}
BUY_TARGETS = ("waymark", "peer-snapshot", "store")
# The peer doing the same work as Waymark: the same snapshot for the search, the same
# transaction for buy. Its ratios are the fair comparison; "peer" is the database-each-call one.
FAIR_PEER = "peer-snapshot"
IDLE_TARGETS = ("waymark", "peer")
OPENERS = 32  # threads opening the idle connections at once
FIRST_ANSWERS = 9  # connections opened one at a time, for the time to a first answer
PEER_PACKAGES = ("fastapi", "starlette", "uvicorn", "httptools", "uvloop")


@dataclass(frozen=True)
class Plan:
    """How much the suite runs: FULL for numbers, SMOKE to show every stage works."""

    connections: tuple[int, ...]
    buy_connections: tuple[int, ...]
    storm_readers: int
    storm_logins: int
    storm_cost: int
    storm_seconds: float  # at least this per storm phase: each login queues behind the others
    idle_connections: int
    idle_seconds: float
    settle_s: float  # after connections open or close, before /proc is read
    seconds: float | None  # per stage; None takes --seconds

    def stages_per_database(self) -> int:
        sweep = len(self.connections) * sum(len(t) for t in SWEEP_TARGETS.values())
        return sweep + len(BUY_TARGETS) * len(self.buy_connections) + 2 + len(IDLE_TARGETS)


FULL = Plan(
    connections=(1, 8, 32, 128),
    buy_connections=(8, 32),
    storm_readers=8,
    storm_logins=20,
    storm_cost=passwords.PRODUCTION_COST,
    storm_seconds=10.0,
    idle_connections=1000,
    idle_seconds=5.0,
    settle_s=1.0,
    seconds=None,
)
SMOKE = Plan(
    connections=(1, 4),
    buy_connections=(2,),
    storm_readers=2,
    storm_logins=2,
    storm_cost=4,
    storm_seconds=0.2,
    idle_connections=20,
    idle_seconds=0.2,
    settle_s=0.05,
    seconds=0.2,
)


@dataclass(frozen=True)
class Bench:
    """One database's run: what to run, where its files go, and the progress bar."""

    options: Options
    plan: Plan
    workdir: Path
    cert: Path
    key: Path
    bar: StageBar

    def client_context(self) -> ssl.SSLContext:
        return tls.client_context(self.cert)


def run(options: Options) -> dict[str, Any]:
    """Every stage on every database; writes the JSON and the chart into options.out.

    Raises RuntimeError when the peer's packages are missing or a server does not start.
    """
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(
            f"the FastAPI peer needs {' and '.join(missing)}:"
            " .venv/bin/pip install -r requirements-bench.txt (scripts/bench does it)"
        )
    plan = SMOKE if options.smoke else FULL
    options = replace(options, seconds=plan.seconds or options.seconds)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_before = os.getloadavg()
    total = plan.stages_per_database() * len(options.dbs)
    with (
        tempfile.TemporaryDirectory(prefix="waymark-bench-") as tmp,
        StageBar(total) as bar,
    ):
        cert, key = make_certificate(Path(tmp))
        databases = []
        for number, db in enumerate(options.dbs):
            workdir = Path(tmp) / f"db{number}"  # its own logs, read for "data in ..."
            workdir.mkdir()
            bench = Bench(replace(options, db=db), plan, workdir, cert, key, bar)
            databases.append(measure_database(bench))
    result: dict[str, Any] = {
        "mode": "suite",
        "meta": describe_suite(options, plan, started, load_before),
        "databases": databases,
    }
    result["problems"] = problems(result) if options.smoke else []
    result["meta"]["files"] = save(result, options.out, "smoke" if options.smoke else "suite")
    return result


def measure_database(bench: Bench) -> dict[str, Any]:
    """The sweep, the buys, the login storm and the idle connections on one fresh database."""
    options, plan = bench.options, bench.plan
    env = server_environment(options)
    settings = settings_of(env)
    password_hash = passwords.PasswordHasher(options.bcrypt_cost, 1).hash(PASSWORD)
    with (
        fresh_database(options.db, bench.workdir, "suite") as url,
        seeded_store(url, settings.pool_size) as store,
    ):
        accounts = Accounts(store, password_hash)
        echo = echo_service(bench.workdir, bench.cert, bench.key)
        server = server_service(url, bench.workdir, bench.cert, bench.key, env)
        peer = peer_service(url, bench.workdir, bench.cert, bench.key, settings.pool_size)
        fair_peer = peer_service(
            url, bench.workdir, bench.cert, bench.key, settings.pool_size, snapshot=True
        )
        with started_together(echo, server, peer, fair_peer):
            services = {"waymark": server, "peer": peer, FAIR_PEER: fair_peer, "echo": echo}
            make = client_factory(bench, store, accounts, services)
            sweep = [
                stage_row(bench, op, target, connections, make, services)
                for connections in plan.connections
                for op, targets in SWEEP_TARGETS.items()
                for target in targets
            ]
            buy = [
                stage_row(bench, "buy", target, connections, make, services)
                for connections in plan.buy_connections
                for target in BUY_TARGETS
            ]
            peer_line = peer.log_line("peer runs")
            fair_peer_line = fair_peer.log_line("peer runs")
            data_line = server.log_line("data in ")
        storm = login_storm(bench, url, store)
        # Fresh processes, so that the sweep's leftovers do not count as the cost of idling.
        fresh = {
            "waymark": server_service(url, bench.workdir, bench.cert, bench.key, env),
            "peer": peer_service(url, bench.workdir, bench.cert, bench.key, settings.pool_size),
        }
        with started_together(*fresh.values()):
            idle = [idle_connections(bench, target, fresh[target]) for target in IDLE_TARGETS]
    return {
        "db": describe_db(options.db),
        "server_data": data_line and data_line.split("data in ", 1)[1],
        "peer": peer_line and peer_line.split("peer runs ", 1)[1],
        "peer_snapshot": fair_peer_line and fair_peer_line.split("peer runs ", 1)[1],
        "settings": asdict(settings),
        "sweep": sweep,
        "sweep_ratios": ratios(sweep, ("echo", "peer", FAIR_PEER, "store")),
        "buy": buy,
        "buy_ratios": ratios(buy, (FAIR_PEER, "store")),
        "fair_peer": fair_comparison(sweep + buy),
        "storm": storm,
        "idle": idle,
    }


ClientFactory = Callable[[str, str], Client]


def client_factory(
    bench: Bench, store: Store, accounts: Accounts, services: dict[str, Service]
) -> ClientFactory:
    """Makes one connected client of a target (waymark, peer, peer-snapshot, echo or store)
    for an operation."""
    context = bench.client_context()
    nameless = Accounts(None)  # the echo server's clients need names, not members

    def make(target: str, op: str) -> Client:
        if target == "waymark":
            return ServerWorker(LineClient(services["waymark"].port, context), accounts)
        if target in ("peer", FAIR_PEER):
            if op == "buy":
                return PeerBuyWorker(services[target].port, context, accounts)
            return PeerWorker(services[target].port, context)
        if target == "echo":
            return EchoWorker(LineClient(services["echo"].port, context), nameless)
        return StoreWorker(store, accounts)

    return make


def stage_row(
    bench: Bench,
    op: str,
    target: str,
    connections: int,
    make: ClientFactory,
    services: dict[str, Service],
) -> dict[str, Any]:
    """One stage: `connections` closed-loop clients of one target, all doing op."""
    clients = [(make(target, op), {op: 1}) for _ in range(connections)]
    service = services.get(target) if target != "store" else None
    pid = service.pid if service else None
    result = run_stage(f"{op_label(op)} {target}", clients, bench.options, pid, bench.bar)
    return {"op": op, "target": target, "connections": connections, **asdict(result)}


def op_label(op: str) -> str:
    """How the reports name an operation of the suite."""
    return f"search_walks {PEAK}" if op == "search_peak" else op


def ratios(rows: list[dict[str, Any]], ceilings: tuple[str, ...]) -> list[dict[str, Any]]:
    """waymark ÷ each ceiling, in req/s and in p99, for every operation and connection count."""
    found = {(r["op"], r["connections"], r["target"]): r["overall"] for r in rows}
    out = []
    for (op, connections, target), waymark in found.items():
        if target != "waymark":
            continue
        row: dict[str, Any] = {"op": op, "connections": connections}
        for ceiling in ceilings:
            other = found.get((op, connections, ceiling))
            if other is not None:
                row[f"waymark/{ceiling}"] = {
                    "per_s": quotient(waymark["per_s"], other["per_s"]),
                    "p99": quotient(waymark["p99_ms"], other["p99_ms"]),
                }
        out.append(row)
    return out


def fair_comparison(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Waymark beside the peer doing the same work, per operation and connection count: both
    req/s and p99, and Waymark ÷ peer for each."""
    found = {(r["op"], r["connections"], r["target"]): r["overall"] for r in rows}
    out = []
    for (op, connections, target), waymark in found.items():
        peer = found.get((op, connections, FAIR_PEER))
        if target != "waymark" or peer is None:
            continue
        out.append(
            {
                "op": op,
                "connections": connections,
                "peer": FAIR_PEER,
                "waymark_per_s": waymark["per_s"],
                "waymark_p99_ms": waymark["p99_ms"],
                "peer_per_s": peer["per_s"],
                "peer_p99_ms": peer["p99_ms"],
                "per_s": quotient(waymark["per_s"], peer["per_s"]),
                "p99": quotient(waymark["p99_ms"], peer["p99_ms"]),
            }
        )
    return out


def quotient(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or zero."""
    if not numerator or not denominator:
        return None
    return numerator / denominator


# ---------------------------------------------------------------------------------------------
# The login storm


def login_storm(bench: Bench, url: str, store: Store) -> dict[str, Any]:
    """Searches alone, then beside clients logging in non-stop, on one server at the storm cost."""
    plan = bench.plan
    seconds = max(bench.options.seconds, plan.storm_seconds)
    options = replace(bench.options, bcrypt_cost=plan.storm_cost, seconds=seconds)
    env = server_environment(options)
    password_hash = passwords.PasswordHasher(plan.storm_cost, 1).hash(PASSWORD)
    accounts = Accounts(store, password_hash, prefix="storm")
    context = bench.client_context()
    phases = []
    with server_service(url, bench.workdir, bench.cert, bench.key, env) as server:
        for name, logins in (("searches alone", 0), ("searches + login storm", plan.storm_logins)):
            mixes = [{"search_peak": 1}] * plan.storm_readers + [MIXES["login"]] * logins
            clients: list[tuple[Client, dict[str, int]]] = [
                (ServerWorker(LineClient(server.port, context), accounts), mix) for mix in mixes
            ]
            phases.append(storm_phase(run_stage(name, clients, options, server.pid, bench.bar)))
    return {
        "seconds": seconds,
        "readers": plan.storm_readers,
        "logins": plan.storm_logins,
        "bcrypt_cost": plan.storm_cost,
        "hash_concurrency": settings_of(env).hash_concurrency,
        "phases": phases,
    }


def storm_phase(stage: StageResult) -> dict[str, Any]:
    """One phase of the storm: the searches' numbers and the logins' numbers, apart."""
    return {
        "phase": stage.name,
        "searches": asdict(stage.ops["search_peak"]) if "search_peak" in stage.ops else None,
        "logins": asdict(stage.ops["login"]) if "login" in stage.ops else None,
        "cpu": asdict(stage.cpu),
        "errors": stage.overall.errors,
        "first_error": stage.first_error,
    }


# ---------------------------------------------------------------------------------------------
# Idle connections


def idle_connections(bench: Bench, target: str, service: Service) -> dict[str, Any]:
    """A fresh server's RSS and CPU, first at rest, then with many connections open and silent."""
    plan = bench.plan
    bench.bar.begin(f"idle {target}, {plan.idle_connections} conns")
    context = bench.client_context()
    # Warm first: the pools and threads that the first requests open belong to the server
    # at rest, not to the connections measured.
    warm, errors = open_many(target, service.port, context, OPENERS)
    # Then a few one at a time, on a quiet machine: what a new connection costs a client.
    sample = [open_idle(target, service.port, context) for _ in range(FIRST_ANSWERS)]
    for client, _ in warm + [a for a in sample if not isinstance(a, str)]:
        client.close()
    errors += [a for a in sample if isinstance(a, str)]
    time.sleep(plan.settle_s)
    rss_before, threads_before = process_memory(service.pid)
    cpu_before = idle_cpu_pct(service.pid, plan.idle_seconds)
    started = time.perf_counter()
    opened, failed = open_many(target, service.port, context, plan.idle_connections)
    open_s = time.perf_counter() - started
    errors += failed
    try:
        time.sleep(plan.settle_s)
        rss_after, threads_after = process_memory(service.pid)
        cpu_after = idle_cpu_pct(service.pid, plan.idle_seconds)
    finally:
        for client, _ in opened:
            client.close()
    bench.bar.end()
    first_p50 = percentile(sorted(a[1] for a in sample if not isinstance(a, str)), 0.5)
    return {
        "target": target,
        "connections": len(opened),
        "wanted": plan.idle_connections,
        "open_s": open_s,
        "connect_and_first_answer_p50_ms": None if first_p50 is None else 1000 * first_p50,
        "idle_s": plan.idle_seconds,
        "rss_mb_before": rss_before,
        "rss_mb_after": rss_after,
        "rss_kb_per_connection": 1024 * (rss_after - rss_before) / max(len(opened), 1),
        "threads_before": threads_before,
        "threads_after": threads_after,
        "cpu_pct_before": cpu_before,
        "cpu_pct_after": cpu_after,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def open_many(
    target: str, port: int, context: ssl.SSLContext, count: int
) -> tuple[list[tuple[LineClient | PeerWorker, float]], list[str]]:
    """count connections opened by OPENERS threads at once: those open, and the errors."""
    with ThreadPoolExecutor(OPENERS) as pool:
        attempts = list(pool.map(lambda _: open_idle(target, port, context), range(count)))
    return (
        [a for a in attempts if not isinstance(a, str)],
        [a for a in attempts if isinstance(a, str)],
    )


def open_idle(
    target: str, port: int, context: ssl.SSLContext
) -> tuple[LineClient | PeerWorker, float] | str:
    """A connection that has answered one request, and how long connecting and that answer
    took; or what went wrong, as text."""
    started = time.perf_counter()
    try:
        client: LineClient | PeerWorker
        if target == "waymark":
            client = LineClient(port, context)
            client.call("list_areas", {})
        else:
            client = PeerWorker(port, context)
            client.search()
    except Exception as error:  # noqa: BLE001 - refused, or an error answer: counted by the caller
        return f"{type(error).__name__}: {error}"
    return client, time.perf_counter() - started


def idle_cpu_pct(pid: int, seconds: float) -> float:
    """The CPU a process uses over `seconds` while nothing is asked of it, as % of one core."""
    before, started = process_cpu_s(pid), time.perf_counter()
    sleep_until(started + seconds)
    return 100 * (process_cpu_s(pid) - before) / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# What ran, what went wrong, and the files


def describe_suite(
    options: Options, plan: Plan, started: str, load_before: tuple[float, float, float]
) -> dict[str, Any]:
    """Versions, machine, plan and how busy the machine was (the load average, before and after)."""
    return {
        "smoke": options.smoke,
        "started": started,
        "seconds": options.seconds,
        "warmup_s": options.warmup,
        "plan": asdict(plan),
        "bcrypt_cost": options.bcrypt_cost,
        "mysql_driver": mysql_driver(),
        "peer_packages": {name: installed(name) for name in PEER_PACKAGES},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def installed(package: str) -> str | None:
    """The installed version of a package, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def problems(result: dict[str, Any]) -> list[str]:
    """What --smoke fails on: any error, a stage that completed nothing, a connection not opened."""
    found = []
    for database in result["databases"]:
        db = database["db"]
        for row in database["sweep"] + database["buy"]:
            name = f"{db}: {op_label(row['op'])} {row['target']} x{row['connections']}"
            if row["overall"]["errors"]:
                found.append(f"{name}: {row['overall']['errors']} errors; {row['first_error']}")
            elif not row["overall"]["requests"]:
                found.append(f"{name}: no request completed")
        for phase in database["storm"]["phases"]:
            if phase["errors"]:
                found.append(
                    f"{db}: {phase['phase']}: {phase['errors']} errors; {phase['first_error']}"
                )
        for idle in database["idle"]:
            if idle["errors"] or idle["connections"] < idle["wanted"]:
                found.append(
                    f"{db}: idle {idle['target']}: {idle['connections']} of {idle['wanted']}"
                    f" connections opened; {idle['first_error']}"
                )
    return found


def save(result: dict[str, Any], out: Path, kind: str) -> dict[str, str]:
    """Write the result as JSON and its chart as PNG into out; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    files = {"json": str(stem.with_suffix(".json")), "png": str(stem.with_suffix(".png"))}
    chart.draw(result, Path(files["png"]))
    result = {**result, "meta": {**result["meta"], "files": files}}
    Path(files["json"]).write_text(json.dumps(result, indent=2) + "\n")
    return files
