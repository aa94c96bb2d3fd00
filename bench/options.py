"""The bench's command line: what to run, as Options."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import passwords
from engine import mysql_address

HOST = "127.0.0.1"
DEFAULT_MYSQL = f"mysql://root@{HOST}:3306/"
REQUEST_TIMEOUT_S = 60.0
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_SECONDS = {"suite": 5.0}  # every other mode: 10 s per stage

MIXES: dict[str, dict[str, int]] = {
    "read": {"search_walks": 1, "catalogue": 1},
    "buy": {"buy": 1},
    "login": {"login": 1},
    "mixed": {"search_walks": 40, "catalogue": 40, "buy": 15, "login": 5},
}


@dataclass(frozen=True)
class Options:
    """What to run; db is "sqlite" or a MySQL server URL on 127.0.0.1 (dbs: all of them, for
    --suite, which runs on each in turn)."""

    mode: str
    db: str
    clients: int
    seconds: float
    mix: str
    bcrypt_cost: int
    max_requests: int
    cycles: int
    json: bool
    dbs: tuple[str, ...] = ()
    smoke: bool = False
    out: Path = RESULTS_DIR

    @property
    def warmup(self) -> float:
        """Seconds run before measuring, so connections, caches and pools are warm."""
        return min(1.0, self.seconds / 5)


def database_option(value: str) -> str:
    """--db: sqlite, mysql, or mysql://user:password@127.0.0.1:PORT/ (a server, not a database)."""
    if value == "sqlite":
        return value
    url = DEFAULT_MYSQL if value == "mysql" else value
    if not url.startswith(("mysql://", "mariadb://")):
        raise argparse.ArgumentTypeError("use sqlite, mysql or mysql://user:password@host:port/")
    try:
        host = mysql_address(url)[0]
    except ValueError as error:  # a port that is not a number
        raise argparse.ArgumentTypeError(str(error)) from None
    if host != HOST:
        raise argparse.ArgumentTypeError(f"the bench only connects to {HOST}, not {host}")
    return url


def bounded(kind: type, low: float, high: float) -> Callable[[str], Any]:
    """An argparse type: a number within [low, high]."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    parse.__name__ = kind.__name__  # argparse says "invalid int value: 'x'"
    return parse


def parse_options(argv: Sequence[str] | None) -> Options:
    """The command line as Options."""
    parser = argparse.ArgumentParser(
        prog="bench/load.py",
        description="Waymark load generator: transport, database and server side by side.",
        epilog="See bench/README.md. Everything runs on 127.0.0.1 and stops by itself.",
    )
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument(
        "--pool-check",
        dest="mode",
        action="store_const",
        const="pool",
        help="MySQL only: cost of a pooled checkout, db.py's QueuePool vs mysql.connector.pooling",
    )
    modes.add_argument(
        "--bcrypt-check",
        dest="mode",
        action="store_const",
        const="bcrypt",
        help="bcrypt hashes/s with 1 vs 4 threads, and how a login burst slows other requests",
    )
    modes.add_argument(
        "--suite",
        dest="mode",
        action="store_const",
        const="suite",
        help="the performance suite: connection sweeps, buys, a login storm and idle"
        " connections, beside the echo, Store and FastAPI ceilings; writes JSON and a PNG chart",
    )
    modes.add_argument(
        "--smoke",
        dest="mode",
        action="store_const",
        const="smoke",
        help="the suite in miniature (tiny stages, few connections): fails on any error",
    )
    parser.add_argument(
        "--db",
        type=database_option,
        action="append",
        help="sqlite (a temporary file), mysql (root@127.0.0.1:3306) or a MySQL server URL;"
        " a fresh database is created and dropped there. --suite and --smoke take it more"
        " than once [sqlite; --suite and --smoke: sqlite and mysql]",
    )
    parser.add_argument("--clients", type=bounded(int, 1, 256), default=16, help="[16]")
    parser.add_argument(
        "--seconds", type=bounded(float, 0.5, 600), help="per stage [10; --suite: 5]"
    )
    parser.add_argument("--mix", choices=sorted(MIXES), default="read", help="[read]")
    parser.add_argument(
        "--bcrypt-cost",
        type=bounded(int, 4, 14),
        # A string default goes through `type` too, so a bad variable is reported like a bad option.
        default=os.environ.get("WAYMARK_BCRYPT_COST", str(passwords.PRODUCTION_COST)),
        help="bcrypt cost of the bench members' passwords and of the server"
        " [WAYMARK_BCRYPT_COST, else 12]",
    )
    parser.add_argument(
        "--max-requests",
        type=bounded(int, 1, 10_000_000),
        default=2_000_000,
        help="stop a stage early after this many requests [2000000]",
    )
    parser.add_argument(
        "--cycles", type=bounded(int, 100, 100_000), default=2000, help="for --pool-check [2000]"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        help="where --suite and --smoke write their JSON and PNG [bench/results]",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    smoke = args.mode == "smoke"
    mode = "suite" if smoke else args.mode or "load"
    dbs = tuple(args.db or (["sqlite", DEFAULT_MYSQL] if mode == "suite" else ["sqlite"]))
    if mode != "suite" and len(dbs) > 1:
        parser.error("only --suite and --smoke take --db more than once")
    if mode == "pool" and dbs[0] == "sqlite":
        parser.error("--pool-check measures MySQL pools: add --db mysql (or a MySQL URL)")
    return Options(
        mode=mode,
        db=dbs[0],
        clients=args.clients,
        seconds=args.seconds or DEFAULT_SECONDS.get(mode, 10.0),
        mix=args.mix,
        bcrypt_cost=args.bcrypt_cost,
        max_requests=args.max_requests,
        cycles=args.cycles,
        json=args.json,
        dbs=dbs,
        smoke=smoke,
        out=args.out,
    )
