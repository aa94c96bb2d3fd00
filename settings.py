"""The server's settings: one table of options, with the objects they configure."""

from __future__ import annotations

import argparse
import logging
import tempfile
import urllib.parse
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import passwords
import protocol
import rules
import seed
import tls
from db import Store, StoreConfig
from engine import PoolConfig, SQLiteBackend, backend_from_url
from mailer import mail_relay
from sweep import SweepPolicy

# The line "data in ..." belongs to the server program, whichever of its modules writes it.
log = logging.getLogger("waymark.server")

PROJECT_DIR = Path(__file__).resolve().parent
DEFAULT_DATA_DIR = PROJECT_DIR / "data"  # the one folder the server may create for a database

_STORE = StoreConfig()
_THROTTLE_MINUTES = rules.HOUSE_THROTTLE.failure_window_s // 60

T = TypeVar("T")


class StartupError(Exception):
    """A file or setting that keeps the server from starting; its text is one sentence that
    names it, for the operator to read as it is."""


def _setting(default: T, metavar: str, help: str) -> T:
    """A ServerConfig field: its default, its --help metavar and its help text."""
    return field(default=default, metadata={"metavar": metavar, "help": help})


@dataclass
class ServerConfig:
    """Every setting, each with a safe default and an environment variable WAYMARK_<NAME>."""

    host: str = _setting("127.0.0.1", "HOST", "address to listen on")
    port: int = _setting(7443, "N", "TCP port (0 picks a free one)")
    db: str = _setting(
        f"sqlite:///{DEFAULT_DATA_DIR / 'waymark.db'}",
        "URL",
        "sqlite:///path.db or mysql://user:password@host:port/database",
    )
    cert: Path = _setting(
        PROJECT_DIR / "certs" / "server.crt",
        "FILE",
        "TLS certificate (created on first start if missing)",
    )
    key: Path = _setting(
        PROJECT_DIR / "certs" / "server.key",
        "FILE",
        "TLS private key (created with mode 0600 if missing)",
    )
    openlibrary_url: str = _setting("https://openlibrary.org", "URL", "base URL of Open Library")
    openlibrary_contact: str = _setting(
        "waymark-admin@example.org",
        "EMAIL",
        "contact address sent in the User-Agent to Open Library",
    )
    max_line_bytes: int = _setting(
        protocol.DEFAULT_MAX_LINE_BYTES, "N", "longest request line accepted"
    )
    max_connections: int = _setting(1024, "N", "connections served at once; more get server_busy")
    # Off by default: tests, benches and every client behind one NAT come from one address,
    # and --max-connections already bounds what connections cost.
    max_connections_per_address: int = _setting(
        0, "N", "connections one client address may hold at once (0: no limit but the total)"
    )
    max_handshakes: int = _setting(
        128, "N", "TLS handshakes under way at once; past it the oldest is dropped"
    )
    handshake_timeout_s: float = _setting(
        10.0, "SECONDS", "seconds a client has to finish the TLS handshake"
    )
    idle_timeout_s: float = _setting(300.0, "SECONDS", "seconds a silent connection is kept open")
    line_timeout_s: float = _setting(
        10.0, "SECONDS", "seconds a request line may take to arrive, from its first byte"
    )
    write_timeout_s: float = _setting(
        30.0, "SECONDS", "seconds a client may take to read an answer"
    )
    drain_timeout_s: float = _setting(
        30.0, "SECONDS", "seconds to finish requests in flight on shutdown"
    )
    session_ttl_s: int = _setting(_STORE.session_ttl_s, "SECONDS", "seconds a login session lasts")
    bcrypt_cost: int = _setting(
        passwords.PRODUCTION_COST, "N", "bcrypt work factor for new password hashes"
    )
    hash_concurrency: int = _setting(
        passwords.default_concurrency(), "N", "password hashes computed at once"
    )
    request_threads: int = _setting(
        8, "N", "threads answering requests (the sockets themselves cost none)"
    )
    slow_request_threads: int = _setting(
        16, "N", "threads answering requests that wait on bcrypt or Open Library"
    )
    pool_size: int = _setting(_STORE.pool.pool_size, "N", "database connections kept open")
    db_timeout_s: float = _setting(
        _STORE.pool.call_timeout_s,
        "SECONDS",
        "deadline of each database call (connect, statement, commit, waiting for a pooled"
        " connection); past it the request answers unavailable",
    )
    loan_days: int = _setting(
        rules.HOUSE_RULES.loan_period.days, "N", "days a loan lasts, and each renewal adds"
    )
    max_active_loans: int = _setting(
        rules.HOUSE_RULES.max_active_loans, "N", "books a member may have on loan at once"
    )
    max_renewals: int = _setting(
        rules.HOUSE_RULES.max_renewals, "N", "times one loan may be renewed"
    )
    hold_days: int = _setting(
        rules.HOUSE_RULES.hold_kept_for.days,
        "N",
        "days a returned copy is kept for the first member waiting",
    )
    login_failures_per_user_and_address: int = _setting(
        rules.HOUSE_THROTTLE.failures_per_user_and_address,
        "N",
        f"failed logins per username from one address in {_THROTTLE_MINUTES} minutes before"
        " throttling",
    )
    login_failures_per_user: int = _setting(
        rules.HOUSE_THROTTLE.failures_per_user,
        "N",
        f"failed logins per username from all addresses in {_THROTTLE_MINUTES} minutes before"
        " only addresses with no failure for it may try",
    )
    login_failures_per_address: int = _setting(
        rules.HOUSE_THROTTLE.failures_per_address,
        "N",
        f"failed logins per address in {_THROTTLE_MINUTES} minutes before throttling",
    )
    cert_hosts: str = _setting(
        "",
        "NAMES",
        "comma-separated host names and IP addresses added to a certificate the server makes"
        " (localhost, 127.0.0.1 and ::1 are always in it)",
    )
    smtp_url: str = _setting(
        "",
        "URL",
        "mail relay for notices: smtp://[user:password@]host:port, smtp+starttls://... or"
        " smtps://... (unset: notices are in-app only)",
    )
    mail_from: str = _setting("waymark@localhost", "EMAIL", "sender address of notice emails")
    mail_retry_s: float = _setting(
        60.0,
        "SECONDS",
        "first pause before an email the relay did not take is tried again; it doubles each"
        " time up to an hour, for 24 hours",
    )
    mail_lease_s: float = _setting(
        300.0,
        "SECONDS",
        "how long a server's claim on a notice to email lasts; past it (the server died) another"
        " server sends it",
    )
    due_soon_days: int = _setting(2, "N", "days before a loan's due date that due_soon is sent")
    notice_interval_s: float = _setting(
        300.0, "SECONDS", "seconds between sweeps for time-driven notices and lapsed holds"
    )
    anonymise_after_days: int = _setting(
        0, "N", "days after its return that a loan is unlinked from its member (0: never)"
    )
    workers: int = _setting(
        1, "N", "server processes sharing the port (SO_REUSEPORT), each with its own threads"
    )
    metrics_port: int = _setting(
        0,
        "N",
        "serve Prometheus metrics at http://HOST:N/metrics (0: off); worker K of --workers"
        " uses N+K-1",
    )
    metrics_host: str = _setting(
        "127.0.0.1", "HOST", "address the metrics endpoint listens on (plain HTTP: keep it private)"
    )
    log_level: str = _setting("INFO", "LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR")
    log_format: str = _setting(
        "text", "FORMAT", "text, or json for one JSON object a line (for log shippers)"
    )
    log_file: str = _setting("", "FILE", "append the log to this file instead of standard error")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One --option per ServerConfig field; unset ones fall back to the environment, then defaults."""
    for setting in fields(ServerConfig):
        parser.add_argument(
            _flag(setting.name),
            dest=setting.name,
            default=argparse.SUPPRESS,
            metavar=setting.metadata["metavar"],
            help=f"{setting.metadata['help']} [{_variable(setting.name)}; default {setting.default}]",
        )


def load_config(options: dict[str, Any], environ: dict[str, str]) -> ServerConfig:
    """Settings from options, else WAYMARK_* variables, else defaults; ValueError names a bad one."""
    values: dict[str, Any] = {}
    for setting in fields(ServerConfig):
        raw = options.get(setting.name, environ.get(_variable(setting.name)))
        if raw is None:
            continue
        kind: Any = type(setting.default)
        try:
            values[setting.name] = kind(raw)
            if isinstance(values[setting.name], (int, float)) and values[setting.name] < 0:
                raise ValueError
        except ValueError:
            wanted = {int: "a whole number of 0 or more", float: "a number of 0 or more"}.get(
                kind, "text"
            )
            raise ValueError(f"{_flag(setting.name)} must be {wanted}, not {raw!r}.") from None
    config = ServerConfig(**values)
    for name in _AT_LEAST_ONE:
        if getattr(config, name) < 1:
            raise ValueError(f"{_flag(name)} must be a whole number of 1 or more.")
    if config.log_format not in LOG_FORMATS:
        raise ValueError(f"--log-format must be text or json, not {config.log_format!r}.")
    tls.parse_hosts(config.cert_hosts)  # a ValueError names the entry that is not a host
    if config.smtp_url:
        mail_relay(config.smtp_url)  # a ValueError says what is wrong, without the password
    return config


LOG_FORMATS = ("text", "json")
# With none of these, nothing would ever be answered.
_AT_LEAST_ONE = ("workers", "request_threads", "slow_request_threads")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _variable(name: str) -> str:
    return "WAYMARK_" + name.upper()


def lending_policy(config: ServerConfig) -> rules.LendingPolicy:
    """The lending terms the settings give."""
    return rules.LendingPolicy(
        loan_period=timedelta(days=config.loan_days),
        max_active_loans=config.max_active_loans,
        max_renewals=config.max_renewals,
        hold_kept_for=timedelta(days=config.hold_days),
    )


def login_throttle(config: ServerConfig) -> rules.LoginThrottle:
    """The failed-login limits the settings give."""
    return rules.LoginThrottle(
        failures_per_user_and_address=config.login_failures_per_user_and_address,
        failures_per_user=config.login_failures_per_user,
        failures_per_address=config.login_failures_per_address,
    )


def store_config(config: ServerConfig) -> StoreConfig:
    """The pool, session, lending and mail settings of the store."""
    return StoreConfig(
        pool=PoolConfig(
            pool_size=config.pool_size,
            pool_timeout_s=config.db_timeout_s,
            call_timeout_s=config.db_timeout_s,
        ),
        session_ttl_s=config.session_ttl_s,
        lending=lending_policy(config),
        mail_enabled=bool(config.smtp_url),
    )


def sweep_policy(config: ServerConfig) -> SweepPolicy:
    """When the sweep warns of due dates and unlinks old loans."""
    return SweepPolicy(config.due_soon_days, config.anonymise_after_days)


def open_store(config: ServerConfig) -> Store:
    """The store named by --db, with the schema ready; the caller closes it.

    Raises StartupError when the database cannot be used.
    """
    check_database(config.db)
    try:
        store = seed.open_store(config.db, store_config(config))
    except Exception as error:  # noqa: BLE001 - the operator gets one sentence, not a traceback
        log.debug("could not open the database", exc_info=True)
        where = backend_from_url(config.db).describe()
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StartupError(f"Could not open the {where} (--db): {reason.rstrip('.')}.") from error
    log.info("data in %s", store.describe())
    return store


def check_database(url: str) -> None:
    """Refuse a --db that cannot work, before anything opens or creates it.

    A read-only SQLite file used to start fine and then answer internal to every write. For
    SQLite the folder must exist (only the default data/ is created), the path must not be a
    folder, and both the file and its folder must be writable: SQLite's WAL mode makes its
    -wal and -shm files beside the database.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("sqlite", "mysql", "mariadb"):
        # Not the URL itself: it may hold a password.
        raise StartupError(
            "--db must be a URL like sqlite:///path/to/waymark.db or"
            " mysql://user:password@host:3306/database."
        )
    try:
        backend = backend_from_url(url)
    except ValueError as error:
        raise StartupError(f"--db is not usable: {str(error).rstrip('.')}.") from None
    if not isinstance(backend, SQLiteBackend):
        return
    path = backend.path.absolute()
    folder = path.parent
    if path.is_dir():
        raise StartupError(f"The database {path} is a folder, not a file (--db).")
    if not folder.exists() and folder == DEFAULT_DATA_DIR:
        folder.mkdir(parents=True)
    if not folder.is_dir():
        raise StartupError(
            f"The folder {folder} for the database does not exist; create it or choose another --db."
        )
    if path.exists() and not _can_write_file(path):
        raise StartupError(
            f"The database {path} is read-only; the server must be able to write it (--db)."
        )
    if not _can_create_in(folder):
        raise StartupError(
            f"The folder {folder} is read-only; SQLite must create files beside the database {path.name} (--db)."
        )


def _can_write_file(path: Path) -> bool:
    # A real open for writing, not os.access: that ignores read-only mounts, and says yes to
    # root whatever the capabilities really allow.
    try:
        with path.open("r+b"):
            return True
    except OSError:
        return False


def _can_create_in(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
