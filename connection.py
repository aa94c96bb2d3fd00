"""One client's connection: its socket, session, waiting lines and unsent answer, never blocking.

The reactor (reactor.py) owns a connection while it waits on the client; a request worker owns it
while answering its lines. Only the owner touches it, so none of this needs a lock. Every socket
call here is non-blocking: it does what the socket allows at once and says whether more is left.
"""

from __future__ import annotations

import enum
import logging
import ssl
import time
from collections import deque
from typing import Any

import protocol
from commands import Commands, Session
from logs import FaultLog
from metrics import Metrics
from stats import ServerStats

log = logging.getLogger("waymark.server")

_RECORD_BYTES = 16_384  # one TLS record: a blocked write is retried with the same record
_READ_BYTES = 65_536


class Phase(enum.Enum):
    """What a connection is waiting for, and so who owns it and which deadline applies."""

    HANDSHAKE = "handshake"  # the TLS handshake (deadline: handshake_timeout_s in all)
    READING = "reading"  # the client's next line (idle_timeout_s, and line_timeout_s per line)
    WORKING = "working"  # a request worker answering its lines (no deadline: the work has one)
    WRITING = "writing"  # the client reading an answer (write_timeout_s per answer)
    DISCARDING = "discarding"  # after an error line: reading and dropping input, then closing
    CLOSING = "closing"  # our close_notify sent, waiting briefly for the client's


class AfterWriting(enum.Enum):
    """What follows once the answers written so far have reached the client."""

    SERVE = "serve"  # read the next line
    DISCARD = "discard"  # the last answer was an error that ends the connection


class Connection:
    """A client's TLS socket with the state of its conversation."""

    def __init__(self, sock: ssl.SSLSocket, address: str, max_line_bytes: int):
        self.sock = sock
        self.address = address
        self.session = Session(address=address)
        self.decoder = protocol.LineDecoder(max_line_bytes)
        self.phase = Phase.HANDSHAKE
        self.deadline = 0.0  # when the current phase gives up (monotonic seconds)
        self.watching = 0  # the selector events the reactor waits on for it (0: unregistered)
        self.admitted = False  # counted against the connection limits
        self.refused = False  # told server_busy after its handshake
        self.lines: deque[bytes | protocol.ProtocolError] = deque()  # read, not yet answered
        self.decoded: protocol.Request | Exception | None = None  # lines[0], already decoded
        self.after_writing = AfterWriting.SERVE
        self.broken = False  # a read or write failed: close without close_notify
        self.last_heard = 0.0
        self.line_started: float | None = None  # when the unfinished line began
        self.discarded = 0  # bytes dropped while DISCARDING
        self._out = bytearray()
        self._sent = 0  # of _out

    def fileno(self) -> int:
        """The socket's descriptor (the selector keys on it)."""
        return self.sock.fileno()

    @property
    def has_output(self) -> bool:
        """An answer, or part of one, is still to be written."""
        return self._sent < len(self._out)

    def queue_answer(self, message: dict[str, Any]) -> None:
        """Add one response line to what is to be written."""
        if self._sent:
            del self._out[: self._sent]
            self._sent = 0
        self._out += protocol.encode(message)

    def write(self) -> bool:
        """Write what the socket takes now; True once everything queued is written.

        Raises OSError or ssl.SSLError when the client is gone.
        """
        out = self._out
        while self._sent < len(out):
            # After a blocked write TLS must be given the same record again: it is, because
            # _sent only moves once a record is written whole.
            chunk = bytes(out[self._sent : self._sent + _RECORD_BYTES])
            try:
                self._sent += self.sock.send(chunk)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                return False
        out.clear()
        self._sent = 0
        return True

    def read(self, records: int) -> list[bytes] | None:
        """What the client has sent, up to `records` TLS records; None at its end of input.

        Raises OSError or ssl.SSLError when the connection failed.
        """
        chunks: list[bytes] = []
        for _ in range(records):
            try:
                data = self.sock.recv(_READ_BYTES)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                break
            if not data:
                return chunks or None  # with chunks, the end is seen on the next read
            chunks.append(data)
        return chunks

    def close_notify(self) -> bool:
        """Send our close_notify; True once the client's has come too (or cannot come).

        Raises OSError or ssl.SSLError when the client is gone.
        """
        try:
            self.sock.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        return True


class Responder:
    """Turns one request line into its answer: decode, run the command, count it, log it."""

    def __init__(
        self,
        commands: Commands,
        stats: ServerStats,
        faults: FaultLog,
        metrics: Metrics | None = None,
    ):
        self.commands = commands
        self.stats = stats
        self.faults = faults
        self.metrics = metrics

    @staticmethod
    def decode(line: bytes) -> protocol.Request | Exception:
        """The line as a request, or what was wrong with it; never raises."""
        try:
            return protocol.decode_request(line)
        except Exception as error:  # noqa: BLE001 - answered by respond(), never raised here
            return error

    def respond(
        self, session: Session, line: bytes, decoded: protocol.Request | Exception
    ) -> dict[str, Any]:
        """The response to one decoded line; never raises, never shows a traceback."""
        started = time.perf_counter()
        request = decoded if isinstance(decoded, protocol.Request) else None
        try:
            if request is None:
                raise decoded  # type: ignore[misc]  # an Exception: see decode()
            response = protocol.ok_response(request.id, self.commands.handle(session, request))
        except Exception as error:  # noqa: BLE001 - unexpected ones are logged with a reference
            wire = (
                error
                if isinstance(error, protocol.ProtocolError)
                else internal_error(self.faults.report(error, request.cmd if request else "?"))
            )
            # A line refused before it decoded may still have an id worth echoing.
            request_id = request.id if request else protocol.request_id_of(line)
            response = protocol.error_response(request_id, wire)
        cmd = request.cmd if request else "?"
        code = None if response["ok"] else response["error"]["code"]
        self.stats.answered(request.cmd if request else None, code)
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.observe(cmd, code or "ok", elapsed)
        # Arguments are never logged: they may hold passwords and tokens. Asked first, so that
        # a server not logging each request builds nothing for it on the hot path.
        if log.isEnabledFor(logging.DEBUG):
            ms = round(elapsed * 1000, 1)
            log.debug(
                "%s %s %.1f ms", cmd, code or "ok", ms, extra={"cmd": cmd, "code": code, "ms": ms}
            )
        return response


def internal_error(reference: str) -> protocol.ProtocolError:
    """The client's answer to a fault of ours: a reference to find it in the log, nothing more."""
    return protocol.ProtocolError(
        protocol.INTERNAL,
        f"Something went wrong on the server (reference {reference}); nothing was changed.",
        {"request_id": reference},
    )
