"""What a stage runs against: subprocesses, certificates, databases and the server's settings."""

from __future__ import annotations

import os
import secrets
import select
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mysql.connector

import seed
import tls
from bench.options import HOST, Options
from db import Store, StoreConfig
from engine import MySQLBackend, PoolConfig, mysql_address

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
OFFLINE_OPENLIBRARY = f"http://{HOST}:9"  # the discard port: no request here reaches the internet
START_TIMEOUT_S = 60.0
PLENTY = 10_000_000  # stock per guide book, so every bench purchase is sold, not back-ordered


# ---------------------------------------------------------------------------------------------
# Subprocesses


class Service:
    """A child process that prints "listening on HOST:PORT" when ready; SIGTERM stops it."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.command = command
        self.log_path = log_path
        self.env = env
        self.port = 0
        self.process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> Service:
        self.spawn()
        try:
            self.port = self.wait_until_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self) -> None:
        """Start the child without waiting for it (see started_together)."""
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                env=self.env,
                cwd=self.log_path.parent,
            )

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_line(self, containing: str) -> str | None:
        """The first line of the child's log (stderr) holding this text."""
        lines = self.log_path.read_text().splitlines()
        return next((line for line in lines if containing in line), None)

    def wait_until_listening(self) -> int:
        """The port from the child's "listening on" line; RuntimeError if it does not come."""
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if not ready:
                continue
            line = self.process.stdout.readline()
            if "listening on" in line:
                return int(line.rsplit(":", 1)[1])
            if not line:
                break
        log = self.log_path.read_text()[-3000:]
        raise RuntimeError(f"{Path(self.command[1]).name} did not start; its log ends:\n{log}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 30 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


@contextmanager
def started_together(*services: Service) -> Iterator[None]:
    """Start every service at once, so their start-ups overlap; then wait for each; stop all."""
    with ExitStack() as stack:
        for service in services:
            stack.callback(service.stop)
            service.spawn()
        for service in services:
            service.port = service.wait_until_listening()
        yield


def echo_service(workdir: Path, cert: Path, key: Path) -> Service:
    """bench/echo_server.py on a free port."""
    script = BENCH_DIR / "echo_server.py"
    command = [sys.executable, str(script), "--cert", str(cert), "--key", str(key)]
    return Service(command, workdir / "echo.log")


def server_environment(options: Options, extra: dict[str, str] | None = None) -> dict[str, str]:
    """server.py's environment: ours, with the bench's bcrypt cost and any extras."""
    return {
        **os.environ,
        "WAYMARK_BCRYPT_COST": str(options.bcrypt_cost),
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }


def server_service(url: str, workdir: Path, cert: Path, key: Path, env: dict[str, str]) -> Service:
    """server.py on a free port of 127.0.0.1, with Open Library pointed at nowhere."""
    command = [
        sys.executable, str(PROJECT_DIR / "server.py"),
        "--host", HOST, "--port", "0", "--db", url, "--cert", str(cert), "--key", str(key),
        "--openlibrary-url", OFFLINE_OPENLIBRARY,
    ]  # fmt: skip
    return Service(command, workdir / "server.log", env)


def peer_service(
    url: str, workdir: Path, cert: Path, key: Path, pool_size: int, snapshot: bool = False
) -> Service:
    """bench/peer.py (FastAPI under uvicorn) on a free port of 127.0.0.1, on the same database;
    with snapshot, its walk search reads a 1 s snapshot as server.py's does."""
    command = [
        sys.executable, str(BENCH_DIR / "peer.py"),
        "--db", url, "--cert", str(cert), "--key", str(key), "--pool-size", str(pool_size),
    ]  # fmt: skip
    if snapshot:
        command.append("--snapshot")
    return Service(command, workdir / ("peer-snapshot.log" if snapshot else "peer.log"))


@dataclass(frozen=True)
class ServerSettings:
    """The server settings the bench sizes itself by and reports."""

    bcrypt_cost: int
    hash_concurrency: int
    pool_size: int


def settings_of(env: dict[str, str]) -> ServerSettings:
    """The settings server.py will run with in this environment (what the report shows)."""
    # The bench's one use of the server's configuration code, so a move of load_config to
    # another module changes this line only.
    from settings import load_config

    config = load_config({}, env)
    return ServerSettings(config.bcrypt_cost, config.hash_concurrency, config.pool_size)


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key."""
    cert, key = workdir / "server.crt", workdir / "server.key"
    tls.ensure_certificate(cert, key)
    return cert, key


# ---------------------------------------------------------------------------------------------
# Databases


def mysql_admin(server_url: str) -> Any:
    """A root-ish connection to the MySQL server of a URL (no database selected)."""
    host, port, user, password, _ = mysql_address(server_url)
    options = MySQLBackend(host, port, user, password, "").connect_options()
    del options["database"]  # the bench makes its own databases on this connection
    return mysql.connector.connect(**options)


def mysql_url(server_url: str, database: str) -> str:
    """The URL of one database on the MySQL server of server_url."""
    host, port, user, password, _ = mysql_address(server_url)
    login = urllib.parse.quote(user, safe="")
    if password:
        login += ":" + urllib.parse.quote(password, safe="")
    return f"mysql://{login}@{host}:{port}/{database}"


def safe_url(server_url: str) -> str:
    """The MySQL server's URL without its password."""
    host, port, user, _, _ = mysql_address(server_url)
    return f"mysql://{urllib.parse.quote(user, safe='')}@{host}:{port}/"


def describe_db(db: str) -> str:
    """--db for a report: SQLite, or the MySQL server without its password."""
    return "sqlite (temporary file)" if db == "sqlite" else safe_url(db)


def mysql_driver() -> dict[str, Any]:
    """Which MySQL driver runs: mysql-connector-python, with its C extension or pure Python."""
    return {
        "package": "mysql-connector-python",
        "version": mysql.connector.__version__,
        "HAVE_CEXT": bool(mysql.connector.HAVE_CEXT),
    }


@contextmanager
def fresh_database(db: str, workdir: Path, label: str) -> Iterator[str]:
    """The URL of a new, empty database: a file in workdir, or a MySQL database dropped after."""
    if db == "sqlite":
        yield f"sqlite:///{workdir / f'{label}.db'}"
        return
    name = f"waymark_bench_{os.getpid()}_{label}_{secrets.token_hex(3)}"
    with closing(mysql_admin(db)) as admin:
        cursor = admin.cursor()
        cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        try:
            yield mysql_url(db, name)
        finally:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")


@contextmanager
def seeded_store(url: str, pool_size: int) -> Iterator[Store]:
    """A Store on the database with the sample catalogue and stock enough for any run."""
    store = seed.open_store(url, StoreConfig(pool=PoolConfig(pool_size=pool_size)))
    try:
        for book in store.shop_books():
            store.restock(book["number"], PLENTY, int(time.time()))
        yield store
    finally:
        store.close()
