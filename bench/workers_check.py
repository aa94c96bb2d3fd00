"""--workers 1 against --workers 2: one closed-loop walk search load, each process's CPU.

    .venv/bin/python -m bench.workers_check [--db URL] [--clients 32] [--seconds 10]

Starts server.py with each worker count on a fresh database (a temporary SQLite file, or a
new database on the MySQL server the URL names, dropped afterwards), drives search_walks from
--clients connections, and prints req/s, p99 and the CPU of every server process and of this
load generator, so that what bounds the second process on a small machine shows.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mysql.connector  # noqa: E402

from engine import mysql_address  # noqa: E402
from tests.wire import ServerProcess  # noqa: E402

WARM_UP_S = 2.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(child) for child in found.split()]


def measure(workers: int, db: str, clients: int, seconds: float) -> str:
    server = ServerProcess(
        Path(tempfile.mkdtemp()), db_url=db, extra_args=("--workers", str(workers))
    )
    server.start()
    assert server.process is not None
    pids = [server.process.pid, *workers_of(server.process.pid)]
    stopping = threading.Event()
    times: list[list[float]] = [[] for _ in range(clients)]

    def load(index: int) -> None:
        with server.client() as client:
            while not stopping.is_set():
                started = time.perf_counter()
                client.call("search_walks", area="peak")
                times[index].append(time.perf_counter() - started)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(clients)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(WARM_UP_S)
        marks = [len(t) for t in times]
        before = {pid: cpu_seconds(pid) for pid in pids}
        mine, started = time.process_time(), time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        used = {pid: (cpu_seconds(pid) - before[pid]) / elapsed for pid in pids}
        mine = (time.process_time() - mine) / elapsed
        measured = sorted(v for t, mark in zip(times, marks, strict=True) for v in t[mark:])
    finally:
        stopping.set()
        for thread in threads:
            thread.join()
        server.stop()
    p99 = measured[int(len(measured) * 0.99)] * 1000
    cores = ", ".join(f"{value:.2f}" for value in used.values())
    return (
        f"--workers {workers}: {len(measured) / elapsed:,.0f} req/s, p99 {p99:.1f} ms;"
        f" server processes {cores} cores; load generator {mine:.2f} cores"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, or mysql://user@host:port/")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    if options.db == "sqlite":
        for workers in (1, 2):
            db = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
            print(measure(workers, db, options.clients, options.seconds))
        return 0
    host, port, user, password, _ = mysql_address(options.db)
    name = f"waymark_workers_{secrets.token_hex(3)}"
    admin = mysql.connector.connect(host=host, port=port, user=user, password=password)
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        url = (
            f"mysql://{user}:{password}@{host}:{port}/{name}"
            if password
            else f"mysql://{user}@{host}:{port}/{name}"
        )
        for workers in (1, 2):
            print(measure(workers, url, options.clients, options.seconds))
    finally:
        admin.cursor().execute(f"DROP DATABASE {name}")
        admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
