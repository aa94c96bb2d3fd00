"""--bcrypt-check: the hashing rate, and what a login burst does to everyone else."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import bcrypt

import passwords
import tls
from bench.harness import (
    ServerSettings,
    describe_db,
    fresh_database,
    make_certificate,
    seeded_store,
    server_environment,
    server_service,
    settings_of,
)
from bench.measurement import Client, StageResult, run_stage, run_threads
from bench.options import MIXES, Options
from bench.workload import PASSWORD, Accounts, LineClient, ServerWorker

HASH_CHECK_S = 3.0  # how long --bcrypt-check hashes with each thread count
HASH_CHECK_COST = passwords.PRODUCTION_COST
READER_MIX = {"search_walks": 1}  # what the other clients do during the login burst


def run(options: Options) -> dict[str, Any]:
    """Hashes/s with 1 and 4 threads at cost 12; then a login burst through server.py."""
    rates = {threads: hash_rate(threads, HASH_CHECK_S) for threads in (1, 4)}
    phases = login_burst(options)
    return {
        "mode": "bcrypt",
        "meta": {
            "cost": HASH_CHECK_COST,
            "bcrypt": importlib.metadata.version("bcrypt"),
            "cpus": os.cpu_count(),
            "default_hash_concurrency": passwords.default_concurrency(),
            "db": describe_db(options.db),
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

    wall = run_threads(loop, threads)
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
                    clients: list[tuple[Client, dict[str, int]]] = [
                        (ServerWorker(LineClient(service.port, context), accounts), mix)
                        for mix in [READER_MIX] * readers + [MIXES["login"]] * login_clients
                    ]
                    stage = run_stage(name, clients, burst_options, service.pid)
                results.append(burst_phase(stage, readers, login_clients, settings_of(env)))
    return results


def burst_phase(
    stage: StageResult, readers: int, logins: int, settings: ServerSettings
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
