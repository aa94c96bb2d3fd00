"""A local stand-in for Open Library, serving recorded answers with switchable failure modes.

The answers in openlibrary_fixtures/ are the real API's: search_orwell.json and search_dune.json
are recorded searches with their ISBN lists cut short; search_more.json holds further search
documents built from recorded work records; works.json and authors.json are recorded records,
trimmed, with Fantastic Mr Fox's description written in the {"type", "value"} form that the API
uses for many works. Every search draws on the documents of all search_*.json files together.

    with FakeOpenLibrary() as fake:
        client = OpenLibrary(fake.url)
        fake.mode = "500"
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.ports import unused_port

FIXTURES = Path(__file__).with_name("openlibrary_fixtures")
# "<failure>_once" serves that failure to one request, then the mode turns back to "ok".
MODES = ("ok", "500", "429", "slow", "trickle", "bad_json", "500_once", "429_once", "slow_once")


def load_fixture(name: str) -> Any:
    """Return the parsed JSON of one file in openlibrary_fixtures/."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def recorded_search_docs() -> list[dict[str, Any]]:
    """Return every recorded search document, once per work key."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(FIXTURES.glob("search_*.json")):
        for doc in load_fixture(path.name)["docs"]:
            docs.setdefault(doc["key"], doc)
    return list(docs.values())


def refused_url() -> str:
    """Return an http URL on 127.0.0.1 where nothing listens, so connecting is refused."""
    return f"http://127.0.0.1:{unused_port()}"


class FakeOpenLibrary:
    """Open Library on 127.0.0.1:<free port> in a daemon thread; set .mode to make it fail."""

    def __init__(
        self,
        mode: str = "ok",
        slow_s: float = 3.0,
        retry_after: str = "1",
        trickle_gap_s: float = 0.1,
    ) -> None:
        self._lock = threading.Lock()
        self.reset(mode, slow_s, retry_after, trickle_gap_s)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def reset(
        self,
        mode: str = "ok",
        slow_s: float = 3.0,
        retry_after: str = "1",
        trickle_gap_s: float = 0.1,
    ) -> None:
        """Reload the recorded answers, forget what was received, and set the mode."""
        with self._lock:
            self.mode = mode
            self.slow_s = slow_s
            self.retry_after = retry_after
            self.trickle_gap_s = trickle_gap_s
            self.search_docs = recorded_search_docs()
            self.works: dict[str, Any] = load_fixture("works.json")
            self.authors: dict[str, Any] = load_fixture("authors.json")
            self.requests: Counter[str] = Counter()
            self.user_agents: list[str] = []
            self.queries: list[dict[str, str]] = []

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
        self._mode = mode

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def stop(self) -> None:
        """Stop serving and wake any request held back by "slow" or "trickle"; safe to repeat."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        # Kept-alive connections would otherwise go on being served after the "site" is gone.
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenLibrary:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record(self, path: str, query: dict[str, str], user_agent: str) -> str:
        """Count one request and return the mode it must be served in."""
        with self._lock:
            self.requests[path] += 1
            self.user_agents.append(user_agent)
            self.queries.append(query)
            mode = self._mode
            if mode.endswith("_once"):
                self._mode = "ok"
                mode = mode.removesuffix("_once")
            return mode

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        """Return the status and JSON body that the real site gives for path."""
        if path == "/search.json":
            return self._search(query)
        for prefix, records in (("/works/", self.works), ("/authors/", self.authors)):
            if path.startswith(prefix) and path.endswith(".json"):
                olid = path[len(prefix) : -len(".json")]
                if olid in records:
                    return 200, records[olid]
                return 404, {"error": "notfound", "key": path.removesuffix(".json")}
        return 404, {"error": "notfound", "key": path}

    def _search(self, query: dict[str, str]) -> tuple[int, Any]:
        text = query.get("q", "").strip()
        if not text:
            return 400, {"error": "q is required"}
        words = text.casefold().split()
        matches = [doc for doc in self.search_docs if _matches(doc, words)]
        limit = int(query.get("limit", "100"))
        fields = [f for f in query.get("fields", "").split(",") if f]
        docs = [
            {k: v for k, v in doc.items() if not fields or k in fields} for doc in matches[:limit]
        ]
        return 200, {
            "numFound": len(matches),
            "start": 0,
            "numFoundExact": True,
            "num_found": len(matches),
            "documentation_url": "https://openlibrary.org/dev/docs/api/search",
            "q": text,
            "offset": None,
            "docs": docs,
        }


def _matches(doc: dict[str, Any], words: list[str]) -> bool:
    haystack = " ".join([doc.get("title", ""), *doc.get("author_name", [])]).casefold()
    return all(word in haystack for word in words)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenLibrary

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that gave up (timeouts) leave broken pipes behind; only other errors matter.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out separately; no 40 ms stalls

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        mode = fake._record(parts.path, query, self.headers.get("User-Agent", ""))
        if mode == "slow":
            fake._stopping.wait(fake.slow_s)
            mode = "ok"
        if mode == "500":
            self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
        elif mode == "429":
            self._send(429, b"Too Many Requests", "text/plain", {"Retry-After": fake.retry_after})
        elif mode == "bad_json":
            self._send(200, b'{"numFound": 1, "docs": [{"key": "/works/OL1W"', "application/json")
        else:
            status, body = fake._answer(parts.path, query)
            gap_s = fake.trickle_gap_s if mode == "trickle" else 0.0
            self._send(status, json.dumps(body).encode(), "application/json", gap_s=gap_s)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        gap_s: float = 0.0,
    ) -> None:
        """Send one answer; with gap_s, send its body a few bytes at a time."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        piece = 16 if gap_s else max(len(body), 1)
        for start in range(0, len(body), piece):
            if gap_s:
                self.wfile.flush()
                if self.server.fake._stopping.wait(gap_s):
                    return
            self.wfile.write(body[start : start + piece])

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet
