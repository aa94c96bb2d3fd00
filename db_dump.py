"""The whole database as one SQL file in MySQL's dialect, loadable into either backend.

export() writes the schema (schema.sql's CREATE TABLE statements) and every row of every table,
read in one consistent snapshot, as a file that `mysql DBNAME < FILE` loads into an empty MySQL
or MariaDB database. load() reads such a file into an empty database of either backend through
db_dump_sql's strict reader: the file's text is never run, its values are only bound. Table and
column names come from schema.sql alone, so a table added there is carried without a change here.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import migrations
from db_dump_sql import (
    BATCH_BYTES,
    BATCH_ROWS,
    BEGIN,
    END,
    FOOTER,
    FORMAT,
    HEADER,
    SETTINGS,
    Created,
    DumpFormatError,
    Ended,
    Rows,
    Table,
    create_statement,
    insert_head,
    read_dump,
    read_header,
    read_schema,
    row_text,
)
from engine import (
    Backend,
    ConnectionLostError,
    Database,
    MySQLBackend,
    SQLiteBackend,
    Tx,
    UnreachableError,
    placeholders,
)
from errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

# Values bound in one INSERT: SQLite's smallest build-time limit, and well under MySQL's 65535.
_MAX_PARAMS = {SQLiteBackend: 999, MySQLBackend: 30_000}
_UNREACHABLE = (ConnectionLostError, UnreachableError)

Advance = Callable[[int], None]


class DumpError(Exception):
    """An export or import that cannot be done; its text is one sentence for the operator."""


@dataclass(frozen=True)
class Summary:
    """What an export or import moved, and how long it took."""

    tables: int
    rows: int
    seconds: float


def schema() -> tuple[Table, ...]:
    """schema.sql's tables, parents before the tables that refer to them."""
    return read_schema(migrations.SCHEMA_PATH.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Export


def export(database: Database, path: Path, show_progress: bool = False) -> Summary:
    """Write the whole database to path, from one consistent snapshot of a live database.

    The file appears only when it is complete (it is written beside path, then renamed), with
    mode 0600, since it holds password hashes and session keys. An older schema is upgraded
    first, as a server starting on it would. Raises DumpError when the database holds no
    Waymark data, is of a newer schema, cannot be reached, or holds a value MySQL cannot take.
    """
    started = time.monotonic()
    tables = schema()
    _check_source(database)
    try:
        temporary = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed into place, or removed
            "w",
            encoding="utf-8",
            newline="\n",
            dir=path.absolute().parent,
            prefix=f".{path.name}.",
            suffix=".partial",
            delete=False,
        )
    except OSError as error:
        raise DumpError(f"Cannot write the dump {path}: {error.strerror or error}.") from None
    try:
        with (
            temporary,
            _reachable(database),
            database.connection() as (_, tx),
            _snapshot(tx, database.backend),
        ):
            rows = _write_dump(temporary, tx, database.backend, tables, show_progress)
        os.replace(temporary.name, path)
    except BaseException:
        Path(temporary.name).unlink(missing_ok=True)
        raise
    return Summary(len(tables), rows, time.monotonic() - started)


def _check_source(database: Database) -> None:
    backend = database.backend
    if isinstance(backend, SQLiteBackend) and not backend.path.is_file():
        raise DumpError(f"There is no SQLite database file {backend.path} to export (--db).")
    with _reachable(database):
        version = database.read(lambda tx: _recorded_version(tx, backend))
    where = database.backend.describe()
    if version is None:
        raise DumpError(f"The {where} holds no Waymark data to export (no schema_version row).")
    if version > migrations.SCHEMA_VERSION:
        raise DumpError(
            f"The {where} is at schema version {version}, newer than this Waymark's"
            f" {migrations.SCHEMA_VERSION}: export it with the Waymark that serves it."
        )
    if version < migrations.SCHEMA_VERSION:
        log.info("upgrading the schema from version %d before the export", version)
        with _reachable(database):
            migrations.create_or_upgrade(database)


def _recorded_version(tx: Tx, backend: Backend) -> int | None:
    if "schema_version" not in _existing_tables(tx, backend):
        return None
    found = tx.value("SELECT version FROM schema_version WHERE id = 1")
    return None if found is None else int(found)


@contextmanager
def _snapshot(tx: Tx, backend: Backend) -> Iterator[None]:
    """One read transaction over every table: what the dump holds is one moment's data."""
    if isinstance(backend, MySQLBackend):
        # On a Galera node, first catch up with every write committed anywhere in the cluster.
        tx.value(tx.causal + "SELECT 1")
        # The pool's sessions are READ COMMITTED; this one transaction must see one moment.
        tx.run("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        tx.run("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    else:
        tx.run("BEGIN")  # WAL: the first SELECT fixes the snapshot; writers carry on meanwhile
    try:
        yield
    finally:
        tx.run("ROLLBACK")  # nothing was written


def _write_dump(
    out: IO[str], tx: Tx, backend: Backend, tables: Sequence[Table], show_progress: bool
) -> int:
    source = "MySQL" if isinstance(backend, MySQLBackend) else "SQLite"
    taken = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out.write(
        HEADER.format(format=FORMAT, version=migrations.SCHEMA_VERSION, taken=taken, source=source)
        + "\n-- Every table of a Waymark database, schema and rows. Load it into an empty"
        "\n-- database with `mysql DBNAME < FILE` (MySQL or MariaDB), or into either backend"
        "\n-- with `python server.py import FILE --db URL`. It holds password hashes and"
        "\n-- session keys: keep it as safe as the database itself.\n"
    )
    out.write("\n".join(SETTINGS) + "\n\n")
    next_ids = _next_ids(tx, backend, tables)
    for table in tables:
        out.write(create_statement(table, next_ids.get(table.name)) + "\n\n")
    total = sum(_count(tx, table) for table in tables) if show_progress else None
    out.write(BEGIN + "\n")
    written = 0
    with _progress(show_progress, "Exporting", total) as advance:
        for table in tables:
            written += _write_table(out, tx, table, written, advance)
    out.write(END + "\n" + FOOTER.format(tables=len(tables), rows=written) + "\n")
    return written


def _count(tx: Tx, table: Table) -> int:
    return int(tx.value(f"SELECT COUNT(*) FROM {table.name}"))  # noqa: S608 - schema.sql's name


def _next_ids(tx: Tx, backend: Backend, tables: Sequence[Table]) -> dict[str, int]:
    """Where each AUTO_INCREMENT counter stands, so the copy never gives out an id again
    (a notice's key, an idempotent answer or a log may still name a deleted row's id)."""
    counters: dict[str, int] = {}
    if isinstance(backend, SQLiteBackend):
        counters = {
            r["name"]: int(r["seq"]) + 1 for r in tx.rows("SELECT name, seq FROM sqlite_sequence")
        }
    result = {}
    for table in tables:
        column = table.auto_increment
        if column is None:
            continue
        if isinstance(backend, MySQLBackend):
            # SHOW CREATE TABLE reads the live counter; information_schema may cache it.
            found = tx.row(f"SHOW CREATE TABLE {table.name}")
            text = str(next(reversed(found.values()))) if found else ""
            counter = re.search(r"AUTO_INCREMENT=(\d+)", text)
            counters[table.name] = int(counter.group(1)) if counter else 1
        highest = tx.value(f"SELECT MAX({column.name}) FROM {table.name}")  # noqa: S608 - names from schema.sql
        result[table.name] = max(counters.get(table.name, 1), int(highest or 0) + 1)
    return result


def _write_table(out: IO[str], tx: Tx, table: Table, before: int, advance: Advance) -> int:
    head = insert_head(table) + "\n"
    pending: list[str] = []
    size = written = 0
    for page in _pages(tx, table):
        for row in page:
            try:
                text = row_text(table, row)
            except ValueError as error:
                key = ", ".join(
                    str(row[i]) for i, c in enumerate(table.columns) if c.name in table.primary_key
                )
                raise DumpError(
                    f"The {table.name} row {key} cannot be written for MySQL: {error}."
                ) from None
            pending.append(text)
            size += len(text)
            if len(pending) >= BATCH_ROWS or size >= BATCH_BYTES:
                out.write(head + ",\n".join(pending) + ";\n")
                pending, size = [], 0
        written += len(page)
        advance(before + written)
    if pending:
        out.write(head + ",\n".join(pending) + ";\n")
    return written


def _pages(tx: Tx, table: Table) -> Iterator[list[tuple[Any, ...]]]:
    """The table's rows in primary-key order, a page at a time (each page picks up after the
    last key seen, so a page costs the same however far into the table it is)."""
    names = ", ".join(c.name for c in table.columns)
    key = table.primary_key
    order = ", ".join(key)
    # (a > ?) OR (a = ? AND b > ?) ...: "after this key", in SQL both engines plan well.
    after = " OR ".join(
        "(" + " AND ".join([f"{k} = ?" for k in key[:i]] + [f"{key[i]} > ?"]) + ")"
        for i in range(len(key))
    )
    first = f"SELECT {names} FROM {table.name} ORDER BY {order} LIMIT {BATCH_ROWS}"  # noqa: S608 - names from schema.sql
    later = f"SELECT {names} FROM {table.name} WHERE {after} ORDER BY {order} LIMIT {BATCH_ROWS}"  # noqa: S608 - names from schema.sql
    statement, params = first, ()
    while True:
        found = tx.rows(statement, params)
        if found:
            yield [tuple(r[c.name] for c in table.columns) for r in found]
        if len(found) < BATCH_ROWS:
            return
        last = found[-1]
        params = tuple(last[k] for i in range(len(key)) for k in key[: i + 1])
        statement = later


# ---------------------------------------------------------------------------------------------
# Import


def load(database: Database, path: Path, show_progress: bool = False) -> Summary:
    """Load a dump made by export() into an empty database of either backend, all or nothing.

    Raises DumpError, as one sentence, for a file that cannot be read or is not a Waymark dump
    (naming the line), a dump of a newer schema, a database that is not empty, and rows the
    database refuses; the database then holds no row of the dump.
    """
    started = time.monotonic()
    tables = schema()
    version = _dump_version(path)
    if version > migrations.SCHEMA_VERSION:
        raise DumpError(
            f"The dump {path} is of schema version {version}, newer than this Waymark's"
            f" {migrations.SCHEMA_VERSION}: import it with a newer Waymark."
        )
    with _reachable(database):
        occupied = database.read(lambda tx: _first_with_rows(tx, database.backend, tables))
    if occupied is not None:
        raise DumpError(
            f"The {database.backend.describe()} is not empty (its table {occupied} has rows);"
            " import loads only into an empty database."
        )
    size = path.stat().st_size

    def work(tx: Tx) -> tuple[Ended, dict[str, int]]:
        with path.open("rb") as stream, _progress(show_progress, "Importing", size) as advance:
            ended, next_ids = _insert_all(database, tx, read_dump(stream, tables), advance)
        if isinstance(database.backend, SQLiteBackend):
            _set_sqlite_counters(tx, next_ids)
        return ended, next_ids

    try:
        with _reachable(database):
            migrations.create_or_upgrade(database)
            ended, next_ids = database.write(work)
            if isinstance(database.backend, MySQLBackend):
                database.read(lambda tx: _set_mysql_counters(tx, tables, next_ids))
    except DumpFormatError as error:
        raise DumpError(error.naming(path)) from None
    return Summary(ended.tables, ended.rows, time.monotonic() - started)


def _dump_version(path: Path) -> int:
    try:
        with path.open("rb") as stream:
            return read_header(stream).version
    except OSError as error:
        raise DumpError(f"Cannot read the dump {path}: {error.strerror or error}.") from None
    except DumpFormatError as error:
        raise DumpError(error.naming(path)) from None


def _first_with_rows(tx: Tx, backend: Backend, tables: Sequence[Table]) -> str | None:
    existing = _existing_tables(tx, backend)
    for table in tables:
        if table.name in existing and tx.value(f"SELECT 1 FROM {table.name} LIMIT 1") is not None:  # noqa: S608 - a name from schema.sql
            return table.name
    return None


def _insert_all(
    database: Database, tx: Tx, events: Iterator[Any], advance: Advance
) -> tuple[Ended, dict[str, int]]:
    """Insert every row the dump holds; its closing event, and where its counters stood."""
    next_ids: dict[str, int] = {}
    for event in events:
        if isinstance(event, Created) and event.next_id is not None:
            next_ids[event.table.name] = event.next_id
        elif isinstance(event, Rows):
            _insert(database, tx, event)
            advance(event.offset)
        elif isinstance(event, Ended):
            return event, next_ids
    raise AssertionError("read_dump ends with Ended or raises")


def _insert(database: Database, tx: Tx, batch: Rows) -> None:
    backend = database.backend
    # Names from the schema's own Column objects; the file's text only chose which ones.
    names = ", ".join(c.name for c in batch.columns)
    width = len(batch.columns)
    step = max(1, _MAX_PARAMS[type(backend)] // width)
    sqlite = isinstance(backend, SQLiteBackend)
    for start in range(0, len(batch.rows), step):
        chunk = batch.rows[start : start + step]
        values = ", ".join([f"({placeholders(width)})"] * len(chunk))
        params = [str(v) if sqlite and isinstance(v, Decimal) else v for row in chunk for v in row]
        try:
            tx.run(f"INSERT INTO {batch.table.name} ({names}) VALUES {values}", params)  # noqa: S608 - names from schema.sql, values bound
        except Exception as error:
            if backend.is_retryable(error) or backend.classify(error) in _UNREACHABLE:
                raise
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
            raise DumpError(
                f"The database refused the {batch.table.name} rows from line"
                f" {batch.line + start} of the dump: {reason}."
            ) from None


def _set_sqlite_counters(tx: Tx, next_ids: dict[str, int]) -> None:
    """Start each AUTOINCREMENT counter where the original's stood (never below the rows')."""
    for name, next_id in next_ids.items():
        changed, _ = tx.run(
            "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (next_id - 1, name)
        )
        if not changed:
            tx.run("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, next_id - 1))


def _set_mysql_counters(tx: Tx, tables: Sequence[Table], next_ids: dict[str, int]) -> None:
    """The same for MySQL, once the rows are committed: ALTER TABLE commits by itself, and
    InnoDB never sets a counter below the highest id already there."""
    for table in tables:
        if table.name in next_ids:
            # DDL takes no placeholders: the name is schema.sql's, the number an int.
            tx.run(f"ALTER TABLE {table.name} AUTO_INCREMENT = {int(next_ids[table.name])}")


# ---------------------------------------------------------------------------------------------
# Both


def _existing_tables(tx: Tx, backend: Backend) -> set[str]:
    if isinstance(backend, MySQLBackend):
        statement = (
            "SELECT table_name AS name FROM information_schema.tables"
            " WHERE table_schema = DATABASE()"
        )
    else:
        statement = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {str(row["name"]) for row in tx.rows(statement)}


@contextmanager
def _reachable(database: Database) -> Iterator[None]:
    """Turn a database that cannot be reached into one sentence."""
    try:
        yield
    except Exception as error:
        # Database.read and write have made it DatabaseUnavailableError; the driver's own
        # error (from a connection used directly) says more.
        cause = error.__cause__ if isinstance(error, DatabaseUnavailableError) else error
        if cause is None or database.backend.classify(cause) not in _UNREACHABLE:
            raise
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0].rstrip(".")
        raise DumpError(
            f"Could not reach the {database.backend.describe()} (--db): {reason}."
        ) from None


@contextmanager
def _progress(shown: bool, label: str, total: int | None) -> Iterator[Advance]:
    """advance(done) says how far the work has got: a bar on a terminal, nothing otherwise."""
    if not shown:
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)
