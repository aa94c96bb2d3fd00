"""A loopback TCP proxy in front of a real server, which a test can cut and restore, or have
lose the next answer the server sends."""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; cut() drops every link and refuses new ones, and
    drop_next_answer() loses the next bytes the target sends, then drops their link."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._links: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._drop: str | None = None  # None, "link" or "all": see drop_next_answer()
        self.answers_dropped = 0
        self.accepted = 0  # connections taken and forwarded
        self.restore()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cut()

    def restore(self) -> None:
        """Accept and forward connections again, on the same port."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Close the port (new connections are refused) and reset every open link."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            links, self._links = self._links, set()
        for sock in links:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def drop_next_answer(self, close_port: bool = False) -> None:
        """Lose the next bytes any target sends (the answer to a request already on its way,
        once the TLS handshakes are over), and reset that link; with close_port, cut() it all.
        The target has done the request: only its answer never arrives."""
        with self._lock:
            self._drop = "all" if close_port else "link"

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
            with self._lock:
                self._links |= {client, upstream}
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool = False) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if answers and self._take_drop(source, sink):
                    break
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _take_drop(self, upstream: socket.socket, client: socket.socket) -> bool:
        # True when these bytes are the answer to lose: the link is reset, never forwarded.
        with self._lock:
            drop, self._drop = self._drop, None
            if drop is None:
                return False
            self.answers_dropped += 1
        if drop == "all":
            self.cut()
        else:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        return True
