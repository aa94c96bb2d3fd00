"""The Store itself on both backends: schema, seeding, accounts, sessions, driver errors."""

from __future__ import annotations

import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

import engine
import migrations
import seed
from commands import wire_error
from db import Store, StoreConfig
from engine import PoolConfig
from errors import DomainError
from snapshot import CatalogueSnapshot

NOW = 1_800_000_000


def test_the_schema_version_is_recorded(store: Store) -> None:
    assert store.schema_version() == migrations.SCHEMA_VERSION


def test_the_sample_catalogue_is_loaded_once(db_url: str) -> None:
    first = seed.open_store(db_url)
    second = seed.open_store(db_url)  # a second start must not load it again
    try:
        assert len(second.shop_books()) == 7
        assert len(second.walks()) == 16
        assert second.catalogue(None, 200, 0, NOW)[1] >= 20
    finally:
        first.close()
        second.close()


def test_processes_starting_together_seed_exactly_once(db_url: str) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            seed.open_store(db_url).close()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = seed.open_store(db_url)
    try:
        assert len(store.shop_books()) == 7
    finally:
        store.close()


def test_create_user_refuses_a_name_that_differs_only_in_case(store: Store) -> None:
    store.create_user("Hiker", "hash", NOW)
    with pytest.raises(DomainError) as caught:
        store.create_user("hIKER", "hash", NOW)
    assert wire_error(caught.value).code == "username_taken"


def test_sessions_are_found_by_hash_until_they_expire(store: Store) -> None:
    user = store.create_user("sess", "hash", NOW)
    expires = store.create_session(user["id"], "ab" * 32, NOW)
    assert expires == NOW + StoreConfig().session_ttl_s
    assert store.session_user("ab" * 32, NOW + 10)["username"] == "sess"  # type: ignore[index]
    assert store.session_user("ab" * 32, expires) is None
    assert store.session_user("cd" * 32, NOW) is None
    store.end_session("ab" * 32)
    assert store.session_user("ab" * 32, NOW + 10) is None


def test_login_attempts_are_counted_per_user_and_address_and_forgotten(store: Store) -> None:
    for offset in range(3):
        store.start_login("ann", "10.0.0.1", NOW + offset, keep_s=900)
    bob = store.start_login("bob", "10.0.0.1", NOW + 5, keep_s=900)
    assert bob.user is None
    assert bob.failures_by_user == []  # an attempt is never among its own earlier failures
    assert bob.failures_by_address == [NOW, NOW + 1, NOW + 2]
    ann = store.start_login("ann", "10.0.0.1", NOW + 6, keep_s=900)
    assert ann.failures_by_user == [NOW, NOW + 1, NOW + 2]
    assert ann.failures_by_address == [NOW, NOW + 1, NOW + 2, NOW + 5]
    # Refused before its password was checked: forgotten, so it prolongs nothing.
    assert store.finish_login(bob, "bob", None, NOW + 6) is None
    assert store.start_login("bob", "10.0.0.9", NOW + 7, keep_s=900).failures_by_user == []
    user = store.create_user("ann", "hash", NOW)
    ann = store.start_login("ann", "10.0.0.1", NOW + 8, keep_s=900)
    assert ann.user is not None and ann.user["id"] == user["id"]
    expires = store.finish_login(ann, "ann", "ab" * 32, NOW + 8)
    assert expires == NOW + 8 + StoreConfig().session_ttl_s
    assert store.session_user("ab" * 32, NOW + 9)["username"] == "ann"  # type: ignore[index]
    assert store.start_login("ann", "10.0.0.3", NOW + 9, keep_s=900).failures_by_user == []
    later = store.start_login("carl", "10.0.0.1", NOW + 2000, keep_s=900)
    assert later.failures_by_address == []  # old ones forgotten


def test_a_password_change_ends_every_session_and_a_login_that_proved_the_old_one(
    store: Store,
) -> None:
    user = store.create_user("swapper", "old-hash", NOW)
    store.create_session(user["id"], "ee" * 32, NOW)
    late_login = store.start_login("swapper", "10.0.0.1", NOW, keep_s=900)
    change = store.start_login("swapper", "10.0.0.2", NOW, keep_s=900)
    assert late_login.user is not None and late_login.user["password_hash"] == "old-hash"
    expires = store.finish_login(change, "swapper", "cd" * 32, NOW, "new-hash", end_sessions=True)
    assert expires == NOW + StoreConfig().session_ttl_s
    # The login checked the old hash before the change committed: it must not get a session.
    assert store.finish_login(late_login, "swapper", "ab" * 32, NOW) is None
    assert store.session_user("ab" * 32, NOW) is None
    assert store.session_user("ee" * 32, NOW) is None  # ended by the change
    assert store.session_user("cd" * 32, NOW)["username"] == "swapper"  # type: ignore[index]
    again = store.start_login("swapper", "10.0.0.1", NOW + 1, keep_s=900)
    assert again.user is not None and again.user["password_hash"] == "new-hash"


def test_make_admin_creates_or_promotes(store: Store) -> None:
    created, was_new = store.make_admin("chief", "hash", NOW)
    assert was_new and created["role"] == "admin"
    store.create_user("deputy", "hash", NOW)
    promoted, was_new = store.make_admin("DEPUTY", "new-hash", NOW)
    assert not was_new and promoted["username"] == "deputy"
    deputy = store.start_login("deputy", "10.0.0.1", NOW, keep_s=900).user
    assert deputy is not None and deputy["password_hash"] == "new-hash"


def test_sql_metacharacters_are_only_ever_data(store: Store) -> None:
    hostile = "x'); DROP TABLE users; --"
    catalogue = CatalogueSnapshot(store).current()  # the walk search filters the loaded walks
    walks, total = catalogue.search_walks(hostile, None, None, None, 50, 0)
    assert (walks, total) == ([], 0)
    assert catalogue.search_walks("%", None, None, None, 50, 0)[1] == 0  # literal, not a wildcard
    assert catalogue.search_walks("_", None, None, None, 50, 0)[1] == 0
    assert store.catalogue("%", 50, 0, NOW)[1] == 0
    assert len(store.shop_books()) == 7


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://x/y", "must start with sqlite:/// or mysql://"),
        ("sqlite://", "sqlite:///path"),
        ("mysql://127.0.0.1/", "mysql://user:password@host"),
    ],
)
def test_bad_database_urls_are_explained(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        engine.backend_from_url(url)


def test_mysql_urls_are_parsed_with_escapes() -> None:
    backend = engine.backend_from_url("mysql://shop%40keeper:p%3Ass@db.example:3307/waymark")
    assert isinstance(backend, engine.MySQLBackend)
    assert (backend.user, backend.password, backend.host, backend.port, backend.database) == (
        "shop@keeper", "p:ss", "db.example", 3307, "waymark",
    )  # fmt: skip
    assert "p:ss" not in backend.describe()


def test_sqlite_urls_may_be_relative_or_absolute(tmp_path: Path) -> None:
    assert engine.backend_from_url("sqlite:///data/w.db").path == Path("data/w.db")  # type: ignore[attr-defined]
    absolute = engine.backend_from_url(f"sqlite:///{tmp_path}/w.db")
    assert absolute.path == tmp_path / "w.db"  # type: ignore[attr-defined]


def test_the_sqlite_schema_is_derived_from_schema_sql() -> None:
    statements = engine.SQLiteBackend(Path("unused")).ddl(migrations.SCHEMA_PATH.read_text())
    joined = "\n".join(statements)
    assert "ENGINE" not in joined and "AUTO_INCREMENT" not in joined
    assert "CREATE INDEX IF NOT EXISTS walks_by_area ON walks (area_key)" in statements


def test_schema_sql_loads_with_the_mysql_client_as_it_is(mysql_server_url: str) -> None:
    client = shutil.which("mariadb") or shutil.which("mysql")
    assert client, "the mysql command-line client is needed for this test"
    parts = urllib.parse.urlsplit(mysql_server_url)
    base = [client, "-h", parts.hostname or "127.0.0.1", "-P", str(parts.port or 3306),
            "-u", urllib.parse.unquote(parts.username or "root")]  # fmt: skip
    if parts.password:
        base.append(f"-p{urllib.parse.unquote(parts.password)}")
    name = "waymark_schema_check"
    subprocess.run(
        [*base, "-e", f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"],
        check=True,
        timeout=60,
    )
    try:
        for _ in range(2):  # twice: every statement is safe to run again
            with migrations.SCHEMA_PATH.open() as schema:
                subprocess.run([*base, name], stdin=schema, check=True, timeout=60)
        tables = subprocess.run(
            [*base, name, "-N", "-e", "SHOW TABLES"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        assert {
            "users",
            "sessions",
            "shop_books",
            "walks",
            "orders",
            "order_lines",
            "loans",
            "holds",
        } <= set(tables)
    finally:
        subprocess.run([*base, "-e", f"DROP DATABASE IF EXISTS {name}"], check=True, timeout=60)


def test_a_dropped_mysql_connection_is_replaced(mysql_url: str) -> None:
    import mysql.connector

    store = seed.open_store(mysql_url, StoreConfig(pool=PoolConfig(pool_size=1)))
    try:
        assert len(store.shop_books()) == 7
        parts = urllib.parse.urlsplit(mysql_url)
        admin = mysql.connector.connect(
            host=parts.hostname, port=parts.port, user="root", autocommit=True
        )
        cursor = admin.cursor()
        cursor.execute(
            "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
            (parts.path[1:],),
        )
        for (thread_id,) in cursor.fetchall():
            cursor.execute(f"KILL {int(thread_id)}")
        admin.close()
        assert len(store.shop_books()) == 7  # a read on the dead link is retried on a new one
        user = store.create_user("after-kill", "hash", NOW)  # so is a write that had not begun
        assert user["username"] == "after-kill"
    finally:
        store.close()


def test_a_version_1_database_is_upgraded_in_place(db_url: str) -> None:
    """A database made before the version, cancelled and 1.2 columns existed gains them, keeping
    its data."""
    store = seed.open_store(db_url)
    user = store.create_user("early", "hash", NOW)
    store.place_order(user["id"], {101: 2}, NOW)
    backend = store.database.backend
    store.close()
    connection = backend.connect()
    cursor = connection.cursor()
    for table in ("users", "shop_books", "lending_books"):
        cursor.execute(f"ALTER TABLE {table} DROP COLUMN version")
    for column in ("email", "blocked_reason", "must_change_password"):
        cursor.execute(f"ALTER TABLE users DROP COLUMN {column}")
    _drop_backorder_cancelled(backend, cursor)
    cursor.execute("UPDATE schema_version SET version = 1 WHERE id = 1")
    connection.commit()
    connection.close()

    upgraded = seed.open_store(db_url)
    again = seed.open_store(db_url)  # a second start finds nothing left to do
    try:
        assert upgraded.schema_version() == migrations.SCHEMA_VERSION == 4
        [old_order] = upgraded.orders_for(user["id"])
        assert [line["backorder_cancelled"] for line in old_order["lines"]] == [0]
        assert len(upgraded.shop_books()) == 7
        upgraded.place_order(user["id"], {101: 1}, NOW + 1)  # writes the new columns
        assert len(again.orders_for(user["id"])) == 2
        upgraded.restock(101, 1, NOW + 2)
    finally:
        upgraded.close()
        again.close()


def _drop_backorder_cancelled(backend: engine.Backend, cursor: Any) -> None:
    """Take order_lines back to its version 2 form."""
    if not isinstance(backend, engine.SQLiteBackend):
        cursor.execute(
            "ALTER TABLE order_lines DROP CONSTRAINT order_lines_cancelled_within,"
            " DROP COLUMN backorder_cancelled"
        )
        return
    # SQLite cannot drop a column that a table CHECK names: rebuild the table without both.
    cursor.execute("SELECT sql FROM sqlite_master WHERE name = 'order_lines'")
    (table_sql,) = cursor.fetchone()
    kept = [line for line in table_sql.splitlines() if "backorder_cancelled" not in line]
    columns = "id, order_id, book_number, quantity, fulfilled, backordered,"
    columns += " backorder_outstanding, unit_price_pence"
    cursor.execute("\n".join(kept).replace("order_lines", "order_lines_v2", 1))
    cursor.execute(f"INSERT INTO order_lines_v2 ({columns}) SELECT {columns} FROM order_lines")
    cursor.execute("DROP TABLE order_lines")
    cursor.execute("ALTER TABLE order_lines_v2 RENAME TO order_lines")


def test_parallel_login_tries_at_one_name_each_see_every_try_before_them(store: Store) -> None:
    """The name's counter row serialises tries: no two parallel guesses see the same count.

    Without it, MySQL's snapshot reads let parallel tries each miss the others' failure rows,
    and more guesses than the throttle allows got a bcrypt check (issue 18).
    """
    tries = 12
    barrier = threading.Barrier(tries)
    seen: list[int] = []

    def guess(number: int) -> None:
        barrier.wait()
        attempt = store.start_login("besieged", f"10.0.0.{number}", 1_000_000, 900)
        seen.append(len(attempt.failures_by_user))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(tries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(seen) == list(range(tries))
