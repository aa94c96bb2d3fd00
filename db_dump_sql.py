"""The dump's text: schema.sql's tables written as MySQL statements, read back strictly.

db_dump.py writes and loads dumps; this module knows their text. The reader is for files that
may come from anyone: it accepts only the form the writer makes, checks every value against
its column in schema.sql, and names the line of anything else. Nothing it reads is ever run
as SQL: table and column names are looked up in the schema, and values are only bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import IO, Any

FORMAT = 1
# Each INSERT holds at most this many rows, and starts afresh past BATCH_BYTES of text, so
# that no statement comes near MySQL's max_allowed_packet (mysqldump keeps to 1 MB the same way).
BATCH_ROWS = 1000
BATCH_BYTES = 1 << 20
# The longest line read: a row of MEDIUMTEXT (16 MiB) with every byte escaped, and more.
MAX_LINE_BYTES = 40 << 20

HEADER = "-- Waymark dump, format {format}, schema version {version}, taken {taken} from {source}."
_HEADER = re.compile(r"-- Waymark dump, format (\d{1,9}), schema version (\d{1,9})\b.*")
FOOTER = "-- Waymark dump complete: {tables} tables, {rows} rows."
_FOOTER = re.compile(r"-- Waymark dump complete: (\d{1,9}) tables, (\d{1,18}) rows\.")
# The session settings a dump opens with, in this order: utf8mb4 for the text, and a
# sql_mode without NO_BACKSLASH_ESCAPES (the literals below need backslashes), strict so a
# value that does not fit stops the load, and NO_AUTO_VALUE_ON_ZERO so an id of 0 stays 0.
SETTINGS = (
    "SET NAMES utf8mb4;",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION';",
)
BEGIN, END = "START TRANSACTION;", "COMMIT;"

_INT_BITS = {"TINYINT": 8, "SMALLINT": 16, "INT": 32, "INTEGER": 32, "BIGINT": 64}
_TEXT_BYTES = {"TEXT": (1 << 16) - 1, "MEDIUMTEXT": (1 << 24) - 1, "LONGTEXT": (1 << 32) - 1}
_TABLE_CLAUSES = ("PRIMARY", "UNIQUE", "INDEX", "KEY", "FOREIGN", "CONSTRAINT", "CHECK")
# mysql_real_escape_string's set: the quotes, the backslash, NUL, both line ends and ^Z.
_ESCAPES = str.maketrans(
    {"\\": "\\\\", "'": "\\'", '"': '\\"', "\0": "\\0", "\n": "\\n", "\r": "\\r", "\x1a": "\\Z"}
)
_UNESCAPES = {"\\": "\\", "'": "'", '"': '"', "0": "\0", "n": "\n", "r": "\r", "Z": "\x1a"}
# One value of a row: NULL, a whole number, an exact decimal, or a string holding only the
# escapes above (the raw characters they stand for never appear inside one). The possessive
# ++ and *+ never give back what they matched: without them a string left open by a hostile
# file makes the regex try every way of splitting it, which takes for ever.
_VALUE = re.compile(
    r"NULL|(-?[0-9]{1,40})(\.[0-9]{1,40})?|'((?:[^'\\\r\x00\x1a]++|\\[\\'\"0nrZ])*+)'"
)
_UNESCAPE = re.compile(r"\\(.)")


class DumpFormatError(ValueError):
    """The file is not in the form of a Waymark dump; the message names the line."""

    def __init__(self, line: int, reason: str):
        super().__init__(f"Line {line} of the file {reason}.")
        self.line = line
        self.reason = reason

    def naming(self, path: object) -> str:
        """The message with the file's name in it."""
        return f"Line {self.line} of {path} {self.reason}."


# ---------------------------------------------------------------------------------------------
# The schema's tables, read from schema.sql


@dataclass(frozen=True)
class Column:
    """One column of schema.sql: what values it takes."""

    name: str
    kind: str  # "int", "decimal" or "text"
    nullable: bool
    auto_increment: bool = False
    bits: int = 0  # int: a signed integer of this many bits
    digits: int = 0  # decimal: DECIMAL(digits, scale)
    scale: int = 0
    max_chars: int = 0  # text: VARCHAR/CHAR(max_chars), else TEXT of at most max_bytes
    max_bytes: int = 0

    def unfit(self, value: Any) -> str | None:
        """Why value cannot go in this column, or None when it can."""
        if value is None:
            return None if self.nullable else "may not be NULL"
        if self.kind == "int":
            if not isinstance(value, int):
                return "takes a whole number"
            if not -(1 << (self.bits - 1)) <= value < 1 << (self.bits - 1):
                return f"takes a number of {self.bits} bits"
            return None
        if self.kind == "decimal":
            if not isinstance(value, (int, Decimal)):
                return "takes a number"
            exponent = Decimal(value).as_tuple().exponent
            if not isinstance(exponent, int) or -exponent > self.scale:
                return f"takes at most {self.scale} decimal places"
            if abs(value) >= 10 ** (self.digits - self.scale):
                return f"takes at most {self.digits - self.scale} digits before the point"
            return None
        if not isinstance(value, str):
            return "takes text"
        if self.max_chars and len(value) > self.max_chars:
            return f"takes at most {self.max_chars} characters"
        if self.max_bytes and len(value.encode("utf-8")) > self.max_bytes:
            return f"takes at most {self.max_bytes} bytes"
        return None

    def literal(self, value: Any) -> str:
        """The value as a MySQL literal; ValueError says why it does not fit."""
        if value is None:
            reason = self.unfit(None)
        elif self.kind == "int":
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # SQLite can hand back 3.0 for a number stored as 3
            reason = self.unfit(value)
        elif self.kind == "decimal":
            try:
                # str() first: a float from SQLite means the decimal it prints (2.675, not
                # 2.67499...), rounded as MySQL rounds a value stored in this column.
                value = Decimal(str(value)).quantize(Decimal(1).scaleb(-self.scale), ROUND_HALF_UP)
            except (InvalidOperation, ValueError):
                raise ValueError(f"{value!r} is not a number") from None
            reason = self.unfit(value)
        else:
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).decode("utf-8")
            reason = self.unfit(value)
        if reason:
            raise ValueError(f"{value!r} does not fit: the column {reason}")
        if value is None:
            return "NULL"
        if self.kind != "text":
            return str(value)
        return "'" + value.translate(_ESCAPES) + "'"


@dataclass(frozen=True)
class Table:
    """One table of schema.sql: its columns, its key, the tables it refers to, its DDL."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    parents: tuple[str, ...]
    create: str  # the CREATE TABLE statement without comments or its final ";"
    by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})

    @property
    def auto_increment(self) -> Column | None:
        """The AUTO_INCREMENT column, if the table has one."""
        return next((c for c in self.columns if c.auto_increment), None)


def read_schema(text: str) -> tuple[Table, ...]:
    """schema.sql's tables, each after the tables its foreign keys name.

    Raises ValueError for a definition this module does not understand, so that a change to
    schema.sql that the dump cannot carry fails at once (in the tests) rather than in a dump.
    """
    tables: list[Table] = []
    for statement in text.split(";\n"):
        lines = [line for line in statement.splitlines() if not line.lstrip().startswith("--")]
        body = "\n".join(lines).strip().rstrip(";")
        if body:
            tables.append(_read_table(body))
    return _parents_first(tables)


def _read_table(statement: str) -> Table:
    lines = statement.splitlines()
    head = re.fullmatch(r"CREATE TABLE IF NOT EXISTS (\w+) \(", lines[0])
    if head is None or not re.fullmatch(r"\)[^;]*", lines[-1]):
        raise ValueError(f"schema.sql: not a CREATE TABLE of one definition a line: {lines[0]}")
    columns: list[Column] = []
    primary: tuple[str, ...] = ()
    parents: list[str] = []
    for line in (line.strip().rstrip(",") for line in lines[1:-1]):
        first = line.split()[0]
        if first in _TABLE_CLAUSES:
            if keys := re.fullmatch(r"PRIMARY KEY \(([\w, ]+)\)", line):
                primary = tuple(name.strip() for name in keys.group(1).split(","))
            if parent := re.search(r"REFERENCES (\w+)", line):
                parents.append(parent.group(1))
            continue
        columns.append(_read_column(line))
        if " PRIMARY KEY" in line:
            primary = (first,)
    if not primary:
        raise ValueError(f"schema.sql: the table {head.group(1)} has no primary key")
    return Table(head.group(1), tuple(columns), primary, tuple(parents), statement)


def _read_column(line: str) -> Column:
    found = re.match(r"(\w+) (\w+)(?:\((\d+)(?:,\s*(\d+))?\))?", line)
    if found is None:
        raise ValueError(f"schema.sql: not a column definition: {line}")
    name, kind, size, scale = found.groups()
    nullable = "NOT NULL" not in line and "PRIMARY KEY" not in line
    auto = "AUTO_INCREMENT" in line
    if kind in _INT_BITS:
        return Column(name, "int", nullable, auto, bits=_INT_BITS[kind])
    if kind == "DECIMAL" and size:
        return Column(name, "decimal", nullable, digits=int(size), scale=int(scale or 0))
    if kind in ("VARCHAR", "CHAR") and size:
        return Column(name, "text", nullable, max_chars=int(size))
    if kind in _TEXT_BYTES:
        return Column(name, "text", nullable, max_bytes=_TEXT_BYTES[kind])
    raise ValueError(f"schema.sql: a column type the dump does not know: {line}")


def _parents_first(tables: Sequence[Table]) -> tuple[Table, ...]:
    ordered: list[Table] = []
    placed: set[str] = set()
    waiting = list(tables)
    while waiting:
        ready = next((t for t in waiting if set(t.parents) - {t.name} <= placed), None)
        if ready is None:
            raise ValueError("schema.sql: the foreign keys go round in a circle")
        ordered.append(ready)
        placed.add(ready.name)
        waiting.remove(ready)
    return tuple(ordered)


# ---------------------------------------------------------------------------------------------
# Writing


def create_statement(table: Table, next_id: int | None) -> str:
    """The table's CREATE TABLE, starting its AUTO_INCREMENT counter at next_id."""
    text = table.create
    if next_id is not None and next_id > 1 and table.auto_increment is not None:
        text += f" AUTO_INCREMENT={int(next_id)}"
    return text + ";"


def insert_head(table: Table) -> str:
    """The first line of an INSERT of every column of table."""
    names = ",".join(f"`{c.name}`" for c in table.columns)
    return f"INSERT INTO `{table.name}` ({names}) VALUES"


def row_text(table: Table, row: Sequence[Any]) -> str:
    """One row as "(v1,v2,...)"; ValueError names the column that does not fit."""
    values = []
    for column, value in zip(table.columns, row, strict=True):
        try:
            values.append(column.literal(value))
        except ValueError as error:
            raise ValueError(f"{table.name}.{column.name}: {error}") from None
    return "(" + ",".join(values) + ")"


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class Header:
    """The dump's first line: the format and the schema version it was taken at."""

    format: int
    version: int


@dataclass(frozen=True)
class Created:
    """A CREATE TABLE: its table, and where its AUTO_INCREMENT counter stood."""

    table: Table
    next_id: int | None


@dataclass(frozen=True)
class Rows:
    """Rows for one table, each a tuple in the order of columns, from the given line on."""

    table: Table
    columns: tuple[Column, ...]
    rows: list[tuple[Any, ...]]
    line: int
    offset: int  # bytes of the file read so far


@dataclass(frozen=True)
class Ended:
    """The dump's closing line: it is all there."""

    tables: int
    rows: int


Event = Header | Created | Rows | Ended


def read_header(stream: IO[bytes]) -> Header:
    """The dump's first line; DumpFormatError when it is not a Waymark dump's."""
    return _Reader(stream, ()).header()


def read_dump(stream: IO[bytes], schema: Sequence[Table]) -> Iterator[Event]:
    """Every event of the dump in order: its Header first, then Created and Rows, then Ended.

    Raises DumpFormatError, naming the line, for anything not in the form the writer makes,
    a table or column this schema does not have, a value its column cannot hold, and a file
    cut short.
    """
    return _Reader(stream, schema).events()


class _Reader:
    """A line-by-line parser of one dump."""

    def __init__(self, stream: IO[bytes], schema: Sequence[Table]):
        self.stream = stream
        self.tables = {t.name: t for t in schema}
        self.number = 0
        self.version = 0
        self.version_rows = 0

    def line(self) -> str | None:
        """The next line without its end, or None at the end of the file."""
        raw = self.stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return None
        self.number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise DumpFormatError(self.number, f"is longer than {MAX_LINE_BYTES} bytes")
        try:
            return raw.decode("utf-8").removesuffix("\n")
        except UnicodeDecodeError:
            raise DumpFormatError(self.number, "is not UTF-8 text") from None

    def header(self) -> Header:
        text = self.line()
        found = _HEADER.fullmatch(text or "")
        if found is None:
            raise DumpFormatError(1, "does not begin as a Waymark dump does (-- Waymark dump, ...)")
        if int(found.group(1)) != FORMAT:
            raise DumpFormatError(1, f"is in dump format {found.group(1)}, not {FORMAT}")
        self.version = int(found.group(2))
        return Header(FORMAT, self.version)

    def events(self) -> Iterator[Event]:
        yield self.header()
        created: set[str] = set()
        total = 0
        stage = "schema"  # then "data" after START TRANSACTION, "done" after COMMIT
        while (text := self.line()) is not None:
            if not text or (text.startswith("-- ") and not text.startswith("-- Waymark")):
                continue
            if stage == "schema" and text in SETTINGS:
                continue
            if stage == "schema" and text.startswith("CREATE TABLE "):
                event = self.create(text)
                created.add(event.table.name)
                yield event
            elif stage == "schema" and text == BEGIN:
                stage = "data"
            elif stage == "data" and text.startswith("INSERT INTO "):
                for rows in self.insert(text, created):
                    total += len(rows.rows)
                    yield rows
            elif stage == "data" and text == END:
                stage = "done"
            elif stage == "done" and (footer := _FOOTER.fullmatch(text)):
                self.finish(len(created), total, int(footer.group(1)), int(footer.group(2)))
                yield Ended(len(created), total)
                return
            else:
                raise DumpFormatError(self.number, "is not a statement a Waymark dump has there")
        raise DumpFormatError(
            self.number, "is its last, but a dump ends with its closing line: it is cut short"
        )

    def create(self, text: str) -> Created:
        found = re.fullmatch(r"CREATE TABLE IF NOT EXISTS `?(\w+)`? \(", text)
        if found is None or found.group(1) not in self.tables:
            raise DumpFormatError(self.number, "creates a table that is not in Waymark's schema")
        table = self.tables[found.group(1)]
        start = self.number
        # The definitions themselves are not needed: the schema comes from schema.sql.
        while (body := self.line()) is not None and self.number - start < 200:
            if ";" not in body and not body.startswith(")"):
                continue
            if not re.fullmatch(r"\)[^;]*;", body):
                break
            found = re.search(r" AUTO_INCREMENT=([0-9]{1,19})\b", body)
            next_id = int(found.group(1)) if found else None
            if next_id is not None and (table.auto_increment is None or next_id >= 1 << 63):
                raise DumpFormatError(self.number, f"gives {table.name} a counter it cannot have")
            return Created(table, next_id)
        raise DumpFormatError(start, f"begins a CREATE TABLE of {table.name} that never ends")

    def insert(self, text: str, created: set[str]) -> Iterator[Rows]:
        # Bounded first: a regex of repeats, however linear, has no business with 40 MiB.
        found = len(text) < 4096 and re.fullmatch(
            r"INSERT INTO `(\w+)` \(((?:`\w+`,)*`\w+`)\) VALUES", text
        )
        if not found:
            raise DumpFormatError(self.number, "is not an INSERT in the form a dump writes")
        table = self.tables.get(found.group(1))
        if table is None or table.name not in created:
            raise DumpFormatError(self.number, "inserts into a table the dump did not create")
        names = [name.strip("`") for name in found.group(2).split(",")]
        if len(set(names)) != len(names) or not set(names) <= set(table.by_name):
            raise DumpFormatError(self.number, f"names a column {table.name} does not have")
        columns = tuple(table.by_name[name] for name in names)
        batch: list[tuple[Any, ...]] = []
        size = 0
        first = self.number + 1
        while True:
            line = self.line()
            if line is None:
                raise DumpFormatError(self.number, "is its last, in the middle of an INSERT")
            row, more = self.row(line, columns)
            if table.name == "schema_version":
                self.check_version(dict(zip(names, row, strict=True)))
            batch.append(row)
            size += len(line)
            if not more or len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
                yield Rows(table, columns, batch, first, self.stream.tell())
                batch, size, first = [], 0, self.number + 1
            if not more:
                return

    def row(self, text: str, columns: tuple[Column, ...]) -> tuple[tuple[Any, ...], bool]:
        """One "(...)," or "(...);" line: its values, and whether more rows follow."""
        values: list[Any] = []
        at = 1 if text.startswith("(") else -1
        while 0 < at < len(text):
            found = _VALUE.match(text, at)
            if found is None or len(values) == len(columns):
                break
            values.append(_value(found))
            at = found.end()
            if text.startswith(",", at):
                at += 1
            elif text[at:] in ("),", ");"):
                return self.checked(values, columns), text.endswith(",")
            else:
                break
        raise DumpFormatError(self.number, "is not a row of values in the form a dump writes")

    def checked(self, values: list[Any], columns: tuple[Column, ...]) -> tuple[Any, ...]:
        if len(values) != len(columns):
            raise DumpFormatError(
                self.number, f"has {len(values)} values for {len(columns)} columns"
            )
        for column, value in zip(columns, values, strict=True):
            if reason := column.unfit(value):
                raise DumpFormatError(self.number, f"has a value for {column.name} that {reason}")
        return tuple(values)

    def check_version(self, row: dict[str, Any]) -> None:
        self.version_rows += 1
        if row.get("version") != self.version:
            raise DumpFormatError(
                self.number,
                f"says schema version {row.get('version')}, not the {self.version} of line 1",
            )

    def finish(self, tables: int, rows: int, said_tables: int, said_rows: int) -> None:
        if (tables, rows) != (said_tables, said_rows):
            raise DumpFormatError(
                self.number,
                f"says {said_tables} tables and {said_rows} rows, but the dump holds {tables} and {rows}",
            )
        if self.version_rows != 1:
            raise DumpFormatError(self.number, "ends a dump without its one schema_version row")
        while (text := self.line()) is not None:
            if text:
                raise DumpFormatError(self.number, "comes after the dump's closing line")


def _value(found: re.Match[str]) -> Any:
    if found.group(0) == "NULL":
        return None
    if found.group(1) is not None:
        return Decimal(found.group(0)) if found.group(2) else int(found.group(1))
    text = found.group(3)
    return _UNESCAPE.sub(lambda m: _UNESCAPES[m.group(1)], text) if "\\" in text else text
