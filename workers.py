"""--workers: the first server process starts the others on its port, stopping them with it.

Each worker is `server.py` again, with the same options, told the port the first one bound
(so --port 0 works) and that it is a worker (WAYMARK_WORKER_OF). Every process binds the port
with SO_REUSEPORT and Linux spreads new connections over them; each has its own threads, pool,
snapshot, counters and metrics. A worker dies with the first process (PR_SET_PDEATHSIG), so
none is left behind if the first is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("waymark.server")

WORKER_OF = "WAYMARK_WORKER_OF"  # set in a worker's environment: the first process's pid
READY_FD = "WAYMARK_WORKER_READY_FD"  # a pipe the worker writes one line to once it listens
START_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1
SERVER = Path(__file__).with_name("server.py")


def is_worker() -> bool:
    """True in a process that another server process started as one of its workers."""
    return bool(os.environ.get(WORKER_OF))


def number() -> int:
    """This process's number among the workers: 1 for the first, then 2, 3, ..."""
    return int(os.environ.get("WAYMARK_WORKER_NUMBER", "1"))


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to SIGTERM it when its parent dies.
    # Not Linux (no prctl): the first process still stops its workers itself.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Workers:
    """The worker processes the first server process started."""

    def __init__(self, processes: Sequence[subprocess.Popen[bytes]]):
        self.processes = list(processes)

    def wait_listening(self, ready: int, timeout_s: float = START_TIMEOUT_S) -> bool:
        """Wait until every worker says it listens (one line each on the ready pipe)."""
        deadline = time.monotonic() + timeout_s
        lines = 0
        with os.fdopen(ready, "rb", buffering=0) as pipe:
            while lines < len(self.processes) and time.monotonic() < deadline:
                if not select.select([pipe], [], [], 0.2)[0]:
                    if any(p.poll() is not None for p in self.processes):
                        return False  # a worker died before it listened
                    continue
                data = pipe.read(64)
                if not data:
                    return False
                lines += data.count(b"\n")
        return lines >= len(self.processes)

    @classmethod
    def start(cls, count: int, port: int, argv: Sequence[str]) -> tuple[Workers, int]:
        """Start count workers of `server.py argv` on this port; each numbered from 2.

        Call it before this process starts any thread: a forked child runs preexec_fn, which
        must not meet a lock another thread held at the fork. Returns the workers and the
        read end of their ready pipe (for wait_listening)."""
        ready, ready_to_write = os.pipe()
        processes = []
        for number in range(2, count + 2):
            env = {
                **os.environ,
                WORKER_OF: str(os.getpid()),
                "WAYMARK_WORKER_NUMBER": str(number),
                READY_FD: str(ready_to_write),
            }
            command = [sys.executable, str(SERVER), *argv, "--port", str(port), "--workers", "1"]
            processes.append(
                subprocess.Popen(  # noqa: S603 - our own server.py with the operator's own options
                    command,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    pass_fds=(ready_to_write,),
                    preexec_fn=_die_with_parent,
                )
            )
        os.close(ready_to_write)
        log.info("started %d more worker processes on port %d", count, port)
        return cls(processes), ready

    def stop(self, timeout_s: float) -> None:
        """SIGTERM every worker (each finishes its requests in flight) and wait for them."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()


def say_listening() -> None:
    """In a worker: tell the first process this one listens (it waits for every worker)."""
    fd = os.environ.get(READY_FD)
    if fd:
        with contextlib.suppress(OSError):
            os.write(int(fd), b"listening\n")
            os.close(int(fd))
