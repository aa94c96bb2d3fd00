"""The default mode: one request mix through the echo server, the Store and server.py."""

from __future__ import annotations

import os
import platform
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import passwords
import tls
from bench.harness import (
    ServerSettings,
    describe_db,
    echo_service,
    fresh_database,
    make_certificate,
    mysql_driver,
    seeded_store,
    server_environment,
    server_service,
    settings_of,
)
from bench.measurement import Client, StageResult, run_stage
from bench.options import MIXES, Options
from bench.workload import (
    PASSWORD,
    Accounts,
    EchoWorker,
    LineClient,
    ServerWorker,
    StoreWorker,
)


def transport_stage(options: Options, workdir: Path, cert: Path, key: Path) -> StageResult:
    """The mix's request lines through the bare TLS echo server."""
    mix = MIXES[options.mix]
    with echo_service(workdir, cert, key) as echo:
        context = tls.client_context(cert)
        accounts = Accounts(None)
        clients: list[tuple[Client, dict[str, int]]] = [
            (EchoWorker(LineClient(echo.port, context), accounts), mix)
            for _ in range(options.clients)
        ]
        return run_stage("transport", clients, options, echo.pid)


def database_stage(
    options: Options, workdir: Path, settings: ServerSettings, password_hash: str
) -> StageResult:
    """The mix's Store calls from N threads, on a pool as large as the server's."""
    mix = MIXES[options.mix]
    with (
        fresh_database(options.db, workdir, "db") as url,
        seeded_store(url, settings.pool_size) as store,
    ):
        accounts = Accounts(store, password_hash)
        clients: list[tuple[Client, dict[str, int]]] = [
            (StoreWorker(store, accounts), mix) for _ in range(options.clients)
        ]
        return run_stage("db", clients, options)


def server_stage(
    options: Options, workdir: Path, cert: Path, key: Path, password_hash: str
) -> tuple[StageResult, str | None]:
    """The mix through server.py on its own fresh database; also its log line on its data."""
    mix = MIXES[options.mix]
    with (
        fresh_database(options.db, workdir, "server") as url,
        seeded_store(url, pool_size=4) as store,
        server_service(url, workdir, cert, key, server_environment(options)) as service,
    ):
        context = tls.client_context(cert)
        accounts = Accounts(store, password_hash)
        clients: list[tuple[Client, dict[str, int]]] = [
            (ServerWorker(LineClient(service.port, context), accounts), mix)
            for _ in range(options.clients)
        ]
        result = run_stage("server", clients, options, service.pid)
        data_line = service.log_line("data in ")
    return result, data_line and data_line.split("data in ", 1)[1]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or zero."""
    if not numerator or not denominator:
        return None
    return numerator / denominator


def run(options: Options) -> dict[str, Any]:
    """The three stages and their ratios."""
    settings = settings_of(server_environment(options))
    with tempfile.TemporaryDirectory(prefix="waymark-bench-") as tmp:
        workdir = Path(tmp)
        cert, key = make_certificate(workdir)
        password_hash = passwords.PasswordHasher(options.bcrypt_cost, 1).hash(PASSWORD)
        transport = transport_stage(options, workdir, cert, key)
        db = database_stage(options, workdir, settings, password_hash)
        served, server_data = server_stage(options, workdir, cert, key, password_hash)
    stages = [transport, db, served]
    return {
        "mode": "load",
        "meta": {**describe_run(options, settings), "server_data": server_data},
        "stages": [asdict(stage) for stage in stages],
        "ratios": {
            "server/transport": {
                "per_s": ratio(served.overall.per_s, transport.overall.per_s),
                "p50": ratio(served.overall.p50_ms, transport.overall.p50_ms),
            },
            "server/db": {
                "per_s": ratio(served.overall.per_s, db.overall.per_s),
                "p50": ratio(served.overall.p50_ms, db.overall.p50_ms),
            },
        },
    }


def describe_run(options: Options, settings: ServerSettings) -> dict[str, Any]:
    """What ran: versions, machine, database, driver, bcrypt cost and the server's limits."""
    return {
        "mix": options.mix,
        "mix_weights": MIXES[options.mix],
        "clients": options.clients,
        "seconds": options.seconds,
        "warmup_s": options.warmup,
        "db": describe_db(options.db),
        "mysql_driver": mysql_driver(),
        "bcrypt_cost": settings.bcrypt_cost,
        "hash_concurrency": settings.hash_concurrency,
        "server_pool_size": settings.pool_size,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
