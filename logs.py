"""The server's log output: where it goes, in what format, how often a repeated fault is told."""

from __future__ import annotations

import json
import logging
import secrets
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("waymark.server")

# Fields a log call may add with extra={...}; nothing else from a record is shipped, so a
# stray attribute can never carry a secret into the JSON.
FIELDS = ("cmd", "code", "ms", "reference")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, and any FIELDS given."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({name: getattr(record, name) for name in FIELDS if hasattr(record, name)})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str, log_format: str, log_file: str) -> None:
    """Send the log where the settings say, in the format they say; OSError if the file fails."""
    handler: logging.Handler = (
        logging.FileHandler(log_file, encoding="utf-8")
        if log_file
        else logging.StreamHandler(sys.stderr)
    )
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


@dataclass
class _Fault:
    """One kind of fault seen in this interval: since when, and how many more since the first."""

    since: float
    more: int = 0
    last_reference: str = ""


class FaultLog:
    """Turns an unexpected exception into the client's error, logging each kind of fault with
    its traceback once per interval and then how many more like it there were.

    A database outage fails every request the same way; a traceback for each one buried the
    log (25,310 lines for 380 requests). Each answer still carries its own reference.
    """

    INTERVAL_S = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._faults: dict[tuple[Any, ...], _Fault] = {}

    def report(self, error: BaseException, cmd: str, code: str = "internal") -> str:
        """Log error (or count it) as the cause of a `code` answer; return a fresh reference
        for that answer."""
        reference = secrets.token_hex(6)
        kind = _fault_kind(error)
        now = self.clock()
        expired: _Fault | None = None
        with self._lock:
            fault = self._faults.get(kind)
            if fault is not None and now - fault.since < self.INTERVAL_S:
                fault.more += 1
                fault.last_reference = reference
                first = False
            else:
                expired, self._faults[kind] = fault, _Fault(since=now)
                first = True
        if first:
            if expired is not None:
                self._summarise(kind, expired)
            log.error("%s error %s while running %s", code, reference, cmd, exc_info=error)
        else:
            log.debug("%s error %s while running %s (as before)", code, reference, cmd)
        return reference

    def flush(self, everything: bool = False) -> None:
        """Log the count for each kind of fault whose interval is over (or for all of them)."""
        now = self.clock()
        with self._lock:
            done = {
                k: f
                for k, f in self._faults.items()
                if everything or now - f.since >= self.INTERVAL_S
            }
            for kind in done:
                del self._faults[kind]
        for kind, fault in done.items():
            self._summarise(kind, fault)

    def _summarise(self, kind: tuple[Any, ...], fault: _Fault) -> None:
        if fault.more:
            log.warning(
                "... and %d more like it (%s) in %.0f s, the last with reference %s",
                fault.more,
                kind[0],
                self.clock() - fault.since,
                fault.last_reference,
            )


def _fault_kind(error: BaseException) -> tuple[Any, ...]:
    # A kind of fault: the exception's type, its errno if any, and where it was raised, for it
    # and each exception it came from. The same outage seen from two commands is one kind.
    kind: list[Any] = []
    cause: BaseException | None = error
    while cause is not None and len(kind) < 24:
        frames = traceback.extract_tb(cause.__traceback__)
        where = (frames[-1].filename, frames[-1].lineno) if frames else None
        kind += [type(cause).__qualname__, getattr(cause, "errno", None), where]
        cause = cause.__cause__ or cause.__context__
    return tuple(kind)
