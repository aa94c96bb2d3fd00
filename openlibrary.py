"""Open Library client: book search, work lookup, each cached, retried, bounded in time.

Every failure reaches callers as UpstreamUnavailableError (UpstreamNotFoundError for an unknown work).
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from rules import match_key

__all__ = [
    "BookHit",
    "OpenLibrary",
    "SearchAnswer",
    "UpstreamNotFoundError",
    "UpstreamUnavailableError",
    "Work",
    "parse_year",
]

VERSION = "1.0"
DEFAULT_BASE_URL = "https://openlibrary.org"
DEFAULT_CONTACT = "waymark-admin@example.org"
SEARCH_FIELDS = "key,title,author_name,first_publish_year"
MAX_SEARCH_LIMIT = 100
# ASCII digits only, and few enough of them to keep the request line sane.
WORK_KEY = re.compile(r"/works/OL[0-9]{1,15}W")
AUTHOR_KEY = re.compile(r"/authors/OL[0-9]{1,15}A")
# Open Library sheds load with 429 and 5xx; every other status is a final answer.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# A longer Retry-After is cut short: a member waiting on a search is better served by a
# cached answer within seconds than by a minute's silence.
MAX_RETRY_AFTER_S = 2
# Real answers are a few kilobytes; the cap stops a broken or hostile upstream filling memory.
MAX_BODY_BYTES = 2 * 1024 * 1024
# Anthologies list dozens of authors, each costing a request; a catalogue entry needs a few.
MAX_AUTHORS = 10
_YEAR = re.compile(r"(?<![0-9])([0-9]{4})(?![0-9])")

logger = logging.getLogger(__name__)
T = TypeVar("T")
Source = Literal["cache", "upstream", "stale"]


class UpstreamUnavailableError(Exception):
    """Open Library gave no usable answer: network error, timeout, HTTP error or bad data."""


class UpstreamNotFoundError(UpstreamUnavailableError):
    """Open Library answered that the work or author does not exist."""


@dataclass(frozen=True)
class BookHit:
    """One search result."""

    key: str
    title: str
    authors: tuple[str, ...]
    first_publish_year: int | None


@dataclass(frozen=True)
class SearchAnswer:
    """Search results; stale means Open Library failed and this is an expired cached copy."""

    hits: tuple[BookHit, ...]
    from_cache: bool
    stale: bool


@dataclass(frozen=True)
class Work:
    """A work with its authors' names resolved."""

    key: str
    title: str
    authors: tuple[str, ...]
    first_publish_year: int | None
    description: str | None


def parse_year(date: str | None) -> int | None:
    """Return the year in a date such as "1965", "August 1965" or "1965-08-01", else None."""
    match = _YEAR.search(date) if date else None
    return int(match.group(1)) if match else None


class _TimeBoundRetry(Retry):
    """urllib3 Retry that never repeats a request after a timeout, so each costs only one."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        # urllib3 files "connection refused" under ConnectTimeoutError; that one is cheap to retry.
        timed_out = isinstance(error, ReadTimeoutError) or (
            isinstance(error, ConnectTimeoutError) and not isinstance(error, NewConnectionError)
        )
        if error is not None and timed_out:
            raise error.with_traceback(_stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _make_session(retries: int) -> requests.Session:
    """Return a session retrying GETs on 429 and 5xx with backoff, honouring Retry-After."""
    retry = _TimeBoundRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=0.25,
        backoff_max=1.0,
        respect_retry_after_header=True,
        retry_after_max=MAX_RETRY_AFTER_S,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=16)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.max_redirects = 3
    # The API needs no cookies; refusing them keeps the session shared by threads stateless.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


class _TTLCache:
    """Thread-safe answers with a time to live; expired ones stay, for stale fallback."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        if ttl_s < 0 or max_entries < 1:
            raise ValueError("cache_ttl_s must be >= 0 and cache_max_entries >= 1")
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[Any, bool] | None:
        """Return (value, is_fresh), or None when nothing is held for key."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        return value, time.monotonic() - stored_at < self._ttl_s

    def put(self, key: Hashable, value: Any) -> None:
        """Store value as fresh, evicting the longest-held entries beyond the bound."""
        with self._lock:
            self._entries[key] = (time.monotonic(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)


class OpenLibrary:
    """Client for openlibrary.org or a stand-in at base_url; safe to share between threads."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        session: requests.Session | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        cache_ttl_s: float = 24 * 3600,
        cache_max_entries: int = 1000,
        user_agent: str | None = None,
        contact: str = DEFAULT_CONTACT,
        retries: int = 2,
    ) -> None:
        if connect_timeout <= 0 or read_timeout <= 0 or retries < 0:
            raise ValueError("timeouts must be positive and retries must not be negative")
        self.base_url = base_url.rstrip("/")
        # Open Library refuses python-requests' default agent and throttles anonymous ones.
        self.user_agent = user_agent or f"Waymark/{VERSION} (+contact: {contact})"
        self._headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        self._timeout = (connect_timeout, read_timeout)
        self._cache = _TTLCache(cache_ttl_s, cache_max_entries)
        self._owns_session = session is None
        self._session = _make_session(retries) if session is None else session

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> OpenLibrary:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def search(self, query: str, limit: int = 10) -> SearchAnswer:
        """Search works by title or author; raises ValueError, or UpstreamUnavailableError if uncached."""
        normalised = match_key(query)
        if not normalised:
            raise ValueError("query must not be empty")
        if not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_SEARCH_LIMIT}")
        params = {"q": " ".join(query.split()), "limit": str(limit), "fields": SEARCH_FIELDS}
        hits, source = self._cached(
            ("search", normalised, limit),
            lambda: _parse_search(self._fetch("/search.json", params)),
        )
        return SearchAnswer(hits, from_cache=source != "upstream", stale=source == "stale")

    def work(self, key: str) -> Work:
        """Look up a work such as "/works/OL45804W"; UpstreamNotFoundError means no such work."""
        if not WORK_KEY.fullmatch(key):
            raise ValueError(f"not an Open Library work key: {key!r}")
        work, _ = self._cached(("work", key), lambda: self._fetch_work(key))
        return work

    def _fetch_work(self, key: str) -> Work:
        record = self._record(key, WORK_KEY)
        title = record.get("title")
        if not isinstance(title, str) or not title.strip():
            raise UpstreamUnavailableError(f"Open Library sent a work without a title for {key}")
        canonical = record.get("key")
        names = (self._author_name(author) for author in _author_keys(record)[:MAX_AUTHORS])
        date = record.get("first_publish_date")
        return Work(
            key=canonical if isinstance(canonical, str) and WORK_KEY.fullmatch(canonical) else key,
            title=title.strip(),
            authors=tuple(name for name in names if name),
            first_publish_year=parse_year(date if isinstance(date, str) else None),
            description=_description(record.get("description")),
        )

    def _author_name(self, key: str) -> str | None:
        """Return an author's name, or None for a dangling or nameless author record."""
        try:
            name, _ = self._cached(("author", key), lambda: _name(self._record(key, AUTHOR_KEY)))
        except UpstreamNotFoundError:
            logger.warning("Open Library lists author %s, which it does not have", key)
            return None
        return name

    def _cached(self, cache_key: Hashable, fetch: Callable[[], T]) -> tuple[T, Source]:
        """Answer from a fresh cache entry, else upstream, else a stale entry if one is held."""
        cached = self._cache.get(cache_key)
        if cached is not None and cached[1]:
            return cached[0], "cache"
        try:
            value = fetch()
        except UpstreamNotFoundError:
            raise  # Open Library's own "no such thing" outranks anything we remember.
        except UpstreamUnavailableError as exc:
            if cached is None:
                raise
            logger.warning(
                "Open Library failed (%s); answering %r from a stale cache", exc, cache_key
            )
            return cached[0], "stale"
        self._cache.put(cache_key, value)
        return value, "upstream"

    def _record(self, key: str, pattern: re.Pattern[str]) -> dict[str, Any]:
        """Return the JSON record at key, following one redirect left by a merge."""
        record = _object(self._fetch(f"{key}.json"), key)
        if _ref(record.get("type")) == "/type/redirect":
            location = record.get("location")
            if not isinstance(location, str) or not pattern.fullmatch(location):
                raise UpstreamUnavailableError(f"Open Library redirected {key} nowhere usable")
            record = _object(self._fetch(f"{location}.json"), location)
        if _ref(record.get("type")) == "/type/delete":
            raise UpstreamNotFoundError(f"Open Library has deleted {key}")
        if _ref(record.get("type")) == "/type/redirect":
            raise UpstreamUnavailableError(f"Open Library redirected {key} more than once")
        return record

    def _fetch(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET a JSON answer; the one place where lower-level failures become UpstreamUnavailableError."""
        read_timeout = self._timeout[1]
        try:
            with self._session.get(
                self.base_url + path,
                params=params,
                headers=self._headers,
                timeout=self._timeout,
                stream=True,
            ) as response:
                if response.status_code == 404:
                    raise UpstreamNotFoundError(f"Open Library has no {path}")
                if response.status_code != 200:
                    raise UpstreamUnavailableError(
                        f"Open Library answered HTTP {response.status_code} for {path}"
                    )
                body = _read_body(response, deadline=time.monotonic() + read_timeout)
            return json.loads(body)
        # RequestException is an OSError; RecursionError comes from absurdly nested JSON.
        except (OSError, ValueError, RecursionError, urllib3.exceptions.HTTPError) as exc:
            raise UpstreamUnavailableError(
                f"Open Library request for {path} failed: {exc}"
            ) from exc


def _read_body(response: requests.Response, deadline: float) -> bytes:
    """Read a body of bounded size that must arrive by deadline, however slowly it trickles."""
    chunks: list[bytes] = []
    size = 0
    # read1 returns whatever has arrived; iter_content would wait for a full chunk first.
    while chunk := response.raw.read1(16384, decode_content=True):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise UpstreamUnavailableError(f"Open Library answer exceeds {MAX_BODY_BYTES} bytes")
        if time.monotonic() > deadline:
            raise UpstreamUnavailableError("Open Library answer arrived too slowly")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_search(data: Any) -> tuple[BookHit, ...]:
    """Turn a search answer into hits, skipping any document that lacks a key or title."""
    docs = data.get("docs") if isinstance(data, dict) else None
    if not isinstance(docs, list):
        raise UpstreamUnavailableError("Open Library sent a search answer without docs")
    hits = []
    for doc in docs:
        key = doc.get("key") if isinstance(doc, dict) else None
        title = doc.get("title") if isinstance(doc, dict) else None
        if not isinstance(key, str) or not WORK_KEY.fullmatch(key) or not isinstance(title, str):
            logger.debug("skipping malformed search document %r", doc)
            continue
        names = doc.get("author_name")
        authors = tuple(n for n in names if isinstance(n, str)) if isinstance(names, list) else ()
        year = doc.get("first_publish_year")
        # type() rather than isinstance(): a JSON true must not pass for the year 1.
        hits.append(BookHit(key, title.strip(), authors, year if type(year) is int else None))
    return tuple(hits)


def _object(data: Any, key: str) -> dict[str, Any]:
    """Return data if it is a JSON object, the shape of every Open Library record."""
    if not isinstance(data, dict):
        raise UpstreamUnavailableError(f"Open Library sent something other than a record for {key}")
    return data


def _ref(value: Any) -> str | None:
    """Return the key in {"key": "/type/work"} or a bare "/type/work" string."""
    if isinstance(value, dict):
        value = value.get("key")
    return value if isinstance(value, str) else None


def _author_keys(record: dict[str, Any]) -> list[str]:
    """Return the distinct author keys of a work, in order."""
    entries = record.get("authors")
    keys: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        # Most entries are {"author": {"key": ...}}; some older records hold the key directly.
        key = _ref(entry.get("author", entry)) if isinstance(entry, dict) else None
        if key and AUTHOR_KEY.fullmatch(key) and key not in keys:
            keys.append(key)
    return keys


def _description(value: Any) -> str | None:
    """Return a description given as a string or as {"type": "/type/text", "value": ...}."""
    if isinstance(value, dict):
        value = value.get("value")
    return (value.strip() or None) if isinstance(value, str) else None


def _name(record: dict[str, Any]) -> str | None:
    """Return an author record's name, falling back to the personal name."""
    for field in ("name", "personal_name"):
        value = record.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
