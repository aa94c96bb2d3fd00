"""The two database engines: what SQLite or MySQL each need said, what their errors mean.

Every statement is written once with "?" placeholders; a Backend supplies only what really
differs (placeholder style, the row-locking clause, DDL details, how a write transaction starts)
and sorts its driver's errors into the few kinds the rest of the code acts on (classify).
"""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeoutError

MYSQL_DEADLOCK = 1213
MYSQL_LOCK_WAIT_TIMEOUT = 1205
MYSQL_DUPLICATE_KEY = 1062
MYSQL_DUPLICATE_COLUMN = 1060
MYSQL_CONNECTION_LOST = frozenset({2006, 2013, 2055})
# Cannot connect at all: no server on that socket or port (2002, 2003), unknown host (2005).
# A Galera node out of the primary component refuses statements with 1047 (WSREP has not yet
# prepared node for application use): nothing was done, and another node may serve.
MYSQL_UNREACHABLE = frozenset({2002, 2003, 2005, 1047})
# SQLite: the file cannot be opened, or the disk failed under it.
SQLITE_UNREACHABLE = ("unable to open", "disk i/o")


class DuplicateKeyError(Exception):
    """A unique key refused a row."""


class ConnectionLostError(Exception):
    """The database connection dropped; the pool discards it."""


class UnreachableError(Exception):
    """No connection to the database could be made (or, for SQLite, its file opened)."""


class DuplicateColumnError(Exception):
    """ALTER TABLE ADD COLUMN met a column that is already there."""


# ---------------------------------------------------------------------------------------------
# Backends: only what differs between MySQL and SQLite.


class Backend:
    """What one database engine needs said differently."""

    lock_clause = ""
    begin_statement = ""
    # INSERT that skips a row whose unique key is taken, instead of failing the transaction.
    insert_ignore = "INSERT IGNORE"
    # Put before a SELECT that must see every write already committed anywhere in a cluster
    # (read your own writes across Galera nodes); empty where every read already does.
    causal_prefix = ""

    @property
    def is_cluster_node(self) -> bool:
        """True when the database is a node of a Galera cluster (known after a first connect)."""
        return False

    def connect(self) -> Any:
        """A new DB-API connection in autocommit mode."""
        raise NotImplementedError

    def sql(self, statement: str) -> str:
        """The statement in this driver's placeholder style."""
        return statement

    def ddl(self, schema: str) -> list[str]:
        """The schema's statements, adapted for this engine."""
        return [s.strip() for s in schema.split(";\n") if _strip_comments(s).strip()]

    def classify(self, error: BaseException) -> type[Exception] | None:
        """The kind of a driver error: DuplicateKeyError, DuplicateColumnError,
        ConnectionLostError, UnreachableError, or None for an error to pass on."""
        # Every pooled connection busy past the pool's timeout: as good as out of reach.
        return UnreachableError if isinstance(error, PoolTimeoutError) else None

    def is_retryable(self, error: BaseException) -> bool:
        """True for a deadlock or lock timeout: the whole transaction may be run again."""
        return False

    def describe(self) -> str:
        """Where the data lives, with no password."""
        raise NotImplementedError


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


class SQLiteBackend(Backend):
    """Embedded SQLite: WAL, a busy timeout, and BEGIN IMMEDIATE for every write."""

    # IMMEDIATE takes the write lock at once, so two writers can never read the same stock
    # and both decide to sell it.
    begin_statement = "BEGIN IMMEDIATE"
    insert_ignore = "INSERT OR IGNORE"

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000):
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE themselves.
        # check_same_thread=False: the pool hands a connection to one thread at a time.
        connection = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.busy_timeout_ms / 1000,
        )
        connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA foreign_keys = ON")
        return connection

    def ddl(self, schema: str) -> list[str]:
        statements = []
        for statement in super().ddl(schema):
            statement = _strip_comments(statement)
            statement = re.sub(r"\)\s*ENGINE=[^;]*$", ")", statement.strip())
            statement = statement.replace("AUTO_INCREMENT", "AUTOINCREMENT")
            table = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", statement)
            indexes = re.findall(r",\s*INDEX (\w+) \(([^)]*)\)", statement)
            statement = re.sub(r",\s*INDEX \w+ \([^)]*\)", "", statement)
            statements.append(statement)
            for index_name, columns in indexes:
                assert table is not None
                statements.append(
                    f"CREATE INDEX IF NOT EXISTS {index_name} ON {table.group(1)} ({columns})"
                )
        return statements

    def classify(self, error: BaseException) -> type[Exception] | None:
        if isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error):
            return DuplicateKeyError
        if isinstance(error, sqlite3.OperationalError) and "duplicate column" in str(error):
            return DuplicateColumnError
        if isinstance(error, sqlite3.OperationalError) and any(
            text in str(error).lower() for text in SQLITE_UNREACHABLE
        ):
            return UnreachableError
        return super().classify(error)

    def is_retryable(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)

    def describe(self) -> str:
        return f"SQLite database {self.path}"


class MySQLBackend(Backend):
    """MySQL or MariaDB through mysql-connector-python (its C extension when it loads)."""

    lock_clause = " FOR UPDATE"
    begin_statement = "START TRANSACTION"

    def __init__(self, host: str, port: int, user: str, password: str, database: str):
        import mysql.connector

        self._connector = mysql.connector
        self.host, self.port, self.user, self.password, self.database = (
            host, port, user, password, database,
        )  # fmt: skip
        self._sql_cache: dict[str, str] = {}
        self._cluster: bool | None = None
        # Every call's deadline (connect, each statement, the commit): a node cut off or paused
        # makes the call fail within it, as unavailable, instead of holding the request.
        self.timeout_s = 10.0
        errors = mysql.connector.errors
        # A call past its deadline closes the link: the C extension says 2013, the pure
        # Python driver raises its own timeout errors.
        self._lost_link_errors: tuple[type[Exception], ...] = (
            errors.InterfaceError,
            errors.ReadTimeoutError,
            errors.WriteTimeoutError,
        )

    @property
    def is_cluster_node(self) -> bool:
        return bool(self._cluster)

    @property
    def has_c_extension(self) -> bool:
        """True when the connector's C extension is loaded (about 6x faster under threads)."""
        return bool(self._connector.HAVE_CEXT)

    def connect_options(self) -> dict[str, Any]:
        """The connector's keyword arguments for one autocommit connection to this database."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "autocommit": True,
            "charset": "utf8mb4",
            "collation": "utf8mb4_bin",
            "connection_timeout": max(int(self.timeout_s), 1),
            "read_timeout": max(int(self.timeout_s), 1),
            "write_timeout": max(int(self.timeout_s), 1),
            "use_pure": not self.has_c_extension,
        }

    def connect(self) -> Any:
        connection = self._connector.connect(**self.connect_options())
        cursor = connection.cursor()
        # READ COMMITTED: after a locking read every later read sees the rows as committed
        # now, and InnoDB takes fewer gap locks, so fewer deadlocks.
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cursor.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
        if self._cluster is None:  # asked once, on the first connection (at start-up)
            self._cluster = _is_galera_node(cursor, self._connector.Error)
            if self._cluster:
                # MariaDB's per-statement form: no extra round trip to switch it on and off.
                self.causal_prefix = "SET STATEMENT wsrep_sync_wait = 1 FOR "
        cursor.close()
        return connection

    def sql(self, statement: str) -> str:
        converted = self._sql_cache.get(statement)
        if converted is None:
            # The connector's paramstyle is %s; no statement here holds a literal %.
            assert "%" not in statement, statement
            converted = self._sql_cache[statement] = statement.replace("?", "%s")
        return converted

    def classify(self, error: BaseException) -> type[Exception] | None:
        errno = getattr(error, "errno", None)
        if errno == MYSQL_DUPLICATE_KEY:
            return DuplicateKeyError
        if errno == MYSQL_DUPLICATE_COLUMN:
            return DuplicateColumnError
        if errno in MYSQL_UNREACHABLE:
            return UnreachableError
        if errno in MYSQL_CONNECTION_LOST or isinstance(error, self._lost_link_errors):
            return ConnectionLostError
        return super().classify(error)

    def is_retryable(self, error: BaseException) -> bool:
        return getattr(error, "errno", None) in (MYSQL_DEADLOCK, MYSQL_LOCK_WAIT_TIMEOUT)

    def describe(self) -> str:
        return f"MySQL database {self.database} on {self.host}:{self.port}"


def mysql_address(url: str) -> tuple[str, int, str, str, str]:
    """(host, port, user, password, database) from mysql://user:password@host:port/database.

    The database may be empty, for a URL that names only the server.
    """
    parsed = urllib.parse.urlsplit(url)
    return (
        parsed.hostname or "",
        parsed.port or 3306,
        urllib.parse.unquote(parsed.username or "root"),
        urllib.parse.unquote(parsed.password or ""),
        urllib.parse.unquote(parsed.path.lstrip("/")),
    )


def _is_galera_node(cursor: Any, driver_error: type[Exception]) -> bool:
    """True when the server is a Galera cluster node with replication on."""
    try:
        cursor.execute("SELECT @@wsrep_on")
        (value,) = cursor.fetchone()
    except driver_error:  # MySQL without Galera has no such variable
        return False
    return str(value).upper() in ("1", "ON")


def backend_from_url(url: str) -> Backend:
    """A Backend from sqlite:///path.db or mysql://user:password@host:port/database.

    Raises ValueError with a sentence when the URL cannot be used.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "sqlite":
        # sqlite:///data/x.db is relative; sqlite:////abs/x.db is absolute.
        raw_path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not raw_path:
            raise ValueError("A SQLite URL looks like sqlite:///path/to/waymark.db.")
        return SQLiteBackend(Path(raw_path))
    if parsed.scheme in ("mysql", "mariadb"):
        host, port, user, password, database = mysql_address(url)
        if not host or not database:
            raise ValueError("A MySQL URL looks like mysql://user:password@host:3306/database.")
        return MySQLBackend(host, port, user, password, database)
    raise ValueError(f"The database URL must start with sqlite:/// or mysql://, not {url!r}.")
