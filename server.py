"""Waymark server: TLS sockets, a thread per connection, limits, shutdown. Wiring only.

python server.py                        serve on 127.0.0.1:7443 with SQLite
python server.py create-admin NAME      create or promote an admin
python server.py import-walks FILE.csv  load a shop's walks
python server.py export FILE            write the whole database as one SQL file (MySQL dialect)
python server.py import FILE            load such a file into an empty database
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
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
from connection import ConnectionHandler, discard_input, send_within
from logs import FaultLog
from metrics import Metrics
from openlibrary import OpenLibrary
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
# Connections


ACCEPT_POLL_S = 0.5


@dataclass
class _Handshake:
    """A connection still in its TLS handshake: who it is, and when it must have finished."""

    sock: ssl.SSLSocket
    address: str
    deadline: float


class WaymarkServer:
    """Accepts TLS connections and hands each to its own thread, within limits.

    Handshakes have a budget of their own (max_handshakes), apart from the connections being
    served (max_connections): a flood of sockets that never finish a handshake displaces
    the oldest of them, never a client that has finished one.
    """

    def __init__(
        self,
        config: ServerConfig,
        commands: Commands,
        context: ssl.SSLContext,
        stats: ServerStats,
        faults: FaultLog,
    ):
        self.config = config
        self.commands = commands
        self.stats = stats  # this process's counters: the server writes them, `stats` reads them
        self.context = context
        self.stopping = threading.Event()  # set by the accept loop alone, read by connections
        self.stop_requested = ""  # set by request_stop(): the reason, e.g. a signal's name
        self._lock = threading.Lock()
        self._handshakes: dict[int, _Handshake] = {}  # oldest first
        self._handshakes_by_address: Counter[str] = Counter()
        self._next_handshake = itertools.count()
        self._active = 0
        self._active_by_address: Counter[str] = Counter()
        self._rejecting = 0
        self._threads: set[threading.Thread] = set()
        self._serving: set[ssl.SSLSocket] = set()
        self.faults = faults
        self.metrics: Metrics | None = None  # set by serve() when --metrics-port is given
        self.listener = socket.create_server(
            (config.host, config.port),
            family=socket.AF_INET6 if ":" in config.host else socket.AF_INET,
            backlog=1024,
            # With --workers every process binds the port, and Linux spreads connections.
            reuse_port=config.workers > 1 or workers.is_worker(),
        )
        self.address = self.listener.getsockname()[:2]

    def serve_forever(self) -> None:
        """Accept until request_stop() is called, then drain the connections."""
        # The accept loop wakes this often to expire handshakes, flush the fault log and notice
        # a stop request: one wake-up for the whole server, not one per connection.
        self.listener.settimeout(ACCEPT_POLL_S)
        while not self.stop_requested:
            self._expire_handshakes()
            self.faults.flush()
            try:
                raw, peer = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                log.exception("accept failed")
                time.sleep(0.1)  # e.g. out of file descriptors: do not spin
                continue
            self._dispatch(raw, str(peer[0]))
        log.info("received %s, finishing requests in flight", self.stop_requested)
        self.stopping.set()
        self.listener.close()
        self._wake_connections()
        with self._lock:
            while self._handshakes:
                self._cut_locked(next(iter(self._handshakes)))
        self._drain()
        self.faults.flush(everything=True)

    def handshakes_in_progress(self) -> int:
        """TLS handshakes under way just now (for the metrics; read without the lock)."""
        return len(self._handshakes)

    def request_stop(self, reason: str) -> None:
        """Ask the accept loop to stop; safe in a signal handler, as it takes no lock."""
        # A signal handler runs in the main thread between any two bytecodes, perhaps while
        # that thread holds self._lock (in _cut_locked, say) or an Event's own lock: taking
        # either here hung the server for ever (issue 18). One attribute store takes none, and
        # the accept loop, which owns the locks, sees it within ACCEPT_POLL_S.
        self.stop_requested = reason

    def _wake_connections(self) -> None:
        # Connections finish the request they are on and close: one asleep in recv wakes with
        # an end of input; one busy answering a request still sends its answer, then sees the
        # flag and closes. A connection admitted after this sees the flag before it reads.
        with self._lock:
            waiting = list(self._serving)
        for sock in waiting:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RD)

    def _dispatch(self, raw: socket.socket, address: str) -> None:
        # Answers are one small write each: without this, Nagle's algorithm holds a first
        # answer until the client's delayed ACK (about 40 ms on Linux).
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            # No handshake here: it runs in the connection's thread, so one slow client cannot
            # stall the accept loop.
            sock = self.context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError) as error:  # e.g. reset before we got to it
            log.debug("could not take a connection from %s: %s", address, error)
            raw.close()
            return
        deadline = time.monotonic() + self.config.handshake_timeout_s
        with self._lock:
            if self._handshakes and len(self._handshakes) >= self.config.max_handshakes:
                self._cut_locked(self._displaced_locked())
            key = next(self._next_handshake)
            self._handshakes[key] = _Handshake(sock, address, deadline)
            self._handshakes_by_address[address] += 1
        thread = threading.Thread(target=self._connection, args=(sock, address, key), daemon=True)
        with self._lock:
            self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError:  # the system has no more threads to give: refuse this one only
            log.error("could not start a thread for a connection from %s", address)
            with self._lock:
                self._threads.discard(thread)
                self._forget_handshake_locked(key)
            sock.close()

    def _displaced_locked(self) -> int:
        # The oldest handshake of the address that has the most under way: a flood from one
        # address displaces its own sockets before anyone else's. From one address alone (as
        # in the tests), that is simply the oldest.
        most = max(self._handshakes_by_address.values())
        return next(
            k for k, h in self._handshakes.items() if self._handshakes_by_address[h.address] == most
        )

    def _expire_handshakes(self) -> None:
        # A deadline for the whole handshake, not per read: a ClientHello trickled a byte at a
        # time gets handshake_timeout_s in all.
        now = time.monotonic()
        with self._lock:
            expired = [k for k, h in self._handshakes.items() if h.deadline <= now]
            for key in expired:
                self._cut_locked(key)

    def _cut_locked(self, key: int) -> None:
        # Wake the thread blocked in the handshake by shutting the socket down under it; that
        # thread closes it. Done under the lock, and the thread forgets its handshake under the
        # lock before closing, so the socket here is never one already closed and reused.
        handshake = self._forget_handshake_locked(key)
        if handshake is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(handshake.sock, socket.SHUT_RDWR)

    def _forget_handshake_locked(self, key: int) -> _Handshake | None:
        handshake = self._handshakes.pop(key, None)
        if handshake is not None:
            self._handshakes_by_address[handshake.address] -= 1
            if not self._handshakes_by_address[handshake.address]:
                del self._handshakes_by_address[handshake.address]
        return handshake

    def _connection(self, sock: ssl.SSLSocket, address: str, key: int) -> None:
        admitted = rejected = False
        try:
            with sock:
                if not self._handshake(sock, key):
                    return
                with self._lock:
                    refusal = self._refusal_locked(address)
                    if refusal is None:
                        admitted = True
                        self._active += 1
                        self._active_by_address[address] += 1
                        self._serving.add(sock)
                    else:
                        rejected = True
                        self._rejecting += 1
                if refusal is not None:
                    self._reject(sock, refusal)
                    return
                self.stats.connection_opened()
                try:
                    handler = ConnectionHandler(self, sock, address)
                    if not self.stopping.is_set():  # the stop's wake-up may have missed it
                        handler.handle()
                    handler.finish()
                except (OSError, ssl.SSLError) as error:
                    log.debug("connection from %s ended: %s", address, error)
        except Exception:  # noqa: BLE001 - one connection's fault must never stop the server
            log.exception("connection handler failed")
        finally:
            if admitted:
                self.stats.connection_closed()
            with self._lock:
                self._serving.discard(sock)
                if admitted:
                    self._active -= 1
                    self._active_by_address[address] -= 1
                    if not self._active_by_address[address]:
                        del self._active_by_address[address]
                if rejected:
                    self._rejecting -= 1
                self._threads.discard(threading.current_thread())

    def _handshake(self, sock: ssl.SSLSocket, key: int) -> bool:
        """True once the handshake is done and it was not displaced or timed out meanwhile."""
        try:
            sock.settimeout(self.config.handshake_timeout_s)
            sock.do_handshake()
            done = True
        except (OSError, ssl.SSLError, ValueError) as error:
            log.debug("TLS handshake failed: %s", error)
            done = False
        with self._lock:
            # Gone from the table means cut: by a newer handshake or by its deadline.
            return self._forget_handshake_locked(key) is not None and done

    def _refusal_locked(self, address: str) -> protocol.ProtocolError | None:
        if self._active >= self.config.max_connections:
            return protocol.ProtocolError(
                protocol.SERVER_BUSY,
                "The server is busy; please try again shortly.",
                {"scope": "server", "limit": self.config.max_connections},
            )
        per_address = self.config.max_connections_per_address
        if per_address and self._active_by_address[address] >= per_address:
            return protocol.ProtocolError(
                protocol.SERVER_BUSY,
                "Too many connections are open from your address; close some and try again.",
                {"scope": "address", "limit": per_address},
            )
        return None

    def _reject(self, sock: ssl.SSLSocket, refusal: protocol.ProtocolError) -> None:
        # Every client that finished its handshake past a limit hears why, once.
        with contextlib.suppress(OSError, ssl.SSLError):
            message = protocol.encode(protocol.error_response(None, refusal))
            send_within(sock, message, self.config.write_timeout_s)
            # Linger so the line is not lost to a reset, unless too many are lingering already.
            if self._rejecting <= self.config.max_handshakes:
                discard_input(sock, seconds=1.0)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.drain_timeout_s
        while True:
            with self._lock:
                threads = list(self._threads)
            if not threads or time.monotonic() > deadline:
                break
            threads[0].join(timeout=max(deadline - time.monotonic(), 0))


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
    try:
        server = WaymarkServer(config, commands, context, stats, faults)
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
        server.metrics, metric_jobs = background.start_metrics(
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
        if server.metrics is not None:
            server.metrics.close()
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
        if server.metrics is not None:
            server.metrics.close()
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
