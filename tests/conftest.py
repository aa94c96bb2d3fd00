"""Shared fixtures: real MySQL and SQLite stores, a real server process, a fake Open Library."""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import mysql.connector
import pytest
from hypothesis import HealthCheck, settings

import seed
from db import Store, StoreConfig
from engine import PoolConfig, mysql_address
from tests.fake_openlibrary import FakeOpenLibrary
from tests.wire import ServerProcess

DEFAULT_TEST_MYSQL = "mysql://root@127.0.0.1:3306/"
# scripts/mutate (mutmut) selects this profile: the same examples for every mutant, so a mutant
# is killed by a test and never by chance, and no deadline, since mutmut slows every call.
settings.register_profile("mutation", derandomize=True, deadline=None)
# Every other run: no per-example deadline and no "too slow" check, since both measure wall
# time, and a shared, busy machine can make a correct test miss them (a failure by chance).
# Hypothesis's own --hypothesis-profile option is applied after this and wins over it.
settings.register_profile("waymark", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("waymark")

TABLES_CHILD_FIRST = (
    "notices", "idempotency_keys", "holds", "loans", "lending_books", "order_lines", "orders",
    "walks", "shop_books", "login_failures", "login_names", "sessions", "users",
    "schema_version",
)  # fmt: skip


def _mysql_admin(url: str) -> mysql.connector.MySQLConnection:
    host, port, user, password, _ = mysql_address(url)
    return mysql.connector.connect(
        host=host, port=port, user=user, password=password, autocommit=True, connection_timeout=5
    )


@pytest.fixture(scope="session")
def mysql_server_url() -> str:
    """A MySQL server for the tests; a missing one fails loudly, never skips."""
    url = os.environ.get("WAYMARK_TEST_MYSQL", DEFAULT_TEST_MYSQL)
    try:
        _mysql_admin(url).close()
    except mysql.connector.Error as error:
        pytest.fail(
            f"The MySQL tests need a MySQL/MariaDB server and none answers at {url!r} ({error})."
            " Run scripts/test, which finds or starts one, or set WAYMARK_TEST_MYSQL.",
            pytrace=False,
        )
    return url


@pytest.fixture(scope="session")
def mysql_database(mysql_server_url: str) -> Iterator[str]:
    """A private database for this test session, dropped at the end; yields its URL."""
    name = f"waymark_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = _mysql_admin(mysql_server_url)
    admin.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    parts = urllib.parse.urlsplit(mysql_server_url)
    url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
    try:
        yield url
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def wipe_mysql(url: str) -> None:
    """Empty every table so the next seed.open_store() loads the sample catalogue afresh."""
    connection = _mysql_admin(url)
    cursor = connection.cursor()
    cursor.execute(f"USE {mysql_address(url)[4]}")
    cursor.execute("SHOW TABLES")
    existing = {row[0] for row in cursor.fetchall()}
    for table in TABLES_CHILD_FIRST:
        if table in existing:
            cursor.execute(f"DELETE FROM {table}")
    connection.close()


@pytest.fixture(params=["sqlite", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'waymark.db'}"
    url = request.getfixturevalue("mysql_database")
    wipe_mysql(url)
    return url


@pytest.fixture
def mysql_url(mysql_database: str) -> str:
    """A fresh MySQL database URL (for tests that are about MySQL itself)."""
    wipe_mysql(mysql_database)
    return mysql_database


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A Store holding the sample catalogue, on each backend in turn."""
    opened = seed.open_store(db_url, StoreConfig(pool=PoolConfig(pool_size=8)))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="session")
def fake_openlibrary() -> Iterator[FakeOpenLibrary]:
    """One local stand-in for Open Library for the whole session."""
    with FakeOpenLibrary() as fake:
        yield fake


@pytest.fixture
def openlibrary_fake(fake_openlibrary: FakeOpenLibrary) -> Iterator[FakeOpenLibrary]:
    """The fake Open Library, reset (mode, counters, data) before and after each test."""
    fake_openlibrary.reset()
    yield fake_openlibrary
    fake_openlibrary.reset()


@pytest.fixture
def server(tmp_path: Path, openlibrary_fake: FakeOpenLibrary) -> Iterator[ServerProcess]:
    """A real server.py process on 127.0.0.1 (port 0) with SQLite and the fake Open Library."""
    db = f"sqlite:///{tmp_path / 'server.db'}"
    with ServerProcess(tmp_path, db_url=db, openlibrary_url=openlibrary_fake.url) as process:
        yield process


@pytest.fixture
def backend_server(
    tmp_path: Path, db_url: str, openlibrary_fake: FakeOpenLibrary
) -> Iterator[ServerProcess]:
    """A real server.py process, once on SQLite and once on MySQL."""
    with ServerProcess(tmp_path, db_url=db_url, openlibrary_url=openlibrary_fake.url) as process:
        yield process


@pytest.fixture
def two_mysql_servers(
    tmp_path: Path, mysql_url: str, openlibrary_fake: FakeOpenLibrary
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server.py processes sharing one MySQL database (and one certificate)."""
    url = openlibrary_fake.url
    with (
        ServerProcess(tmp_path, db_url=mysql_url, openlibrary_url=url) as first,
        ServerProcess(tmp_path, db_url=mysql_url, openlibrary_url=url) as second,
    ):
        yield first, second
