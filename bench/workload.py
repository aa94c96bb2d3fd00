"""What the clients do: the wire client, bench members, the requests and one worker per target."""

from __future__ import annotations

import functools
import http.client
import itertools
import json
import random
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import rules
import seed
from bench.measurement import BenchError, Request
from bench.options import HOST, REQUEST_TIMEOUT_S
from db import Store
from passwords import hash_token
from protocol import decode_reply

PASSWORD = "bench password"  # noqa: S105 - every bench member's password
PEAK = "peak"  # the area of the search that Waymark and the FastAPI peer both answer
PEER_SEARCH = f"/walks?area={PEAK}"
PEER_BUY = "/buy"
AREAS = sorted({walk.area for walk in seed.walks().walks})
BOOKS = [book.number for book in seed.shop_books()]
CATALOGUE_QUERIES = sorted({book["title"].split()[-1].lower() for book in seed.lending_books()})


# ---------------------------------------------------------------------------------------------
# The wire client


class LineClient:
    """One TLS connection that sends a line and reads the answer line."""

    def __init__(self, port: int, context: ssl.SSLContext):
        raw = socket.create_connection((HOST, port), timeout=REQUEST_TIMEOUT_S)
        self.sock = context.wrap_socket(raw, server_hostname=HOST)
        self.buffer = bytearray()
        self.next_id = 0

    def close(self) -> None:
        self.sock.close()

    def roundtrip(self, line: bytes) -> bytes:
        """Send one line and return the next answer line, without its newline."""
        self.sock.sendall(line)
        while (end := self.buffer.find(b"\n")) == -1:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        answer = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        return answer

    def request_line(self, cmd: str, args: dict[str, Any]) -> tuple[int, bytes]:
        """A request line with the next id."""
        self.next_id += 1
        request = {"id": self.next_id, "cmd": cmd, "args": args}
        return self.next_id, json.dumps(request, separators=(",", ":")).encode() + b"\n"

    def call(self, cmd: str, args: dict[str, Any]) -> None:
        """One request that must succeed; BenchError carries the server's error."""
        request_id, line = self.request_line(cmd, args)
        answer = self.roundtrip(line)
        # The server writes compact JSON with "id" then "ok" first, so a success is recognised
        # without decoding the whole (possibly long) answer; anything else is decoded.
        if not answer.startswith(b'{"id":%d,"ok":true,' % request_id):
            check_answer(answer, request_id)

    def echo(self, line: bytes) -> None:
        """One line through the echo server; it must come back unchanged."""
        if self.roundtrip(line) != line[:-1]:
            raise BenchError("the echo differs from the line sent")


def check_answer(answer: bytes, request_id: int) -> None:
    """Raise BenchError unless the answer line is a success for this request."""
    try:
        reply = decode_reply(answer)
    except ValueError as error:
        raise BenchError(str(error)) from None
    if reply.id != request_id:
        raise BenchError(f"answer for id {reply.id!r}, expected {request_id}")
    if not reply.ok:
        raise BenchError(f"{reply.code}: {reply.message}")


# ---------------------------------------------------------------------------------------------
# Bench members


@dataclass
class Account:
    """A bench member, with how many more copies of each guide book they may still buy."""

    user_id: int
    username: str
    token: str
    left: dict[int, int] = field(
        default_factory=lambda: dict.fromkeys(BOOKS, rules.MAX_COPIES_PER_CUSTOMER)
    )

    def can_buy(self) -> bool:
        return any(self.left.values())

    def take_book(self, rng: random.Random) -> int:
        book = rng.choice([number for number, left in self.left.items() if left])
        self.left[book] -= 1
        return book


class Accounts:
    """Makes bench members straight in the database, each with a session token (untimed).

    A member may buy at most 8 copies of each book, so a buying client moves on to a new member
    every 8 x 7 purchases. Without a store (the echo stage) the members are only names.
    """

    def __init__(self, store: Store | None, password_hash: str = "", prefix: str = "bench"):
        self.store = store
        self.password_hash = password_hash
        self.prefix = prefix  # a name of its own for each Accounts on one database
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def new(self) -> Account:
        with self._lock:
            username = f"{self.prefix}{next(self._numbers):06d}"
        if self.store is None:
            return Account(0, username, "")
        now = int(time.time())
        user = self.store.create_user(username, self.password_hash, now)
        token = secrets.token_urlsafe(32)
        self.store.create_session(user["id"], hash_token(token), now)
        return Account(user["id"], username, token)


# ---------------------------------------------------------------------------------------------
# Requests and workers


def make_request(op: str, rng: random.Random, account: Account) -> tuple[str, dict[str, Any]]:
    """The protocol command and arguments for one operation of the mix."""
    if op == "search_walks":
        area = rng.choice([None, *AREAS])
        return op, {"area": area} if area else {}
    if op == "catalogue":
        query = rng.choice([None, *CATALOGUE_QUERIES])
        return op, {"query": query} if query else {}
    if op == "search_peak":
        return "search_walks", {"area": PEAK}
    if op == "list_areas":
        return op, {}
    if op == "buy":
        return op, {"items": [{"book": account.take_book(rng), "quantity": 1}]}
    if op == "login":
        return op, {"username": account.username, "password": PASSWORD}
    raise ValueError(f"unknown operation {op!r}")


class Worker:
    """One client: prepare() does untimed work and returns the request to time.

    The constructor already acts as a first member (adopt), so a subclass sets up its
    connection before calling it.
    """

    def __init__(self, accounts: Accounts):
        self.accounts = accounts
        self.account = accounts.new()
        self.adopt(self.account)

    def prepare(self, op: str, rng: random.Random) -> Request:
        if op == "buy" and not self.account.can_buy():
            self.account = self.accounts.new()
            self.adopt(self.account)
        cmd, args = make_request(op, rng, self.account)
        return self.bind(cmd, args)

    def adopt(self, account: Account) -> None:
        """Act as this member from now on."""

    def bind(self, cmd: str, args: dict[str, Any]) -> Request:
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection."""


class EchoWorker(Worker):
    """Sends the very lines the server stage sends, to the echo server."""

    def __init__(self, client: LineClient, accounts: Accounts):
        self.client = client
        super().__init__(accounts)

    def bind(self, cmd: str, args: dict[str, Any]) -> Request:
        _, line = self.client.request_line(cmd, args)
        return functools.partial(self.client.echo, line)

    def close(self) -> None:
        self.client.close()


class ServerWorker(Worker):
    """Sends requests to server.py over its own TLS connection."""

    def __init__(self, client: LineClient, accounts: Accounts):
        self.client = client
        super().__init__(accounts)

    def adopt(self, account: Account) -> None:
        self.client.call("resume", {"token": account.token})

    def bind(self, cmd: str, args: dict[str, Any]) -> Request:
        return functools.partial(self.client.call, cmd, args)

    def close(self) -> None:
        self.client.close()


class StoreWorker(Worker):
    """Makes the Store calls that commands.py makes for each request, minus bcrypt."""

    def __init__(self, store: Store, accounts: Accounts):
        self.store = store
        self.handlers: dict[str, Callable[[dict[str, Any]], object]] = {
            "search_walks": self.search_walks,
            "list_areas": self.list_areas,
            "catalogue": self.catalogue,
            "buy": self.buy,
            "login": self.login,
        }
        super().__init__(accounts)

    def bind(self, cmd: str, args: dict[str, Any]) -> Request:
        return functools.partial(self.handlers[cmd], args)

    def search_walks(self, args: dict[str, Any]) -> object:
        # The Store's whole part in a walk search: loading the walks, which snapshot.py filters.
        return self.store.walks()

    def list_areas(self, args: dict[str, Any]) -> object:
        return self.store.list_areas()

    def catalogue(self, args: dict[str, Any]) -> object:
        query = args.get("query")
        return self.store.catalogue(
            rules.match_key(query) if query else None, 50, 0, int(time.time())
        )

    def buy(self, args: dict[str, Any]) -> object:
        (item,) = args["items"]
        # commands checks the session in the database, then reads the books to resolve titles.
        self.store.session_user(hash_token(self.account.token), int(time.time()))
        self.store.shop_books()
        return self.store.place_order(
            self.account.user_id, {item["book"]: item["quantity"]}, int(time.time())
        )

    def login(self, args: dict[str, Any]) -> object:
        now = int(time.time())
        key = rules.username_key(args["username"])
        window = rules.HOUSE_THROTTLE.failure_window_s
        attempt = self.store.start_login(key, HOST, now, keep_s=window)
        assert attempt.user is not None
        return self.store.finish_login(attempt, key, hash_token(secrets.token_urlsafe(32)), now)


class PeerConnection:
    """One keep-alive HTTPS connection to the FastAPI peer; every call must succeed on it."""

    def __init__(self, port: int, context: ssl.SSLContext):
        self.connection = http.client.HTTPSConnection(
            HOST, port, timeout=REQUEST_TIMEOUT_S, context=context
        )
        self.connection.connect()

    def call(self, method: str, path: str, body: bytes | None = None) -> None:
        """One request on the connection already open; BenchError unless it answers 200."""
        # http.client silently reconnects a closed connection; a keep-alive that broke is an
        # error here, since each reconnect would add a handshake to the timing.
        if self.connection.sock is None:
            raise BenchError("the peer closed the keep-alive connection")
        headers = {} if body is None else {"Content-Type": "application/json"}
        self.connection.request(method, path, body, headers)
        response = self.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise BenchError(f"HTTP {response.status}: {answer[:200]!r}")

    def close(self) -> None:
        self.connection.close()


class PeerWorker:
    """Sends the walk search to the FastAPI peer over one keep-alive HTTPS connection."""

    def __init__(self, port: int, context: ssl.SSLContext):
        self.connection = PeerConnection(port, context)

    def prepare(self, op: str, rng: random.Random) -> Request:
        if op != "search_peak":
            raise ValueError(f"this peer client sends only search_peak, not {op!r}")
        return self.search

    def search(self) -> None:
        """One GET that must succeed."""
        self.connection.call("GET", PEER_SEARCH)

    def close(self) -> None:
        self.connection.close()


class PeerBuyWorker(Worker):
    """Sends buys to the FastAPI peer, as ServerWorker sends them to server.py: the same
    random book per order and a new bench member every 56 orders (untimed). The peer logs in
    no one, so the member's id goes in the body instead of a session."""

    def __init__(self, port: int, context: ssl.SSLContext, accounts: Accounts):
        self.connection = PeerConnection(port, context)
        super().__init__(accounts)

    def bind(self, cmd: str, args: dict[str, Any]) -> Request:
        if cmd != "buy":
            raise ValueError(f"this peer client sends only buy, not {cmd!r}")
        body = json.dumps({"user_id": self.account.user_id, **args}, separators=(",", ":"))
        return functools.partial(self.connection.call, "POST", PEER_BUY, body.encode())

    def close(self) -> None:
        self.connection.close()
