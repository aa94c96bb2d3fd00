"""One client's connection: read its request lines, answer each in order, close it cleanly."""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

import protocol
from commands import Session

if TYPE_CHECKING:  # the server that owns the connection: its settings, commands and counters
    from server import WaymarkServer

log = logging.getLogger("waymark.server")


class ConnectionHandler:
    """One client's connection: handle() answers its lines in order, finish() closes it cleanly."""

    def __init__(self, server: WaymarkServer, sock: ssl.SSLSocket, address: str):
        self.server = server
        self.sock = sock
        self.session = Session(address=address)
        self.decoder = protocol.LineDecoder(server.config.max_line_bytes)

    def handle(self) -> None:
        """Answer requests until the client leaves, idles out, overflows a line or we stop."""
        config = self.server.config
        last_heard = time.monotonic()
        line_started: float | None = None  # when the current unfinished line began
        while not self.server.stopping.is_set():
            # Sleep until the idle deadline, not in short polls: a thousand idle connections
            # then cost no wake-ups. A stop wakes a waiting connection by shutting its reads.
            wait = max(last_heard + config.idle_timeout_s - time.monotonic(), 0.001)
            if line_started is not None:
                # A deadline per line, not per byte: one byte every few seconds must not keep a
                # connection (and its slot) for ever, whatever the idle timeout.
                left = line_started + config.line_timeout_s - time.monotonic()
                if left <= 0:
                    log.debug("closing a connection from %s: line too slow", self.session.address)
                    self.send(protocol.error_response(None, self._too_slow()))
                    discard_input(self.sock)
                    return
                wait = min(wait, left)
            self.sock.settimeout(wait)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if time.monotonic() - last_heard > config.idle_timeout_s:
                    log.debug("closing idle connection from %s", self.session.address)
                    return
                continue
            if not data:
                return
            last_heard = time.monotonic()
            items = self.decoder.feed(data)
            for item in items:
                if isinstance(item, protocol.ProtocolError):
                    self.send(protocol.error_response(None, item))
                    discard_input(self.sock)
                    return
                self.send(self.respond(item))
            if not self.decoder.has_partial_line:
                line_started = None
            elif items or line_started is None:
                # A new line began. Its clock starts once the lines before it are answered, so
                # a pipelined burst of slow requests never counts against the line after it.
                line_started = time.monotonic()

    def _too_slow(self) -> protocol.ProtocolError:
        seconds = self.server.config.line_timeout_s
        return protocol.ProtocolError(
            protocol.BAD_REQUEST,
            f"The request line did not end within {seconds:g} seconds of its first byte.",
            {"line_timeout_s": seconds},
        )

    def respond(self, line: bytes) -> dict[str, Any]:
        """The response to one request line; never raises, never shows a traceback."""
        started = time.perf_counter()
        request: protocol.Request | None = None
        try:
            request = protocol.decode_request(line)
            response = protocol.ok_response(
                request.id, self.server.commands.handle(self.session, request)
            )
        except Exception as error:  # noqa: BLE001 - unexpected ones are logged with a reference
            wire = (
                error
                if isinstance(error, protocol.ProtocolError)
                else internal_error(
                    self.server.faults.report(error, request.cmd if request else "?")
                )
            )
            # A line refused before it decoded may still have an id worth echoing.
            request_id = request.id if request else protocol.request_id_of(line)
            response = protocol.error_response(request_id, wire)
        cmd = request.cmd if request else "?"
        code = None if response["ok"] else response["error"]["code"]
        self.server.stats.answered(request.cmd if request else None, code)
        elapsed = time.perf_counter() - started
        if self.server.metrics is not None:
            self.server.metrics.observe(cmd, code or "ok", elapsed)
        # Arguments are never logged: they may hold passwords and tokens. Asked first, so that
        # a server not logging each request builds nothing for it on the hot path.
        if log.isEnabledFor(logging.DEBUG):
            ms = round(elapsed * 1000, 1)
            log.debug(
                "%s %s %.1f ms", cmd, code or "ok", ms, extra={"cmd": cmd, "code": code, "ms": ms}
            )
        return response

    def send(self, message: dict[str, Any]) -> None:
        """Write one response line; a client too slow to read it is dropped (TimeoutError)."""
        send_within(self.sock, protocol.encode(message), self.server.config.write_timeout_s)

    def finish(self) -> None:
        """Send a TLS close_notify, so the client can tell an end from a truncation."""
        # Only after handle() returned: once a read or write failed there is no clean close.
        self.sock.settimeout(1.0)
        self.sock.unwrap()


def internal_error(reference: str) -> protocol.ProtocolError:
    """The client's answer to a fault of ours: a reference to find it in the log, nothing more."""
    return protocol.ProtocolError(
        protocol.INTERNAL,
        f"Something went wrong on the server (reference {reference}); nothing was changed.",
        {"request_id": reference},
    )


def send_within(sock: ssl.SSLSocket, data: bytes, seconds: float) -> None:
    """sendall() with one deadline for the whole of data; raises TimeoutError past it."""
    # The deadline is ours rather than left to how ssl's sendall() spends its timeout over
    # its writes: a client that reads a trickle holds a thread for one write timeout at most.
    deadline = time.monotonic() + seconds
    with memoryview(data) as view:
        sent = 0
        while sent < len(view):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the client did not read an answer within {seconds:g} s")
            sock.settimeout(left)
            sent += sock.send(view[sent : sent + _RECORD_BYTES])


_RECORD_BYTES = 16_384  # one TLS record: small enough that each write sees the deadline


def discard_input(sock: ssl.SSLSocket, seconds: float = 2.0, limit: int = 16 << 20) -> None:
    # Closing a socket with unread input sends a TCP reset, which can destroy the error line
    # the client has not read yet; so read and drop what is still coming, briefly.
    deadline, seen = time.monotonic() + seconds, 0
    with contextlib.suppress(OSError, ssl.SSLError):
        while seen < limit and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(min(left, 0.2))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            seen += len(data)
