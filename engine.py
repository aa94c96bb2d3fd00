"""The two database engines behind the Store: connections, the pool, transactions and retries.

Every statement is written once with "?" placeholders; a Backend supplies only what really
differs (placeholder style, the row-locking clause, DDL details and how a write transaction
starts). Database runs work in one transaction on a pooled connection and retries it whole on
a deadlock, a bounded number of times. Driver errors are translated here and nowhere else.
"""

from __future__ import annotations

import logging
import random
import re
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import QueuePool

from errors import DatabaseUnavailableError, OutcomeUnknownError, TryAgainError

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = dict[str, Any]

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


class RetryJoinedError(Exception):
    """A joined transaction lost a race (a deadlock, a certification conflict, or its opening
    statements were refused): nothing was changed, and the caller may run the whole block again."""


@dataclass
class Joined:
    """The transaction that every write of one block joins (see Database.joined)."""

    opening: Callable[[Tx], object]
    closing: Callable[[Tx], object] | None = None  # run just before the commit
    connection: Any = None
    tx: Tx | None = None
    gate: AbstractContextManager[Any] | None = None  # held from the first write to the end


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


# ---------------------------------------------------------------------------------------------
# Transactions


class Tx:
    """One connection inside a transaction (or a read); runs "?"-style statements."""

    def __init__(self, cursor: Any, backend: Backend):
        self._cursor = cursor
        self._backend = backend
        self.lock = backend.lock_clause
        self.causal = backend.causal_prefix

    def rows(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        """All rows as dicts."""
        self._cursor.execute(self._backend.sql(statement), tuple(params))
        names = [column[0] for column in self._cursor.description]
        return [dict(zip(names, row, strict=True)) for row in self._cursor.fetchall()]

    def row(self, statement: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row, or None."""
        found = self.rows(statement, params)
        return found[0] if found else None

    def value(self, statement: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row, or None."""
        found = self.row(statement, params)
        return next(iter(found.values())) if found else None

    def run(self, statement: str, params: Sequence[Any] = ()) -> tuple[int, int | None]:
        """Execute a write; returns (rows affected, last inserted id)."""
        self._cursor.execute(self._backend.sql(statement), tuple(params))
        return self._cursor.rowcount, self._cursor.lastrowid


def placeholders(count: int) -> str:
    """'?, ?, ?' for an IN list of count values (still fully parameterised)."""
    return ", ".join("?" * count)


# ---------------------------------------------------------------------------------------------
# The pool and transactions


@dataclass(frozen=True)
class PoolConfig:
    """Pool and retry settings; every limit has a safe default."""

    pool_size: int = 16
    pool_timeout_s: float = 10.0  # waiting for a free pooled connection: then unavailable
    # The deadline of each database call on MySQL (connect, statement, commit).
    call_timeout_s: float = 10.0
    pool_recycle_s: int = 3600
    # Sized for a cluster: under load a Galera node sees many certification conflicts, each
    # retried after an exponential, jittered pause (about 2 s in all on average, 5 s at most).
    deadlock_retries: int = 20


class Database:
    """A pool of connections to one backend, and the one way to run a transaction on it."""

    def __init__(self, backend: Backend, config: PoolConfig | None = None):
        self.backend = backend
        self.config = config or PoolConfig()
        if isinstance(backend, MySQLBackend):
            backend.timeout_s = self.config.call_timeout_s
        # SQLite's busy handler makes waiting writers sleep and poll rather than queue, so
        # under contention a few lose again and again (seconds of tail latency). Queueing
        # this process's writers here fixes the tail; BEGIN IMMEDIATE still guards the data
        # against other processes. MySQL queues on its row locks and needs no gate.
        self._write_gate: AbstractContextManager[Any] = (
            threading.Lock() if isinstance(backend, SQLiteBackend) else nullcontext()
        )
        self._local = threading.local()  # this thread's Joined transaction, if any
        # SQLAlchemy's QueuePool, configured to cost no round trip per checkout: no ping
        # (pre_ping off) and no reset on return (every transaction ends itself).
        self._pool = QueuePool(
            backend.connect,
            pool_size=self.config.pool_size,
            max_overflow=0,
            timeout=self.config.pool_timeout_s,
            reset_on_return=None,
            recycle=self.config.pool_recycle_s,  # an age check, no round trip; beats wait_timeout
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.dispose()

    def in_use(self) -> int:
        """Pooled connections checked out just now."""
        return int(self._pool.checkedout())

    def describe(self) -> str:
        """Which database and driver this is (no secrets)."""
        text = self.backend.describe()
        if isinstance(self.backend, MySQLBackend):
            driver = "C extension" if self.backend.has_c_extension else "pure Python"
            text += f" (mysql-connector-python, {driver})"
        return text

    @contextmanager
    def connection(self) -> Iterator[tuple[Any, Tx]]:
        """A pooled connection in autocommit mode; a dead one is discarded, not returned."""
        fairy = self._pool.connect()
        try:
            yield fairy, Tx(_cursor_of(fairy), self.backend)
        except BaseException as error:
            if self.backend.classify(error) is ConnectionLostError:
                fairy.invalidate()
            raise
        finally:
            fairy.close()

    def write(self, work: Callable[[Tx], T], alone: bool = False) -> T:
        """Run work in one write transaction; retry it whole on deadlock, a bounded number of times.

        A pooled connection found dead when the transaction starts is replaced, since nothing
        was sent yet; one lost later is reported, because the commit may have happened.
        Raises DuplicateKeyError for a refused row; errors.DatabaseUnavailableError when the
        database cannot be reached or the link broke before the commit; errors.TryAgainError
        when deadlocks or certification conflicts outlast the retries; and
        errors.OutcomeUnknownError when the link broke during the commit.

        Inside a joined() block, work runs in the block's transaction instead (alone=False):
        that transaction is begun by the first such write and committed at the block's end.
        """
        joined: Joined | None = getattr(self._local, "joined", None)
        if joined is not None and not alone:
            return self._in_joined(joined, work)
        if joined is not None and joined.tx is not None and isinstance(self.backend, SQLiteBackend):
            # SQLite has one writer: a write of its own would wait for ever on the block's.
            raise AssertionError("a write alone after a joined block has begun writing")
        for attempt in range(self.config.deadlock_retries + 1):
            started = False
            try:
                with self._write_gate, self.connection() as (connection, tx):
                    tx.run(self.backend.begin_statement)
                    started = True
                    try:
                        result = work(tx)
                        self._commit(connection)
                        return result
                    except BaseException:
                        _rollback_quietly(connection)
                        raise
            except Exception as error:
                stale = not started and self.backend.classify(error) is ConnectionLostError
                retry = stale or self.backend.is_retryable(error)
                if retry and attempt < self.config.deadlock_retries:
                    log.debug("transaction retried after %s (attempt %d)", error, attempt + 1)
                    time.sleep(0 if stale else _backoff_s(attempt))
                    continue
                if retry and not stale:
                    log.warning("transaction gave up after %d retries: %s", attempt, error)
                    raise TryAgainError(
                        "The server is very busy and could not finish that just now; nothing"
                        " was changed. Please try again in a moment.",
                        {"retry_after_s": 1, "cause": "contention"},
                    ) from error
                self._translate(error)
                raise
        raise AssertionError("unreachable")

    @contextmanager
    def joined(self, opening: Callable[[Tx], object]) -> Iterator[Joined]:
        """Make every write of this thread within the block one transaction, committed when the
        block ends without an error and rolled back otherwise.

        The first write begins it and runs opening(tx) before its own work; set closing on the
        Joined to run a last statement before the commit. Reads use their own connections and
        do not see the block's writes. A write with alone=True runs in its own transaction, and
        must come before the block's first write (SQLite has one writer). Raises
        RetryJoinedError when the block lost a race and may be run again whole; otherwise as
        write() does.
        """
        joined = Joined(opening)
        self._local.joined = joined
        try:
            try:
                yield joined
                if joined.tx is None:  # nothing written: the opening and closing still count
                    self._begin_joined(joined)
                assert joined.tx is not None
                if joined.closing is not None:
                    joined.closing(joined.tx)
                self._commit(joined.connection)
            except BaseException as error:
                if joined.connection is not None:
                    if self.backend.classify(error) is ConnectionLostError:
                        joined.connection.invalidate()
                    else:
                        _rollback_quietly(joined.connection)
                if isinstance(error, Exception) and self.backend.is_retryable(error):
                    raise RetryJoinedError(str(error)) from error
                if isinstance(error, Exception) and not isinstance(error, RetryJoinedError):
                    self._translate(error)
                raise
        finally:
            self._local.joined = None
            if joined.connection is not None:
                joined.connection.close()
            if joined.gate is not None:
                joined.gate.__exit__(None, None, None)

    def _in_joined(self, joined: Joined, work: Callable[[Tx], T]) -> T:
        if joined.tx is None:
            self._begin_joined(joined)
        assert joined.tx is not None
        try:
            return work(joined.tx)
        except Exception as error:
            # The store catches these by kind, as it does from write(); the transaction goes on.
            if self.backend.classify(error) is DuplicateKeyError:
                raise DuplicateKeyError(str(error)) from error
            raise

    def _begin_joined(self, joined: Joined) -> None:
        self._write_gate.__enter__()
        joined.gate = self._write_gate
        try:
            joined.connection = self._pool.connect()
            joined.tx = Tx(_cursor_of(joined.connection), self.backend)
            joined.tx.run(self.backend.begin_statement)
            joined.opening(joined.tx)
        except Exception as error:
            # Not the store's to catch (a refused opening is no duplicate of the store's own):
            # the whole block is run again, or the database is out of reach.
            kind = self.backend.classify(error)
            if kind is DuplicateKeyError or self.backend.is_retryable(error):
                raise RetryJoinedError(str(error)) from error
            raise

    def _commit(self, connection: Any) -> None:
        try:
            connection.commit()
        except Exception as error:
            # A commit that failed for any reason but a lost race (deadlock, certification
            # conflict: surely not applied, retried) may have been applied: the link lost
            # during it, or a Galera node losing the primary component while replicating it
            # ("Error while appending streaming replication fragment"). Saying "nothing was
            # changed" then could make a client order twice.
            if not self.backend.is_retryable(error):
                raise OutcomeUnknownError(
                    "The database connection broke while saving, so it is not known whether"
                    " that was done; check your orders or loans before trying again.",
                    {"cause": "database", "outcome": "unknown"},
                ) from error
            raise

    def read(self, work: Callable[[Tx], T]) -> T:
        """Run work on a pooled connection in autocommit mode; once more if the link was dead."""
        for attempt in range(2):
            try:
                with self.connection() as (_, tx):
                    return work(tx)
            except Exception as error:
                if attempt == 0 and self.backend.classify(error) is ConnectionLostError:
                    continue
                self._translate(error)
                raise
        raise AssertionError("unreachable")

    def _translate(self, error: Exception) -> None:
        # The one place a driver's error becomes ours: a database out of reach (or a link lost
        # before any commit) is a domain error that nothing above the store has to decode.
        kind = self.backend.classify(error)
        if kind in (ConnectionLostError, UnreachableError):
            raise DatabaseUnavailableError() from error
        if kind is not None:
            raise kind(str(error)) from error


def _backoff_s(attempt: int) -> float:
    # Full jitter: a random pause up to a ceiling that doubles each time, so transactions that
    # collided do not collide again in step.
    return random.uniform(0, min(0.3, 0.004 * 2**attempt))


def _cursor_of(fairy: Any) -> Any:
    # One cursor per pooled connection, kept for its life: the C connector pings the server
    # every time a cursor is created, which would cost a round trip per statement.
    connection = fairy.dbapi_connection
    kept = fairy.info.get("cursor")
    if kept is None or kept[0] is not connection:
        kept = fairy.info["cursor"] = (connection, connection.cursor())
    return kept[1]


def _rollback_quietly(connection: Any) -> None:
    try:
        connection.rollback()
    except Exception:  # noqa: BLE001 - the original error matters more; a dead link rolls back anyway
        log.debug("rollback failed", exc_info=True)
