"""The reactor: idle connections cost no threads; slow work and slow readers hold no worker.

Each runs a real server.py with one request worker (--request-threads 1), so anything that held
that worker would stall every other client, and each test shows that it does not.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.fake_openlibrary import FakeOpenLibrary
from tests.wire import PROJECT_DIR, ServerProcess, WireClient

ONE_WORKER = ("--request-threads", "1", "--slow-request-threads", "1")


def _threads(server: ServerProcess) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'reactor.db'}"


def test_idle_connections_cost_no_threads(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, _sqlite(tmp_path), extra_args=ONE_WORKER) as server:
        with server.client() as first:
            first.call("hello")  # the pools are up: from here on threads would be per connection
            before = _threads(server)
            clients = [server.client() for _ in range(150)]
            try:
                for client in clients:
                    client.call("hello")
                assert _threads(server) <= before + 1  # one spare, e.g. for a database probe
            finally:
                for client in clients:
                    client.close()


def test_a_slow_open_library_holds_no_request_worker(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary
) -> None:
    openlibrary_fake.reset(mode="slow", slow_s=8.0)
    with ServerProcess(
        tmp_path, _sqlite(tmp_path), openlibrary_url=openlibrary_fake.url, extra_args=ONE_WORKER
    ) as server:
        with server.client() as waiting, server.client() as other:
            waiting.call("hello")  # reads TLS 1.3's session tickets, so select sees only answers
            waiting.send("search_books", query="dune")
            deadline = time.monotonic() + 10
            while not openlibrary_fake.total_requests and time.monotonic() < deadline:
                time.sleep(0.01)
            assert openlibrary_fake.total_requests, "the search never reached Open Library"
            # Open Library holds the search for seconds; the one request worker is free.
            assert other.call("search_walks", area="peak")["walks"]
            assert other.call("hello")["protocol"] == 1
            assert not select.select([waiting.sock], [], [], 0)[0], "answered before upstream"
            assert waiting.read()["ok"]  # the catalogue's answer once Open Library gives up


def test_a_client_that_does_not_read_holds_no_request_worker(tmp_path: Path) -> None:
    requests = 3000  # their answers are megabytes: far more than the sockets' buffers hold
    with ServerProcess(
        tmp_path, _sqlite(tmp_path), extra_args=(*ONE_WORKER, "--write-timeout-s", "60")
    ) as server:
        with server.client() as hoarder, server.client() as other:
            lines = b"".join(
                b'{"id": %d, "cmd": "search_walks", "args": {}}\n' % n for n in range(requests)
            )
            sender = threading.Thread(target=hoarder.send_raw, args=(lines,), daemon=True)
            sender.start()
            time.sleep(0.5)  # the worker has filled the hoarder's socket and handed it back
            started = time.monotonic()
            assert other.call("hello")["protocol"] == 1
            assert time.monotonic() - started < 15  # held, it would wait out the 60 s
            # Nothing was lost or reordered while the answers waited for the hoarder to read.
            assert [hoarder.read()["id"] for _ in range(requests)] == list(range(requests))
            sender.join(timeout=10)


def test_zero_request_threads_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "server.py"), "--request-threads", "0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--request-threads must be a whole number of 1 or more." in result.stderr


def test_a_reactor_client_sees_every_answer_of_a_pipelined_burst_in_order(
    tmp_path: Path,
) -> None:
    # Lines split across records and reads still come back one answer each, in order.
    with ServerProcess(tmp_path, _sqlite(tmp_path), extra_args=ONE_WORKER) as server:
        with WireClient(server.host, server.port, server.cafile) as client:
            burst = b"".join(b'{"id": %d, "cmd": "hello"}\n' % n for n in range(500))
            for start in range(0, len(burst), 777):
                client.send_raw(burst[start : start + 777])
            assert [client.read()["id"] for _ in range(500)] == list(range(500))


def test_pipelined_slow_and_quick_commands_are_answered_in_order(tmp_path: Path) -> None:
    # register and login go to the slow pool and back; whoami after them must see the login.
    with ServerProcess(tmp_path, _sqlite(tmp_path), extra_args=ONE_WORKER) as server:
        with server.client() as client:
            credentials = {"username": "ann", "password": "walking-boots-1"}
            requests = [
                {"id": 1, "cmd": "hello"},
                {"id": 2, "cmd": "register", "args": credentials},
                {"id": 3, "cmd": "login", "args": credentials},
                {"id": 4, "cmd": "whoami"},
                {"id": 5, "cmd": "search_walks", "args": {"area": "peak"}},
                {"id": 6, "cmd": "login", "args": {**credentials, "password": "wrong-one-1"}},
                {"id": 7, "cmd": "whoami"},
            ]
            client.send_raw(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
            answers = [client.read() for _ in requests]
            assert [a["id"] for a in answers] == [1, 2, 3, 4, 5, 6, 7]
            assert answers[3]["result"]["user"]["username"] == "ann"
            assert answers[5]["error"]["code"] == "invalid_credentials"
            assert answers[6]["ok"]  # a failed login leaves the session as it was
