"""The server's settings: one table of options, and the objects they configure."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import passwords
import protocol
import rules
import seed
from db import Store, StoreConfig
from engine import PoolConfig

# The line "data in ..." belongs to the server program, whichever of its modules writes it.
log = logging.getLogger("waymark.server")

PROJECT_DIR = Path(__file__).resolve().parent

_STORE = StoreConfig()
_THROTTLE_MINUTES = rules.HOUSE_THROTTLE.failure_window_s // 60

T = TypeVar("T")


def _setting(default: T, metavar: str, help: str) -> T:
    """A ServerConfig field: its default, its --help metavar and its help text."""
    return field(default=default, metadata={"metavar": metavar, "help": help})


@dataclass
class ServerConfig:
    """Every setting, each with a safe default and an environment variable WAYMARK_<NAME>."""

    host: str = _setting("127.0.0.1", "HOST", "address to listen on")
    port: int = _setting(7443, "N", "TCP port (0 picks a free one)")
    db: str = _setting(
        f"sqlite:///{PROJECT_DIR / 'data' / 'waymark.db'}",
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
    max_connections_per_address: int = _setting(
        256, "N", "connections one client address may hold at once (0: no limit)"
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
    pool_size: int = _setting(_STORE.pool.pool_size, "N", "database connections kept open")
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
    login_failures_per_user: int = _setting(
        rules.HOUSE_THROTTLE.failures_per_user,
        "N",
        f"failed logins per username in {_THROTTLE_MINUTES} minutes before throttling",
    )
    login_failures_per_address: int = _setting(
        rules.HOUSE_THROTTLE.failures_per_address,
        "N",
        f"failed logins per address in {_THROTTLE_MINUTES} minutes before throttling",
    )
    log_level: str = _setting("INFO", "LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR")


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
    return ServerConfig(**values)


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
        failures_per_user=config.login_failures_per_user,
        failures_per_address=config.login_failures_per_address,
    )


def store_config(config: ServerConfig) -> StoreConfig:
    """The pool, session and lending settings of the store."""
    return StoreConfig(
        pool=PoolConfig(pool_size=config.pool_size),
        session_ttl_s=config.session_ttl_s,
        lending=lending_policy(config),
    )


def open_store(config: ServerConfig) -> Store:
    """The store named by --db, with the schema ready; the caller closes it."""
    store = seed.open_store(config.db, store_config(config))
    log.info("data in %s", store.describe())
    return store
