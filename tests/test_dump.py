"""export and import: the whole database as one MySQL-dialect SQL file, and back.

Round trips are judged through the protocol: a server on the copy must answer members,
the shop and the desk as the original did, and members must log in with their old passwords.
The file must also load as it is with the real `mysql` client, as an account with rights on
one empty database alone, and import must refuse anything but an empty database and a dump.
"""

from __future__ import annotations

import csv
import os
import random
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import mysql.connector
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import db_dump as dump
import db_dump_sql
import migrations
import passwords
import seed
import server_admin
from engine import Database, PoolConfig, SQLiteBackend, backend_from_url, mysql_address
from settings import ServerConfig, load_config
from tests.fake_openlibrary import FakeOpenLibrary
from tests.wire import PROJECT_DIR, TEST_BCRYPT_COST, ServerProcess

ADMIN, ADMIN_PASSWORD = "librarian", "the librarian's own password"
# Passwords that a dump must carry as their hashes, whatever they hold.
MEMBERS = {
    "ann": "correct horse",
    "bob": 'pa\'ss\\word "quoted" 🥾 ünïcode',
    "cat": "line\nbreak and tab\t and \\0 not NUL",
}
BLOCKED, BLOCKED_PASSWORD = "dan", "dan's password"
BLOCK_REASON = "Lost 3 books; owes £5 \\ fines 'in full' — \"says\" the desk \x1a"
# Text a dump must escape: quotes, backslashes, NUL, line ends, ^Z, comment and statement
# starters, LOAD DATA's NULL, LIKE's wildcards, and characters beyond the BMP.
AWKWARD = [
    "'", '"', "\\", "\\\\", "\0", "\n", "\r", "\r\n", "\x1a", "\t", "\b", "\\'", "''", "\\N",
    "%", "_", ";", "--", "/*", "*/", "#", "`", "');DROP TABLE users;--", "\\0", "\\n", "\\Z",
    "🥾", "ü", "\u2028", "\x85", "\ufeff", "\U0010ffff", " ",
]  # fmt: skip


def config_for(url: str) -> ServerConfig:
    """The settings server.py export/import would have with --db url."""
    return load_config({"db": url, "bcrypt_cost": TEST_BCRYPT_COST}, {})


def export(url: str, path: Path) -> None:
    assert server_admin.export_database(config_for(url), path) == 0


def load(url: str, path: Path) -> None:
    assert server_admin.import_database(config_for(url), path) == 0


def rows_of(path: Path) -> list[bytes]:
    """The dump without its first line (which says when it was taken and from which engine)."""
    return path.read_bytes().split(b"\n")[1:]


def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement straight on a database; its rows."""
    backend = backend_from_url(url)
    if isinstance(backend, SQLiteBackend):
        with closing(sqlite3.connect(backend.path)) as connection:
            found = connection.execute(statement, params).fetchall()
            connection.commit()
            return found
    host, port, user, password, database = mysql_address(url)
    connection = mysql.connector.connect(
        host=host, port=port, user=user, password=password, database=database, autocommit=True
    )
    try:
        cursor = connection.cursor()
        cursor.execute(statement.replace("?", "%s"), params)
        return [tuple(row) for row in cursor.fetchall()] if cursor.with_rows else []
    finally:
        connection.close()


def row_count(url: str) -> int:
    return sum(sql(url, f"SELECT COUNT(*) FROM {t.name}")[0][0] for t in dump.schema())


@pytest.fixture
def fresh_mysql(mysql_server_url: str) -> Iterator[Callable[[], str]]:
    """Makes empty MySQL databases (each a URL), dropped with any accounts made for them."""
    host, port, user, password, _ = mysql_address(mysql_server_url)
    admin = mysql.connector.connect(
        host=host, port=port, user=user, password=password, autocommit=True
    )
    made: list[str] = []

    def make() -> str:
        name = f"waymark_dump_{os.getpid()}_{secrets.token_hex(4)}"
        admin.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        made.append(name)
        parts = urllib.parse.urlsplit(mysql_server_url)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))

    yield make
    cursor = admin.cursor()
    for name in made:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        cursor.execute(f"DROP USER IF EXISTS '{name[:32]}'@'%'")
    admin.close()


def mysql_client_load(url: str, path: Path) -> None:
    """`mysql DBNAME < FILE` as an account with every right on that database and no other."""
    host, port, user, password, database = mysql_address(url)
    account, secret = database[:32], secrets.token_hex(8)
    root = mysql.connector.connect(host=host, port=port, user=user, password=password)
    try:
        cursor = root.cursor()
        cursor.execute(f"CREATE USER '{account}'@'%' IDENTIFIED BY '{secret}'")
        cursor.execute(f"GRANT ALL PRIVILEGES ON {database}.* TO '{account}'@'%'")
    finally:
        root.close()
    with path.open("rb") as stream:
        done = subprocess.run(
            ["mysql", "--protocol=TCP", "-h", host, "-P", str(port), "-u", account,
             f"--password={secret}", database],
            stdin=stream, capture_output=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()


# A library with everything in it, built through the protocol ---------------------------------


def build_library(server: ServerProcess, url: str, workdir: Path) -> dict[str, Any]:
    """Members, orders (back-ordered, restocked, cancelled), loans, holds, notices, a block,
    an idempotent answer, awkward walks and a deleted account; facts the tests check later."""
    server.create_admin(ADMIN, ADMIN_PASSWORD)
    walks = workdir / "walks.csv"
    with walks.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["Area", "Book", "WalkName", "Distance", "Difficult", "Page", "Time"])
        writer.writerow(["Côte d'Or", "Peak District", "Bob's \"Back\\Slash\" 🥾 100%_", "2.25", "Easy", "3", "2:30"])  # fmt: skip
        writer.writerow(["Peak District", "Snowdonia", "'); DROP TABLE walks; --", "11", "Hard", "9", "5"])  # fmt: skip
    assert server_admin.import_walks(config_for(url), walks, None) == 0
    facts: dict[str, Any] = {}
    with server.client() as admin, server.client() as ann, server.client() as bob:
        clients = {"ann": ann, "bob": bob}
        for name, password in MEMBERS.items():
            with server.client() as client:
                client.call("register", username=name, password=password)
        for name in ("ann", "bob"):
            clients[name].call("login", username=name, password=MEMBERS[name])
        admin.call("login", username=ADMIN, password=ADMIN_PASSWORD)
        ann.call("set_email", email="ann@example.org")
        ann.call("buy", items=[{"book": 101, "quantity": 2}, {"book": 102, "quantity": 8}])
        facts["keyed"] = ann.keyed("buy", "ann-order-1", items=[{"book": 103, "quantity": 1}])
        owed = bob.call("buy", items=[{"book": 102, "quantity": 8}, {"book": 105, "quantity": 1}])
        admin.call("restock", book=102, quantity=2)
        bob.call("cancel_backorder", order_id=owed["order"]["id"], book=102)
        first = ann.call("borrow", book_id=4)["loan"]
        bob.call("hold", book_id=4)
        ann.call("return", loan_id=first["id"])
        ann.call("renew", loan_id=ann.call("borrow", book_id=1)["loan"]["id"])
        late = bob.call("borrow", book_id=8)["loan"]
        sql(url, "UPDATE loans SET due_at = ? WHERE id = ?", (int(time.time()) - 3 * 86_400 - 43_200, late["id"]))  # fmt: skip
        admin.call("sweep_notices")
        ann.call("mark_read", ids=[ann.call("notices")["notices"][0]["id"]])
        with server.client() as dan:
            dan.call("register", username=BLOCKED, password=BLOCKED_PASSWORD)
        admin.call("block_member", username=BLOCKED, reason=BLOCK_REASON)
        with server.client() as eve:
            eve.call("register", username="eve", password="eve's password")
            facts["eve"] = eve.call("login", username="eve", password="eve's password")["user"]
            eve.call("delete_account", password="eve's password")
    return facts


def answers(server: ServerProcess) -> dict[str, Any]:
    """What the server answers everyone: the catalogue, each member's own data, the desk."""
    seen: dict[str, Any] = {}
    with server.client() as anyone:
        seen["guide_books"] = anyone.call("guide_books")
        seen["catalogue"] = anyone.call("catalogue", limit=200)
        seen["search_walks"] = anyone.call("search_walks", limit=200)
        seen["list_areas"] = anyone.call("list_areas")
        seen["recommend_books"] = anyone.call("recommend_books", limit=50)
        seen["deleted login"] = anyone.error("login", username="eve", password="eve's password")
    for name, password in {**MEMBERS, BLOCKED: BLOCKED_PASSWORD}.items():
        with server.client() as member:
            seen[f"{name} login"] = member.call("login", username=name, password=password)["user"]
            for cmd in ("whoami", "orders", "history", "holds", "notices"):
                seen[f"{name} {cmd}"] = member.call(cmd)
    with server.client() as admin:
        admin.call("login", username=ADMIN, password=ADMIN_PASSWORD)
        for cmd in ("backorders", "overdue", "sales"):
            seen[cmd] = admin.call(cmd)
        for name in (*MEMBERS, BLOCKED):
            seen[f"member {name}"] = admin.call("member", username=name)
    return seen


def differences(seen: Any, expected: Any, path: str = "") -> list[str]:
    """Where two answers differ, as readable paths (pytest's own diff truncates them)."""
    if isinstance(seen, dict) and isinstance(expected, dict):
        keys = sorted(set(seen) | set(expected), key=str)
        return [d for k in keys for d in differences(seen.get(k), expected.get(k), f"{path}.{k}")]
    if isinstance(seen, list) and isinstance(expected, list) and len(seen) == len(expected):
        pairs = enumerate(zip(seen, expected, strict=True))
        return [d for n, (a, b) in pairs for d in differences(a, b, f"{path}[{n}]")]
    return [] if seen == expected else [f"{path}: {seen!r} != {expected!r}"]


def serve(workdir: Path, url: str, fake: FakeOpenLibrary) -> ServerProcess:
    return ServerProcess(workdir, db_url=url, openlibrary_url=fake.url)


def check_fresh_ids(server: ServerProcess, facts: dict[str, Any], original: dict[str, Any]) -> None:
    """On the copy, new rows get new ids (never a deleted account's), and a retried write
    with its idempotency key is answered from the stored answer, not done again."""
    with server.client() as fay, server.client() as ann:
        fay.call("register", username="fay", password="fay's password")
        assert fay.call("login", username="fay", password="fay's password")["user"]["id"] > facts["eve"]["id"]  # fmt: skip
        ann.call("login", username="ann", password=MEMBERS["ann"])
        again = ann.keyed("buy", "ann-order-1", items=[{"book": 103, "quantity": 1}])
        assert again["replayed"] is True and again["result"] == facts["keyed"]["result"]
        newest = max(order["id"] for order in original["ann orders"]["orders"])
        assert ann.call("buy", items=[{"book": 106, "quantity": 1}])["order"]["id"] > newest
        loan = ann.call("borrow", book_id=2)["loan"]
        assert loan["id"] > max(entry["id"] for entry in original["ann history"]["loans"])


# Round trips --------------------------------------------------------------------------------


def test_sqlite_to_mysql_to_sqlite_answers_as_the_original(
    tmp_path: Path, fresh_mysql: Callable[[], str], openlibrary_fake: FakeOpenLibrary
) -> None:
    original = f"sqlite:///{tmp_path / 'original.db'}"
    with serve(tmp_path, original, openlibrary_fake) as server:
        facts = build_library(server, original, tmp_path)
        before = answers(server)
    first, second = tmp_path / "first.sql", tmp_path / "second.sql"
    export(original, first)
    middle = fresh_mysql()
    load(middle, first)
    export(middle, second)
    assert rows_of(second) == rows_of(first)  # byte for byte, whichever engine wrote it
    with serve(tmp_path, middle, openlibrary_fake) as server:
        assert differences(answers(server), before) == []
    last = f"sqlite:///{tmp_path / 'last.db'}"
    load(last, second)
    with serve(tmp_path, last, openlibrary_fake) as server:
        assert differences(answers(server), before) == []
        check_fresh_ids(server, facts, before)


def test_mysql_to_sqlite_answers_as_the_original(
    tmp_path: Path, fresh_mysql: Callable[[], str], openlibrary_fake: FakeOpenLibrary
) -> None:
    original = fresh_mysql()
    with serve(tmp_path, original, openlibrary_fake) as server:
        facts = build_library(server, original, tmp_path)
        before = answers(server)
    path = tmp_path / "library.sql"
    export(original, path)
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    load(copy, path)
    with serve(tmp_path, copy, openlibrary_fake) as server:
        assert differences(answers(server), before) == []
        check_fresh_ids(server, facts, before)


def test_the_real_mysql_client_loads_the_dump_into_an_empty_database(
    tmp_path: Path, fresh_mysql: Callable[[], str], openlibrary_fake: FakeOpenLibrary
) -> None:
    original = f"sqlite:///{tmp_path / 'original.db'}"
    with serve(tmp_path, original, openlibrary_fake) as server:
        facts = build_library(server, original, tmp_path)
        before = answers(server)
    path = tmp_path / "library.sql"
    export(original, path)
    assert path.stat().st_mode & 0o777 == 0o600  # password hashes and session keys inside
    text = path.read_text(encoding="utf-8")
    assert "CREATE DATABASE" not in text and "\nUSE " not in text
    copy = fresh_mysql()
    mysql_client_load(copy, path)
    with serve(tmp_path, copy, openlibrary_fake) as server:
        assert differences(answers(server), before) == []
        check_fresh_ids(server, facts, before)


def test_progress_stays_off_a_terminal_and_the_summary_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original, copy = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    seed.open_store(original).close()
    export(original, tmp_path / "a.sql")
    load(copy, tmp_path / "a.sql")
    out, err = capsys.readouterr()
    assert err == ""
    exported, imported = out.splitlines()
    assert exported.startswith("Exported 14 tables, 49 rows from the SQLite database")
    assert imported.startswith("Imported 14 tables, 49 rows from") and imported.endswith(" s.")


def test_every_table_of_the_schema_is_in_the_dump_parents_first() -> None:
    tables = [t.name for t in dump.schema()]
    schema = migrations.SCHEMA_PATH.read_text(encoding="utf-8")
    assert sorted(tables) == sorted(set(_created_tables(schema)))
    for position, table in enumerate(dump.schema()):
        assert all(tables.index(parent) < position for parent in table.parents)


def _created_tables(schema: str) -> list[str]:
    return [line.split()[5] for line in schema.splitlines() if line.startswith("CREATE TABLE")]


# A live server: the export is one moment ----------------------------------------------------


def test_an_export_taken_while_members_buy_is_one_moment(
    tmp_path: Path, db_url: str, openlibrary_fake: FakeOpenLibrary
) -> None:
    initial = {book.number: book.in_stock for book in seed.shop_books()}
    dumps: list[Path] = []
    with serve(tmp_path, db_url, openlibrary_fake) as server:
        server.create_admin(ADMIN, ADMIN_PASSWORD)
        buyers = [threading.Thread(target=_buy_all_you_may, args=(server, f"buyer{n}")) for n in range(6)]  # fmt: skip
        for buyer in buyers:
            buyer.start()
        while any(b.is_alive() for b in buyers) and len(dumps) < 12:
            dumps.append(tmp_path / f"during-{len(dumps)}.sql")
            export(db_url, dumps[-1])
            time.sleep(0.1)
        for buyer in buyers:
            buyer.join(timeout=120)
    orders_seen = [_check_one_moment(path, initial) for path in dumps]
    assert len(set(orders_seen)) >= 3, orders_seen  # the exports really ran among the buying
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    load(copy, dumps[len(dumps) // 2])
    with serve(tmp_path, copy, openlibrary_fake) as server, server.client() as admin:
        admin.call("login", username=ADMIN, password=ADMIN_PASSWORD)
        sent = {b["number"]: b["copies_sent"] for b in admin.call("sales")["books"]}
        for book in admin.call("guide_books")["books"]:
            assert book["in_stock"] + sent.get(book["number"], 0) == initial[book["number"]]


def _buy_all_you_may(server: ServerProcess, name: str) -> None:
    """Buy two guide books at a time, one copy each, until the per-customer limit stops every one."""
    chooser = random.Random(name)
    books = [101, 102, 103, 104, 105, 106, 107]
    with server.client() as client:
        client.call("register", username=name, password=MEMBERS["ann"])
        client.call("login", username=name, password=MEMBERS["ann"])
        while books:
            pair = chooser.sample(books, min(2, len(books)))
            answer = client.request("buy", items=[{"book": b, "quantity": 1} for b in pair])
            if answer["ok"] or answer["error"]["code"] == "unavailable":
                continue
            assert answer["error"]["code"] == "limit_exceeded", answer
            for book in pair:
                alone = client.request("buy", items=[{"book": book, "quantity": 1}])
                if not alone["ok"] and alone["error"]["code"] == "limit_exceeded":
                    books.remove(book)


def _check_one_moment(path: Path, initial: dict[int, int]) -> int:
    """The dump's stock, orders, lines and notices agree with one another; its order count."""
    tables = _read_tables(path)
    stock = {r["number"]: r["in_stock"] for r in tables["shop_books"]}
    lines_of: dict[int, list[dict[str, Any]]] = {}
    for line in tables["order_lines"]:
        lines_of.setdefault(line["order_id"], []).append(line)
    sold = Counter[int]()
    for line in tables["order_lines"]:
        sold[line["book_number"]] += line["fulfilled"]
    assert {n: stock[n] + sold[n] for n in stock} == initial
    orders = tables["orders"]
    assert {o["id"] for o in orders} == set(lines_of)
    for order in orders:
        lines = lines_of[order["id"]]
        assert order["subtotal_pence"] == sum(
            (line["quantity"] - line["backorder_cancelled"]) * line["unit_price_pence"] for line in lines
        )  # fmt: skip
    placed = [n for n in tables["notices"] if n["kind"] == "order_placed"]
    assert len(placed) == len(orders)
    return len(orders)


def _read_tables(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of a dump as dicts, read with the importer's own reader."""
    found: dict[str, list[dict[str, Any]]] = {t.name: [] for t in dump.schema()}
    with path.open("rb") as stream:
        for event in db_dump_sql.read_dump(stream, dump.schema()):
            if isinstance(event, db_dump_sql.Rows):
                names = [c.name for c in event.columns]
                found[event.table.name] += [
                    dict(zip(names, row, strict=True)) for row in event.rows
                ]
    return found


# Every string survives: hypothesis through the mysql client and through import ---------------

TEXT = st.lists(
    st.one_of(st.sampled_from(AWKWARD), st.characters(exclude_categories=("Cs",))), max_size=60
).map("".join)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(texts=st.lists(TEXT, min_size=1, max_size=10))
@example(texts=["".join(AWKWARD), "", " trailing spaces  ", "\\" * 7, "'" * 7])
def test_any_text_comes_back_as_it_was_through_mysql_and_import(
    texts: list[str], tmp_path: Path, fresh_mysql: Callable[[], str]
) -> None:
    work = tmp_path / secrets.token_hex(4)
    work.mkdir()
    source = f"sqlite:///{work / 'source.db'}"
    _database_holding(source, texts)
    path = work / "texts.sql"
    export(source, path)
    by_client, by_import, in_sqlite = fresh_mysql(), fresh_mysql(), f"sqlite:///{work / 'copy.db'}"
    mysql_client_load(by_client, path)
    load(by_import, path)
    load(in_sqlite, path)
    for url in (by_client, by_import, in_sqlite):
        assert _texts_in(url) == _texts_in(source)
        assert [r[0] for r in sql(url, "SELECT subject FROM notices ORDER BY id")] == texts


def _database_holding(url: str, texts: list[str]) -> None:
    """A database holding texts in notices (VARCHAR and TEXT) and in users (VARCHAR)."""
    database = Database(backend_from_url(url), PoolConfig(pool_size=1))
    migrations.create_or_upgrade(database)
    database.close()
    sql(url, "INSERT INTO schema_version (id, version, applied_at) VALUES (1, ?, 0)", (migrations.SCHEMA_VERSION,))  # fmt: skip
    sql(url, "INSERT INTO users (username, username_key, password_hash, created_at, email, blocked_reason) VALUES ('u', 'u', 'x', 0, ?, ?)", (texts[0], texts[-1]))  # fmt: skip
    for n, text in enumerate(texts):
        sql(url, "INSERT INTO notices (user_id, kind, dedupe_key, created_at, subject, body, details) VALUES (1, 'k', ?, 0, ?, ?, ?)", (f"key {n}", text, text * 3, text[::-1]))  # fmt: skip


def _texts_in(url: str) -> list[tuple[Any, ...]]:
    return sql(url, "SELECT subject, body, details FROM notices ORDER BY id") + sql(
        url, "SELECT email, blocked_reason FROM users"
    )


# A large library: 100,000 loans -------------------------------------------------------------


def test_a_library_of_100000_loans_moves_both_ways_within_a_minute(
    tmp_path: Path, fresh_mysql: Callable[[], str], openlibrary_fake: FakeOpenLibrary
) -> None:
    original = f"sqlite:///{tmp_path / 'big.db'}"
    _big_library(tmp_path / "big.db", members=1000, loans=100_000)
    timings = {}
    path, again = tmp_path / "big.sql", tmp_path / "again.sql"
    started = time.monotonic()
    export(original, path)
    timings["export from SQLite"] = time.monotonic() - started
    copy = fresh_mysql()
    started = time.monotonic()
    load(copy, path)
    timings["import into MySQL"] = time.monotonic() - started
    started = time.monotonic()
    export(copy, again)
    timings["export from MySQL"] = time.monotonic() - started
    started = time.monotonic()
    load(f"sqlite:///{tmp_path / 'back.db'}", again)
    timings["import into SQLite"] = time.monotonic() - started
    assert rows_of(again) == rows_of(path)
    assert sql(copy, "SELECT COUNT(*) FROM loans") == [(100_000,)]
    print("\n100,000 loans: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    assert all(seconds < 30 for seconds in timings.values()), timings
    views = []
    for url in (original, copy):
        with serve(tmp_path, url, openlibrary_fake) as server, server.client() as member:
            member.call("login", username="member7", password=MEMBERS["ann"])
            views.append((member.call("history"), member.call("notices")))
    assert views[0] == views[1] and views[0][0]["loans"]


def _big_library(path: Path, members: int, loans: int) -> None:
    """The sample library plus members and returned loans, written straight into SQLite."""
    seed.open_store(f"sqlite:///{path}").close()
    digest = passwords.PasswordHasher(TEST_BCRYPT_COST, 1).hash(MEMBERS["ann"])
    chooser = random.Random(7)
    now = int(time.time())
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.executemany(
            "INSERT INTO users (username, username_key, password_hash, created_at) VALUES (?, ?, ?, ?)",
            [(f"member{n}", f"member{n}", digest, now) for n in range(members)],
        )
        ids = [row[0] for row in connection.execute("SELECT id FROM users")]
        connection.executemany(
            "INSERT INTO loans (user_id, book_id, borrowed_at, due_at, returned_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (
                    chooser.choice(ids),
                    chooser.randint(1, 25),
                    t,
                    t + 14 * 86_400,
                    t + chooser.randint(1, 20) * 86_400,
                )  # fmt: skip
                for t in (now - chooser.randint(30, 3000) * 86_400 for _ in range(loans))
            ],
        )


# Refusals: one sentence, exit code 1, nothing loaded ------------------------------------------


def one_sentence(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("server.py: ") and err.endswith("."), err
    return err


@pytest.fixture
def sample_dump(tmp_path: Path) -> Path:
    """A dump of the sample library."""
    url = f"sqlite:///{tmp_path / 'sample.db'}"
    seed.open_store(url).close()
    path = tmp_path / "sample.sql"
    export(url, path)
    return path


def test_import_refuses_a_database_that_is_not_empty(
    db_url: str, sample_dump: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed.open_store(db_url).close()
    before = row_count(db_url)
    capsys.readouterr()
    assert server_admin.import_database(config_for(db_url), sample_dump) == 1
    assert "is not empty" in one_sentence(capsys)
    assert row_count(db_url) == before


def test_import_refuses_a_dump_of_a_newer_schema(
    tmp_path: Path, sample_dump: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = sample_dump.read_text(encoding="utf-8")
    newer = f"schema version {migrations.SCHEMA_VERSION + 1},"
    sample_dump.write_text(text.replace(f"schema version {migrations.SCHEMA_VERSION},", newer, 1))
    target = tmp_path / "target.db"
    assert server_admin.import_database(config_for(f"sqlite:///{target}"), sample_dump) == 1
    assert "newer than this Waymark's" in one_sentence(capsys)
    assert not target.exists()


def test_import_refuses_a_file_that_is_no_dump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.sql"
    path.write_text("DROP TABLE users;\n")
    target = tmp_path / "target.db"
    assert server_admin.import_database(config_for(f"sqlite:///{target}"), path) == 1
    assert f"Line 1 of {path} does not begin as a Waymark dump does" in one_sentence(capsys)
    assert not target.exists()


ROW_OF_WALKS = "(1,'Hathasage',"


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


# Each turns a good dump into a bad one, and marks the line at fault (the first holding the mark).
BROKEN: dict[str, tuple[Callable[[str], str], str]] = {
    "a statement after a row": (
        lambda t: _edit(t, ROW_OF_WALKS, "(1,1);DROP TABLE users;--\n" + ROW_OF_WALKS),
        "DROP TABLE",
    ),
    "a row with SQL after it": (
        lambda t: _edit(t, ROW_OF_WALKS, "(1,'x') OR 1=1,\n" + ROW_OF_WALKS),
        "OR 1=1",
    ),
    "an unknown table": (
        lambda t: _edit(t, "INSERT INTO `walks`", "INSERT INTO `secrets`"),
        "`secrets`",
    ),
    "an unknown column": (
        lambda t: _edit(t, "(`id`,`name`,", "(`id`,`name; DROP TABLE x`,"),
        "DROP",
    ),
    "text in a number": (lambda t: _edit(t, ROW_OF_WALKS, "('1','Hathasage',"), "('1',"),
    "a value too long": (lambda t: _edit(t, "'Hathasage'", "'" + "x" * 201 + "'"), "xxx"),
    "an unknown escape": (lambda t: _edit(t, "'Hathasage'", "'Hath\\xasage'"), "\\x"),
    "a statement of its own": (
        lambda t: _edit(t, "START TRANSACTION;", "SET GLOBAL general_log = 1;\nSTART TRANSACTION;"),
        "SET GLOBAL",
    ),
    "a raw carriage return": (lambda t: _edit(t, "'Hathasage'", "'Hatha\rsage'"), "Hatha\r"),
    "another version's row": (lambda t: _edit(t, "VALUES\n(1,4,", "VALUES\n(1,9,"), "(1,9,"),
    "a string left open": (lambda t: _edit(t, "'Hathasage',", "'" + "a" * 100_000), "aaa"),
    "cut short": (lambda t: t[: t.index(ROW_OF_WALKS) + 40], ROW_OF_WALKS),
    "rows left out": (lambda t: _edit(t, "49 rows.", "50 rows."), "50 rows."),
}


def _line_at_fault(text: str, mark: str) -> int:
    return next(n for n, line in enumerate(text.split("\n"), 1) if mark in line)


@pytest.mark.parametrize("fault", BROKEN)
def test_import_refuses_a_broken_dump_naming_the_line_and_loads_nothing(
    fault: str, db_url: str, sample_dump: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mutate, mark = BROKEN[fault]
    broken = mutate(sample_dump.read_text(encoding="utf-8"))
    sample_dump.write_bytes(broken.encode("utf-8"))
    capsys.readouterr()
    assert server_admin.import_database(config_for(db_url), sample_dump) == 1
    message = one_sentence(capsys)
    assert f"Line {_line_at_fault(broken, mark)} of {sample_dump} " in message, message
    assert row_count(db_url) == 0
    assert server_admin.import_database(config_for(db_url), sample_dump.with_name("none.sql")) == 1
    assert "Cannot read the dump" in one_sentence(capsys)


def test_export_refuses_a_database_of_a_newer_schema_or_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    seed.open_store(url).close()
    sql(url, "UPDATE schema_version SET version = ?", (migrations.SCHEMA_VERSION + 1,))
    assert server_admin.export_database(config_for(url), tmp_path / "x.sql") == 1
    assert "newer than this Waymark's" in one_sentence(capsys)
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    assert server_admin.export_database(config_for(missing), tmp_path / "x.sql") == 1
    assert "There is no SQLite database file" in one_sentence(capsys)
    assert not (tmp_path / "x.sql").exists() and not (tmp_path / "missing.db").exists()


def test_a_value_mysql_cannot_hold_stops_the_export_before_any_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    seed.open_store(url).close()
    sql(url, "UPDATE shop_books SET in_stock = 'many' WHERE number = 101")
    assert server_admin.export_database(config_for(url), tmp_path / "odd.sql") == 1
    assert "shop_books row 101 cannot be written" in one_sentence(capsys)
    assert list(tmp_path.glob("*.sql*")) == []


def test_a_database_out_of_reach_or_a_folder_missing_is_one_sentence(
    tmp_path: Path, sample_dump: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = "mysql://root@127.0.0.1:1/waymark"
    assert server_admin.export_database(config_for(nowhere), tmp_path / "x.sql") == 1
    assert "Could not reach the MySQL database waymark on 127.0.0.1:1" in one_sentence(capsys)
    assert server_admin.import_database(config_for(nowhere), sample_dump) == 1
    assert "Could not reach the MySQL database waymark on 127.0.0.1:1" in one_sentence(capsys)
    sample = config_for(f"sqlite:///{tmp_path / 'sample.db'}")
    assert server_admin.export_database(sample, tmp_path / "none" / "x.sql") == 1
    assert "Cannot write the dump" in one_sentence(capsys)


def test_the_subcommands_run_as_an_operator_types_them(tmp_path: Path, sample_dump: Path) -> None:
    copy, again = tmp_path / "copy.db", tmp_path / "again.sql"

    def server_py(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(PROJECT_DIR / "server.py"), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    loaded = server_py("import", str(sample_dump), "--db", f"sqlite:///{copy}")
    assert loaded.returncode == 0 and loaded.stdout.startswith("Imported 14 tables, 49 rows")
    refused = server_py("import", str(sample_dump), "--db", f"sqlite:///{copy}")
    assert refused.returncode == 1 and "is not empty" in refused.stderr
    exported = server_py("export", str(again), "--db", f"sqlite:///{copy}")
    assert exported.returncode == 0 and rows_of(again) == rows_of(sample_dump)
