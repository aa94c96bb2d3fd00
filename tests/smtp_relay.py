"""A real SMTP relay for tests: aiosmtpd on 127.0.0.1, in a thread of its own.

It records every message it accepts, can refuse chosen recipients with a 550 or put them off
with a 451, can demand a login, can hold a message (accepted, its 250 not yet sent) until
released, and can be taken down and brought back on the same port. While it is down the port stays bound but does not listen, so a sender
gets "connection refused", as from a relay that is not running, and no other program can take
the port meanwhile (the sockets share it through SO_REUSEPORT for the moment of the switch).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"
logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's chatter about each session


@dataclass(frozen=True)
class Received:
    """One message the relay accepted: its envelope, its raw bytes and its parsed form."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass
class _State:
    received: list[Received] = field(default_factory=list)
    refused_attempts: list[str] = field(default_factory=list)
    deferred_attempts: list[str] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    connections: int = 0


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
    """Poll condition until it returns something true; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or condition}")
        time.sleep(0.05)


class SMTPRelay:
    """aiosmtpd on an ephemeral port of 127.0.0.1; use as a context manager."""

    def __init__(self, credentials: tuple[str, str] | None = None, delay_s: float = 0.0):
        self.credentials = credentials  # (user, password) the relay demands, if any
        self.delay_s = delay_s  # how long each DATA takes to answer
        self.refused: set[str] = set()  # recipients answered 550 (for good)
        self.deferred: set[str] = set()  # recipients answered 451 (try later: greylisting)
        self.hold_at: int | None = None  # the n-th accepted message is held before its 250
        self.held = threading.Event()  # set once that message is being held
        self.release = threading.Event()
        self._state = _State()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="smtp-relay", daemon=True
        )
        self._server: asyncio.AbstractServer | None = None
        self._placeholder: socket.socket | None = None
        self._sessions: set[SMTP] = set()
        self.port = 0

    # -- life -------------------------------------------------------------------------------

    def __enter__(self) -> SMTPRelay:
        self._thread.start()
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        if self._server is not None:
            self._call(self._close_server())
        if self._placeholder is not None:
            self._placeholder.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen (again) on the relay's port."""
        assert self._server is None, "the relay is already up"
        listener = _reusable_socket()
        listener.bind((HOST, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._server = self._call(self._serve(listener))
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    def stop(self) -> None:
        """Stop listening and drop open connections; the port stays ours, refusing."""
        assert self._server is not None, "the relay is already down"
        placeholder = _reusable_socket()
        placeholder.bind((HOST, self.port))  # bound, never listening: connections are refused
        self._placeholder = placeholder
        self._call(self._close_server())
        self._server = None

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _serve(self, listener: socket.socket) -> asyncio.AbstractServer:
        return await self._loop.create_server(self._protocol, sock=listener)

    async def _close_server(self) -> None:
        assert self._server is not None
        self._server.close()
        for session in list(self._sessions):
            transport: Any = session.transport
            if transport is not None:
                transport.abort()
        await self._server.wait_closed()

    def _protocol(self) -> SMTP:
        options: dict[str, Any] = {}
        if self.credentials:
            options = {
                "authenticator": self._authenticate,
                "auth_require_tls": False,
                "auth_required": True,
            }
        with self._lock:
            self._state.connections += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # AUTH without TLS: this relay is a test's own
            session = SMTP(self, hostname="relay.test", loop=self._loop, **options)
        self._sessions = {s for s in self._sessions if s.transport and not s.transport.is_closing()}
        self._sessions.add(session)
        return session

    # -- what the relay saw -----------------------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._state.received)

    @property
    def refused_attempts(self) -> list[str]:
        with self._lock:
            return list(self._state.refused_attempts)

    @property
    def deferred_attempts(self) -> list[str]:
        with self._lock:
            return list(self._state.deferred_attempts)

    @property
    def logins(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._state.logins)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._state.connections

    def messages_to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.rcpt_tos]

    def wait_for_messages(self, count: int, timeout_s: float = 30.0) -> list[Received]:
        """Wait until at least count messages arrived; all of them."""
        wait_for(lambda: len(self.messages) >= count, timeout_s, f"{count} messages")
        return self.messages

    # -- aiosmtpd's handler hooks -----------------------------------------------------------

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refused:
            with self._lock:
                self._state.refused_attempts.append(address)
            return "550 5.1.1 No such mailbox here"
        if address in self.deferred:
            with self._lock:
                self._state.deferred_attempts.append(address)
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content or b""
        raw = envelope.original_content or (
            content.encode() if isinstance(content, str) else content
        )
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._lock:
            self._state.received.append(
                Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), raw, parsed)
            )
            position = len(self._state.received)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.hold_at is not None and position == self.hold_at:
            self.held.set()
            while not self.release.is_set():
                await asyncio.sleep(0.02)
        return "250 Message accepted for delivery"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)
        pair = (auth_data.login.decode(), auth_data.password.decode())
        with self._lock:
            self._state.logins.append(pair)
        # handled=False: aiosmtpd answers 235 or 535 itself, as a relay does.
        return AuthResult(success=pair == self.credentials, handled=False)


def _reusable_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock
