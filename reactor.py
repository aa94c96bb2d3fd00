"""The server's sockets: one thread waits on all of them, and only ready work costs a thread.

The reactor thread owns the listener and every connection that is waiting on its client: it
accepts, steps TLS handshakes, reads, splits lines, writes what a client was slow to take, keeps
every deadline and closes. When a connection has whole lines, a request worker (a small pool)
answers them in order and writes the answers itself; only when the client is not reading does
it hand the rest back. Commands that wait on bcrypt or Open Library run in a pool of their own,
so a login storm or a slow upstream cannot take the workers the other requests need.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import selectors
import socket
import ssl
import time
from collections import Counter, deque

import protocol
import workers
from connection import AfterWriting, Connection, Phase, Responder
from logs import FaultLog
from settings import ServerConfig
from stats import ServerStats
from thread_pool import ThreadPool

log = logging.getLogger("waymark.server")

POLL_S = 0.5  # the longest the reactor sleeps: how soon it sees a stop request
_ACCEPTS_PER_WAKE = 64  # then the ready connections get their turn
_RECORDS_PER_READ = 16  # a flooding client yields after 256 KB
_DISCARD_S = 2.0  # after an error line, how long input is read and dropped before closing
_REFUSED_DISCARD_S = 1.0  # the same after a server_busy refusal
_DISCARD_LIMIT = 16 << 20
_CLOSE_NOTIFY_S = 1.0  # how long a client's close_notify is waited for
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_SLOW = {name: command.slow for name, command in protocol.COMMANDS.items()}


class Reactor:
    """Accepts TLS connections and serves them within the limits, until request_stop().

    Handshakes have a budget of their own (max_handshakes), apart from the connections being
    served (max_connections): a flood of sockets that never finish a handshake displaces
    the oldest of them, never a client that has finished one.
    """

    def __init__(
        self,
        config: ServerConfig,
        responder: Responder,
        context: ssl.SSLContext,
        stats: ServerStats,
        faults: FaultLog,
    ):
        self.config = config
        self.responder = responder
        self.stats = stats  # this process's counters: the workers write them, `stats` reads them
        self.context = context
        self.faults = faults
        self.stop_requested = ""  # set by request_stop(): the reason, e.g. a signal's name
        self.stopping = False
        self._selector = selectors.DefaultSelector()
        self._connections: set[Connection] = set()
        self._handshakes: dict[int, Connection] = {}  # oldest first
        self._handshake_keys: dict[Connection, int] = {}
        self._handshakes_by_address: Counter[str] = Counter()
        self._next_handshake = itertools.count()
        self._active = 0
        self._active_by_address: Counter[str] = Counter()
        self._refusing = 0
        self._next_check = 0.0  # no deadline falls before this (monotonic seconds)
        # Workers hand connections back through this queue and wake the reactor with a byte.
        self._returned: deque[Connection] = deque()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._selector.register(self._wake_reader, _READ, None)
        self.listener = socket.create_server(
            (config.host, config.port),
            family=socket.AF_INET6 if ":" in config.host else socket.AF_INET,
            backlog=1024,
            # With --workers every process binds the port, and Linux spreads connections.
            reuse_port=config.workers > 1 or workers.is_worker(),
        )
        self.listener.setblocking(False)
        self._selector.register(self.listener, _READ, None)
        self.address = self.listener.getsockname()[:2]
        self._requests: ThreadPool
        self._slow_requests: ThreadPool

    # -- the loop ------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until request_stop() is called, then finish what is in flight and close."""
        self._requests = ThreadPool("request", self.config.request_threads)
        self._slow_requests = ThreadPool("slow-request", self.config.slow_request_threads)
        try:
            while not self.stop_requested:
                self._turn()
            log.info("received %s, finishing requests in flight", self.stop_requested)
            self._begin_stop()
            drain_until = time.monotonic() + self.config.drain_timeout_s
            while self._connections and time.monotonic() < drain_until:
                self._turn(until=drain_until)
        finally:
            for conn in list(self._connections):
                if conn.phase is not Phase.WORKING:  # a worker's socket is its own to close
                    self._close(conn)
            self._requests.stop()
            self._slow_requests.stop()
            self._selector.close()
            self._wake_reader.close()
            self._wake_writer.close()
            self.faults.flush(everything=True)

    def request_stop(self, reason: str) -> None:
        """Ask the reactor to stop; safe in a signal handler, as it takes no lock."""
        # A signal handler runs in the reactor's thread between any two bytecodes: one
        # attribute store takes no lock it could already hold (issue 18), and the reactor sees
        # it within POLL_S.
        self.stop_requested = reason

    def handshakes_in_progress(self) -> int:
        """TLS handshakes under way just now (for the metrics)."""
        return len(self._handshakes)

    def _turn(self, until: float | None = None) -> None:
        now = time.monotonic()
        timeout = min(POLL_S, max(self._next_check - now, 0.0))
        if until is not None:
            timeout = min(timeout, max(until - now, 0.0))
        for key, events in self._selector.select(timeout):
            if key.fileobj is self.listener:
                self._accept()
            elif key.data is None:
                self._drain_wake_ups()
            else:
                self._on_ready(key.data, events)
        while self._returned:
            self._take_back(self._returned.popleft())
        now = time.monotonic()
        if now >= self._next_check:
            self._check_deadlines(now)

    # -- accepting and handshakes --------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                raw, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # e.g. out of file descriptors: log it and let the others be served meanwhile
                log.exception("accept failed")
                return
            self._start_handshake(raw, str(peer[0]))

    def _start_handshake(self, raw: socket.socket, address: str) -> None:
        try:
            raw.setblocking(False)
            # Answers are one small write each: without this, Nagle's algorithm holds a first
            # answer until the client's delayed ACK (about 40 ms on Linux).
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = self.context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError) as error:  # e.g. reset before we got to it
            log.debug("could not take a connection from %s: %s", address, error)
            raw.close()
            return
        if self._handshakes and len(self._handshakes) >= self.config.max_handshakes:
            self._close(self._displaced())
        conn = Connection(sock, address, self.config.max_line_bytes)
        self._connections.add(conn)
        key = next(self._next_handshake)
        self._handshakes[key] = conn
        self._handshake_keys[conn] = key
        self._handshakes_by_address[address] += 1
        # A deadline for the whole handshake, not per read: a ClientHello trickled a byte at a
        # time gets handshake_timeout_s in all.
        self._set_deadline(conn, time.monotonic() + self.config.handshake_timeout_s)
        self._step_handshake(conn)

    def _displaced(self) -> Connection:
        # The oldest handshake of the address that has the most under way: a flood from one
        # address displaces its own sockets before anyone else's. From one address alone (as
        # in the tests), that is simply the oldest.
        most = max(self._handshakes_by_address.values())
        return next(
            c for c in self._handshakes.values() if self._handshakes_by_address[c.address] == most
        )

    def _forget_handshake(self, conn: Connection) -> None:
        key = self._handshake_keys.pop(conn, None)
        if key is not None:
            del self._handshakes[key]
            self._handshakes_by_address[conn.address] -= 1
            if not self._handshakes_by_address[conn.address]:
                del self._handshakes_by_address[conn.address]

    def _step_handshake(self, conn: Connection) -> None:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, _READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, _WRITE)
            return
        except (OSError, ssl.SSLError, ValueError) as error:
            log.debug("TLS handshake failed: %s", error)
            self._close(conn)
            return
        self._forget_handshake(conn)
        self._admit(conn)

    def _admit(self, conn: Connection) -> None:
        refusal = self._refusal(conn.address)
        if refusal is not None:
            # Every client that finished its handshake past a limit hears why, once, and is
            # then given a moment to read it, unless too many are lingering already.
            self._refusing += 1
            conn.refused = True
            conn.queue_answer(protocol.error_response(None, refusal))
            conn.after_writing = AfterWriting.DISCARD
            self._write(conn)
            return
        conn.admitted = True
        self._active += 1
        self._active_by_address[conn.address] += 1
        self.stats.connection_opened()
        if self.stopping:
            self._begin_closing(conn)
        else:
            self._await_line(conn, time.monotonic())

    def _refusal(self, address: str) -> protocol.ProtocolError | None:
        if self._active >= self.config.max_connections:
            return protocol.ProtocolError(
                protocol.SERVER_BUSY,
                "The server is busy; please try again shortly.",
                {"scope": "server", "limit": self.config.max_connections},
            )
        per_address = self.config.max_connections_per_address
        if per_address and self._active_by_address[address] >= per_address:
            return protocol.ProtocolError(
                protocol.SERVER_BUSY,
                "Too many connections are open from your address; close some and try again.",
                {"scope": "address", "limit": per_address},
            )
        return None

    # -- serving -------------------------------------------------------------------------------

    def _on_ready(self, conn: Connection, events: int) -> None:
        phase = conn.phase
        if phase is Phase.HANDSHAKE:
            self._step_handshake(conn)
        elif phase is Phase.READING:
            self._read(conn)
        elif phase is Phase.WRITING:
            self._write(conn)
        elif phase is Phase.DISCARDING:
            self._discard(conn)
        elif phase is Phase.CLOSING:
            self._step_closing(conn)
        else:  # WORKING: more input while a worker owns the socket, read once it hands it back
            self._watch(conn, 0)

    def _await_line(self, conn: Connection, now: float) -> None:
        conn.phase = Phase.READING
        conn.last_heard = now
        # A new line's clock starts once the lines before it are answered, so a pipelined
        # burst of slow requests never counts against the line after it.
        conn.line_started = now if conn.decoder.has_partial_line else None
        self._set_deadline(conn, self._reading_deadline(conn))
        self._watch(conn, _READ)
        if conn.sock.pending():  # already decrypted: the selector will not report it
            self._read(conn)

    def _reading_deadline(self, conn: Connection) -> float:
        deadline = conn.last_heard + self.config.idle_timeout_s
        if conn.line_started is not None:
            # A deadline per line, not per byte: one byte every few seconds must not keep a
            # connection (and its slot) for ever, whatever the idle timeout.
            deadline = min(deadline, conn.line_started + self.config.line_timeout_s)
        return deadline

    def _read(self, conn: Connection) -> None:
        try:
            chunks = conn.read(_RECORDS_PER_READ)
        except (OSError, ssl.SSLError) as error:
            log.debug("connection from %s ended: %s", conn.address, error)
            self._close(conn)
            return
        if chunks is None:
            self._begin_closing(conn)
            return
        if not chunks:
            return
        now = conn.last_heard = time.monotonic()
        for data in chunks:
            conn.lines.extend(conn.decoder.feed(data))
        if conn.lines:
            # Still watched for reading: a client waiting for its answer sends nothing, so the
            # selector stays quiet, and the connection is unwatched only if it does send more
            # (_on_ready). That saves two selector calls a request.
            conn.phase = Phase.WORKING
            self._requests.submit(lambda: self._work(conn, slow=False))
            return
        if conn.line_started is None and conn.decoder.has_partial_line:
            conn.line_started = now
        self._set_deadline(conn, self._reading_deadline(conn))

    def _work(self, conn: Connection, slow: bool) -> None:
        """In a request worker: answer the connection's lines in order, then hand it back."""
        try:
            while conn.lines:
                line = conn.lines[0]
                if isinstance(line, protocol.ProtocolError):  # the line was too long: the end
                    conn.lines.clear()
                    conn.queue_answer(protocol.error_response(None, line))
                    conn.after_writing = AfterWriting.DISCARD
                    break
                decoded = conn.decoded or self.responder.decode(line)
                if not slow and isinstance(decoded, protocol.Request) and _SLOW[decoded.cmd]:
                    conn.decoded = decoded
                    self._slow_requests.submit(lambda: self._work(conn, slow=True))
                    return
                conn.lines.popleft()
                conn.decoded = None
                conn.queue_answer(self.responder.respond(conn.session, line, decoded))
                if not conn.write():
                    break  # the client is not reading: the reactor waits for it
            else:
                conn.write()
        except (OSError, ssl.SSLError) as error:
            log.debug("connection from %s ended: %s", conn.address, error)
            conn.broken = True
        except Exception:  # noqa: BLE001 - one connection's fault must never stop the server
            log.exception("connection handler failed")
            conn.broken = True
        self._returned.append(conn)
        with contextlib.suppress(BlockingIOError):  # already full: the reactor is awake anyway
            self._wake_writer.send(b"\0")

    def _drain_wake_ups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_reader.recv(4096):
                pass

    def _take_back(self, conn: Connection) -> None:
        if conn.broken:
            self._close(conn)
        elif conn.has_output:
            self._begin_writing(conn)
        else:
            self._after_written(conn)

    def _begin_writing(self, conn: Connection) -> None:
        conn.phase = Phase.WRITING
        # One deadline per answer: a client that reads a trickle holds its slot for one
        # write timeout at most.
        self._set_deadline(conn, time.monotonic() + self.config.write_timeout_s)
        self._watch(conn, _WRITE)

    def _write(self, conn: Connection) -> None:
        try:
            done = conn.write()
        except (OSError, ssl.SSLError) as error:
            log.debug("connection from %s ended: %s", conn.address, error)
            self._close(conn)
            return
        if not done:
            if conn.phase is not Phase.WRITING:
                self._begin_writing(conn)
            return
        self._after_written(conn)

    def _after_written(self, conn: Connection) -> None:
        if conn.after_writing is AfterWriting.DISCARD:
            self._begin_discarding(conn)
        elif conn.lines:  # answering stopped for a slow reader: go on with the rest
            conn.phase = Phase.WORKING
            self._watch(conn, 0)
            self._requests.submit(lambda: self._work(conn, slow=False))
        elif self.stopping:
            self._begin_closing(conn)
        else:
            self._await_line(conn, time.monotonic())

    # -- deadlines -----------------------------------------------------------------------------

    def _set_deadline(self, conn: Connection, deadline: float) -> None:
        conn.deadline = deadline
        self._next_check = min(self._next_check, deadline)

    def _check_deadlines(self, now: float) -> None:
        # One pass over the connections, at the earliest deadline or every POLL_S: a thousand
        # idle ones cost a few hundred microseconds a second, and no thread each.
        self.faults.flush()
        earliest = now + POLL_S
        for conn in list(self._connections):
            if conn.phase is Phase.WORKING:
                continue
            if conn.deadline <= now:
                self._expire(conn, now)
            if conn in self._connections and conn.phase is not Phase.WORKING:
                earliest = min(earliest, conn.deadline)
        self._next_check = earliest

    def _expire(self, conn: Connection, now: float) -> None:
        phase = conn.phase
        if phase is Phase.READING:
            if conn.line_started is not None and now - conn.line_started >= (
                self.config.line_timeout_s
            ):
                log.debug("closing a connection from %s: line too slow", conn.address)
                conn.queue_answer(protocol.error_response(None, self._too_slow()))
                conn.after_writing = AfterWriting.DISCARD
                self._write(conn)
            else:
                log.debug("closing idle connection from %s", conn.address)
                self._begin_closing(conn)
        elif phase is Phase.DISCARDING:
            self._begin_closing(conn)
        else:  # a handshake too slow, a client not reading its answer, no close_notify back
            log.debug("closing a connection from %s: %s too slow", conn.address, phase.value)
            self._close(conn)

    def _too_slow(self) -> protocol.ProtocolError:
        seconds = self.config.line_timeout_s
        return protocol.ProtocolError(
            protocol.BAD_REQUEST,
            f"The request line did not end within {seconds:g} seconds of its first byte.",
            {"line_timeout_s": seconds},
        )

    # -- closing -------------------------------------------------------------------------------

    def _begin_discarding(self, conn: Connection) -> None:
        # Closing a socket with unread input sends a TCP reset, which can destroy the error line
        # the client has not read yet; so read and drop what is still coming, briefly.
        refused = conn.refused
        if refused and self._refusing > self.config.max_handshakes:
            self._close(conn)
            return
        conn.phase = Phase.DISCARDING
        self._set_deadline(conn, time.monotonic() + (_REFUSED_DISCARD_S if refused else _DISCARD_S))
        self._watch(conn, _READ)
        self._discard(conn)

    def _discard(self, conn: Connection) -> None:
        try:
            chunks = conn.read(_RECORDS_PER_READ)
        except (OSError, ssl.SSLError):
            self._close(conn)
            return
        conn.discarded += sum(len(data) for data in chunks or ())
        if chunks is None or conn.discarded >= _DISCARD_LIMIT:
            self._begin_closing(conn)

    def _begin_closing(self, conn: Connection) -> None:
        # A close_notify lets the client tell an end from a truncation.
        conn.phase = Phase.CLOSING
        self._set_deadline(conn, time.monotonic() + _CLOSE_NOTIFY_S)
        self._step_closing(conn)

    def _step_closing(self, conn: Connection) -> None:
        try:
            done = conn.close_notify()
        except (OSError, ssl.SSLError, ValueError):
            done = True
        if done or self.stopping:  # a stopping server does not wait for the client's reply
            self._close(conn)
        else:
            self._watch(conn, _READ)

    def _begin_stop(self) -> None:
        # Connections waiting for a line close now; one a worker is answering finishes its
        # lines first, then closes; handshakes under way are cut.
        self.stopping = True
        self._selector.unregister(self.listener)
        self.listener.close()
        for conn in list(self._connections):
            if conn.phase is Phase.HANDSHAKE:
                self._close(conn)
            elif conn.phase in (Phase.READING, Phase.CLOSING):
                self._begin_closing(conn)

    def _close(self, conn: Connection) -> None:
        self._watch(conn, 0)
        self._forget_handshake(conn)
        if conn in self._connections:
            self._connections.discard(conn)
            if conn.admitted:
                self._active -= 1
                self._active_by_address[conn.address] -= 1
                if not self._active_by_address[conn.address]:
                    del self._active_by_address[conn.address]
                self.stats.connection_closed()
            elif conn.refused:
                self._refusing -= 1
        conn.sock.close()

    def _watch(self, conn: Connection, events: int) -> None:
        if events == conn.watching:
            return
        if not events:
            self._selector.unregister(conn.sock)
        elif not conn.watching:
            self._selector.register(conn.sock, events, conn)
        else:
            self._selector.modify(conn.sock, events, conn)
        conn.watching = events
