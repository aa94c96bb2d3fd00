"""Waymark server: the command line, and the wiring of the store, commands, reactor and jobs.

python server.py                        serve on 127.0.0.1:7443 with SQLite
python server.py create-admin NAME      create or promote an admin
python server.py import-walks FILE.csv  load a shop's walks
python server.py export FILE            write the whole database as one SQL file (MySQL dialect)
python server.py import FILE            load such a file into an empty database
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import background
import logs
import passwords
import protocol
import server_admin
import tls
import workers
from commands import Commands
from connection import Responder
from logs import FaultLog
from openlibrary import OpenLibrary
from reactor import Reactor
from settings import (
    ServerConfig,
    StartupError,
    add_config_options,
    load_config,
    login_throttle,
    open_store,
    sweep_policy,
)
from stats import ServerStats

log = logging.getLogger("waymark.server")

# ---------------------------------------------------------------------------------------------
# Command line


def serve(config: ServerConfig) -> int:
    """Run the server until SIGINT or SIGTERM; 0 on a clean stop."""
    tls.ensure_certificate(config.cert, config.key, extra_hosts=tls.parse_hosts(config.cert_hosts))
    context = tls.server_context(config.cert, config.key)
    left = tls.time_left(config.cert)
    if left < tls.RENEW_WARNING:
        # Clients pin this certificate, so renewing it means handing them the new one: warn
        # early enough for that (README, "Renewing the certificate").
        log.warning(
            "the TLS certificate %s %s; renew it and give clients the new one (see README)",
            config.cert,
            f"expires in {left.days} days" if left.days >= 0 else "has expired",
        )
    store = open_store(config)
    stats, faults = ServerStats(), FaultLog()
    commands = Commands(
        store,
        OpenLibrary(config.openlibrary_url, contact=config.openlibrary_contact),
        passwords.PasswordHasher(config.bcrypt_cost, config.hash_concurrency),
        login_throttle(config),
        stats=stats,
        faults=faults,
        sweep_policy=sweep_policy(config),
    )
    responder = Responder(commands, stats, faults)
    try:
        server = Reactor(config, responder, context, stats, faults)
    except OSError as error:
        store.close()
        raise StartupError(
            f"Could not listen on {config.host}:{config.port} (--host, --port):"
            f" {(error.strerror or str(error)).lower()}."
        ) from error

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only a flag: no logging and no locks here (see request_stop).
        server.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host, port = server.address
    siblings, ready = (
        workers.Workers.start(config.workers - 1, port, sys.argv[1:])
        if config.workers > 1 and not workers.is_worker()
        else (None, -1)
    )
    jobs = background.start_jobs(config, store)
    try:
        responder.metrics, metric_jobs = background.start_metrics(
            config,
            store,
            stats,
            commands.snapshot,
            server.handshakes_in_progress,
            commands.database_probe.healthy,
        )
    except OSError as error:
        server.listener.close()
        if siblings is not None:
            siblings.stop(5.0)
        for job in jobs:
            job.stop()
        store.close()
        raise StartupError(
            f"Could not serve metrics on {config.metrics_host}:{config.metrics_port}"
            f" (--metrics-host, --metrics-port): {(error.strerror or str(error)).lower()}."
        ) from error
    if workers.is_worker():
        log.info("worker %d listening on %s:%d", workers.number(), host, port)
        workers.say_listening()
    elif siblings is not None and not siblings.wait_listening(ready):
        siblings.stop(5.0)
        for job in [*jobs, *metric_jobs]:
            job.stop()
        if responder.metrics is not None:
            responder.metrics.close()
        server.listener.close()
        store.close()
        raise StartupError("A worker process (--workers) did not start; see the log above.")
    else:
        print(f"Waymark listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        if siblings is not None:
            siblings.stop(config.drain_timeout_s + 5)
        for job in [*jobs, *metric_jobs]:
            job.stop()
        if responder.metrics is not None:
            responder.metrics.close()
        store.close()
    log.info("stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: serve by default, or one of the admin subcommands."""
    parser = argparse.ArgumentParser(
        prog="server.py",
        description="Waymark server: TLS, newline-delimited JSON, see docs/PROTOCOL.md.",
        epilog="With no subcommand the server runs until SIGINT or SIGTERM.",
    )
    add_config_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    admin = commands.add_parser(
        "create-admin", help="create an admin account, or promote a user and set the password"
    )
    admin.add_argument("username")
    add_config_options(admin)
    walks = commands.add_parser("import-walks", help="load walks from a CSV file (idempotent)")
    walks.add_argument("walks_file", type=Path, metavar="FILE.csv")
    walks.add_argument("--books", type=Path, metavar="BOOKS.csv", help="book numbers and prices")
    add_config_options(walks)
    exporter = commands.add_parser(
        "export", help="write the whole database as one SQL file in MySQL's dialect"
    )
    exporter.add_argument("file", type=Path, metavar="FILE")
    add_config_options(exporter)
    importer = commands.add_parser(
        "import", help="load a file made by export into an empty database"
    )
    importer.add_argument("file", type=Path, metavar="FILE")
    add_config_options(importer)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    options = vars(parser.parse_args(argv))
    try:
        config = load_config(options, dict(os.environ))
    except ValueError as error:
        parser.error(str(error))
    try:
        logs.configure(config.log_level, config.log_format, config.log_file)
    except OSError as error:
        print(
            f"server.py: cannot write the log file {config.log_file}: {error.strerror}.",
            file=sys.stderr,
        )
        return 1
    try:
        if options["command"] == "create-admin":
            return server_admin.create_admin(config, options["username"])
        if options["command"] == "import-walks":
            return server_admin.import_walks(config, options["walks_file"], options.get("books"))
        if options["command"] == "export":
            return server_admin.export_database(config, options["file"])
        if options["command"] == "import":
            return server_admin.import_database(config, options["file"])
        return serve(config)
    except (StartupError, tls.CertificateError) as error:
        log.debug("could not start", exc_info=True)
        print(f"server.py: {error}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f"server.py: {error}", file=sys.stderr)
        return 2
    except protocol.ProtocolError as error:
        print(f"server.py: {error.message}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - e.g. the database refused: say so, not a traceback
        log.debug("failed", exc_info=True)
        print(f"server.py: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
