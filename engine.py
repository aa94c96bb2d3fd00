"""Transactions on a pooled connection: one write at a time or joined, retried when they lose a race.

Database runs work in one transaction on a pooled connection and retries it whole on a deadlock
(or a Galera certification conflict), a bounded number of times. The backends (db_backends.py)
say what their drivers' errors mean; here, and nowhere else, those become domain errors.
The names of db_backends.py are re-exported, so the store and tests import the database from here.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.pool import QueuePool

from db_backends import (
    Backend,
    ConnectionLostError,
    DuplicateColumnError,
    DuplicateKeyError,
    MySQLBackend,
    SQLiteBackend,
    UnreachableError,
    backend_from_url,
    mysql_address,
)
from errors import DatabaseUnavailableError, OutcomeUnknownError, TryAgainError

__all__ = [
    "Backend",
    "ConnectionLostError",
    "Database",
    "DuplicateColumnError",
    "DuplicateKeyError",
    "Joined",
    "MySQLBackend",
    "PoolConfig",
    "RetryJoinedError",
    "Row",
    "SQLiteBackend",
    "Tx",
    "UnreachableError",
    "backend_from_url",
    "mysql_address",
    "placeholders",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = dict[str, Any]


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
            started, began = False, time.monotonic()
            try:
                with self._write_gate, self.connection() as (connection, tx):
                    tx.run(self.backend.begin_statement)
                    started = True
                    try:
                        result = work(tx)
                        self._commit(connection)
                        return result
                    except BaseException:
                        _rollback_or_discard(connection)
                        raise
            except Exception as error:
                stale = not started and _dead_at_once(self.backend, error, began)
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
                        _rollback_or_discard(joined.connection)
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
        """Run work on a pooled connection in autocommit mode; once more if the link was dead.

        Raises errors.DatabaseUnavailableError when the database cannot answer in time (a lock
        wait or a causal wait past its limit: on Galera, a node leaving the primary component).
        """
        for attempt in range(2):
            began = time.monotonic()
            try:
                with self.connection() as (_, tx):
                    return work(tx)
            except Exception as error:
                if attempt == 0 and _dead_at_once(self.backend, error, began):
                    continue
                if self.backend.is_retryable(error):
                    raise DatabaseUnavailableError() from error
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


# A pooled link that the server closed while it sat idle fails on its first use, at once; one
# that failed after this long timed out (a paused or cut-off node), and another try on a new
# link would only wait out the deadline again.
DEAD_AT_ONCE_S = 1.0


def _dead_at_once(backend: Backend, error: BaseException, began: float) -> bool:
    """True for a link found dead as soon as it was used: worth one more try on a new one."""
    quick = time.monotonic() - began < DEAD_AT_ONCE_S
    return quick and backend.classify(error) is ConnectionLostError


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


def _rollback_or_discard(connection: Any) -> None:
    """Roll back; if even that fails, discard the pooled connection.

    A Galera node out of the primary component refuses ROLLBACK too (1047): returned to the
    pool, the connection kept its transaction open, and the next request's START TRANSACTION
    committed it, a write its client had been told was refused. Closing the link makes the
    server roll it back.
    """
    try:
        connection.rollback()
    except Exception:  # noqa: BLE001 - the original error matters more than the rollback's
        log.debug("rollback failed; discarding the connection", exc_info=True)
        connection.invalidate()
