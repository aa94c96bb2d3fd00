"""The client's link to a Waymark server: verified TLS, framing, reconnect, resume, the token.

Dropped connections: Connection reconnects and resumes the session with its token, then sends
the request again, for as long as retry_s (30 s by default) while the server cannot be reached,
pausing longer between tries. A read is simply sent again. A write that needs a login (buy,
borrow, return, ...) carries an idempotency key, made once per call and sent again with it, so
the server does it at most once and answers a repeat with the stored answer. A write without a
key (register) is never sent twice: when the connection breaks after it went out, nobody knows
whether the server carried it out, and AnswerLostError says so; a keyed write raises it only
when the server stayed out of reach for retry_s, or the session could not be resumed. An idle
connection the server has already closed (a restart between two requests) is noticed before
sending and replaced, so that common case loses nothing, writes included.

The session token has one owner, Connection: it keeps the token in memory to resume after a
reconnect and, only when asked to remember, in a 0600 file (TokenFile) for the next run.
Which commands return a token, take a key or may be sent again is read from protocol.COMMANDS.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import tls
from client_errors import (
    AnswerLostError,
    ClientError,
    ConnectionFailedError,
    ServerError,
    UsageError,
)

# The client's errors and its token file live in modules of their own; the rest of the client
# imports them from here, with the link that raises and uses them.
__all__ = [
    "AnswerLostError",
    "ClientError",
    "Connection",
    "ConnectionFailedError",
    "ServerError",
    "TokenFile",
    "UsageError",
]
from client_token import TokenFile
from protocol import (
    COMMANDS,
    LINE_TOO_LONG,
    SERVER_BUSY,
    UNAUTHORIZED,
    UNAVAILABLE,
    LineDecoder,
    ProtocolError,
    Reply,
    decode_reply,
    encode,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7443
DEFAULT_CAFILE = Path(__file__).resolve().parent / "certs" / "server.crt"
DEFAULT_TIMEOUT_S = 30.0
# How long a request whose connection broke is tried again while the server cannot be reached.
DEFAULT_RETRY_S = 30.0
# The pauses between those tries double from the first to the longest (each shortened by up to
# a half at random, so that the clients of a server that went away do not all come back at one
# instant). The first try is at once: behind a load balancer another server is usually there.
FIRST_PAUSE_S = 0.1
LONGEST_PAUSE_S = 4.0
DEFAULT_TOKEN_FILE = Path("~/.waymark-token")
# Replies (a long history, 200 walks) may be far larger than the server's request-line limit.
MAX_REPLY_BYTES = 16 * 1024 * 1024

OUTCOME_UNKNOWN = (
    "The connection broke before the server answered, so it is not known whether that was "
    "done; check your orders or loans before trying again."
)
SESSION_ENDED = (
    "The connection broke before the server answered, and your session could not be resumed "
    "afterwards, so it is not known whether that was done; log in again and check before "
    "trying again."
)
# A command whose answer is a new session (change_password) ends the old one when it is done.
NEW_SESSION_ENDED = (
    "The connection broke before the server answered, and your session could not be resumed "
    "afterwards, most likely because the change was made: a new password ends the old "
    "session. Log in again with the new password; if it is refused, the change was not made "
    "and the old one still works."
)

JsonDict = dict[str, Any]


# Errors --------------------------------------------------------------------------------------

# What a run of the client ends with: a ServerError or ConnectionFailedError is 1, a UsageError 2.
EXIT_OK, EXIT_SERVER_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _UnreachableError(ConnectionFailedError):
    """The server could not be reached, or the new connection broke at once: worth another try
    (a certificate that is not the pinned one is a ConnectionFailedError, never tried again)."""


class _LinkLostError(Exception):
    """The connection broke or timed out while a request was in flight (inside Connection)."""

    def __init__(self, timed_out: bool = False):
        super().__init__("connection lost")
        self.timed_out = timed_out


# Connection ----------------------------------------------------------------------------------


class Connection:
    """A verified TLS connection to the server, re-established on demand, holding the token.

    call() raises ServerError for an error answer, ConnectionFailedError when the server cannot
    be reached (at once when it never could be; after retry_s seconds of trying again when an
    open connection broke), and AnswerLostError when whether a write was done is not known
    (see the module's docstring). A replayed answer (a write sent again with its key) is the
    answer, as if it had come the first time. The token of a command
    whose row in protocol.COMMANDS says it returns one is kept in memory to resume after a
    reconnect; with remember (and a token_file), a new session's token is also saved there for
    the next run, and a remembered session's new token (change_password) replaces it there.
    """

    def __init__(
        self,
        host: str,
        port: int,
        cafile: Path | str,
        timeout: float = DEFAULT_TIMEOUT_S,
        on_reconnect: Callable[[str], None] | None = None,
        token_file: TokenFile | None = None,
        remember: bool = False,
        retry_s: float = DEFAULT_RETRY_S,
    ):
        self.host = host
        self.port = port
        self.cafile = Path(cafile)
        self.timeout = timeout
        self.retry_s = retry_s
        self.on_reconnect = on_reconnect
        self.token_file = token_file
        self.remember = remember
        self.token: str | None = None
        self._remembered: str | None = None  # the token this connection keeps in token_file
        self._context: ssl.SSLContext | None = None
        self._sock: ssl.SSLSocket | None = None
        self._decoder = LineDecoder(MAX_REPLY_BYTES)
        self._lines: list[bytes] = []
        self._ids = itertools.count(1)
        self._connected_before = False

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        """host:port as people write it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def remembered_in(self) -> Path | None:
        """The file a login is remembered in, or None when logins are not remembered."""
        return self.token_file.path if self.remember and self.token_file is not None else None

    def call(self, cmd: str, **args: Any) -> JsonDict:
        """Send one request and return its result; raises as the class docstring says."""
        return self._result_of(cmd, self._request(cmd, args))

    def resume_remembered(self) -> JsonDict | None:
        """Resume the session saved in the token file: resume's result, or None if none is saved.

        Raises ServerError(unauthorized) when that session has ended (the file is then
        forgotten), and UsageError when others may read the file.
        """
        if self.token_file is None or (token := self.token_file.load()) is None:
            return None
        try:
            result = self.call("resume", token=token)
        except ServerError as error:
            if error.code == UNAUTHORIZED:
                self.token_file.forget()
            raise
        self._remembered = token
        return result

    def forget_session(self) -> None:
        """Forget the session token in memory, and in the token file only while the file still
        holds it: another program may since have remembered a login of its own there."""
        ours = {token for token in (self.token, self._remembered) if token is not None}
        self.token = self._remembered = None
        if self.token_file is None or not ours:
            return
        with contextlib.suppress(UsageError):  # a file others may read is not this session's
            if self.token_file.load() in ours:
                self.token_file.forget()

    def close(self) -> None:
        """Close the socket; the next call() connects again and resumes the session."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        self._lines.clear()

    def _request(self, cmd: str, args: Mapping[str, Any]) -> Reply:
        # The one way a request reaches the server (tests replace it with scripted replies).
        key = _new_key() if _takes_key(cmd) else None
        if self._sock is not None and self._is_stale():
            # Closed while idle: nothing was sent, so any request may go on a new connection.
            self.close()
            self._reopen(_Retries(self.retry_s))
        if self._sock is None:
            self._open()
        had_session = self.token is not None
        try:
            return self._exchange(cmd, args, key)
        except _LinkLostError as lost:
            self.close()
            return self._recover(cmd, args, key, lost, had_session)

    def _recover(
        self,
        cmd: str,
        args: Mapping[str, Any],
        key: str | None,
        lost: _LinkLostError,
        had_session: bool,
    ) -> Reply:
        # After a broken connection: a read, or a write with its key, is sent again on a new
        # connection until it is answered or retry_s has passed; a write without a key never is.
        if lost.timed_out and key is None:
            if _safe_to_repeat(cmd):
                raise ConnectionFailedError(self._no_answer())
            raise AnswerLostError(f"{self._no_answer()} {OUTCOME_UNKNOWN}")
        if key is None and not _safe_to_repeat(cmd):
            try:
                self._open()
            except ConnectionFailedError as error:
                raise AnswerLostError(f"{OUTCOME_UNKNOWN} {error}") from None
            raise AnswerLostError(OUTCOME_UNKNOWN)
        retries = _Retries(self.retry_s)
        while True:
            try:
                if self._sock is None:
                    self._reopen(retries)
                if key is not None and had_session and self.token is None:
                    # The key belongs to the session's member: without the session it cannot
                    # find the first answer, and a request sent without one would be refused.
                    ended = COMMANDS[cmd].returns_token
                    raise AnswerLostError(NEW_SESSION_ENDED if ended else SESSION_ENDED)
                reply = self._exchange(cmd, args, key)
            except _LinkLostError as again:
                self.close()
                if again.timed_out and key is None:
                    raise ConnectionFailedError(self._no_answer()) from None
                if retries.over():
                    raise self._given_up(key) from None
                retries.pause()
                continue
            except ConnectionFailedError as error:
                if key is None or isinstance(error, AnswerLostError):
                    raise
                if isinstance(error, _UnreachableError):
                    raise self._given_up(key) from None
                raise AnswerLostError(f"{OUTCOME_UNKNOWN} {error}") from None
            except ServerError as error:  # resuming was refused for another reason
                if key is None:
                    raise
                raise AnswerLostError(f"{OUTCOME_UNKNOWN} {error}") from None
            if reply.ok or not _inconclusive(reply, key):
                return reply
            if reply.code == SERVER_BUSY:
                self.close()
            if retries.over():
                if key is None:
                    return reply
                raise AnswerLostError(f"{OUTCOME_UNKNOWN} {reply.message}")
            retries.pause()

    def _no_answer(self) -> str:
        return f"The server at {self.address} did not answer within {self.timeout:g} seconds."

    def _given_up(self, key: str | None) -> ConnectionFailedError:
        sentence = (
            f"The server at {self.address} could not be reached again within "
            f"{self.retry_s:g} seconds."
        )
        if key is None:
            return ConnectionFailedError(f"{sentence} Try again later.")
        return AnswerLostError(f"{OUTCOME_UNKNOWN} {sentence}")

    def _reopen(self, retries: _Retries) -> None:
        # A connection broke: connect again until the server answers or the time is up (the
        # last ConnectionFailedError). Trying again is announced once, if the first try fails.
        announced = False
        while True:
            try:
                self._open(retries.connect_timeout(self.timeout))
                return
            except _UnreachableError:
                self.close()
                if retries.over():
                    raise
            except ServerError as error:  # a busy server, or its database, while resuming
                self.close()
                if error.code not in (SERVER_BUSY, UNAVAILABLE) or retries.over():
                    raise
            if not announced and self.on_reconnect is not None:
                self.on_reconnect(
                    "The server cannot be reached just now; trying again for up to "
                    f"{self.retry_s:g} seconds."
                )
                announced = True
            retries.pause()

    def _open(self, connect_timeout: float | None = None) -> None:
        self._sock = self._connect(connect_timeout)
        self._decoder = LineDecoder(MAX_REPLY_BYTES)
        self._lines.clear()
        had_session = self.token is not None
        resumed = had_session and self._resume()
        if self._connected_before and self.on_reconnect is not None:
            if resumed:
                self.on_reconnect("Reconnected to the server and resumed your session.")
            elif had_session:
                self.on_reconnect("Reconnected, but your session has expired; please log in again.")
            else:
                self.on_reconnect("Reconnected to the server.")
        self._connected_before = True

    def _connect(self, connect_timeout: float | None = None) -> ssl.SSLSocket:
        # connect_timeout bounds the TCP connect and the handshake; the requests get timeout.
        context = self._tls_context()
        try:
            raw = socket.create_connection(
                (self.host, self.port), timeout=connect_timeout or self.timeout
            )
        except socket.gaierror:
            raise _UnreachableError(
                f"Cannot find the Waymark server's host {self.host!r}; check --host."
            ) from None
        except OSError:
            raise _UnreachableError(
                f"Cannot reach the Waymark server at {self.address}; is it running?"
            ) from None
        try:
            sock = context.wrap_socket(raw, server_hostname=self.host)
            sock.settimeout(self.timeout)
            return sock
        except ssl.SSLCertVerificationError as error:
            raw.close()
            raise ConnectionFailedError(
                f"The server at {self.address} did not present the expected certificate "
                f"(pinned in {self.cafile}): {error.verify_message}. Not connecting."
            ) from None
        except OSError as error:
            raw.close()
            raise _UnreachableError(
                f"Could not set up a secure connection to {self.address}: {_reason(error)}."
            ) from None

    def _tls_context(self) -> ssl.SSLContext:
        if self._context is None:
            try:
                self._context = tls.client_context(self.cafile)
            except OSError as error:
                raise ConnectionFailedError(
                    f"Cannot use the pinned server certificate {self.cafile}: {_reason(error)}."
                ) from None
        return self._context

    def _resume(self) -> bool:
        # On a new connection: False (and no token) when the session has expired meanwhile.
        try:
            reply = self._exchange("resume", {"token": self.token})
        except _LinkLostError:
            self.close()
            raise _UnreachableError(
                f"The connection to {self.address} broke as soon as it was made; try again later."
            ) from None
        try:
            self._result_of("resume", reply)
        except ServerError as error:
            if error.code != UNAUTHORIZED:
                raise
            self.token = None
            return False
        return True

    def _is_stale(self) -> bool:
        # The server never speaks unprompted, so an idle connection with anything to read
        # (end of stream, a reset, a last error line) is finished. TLS 1.3 session tickets
        # are consumed by OpenSSL and read as "nothing yet".
        sock = self._sock
        assert sock is not None
        sock.setblocking(False)
        try:
            sock.recv(1)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False
        except OSError:
            return True
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(self.timeout)
        return True

    def _exchange(self, cmd: str, args: Mapping[str, Any], key: str | None = None) -> Reply:
        sock = self._sock
        assert sock is not None
        request_id = next(self._ids)
        request: JsonDict = {"id": request_id, "cmd": cmd, "args": dict(args)}
        if key is not None:
            request["idempotency_key"] = key
        try:
            sock.sendall(encode(request))
            line = self._read_line(sock)
        except TimeoutError:
            raise _LinkLostError(timed_out=True) from None
        except OSError:
            raise _LinkLostError() from None
        try:
            reply = decode_reply(line)
        except ValueError:
            self.close()
            raise ConnectionFailedError(
                f"The server at {self.address} sent a reply this client cannot read."
            ) from None
        # A reply with a null id is an error about the connection itself (server_busy).
        if reply.id != request_id and not (reply.id is None and not reply.ok):
            self.close()
            raise ConnectionFailedError(
                f"The server at {self.address} answered a different request; disconnected."
            )
        return reply

    def _read_line(self, sock: ssl.SSLSocket) -> bytes:
        while not self._lines:
            data = sock.recv(65_536)
            if not data:
                raise _LinkLostError()
            for item in self._decoder.feed(data):
                if isinstance(item, ProtocolError):
                    self.close()
                    raise ConnectionFailedError(
                        f"The server's reply was larger than {MAX_REPLY_BYTES} bytes; disconnected."
                    )
                self._lines.append(item)
        return self._lines.pop(0)

    def _result_of(self, cmd: str, reply: Reply) -> JsonDict:
        if not reply.ok:
            if reply.code in (SERVER_BUSY, LINE_TOO_LONG):
                self.close()  # the server closes the connection after these
            raise ServerError(reply.code, reply.message, reply.details, cmd)
        token = reply.result.get("token")
        command = COMMANDS.get(cmd)
        if command is not None and command.returns_token and isinstance(token, str):
            self._keep(token)
        elif cmd == "logout":
            self.forget_session()
        return reply.result

    def _keep(self, token: str) -> None:
        # A new token (a login, or change_password, which ends every other session, the old
        # token's too) replaces the old one here, and in the token file when this session is
        # remembered there or logins are to be remembered. A resume brings the same token back.
        previous, self.token = self.token, token
        if token == previous or self.token_file is None:
            return
        if self._remembered is not None or self.remember:
            self.token_file.save(token)
            self._remembered = token


def _reason(error: OSError) -> str:
    return str(error.strerror or getattr(error, "reason", None) or error)


def _safe_to_repeat(cmd: str) -> bool:
    # protocol.COMMANDS says which commands change nothing, or may harmlessly run twice; every
    # other command is a write, sent again after a broken connection only with its key.
    command = COMMANDS.get(cmd)
    return command is not None and command.safe_to_repeat


def _takes_key(cmd: str) -> bool:
    command = COMMANDS.get(cmd)
    return command is not None and command.takes_idempotency_key


def _new_key() -> str:
    # 24 characters of [A-Za-z0-9_-] (protocol.IDEMPOTENCY_KEY), 144 random bits: one per call.
    return secrets.token_urlsafe(18)


def _inconclusive(reply: Reply, key: str | None) -> bool:
    # An answer that settles nothing, to a request sent again after a broken connection: a busy
    # server (it closes the connection), or, for a keyed write, a database that could not say.
    return reply.code == SERVER_BUSY or (key is not None and reply.code == UNAVAILABLE)


class _Retries:
    """The time left to try again after a broken connection, and the pause before each try."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self._pauses = _pauses()

    def over(self) -> bool:
        """True once the time for trying again is up."""
        return time.monotonic() >= self.deadline

    def pause(self) -> None:
        """Sleep before the next try, never past the deadline (the last try is at it)."""
        time.sleep(max(min(next(self._pauses), self.deadline - time.monotonic()), 0))

    def connect_timeout(self, timeout: float) -> float:
        """How long one try may wait to connect: never much past the deadline."""
        return max(min(timeout, self.deadline - time.monotonic()), 1.0)


def _pauses() -> Iterator[float]:
    pause = FIRST_PAUSE_S
    while True:
        yield random.uniform(pause / 2, pause)
        pause = min(pause * 2, LONGEST_PAUSE_S)
