"""A database that goes away: clients hear `unavailable`, the log stays readable, and the
server carries on when the database is back. Real MySQL behind a loopback proxy we cut."""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from commands import wire_error
from engine import Database, UnreachableError, backend_from_url
from errors import DatabaseUnavailableError
from tests.fake_openlibrary import FakeOpenLibrary
from tests.ports import unused_port
from tests.tcp_proxy import TcpProxy
from tests.wire import ServerProcess, register_and_login


@pytest.fixture
def proxied_mysql(mysql_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy in front of the test MySQL server, and the database URL through it."""
    parts = urllib.parse.urlsplit(mysql_url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 3306) as proxy:
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
        yield proxy, urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def test_an_unreachable_database_answers_unavailable_and_logs_one_traceback(
    tmp_path: Path, proxied_mysql: tuple[TcpProxy, str], openlibrary_fake: FakeOpenLibrary
) -> None:
    proxy, url = proxied_mysql
    server = ServerProcess(tmp_path, db_url=url, openlibrary_url=openlibrary_fake.url)
    server.start()
    try:
        with server.client() as client:
            register_and_login(client, "steady")
            proxy.cut()
            errors = []
            for number in range(80):
                cmd = ("orders", "search_walks", "login", "register")[number % 4]
                args = {"username": f"user{number}", "password": "correct horse"}
                errors.append(client.error(cmd, **(args if cmd in ("login", "register") else {})))
            assert client.call("hello")  # needs no database
            proxy.restore()
            assert client.call("orders") == {"orders": []}  # the same connection, logged in
    finally:
        assert server.stop() == 0
    references = set()
    for error in errors:
        assert (error["code"], error["message"]) == (
            "unavailable",
            DatabaseUnavailableError.MESSAGE,
        )
        details = dict(error["details"])
        references.add(details.pop("request_id"))
        assert details == {"retry_after_s": 1, "cause": "database"}
    assert len(references) == 80 and all(re.fullmatch("[0-9a-f]{12}", r) for r in references)
    log = server.log()
    # One traceback per kind of fault (cannot connect; the pooled link that was cut), and
    # then a count, not 80 of them.
    assert log.count("Traceback") <= 4 * 2, log[-3000:]  # each may show its chained cause
    counts = [int(n) for n in re.findall(r"\.\.\. and (\d+) more like it", log)]
    assert sum(counts) + log.count("unavailable error") == 80, log[-3000:]
    assert len(log.splitlines()) < 400


def test_each_way_a_database_can_be_out_of_reach_is_recognised(tmp_path: Path) -> None:
    port = unused_port()
    refused = Database(backend_from_url(f"mysql://root@127.0.0.1:{port}/waymark"))
    (tmp_path / "a folder").mkdir()  # a database file that is a folder cannot be opened
    unopenable = Database(backend_from_url(f"sqlite:///{tmp_path / 'a folder'}"))
    for database in (refused, unopenable):
        for use in (database.read, database.write):
            with pytest.raises(DatabaseUnavailableError) as caught:
                use(lambda tx: tx.value("SELECT 1"))
            assert caught.value.message == DatabaseUnavailableError.MESSAGE
            assert wire_error(caught.value).code == "unavailable"
    backend = backend_from_url(f"sqlite:///{tmp_path / 'w.db'}")
    assert backend.classify(sqlite3.OperationalError("disk I/O error")) is UnreachableError
    assert backend.classify(sqlite3.OperationalError("no such table: orders")) is None
    assert backend.classify(ValueError("a bug")) is None
