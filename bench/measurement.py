"""Closed-loop clients run in threads for a timed window, and the numbers they produce."""

from __future__ import annotations

import math
import os
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.options import REQUEST_TIMEOUT_S, Options
from bench.progress import StageBar
from protocol import ProtocolError

Request = Callable[[], object]


class BenchError(Exception):
    """A request that got an error answer (or a wrong echo)."""


class Client(Protocol):
    """One closed-loop client: prepare() does untimed work and returns the request to time."""

    def prepare(self, op: str, rng: random.Random) -> Request: ...

    def close(self) -> None: ...


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
        child = process_cpu_s(child_pid) if child_pid else 0.0
        return cls(time.perf_counter(), times.user + times.system, child, busy, total)


def _machine_ticks() -> tuple[int, int]:
    # /proc/stat "cpu user nice system idle iowait irq softirq steal ...": busy is all but idle+iowait.
    try:
        ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc; 0 if it is gone."""
    # /proc/PID/stat: utime and stime are fields 14 and 15, counted after the ")" of the name.
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


def process_memory(pid: int) -> tuple[float, int]:
    """A process's resident memory in MB and its number of threads, from /proc."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["Threads"])


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


def client_loop(
    client: Client,
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
            request = client.prepare(op, rng)
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
    clients: list[tuple[Client, dict[str, int]]],
    options: Options,
    server_pid: int | None = None,
    bar: StageBar | None = None,
) -> StageResult:
    """Run every client in its own thread for the warm-up plus options.seconds."""
    if bar is None:
        print(f"  {name}: {len(clients)} clients, {options.seconds:g} s ...", file=sys.stderr)
    else:
        bar.begin(f"{name}, {len(clients)} conns")
    budget = Budget(options.max_requests)
    window = Window.starting_soon(options.warmup, options.seconds)
    tallies = [Tally() for _ in clients]
    threads = [
        threading.Thread(
            target=client_loop,
            args=(client, mix, random.Random(number), window, budget, tally),
            daemon=True,
        )
        for number, ((client, mix), tally) in enumerate(zip(clients, tallies, strict=True))
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
        for client, _ in clients:
            client.close()
        if bar is not None:
            bar.end()
    return StageResult.collect(name, tallies, window, (before, after), budget.exhausted)


def run_threads(target: Callable[[int], None], threads: int) -> float:
    """Run target(n) in `threads` threads at once; the wall-clock seconds until all are done."""
    workers = [threading.Thread(target=target, args=(n,)) for n in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started
