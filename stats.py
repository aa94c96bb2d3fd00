"""This server process's counters: connections, requests, error codes, uptime, database health.

The server records every answer here; the `stats` and `health` commands read it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable


class ServerStats:
    """Thread-safe counts for the stats command (one per server process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._connections = 0

    @property
    def connections(self) -> int:
        """Connections open just now."""
        return self._connections

    def uptime_s(self) -> int:
        """Whole seconds since the process started serving."""
        return int(self._clock() - self._started)

    def connection_opened(self) -> None:
        with self._lock:
            self._connections += 1

    def connection_closed(self) -> None:
        with self._lock:
            self._connections -= 1

    def answered(self, cmd: str | None, error_code: str | None) -> None:
        """Count one answer: its command (None for a line that named none) and error code."""
        with self._lock:
            if cmd is not None:
                self._requests[cmd] += 1
            if error_code is not None:
                self._errors[error_code] += 1

    def snapshot(self) -> dict[str, object]:
        """The stats command's result."""
        with self._lock:
            return {
                "connections": self._connections,
                "requests": dict(self._requests),
                "errors": dict(self._errors),
                "uptime_s": self.uptime_s(),
            }


class DatabaseProbe:
    """Answers whether a trivial query succeeds, within a time bound and without piling up.

    A check runs in its own thread; the caller waits at most timeout_s for it. While a check
    hangs (the database unreachable), later calls answer False at once instead of starting
    another, so a load balancer's health checks never wait on the database.
    """

    def __init__(self, check: Callable[[], object], timeout_s: float = 1.0):
        self._check = check
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._running: threading.Thread | None = None
        self._last_ok = False

    def healthy(self) -> bool:
        with self._lock:
            if self._running is not None and self._running.is_alive():
                return False
            thread = self._running = threading.Thread(target=self._run, daemon=True)
            thread.start()
        thread.join(self.timeout_s)
        with self._lock:
            return not thread.is_alive() and self._last_ok

    def _run(self) -> None:
        try:
            ok = self._check() is not False  # a check may also answer "reachable, not ready"
        except Exception:  # noqa: BLE001 - any failure of the trivial query means "not healthy"
            ok = False
        with self._lock:
            self._last_ok = ok
