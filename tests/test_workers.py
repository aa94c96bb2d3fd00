"""--workers N (PROTOCOL.md 1.2): processes sharing the port, stopped together, seeing each
other's writes within a second."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.wire import ServerProcess, register_and_login

CONNECTIONS = 40  # Linux hashes each connection to a process: all 40 on one is 2 in 10**12


def pids_answering(server: ServerProcess) -> set[int]:
    pids = set()
    clients = [server.client() for _ in range(CONNECTIONS)]
    try:
        for client in clients:
            pids.add(client.call("health")["pid"])
    finally:
        for client in clients:
            client.close()
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose: its parent (the first process) has not reaped it yet.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.05)
    return {pid for pid in pids if alive(pid)}


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_workers_share_the_port_see_each_others_writes_and_stop_together(
    tmp_path: Path, backend: str, mysql_url: str
) -> None:
    db = f"sqlite:///{tmp_path / 'w.db'}" if backend == "sqlite" else mysql_url
    server = ServerProcess(tmp_path, db_url=db, extra_args=("--workers", "2"))
    server.start()
    try:
        assert server.process is not None
        pids = pids_answering(server)
        assert len(pids) == 2 and server.process.pid in pids
        # A purchase through one process shows in the other's catalogue within its second.
        with server.client() as buyer:
            register_and_login(buyer, "workerbuyer")
            before = {b["number"]: b["in_stock"] for b in buyer.call("guide_books")["books"]}
            buyer.call("buy", items=[{"book": 101, "quantity": 3}])
        # Each new connection is hashed to a process, so keep connecting until both have
        # answered with the new stock: stopping at the first right answer let one process go
        # unchecked whenever all eight connections of a round landed on the other (1 in 128).
        expected = {pid: before[101] - 3 for pid in pids}
        deadline = time.monotonic() + 5
        seen: dict[int, int] = {}
        while time.monotonic() < deadline and seen != expected:
            for client in [server.client() for _ in range(8)]:
                with client:
                    answer = client.call("health")["pid"], client.call("guide_books")
                    seen[answer[0]] = {b["number"]: b["in_stock"] for b in answer[1]["books"]}[101]
            time.sleep(0.1)
        assert seen == expected
    finally:
        assert server.stop() == 0
    assert wait_gone(pids, 10) == set()


def test_workers_die_with_the_first_process(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path, db_url=f"sqlite:///{tmp_path / 'w.db'}", extra_args=("--workers", "3")
    )
    server.start()
    assert server.process is not None
    pids = pids_answering(server)
    assert len(pids) >= 2
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    assert wait_gone(pids - {server.process.pid}, 10) == set()
    server.stop()
