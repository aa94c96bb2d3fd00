"""--pool-check: what a pooled checkout costs on MySQL, db.py's QueuePool vs the connector's."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mysql.connector.pooling

from bench.harness import fresh_database, mysql_admin, mysql_driver, safe_url
from bench.measurement import percentile, run_threads
from bench.options import Options
from engine import Database, MySQLBackend, PoolConfig, backend_from_url

POOL_ROUNDS = 4  # each variant runs in this many interleaved batches, so noise falls on all alike


def run(options: Options) -> dict[str, Any]:
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

    wall = run_threads(loop, threads)
    for values in results:
        latencies.extend(values)
    return wall
