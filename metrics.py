"""Prometheus metrics: what a scrape of /metrics reads about this server process.

prometheus_client keeps the counts and serves them over plain HTTP on --metrics-host and
--metrics-port. Each server process serves its own numbers (see docs/OPERATIONS.md for adding
workers' numbers up); the names follow Prometheus' conventions (_total, _seconds).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Buckets from a cached read (well under a millisecond) to a bcrypt login at cost 12 under load.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """This process's metrics in a registry of its own, and the HTTP server that shows them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "waymark_requests",
            "Requests answered, by command and answer code (ok for a success).",
            ["cmd", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "waymark_request_duration_seconds",
            "Time from a request line to its answer, by command.",
            ["cmd"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._gauges: dict[str, Gauge] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def observe(self, cmd: str, code: str, seconds: float) -> None:
        """Count one answer and its time."""
        self.requests.labels(cmd, code).inc()
        self.duration.labels(cmd).observe(seconds)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read at each scrape."""
        gauge = Gauge(name, documentation, registry=self.registry)
        gauge.set_function(read)
        self._gauges[name] = gauge

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Serve /metrics in a thread of its own; the address it listens on."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        address = self._server.server_address
        return str(address[0]), int(address[1])

    def close(self) -> None:
        """Stop serving /metrics."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
