"""The console client: pure helpers, the command line, the connection, and whole menu sessions."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

import client
import client_subcommands
import tls
from client_basket import Basket, BasketError, GuideBook, guide_books_in
from client_link import (
    OUTCOME_UNKNOWN,
    AnswerLostError,
    Connection,
    ConnectionFailedError,
    ServerError,
    TokenFile,
    UsageError,
)
from client_menus import App
from client_views import clean_text, format_local_time, format_money, loan_status, walks_table
from protocol import COMMANDS, IDEMPOTENCY_KEY, Reply
from tests.ports import unused_port
from tests.wire import ServerProcess, make_cert

SOCKET_TIMEOUT_S = 10.0
CLIENT = Path(client.__file__).resolve()


# Pure helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pence", "shown"),
    [
        (0, "£0.00"),
        (5, "£0.05"),
        (99, "£0.99"),
        (1299, "£12.99"),
        (7500, "£75.00"),
        (123456, "£1,234.56"),
        (-150, "-£1.50"),
    ],
)
def test_money_is_shown_in_pounds_and_pence(pence: int, shown: str) -> None:
    assert format_money(pence) == shown


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_money_round_trips_exactly(pence: int) -> None:
    shown = format_money(pence)
    assert Decimal(shown.replace("£", "").replace(",", "")) * 100 == pence


def test_times_are_shown_in_local_time() -> None:
    plus_one = timezone(timedelta(hours=1))
    assert format_local_time("2026-01-17T13:05:00Z", plus_one) == "Sat 17 Jan 2026 14:05"
    assert format_local_time("2026-01-17T13:05:00.123456Z", UTC) == "Sat 17 Jan 2026 13:05"
    assert format_local_time(None) == ""
    assert format_local_time("not a time") == "not a time"


def test_text_from_the_server_cannot_drive_the_terminal() -> None:
    assert clean_text("Hope and Win\nHill") == "Hope and Win Hill"
    assert clean_text("\x1b]0;owned\x07Title") == "\ufffd]0;owned\ufffdTitle"
    assert clean_text("abc\u202edef") == "abc\ufffddef"
    assert clean_text(42) == "42"


@pytest.mark.parametrize(
    ("loan", "status"),
    [
        ({"returned_at": "2026-01-02T10:00:00Z", "due_at": "2026-01-01T10:00:00Z"}, "returned"),
        ({"returned_at": None, "due_at": "2026-01-20T10:00:00Z"}, "on loan"),
        ({"returned_at": None, "due_at": "2026-01-09T10:00:00Z"}, "OVERDUE by 1 day"),
        ({"returned_at": None, "due_at": "2026-01-05T09:00:00Z"}, "OVERDUE by 5 days"),
        ({"returned_at": None, "due_at": "x", "overdue": True, "days_overdue": 3}, "OVERDUE by 3"),
        ({"returned_at": None, "due_at": "x", "overdue": False, "days_overdue": 0}, "on loan"),
    ],
)
def test_loan_status_marks_overdue_loans(loan: dict[str, Any], status: str) -> None:
    now = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)
    assert loan_status(loan, now).startswith(status)


@pytest.mark.parametrize(
    ("text", "item"),
    [
        ("101:2", {"book": 101, "quantity": 2}),
        ("105", {"book": 105, "quantity": 1}),
        ("More Peak District:3", {"book": "More Peak District", "quantity": 3}),
        (" 102 : 4", {"book": 102, "quantity": 4}),
    ],
)
def test_order_items_are_parsed(text: str, item: dict[str, Any]) -> None:
    assert client_subcommands.parse_order_item(text) == item


@pytest.mark.parametrize(
    ("text", "reason"),
    [("101:0", "at least one"), ("101:x", "not a whole number"), (":2", "names no book")],
)
def test_bad_order_items_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        client_subcommands.parse_order_item(text)


PEAK = GuideBook(101, "More Peak District", 1299, 3)
SNOWDONIA = GuideBook(105, "Snowdonia", 1399, 0)


def test_basket_merges_lines_and_adds_up() -> None:
    basket = Basket()
    basket.add(PEAK, 2)
    basket.add(SNOWDONIA, 1)
    basket.add(PEAK, 3)
    assert basket.items() == [{"book": 101, "quantity": 5}, {"book": 105, "quantity": 1}]
    assert basket.copies == 6
    assert basket.subtotal_pence == 5 * 1299 + 1399
    assert basket.room_for(PEAK) == 3
    assert basket.set_quantity(101, 0) is None
    assert basket.items() == [{"book": 105, "quantity": 1}]
    basket.clear()
    assert not basket


def test_basket_refuses_more_than_eight_copies_of_a_book() -> None:
    basket = Basket()
    basket.add(PEAK, 6)
    with pytest.raises(BasketError, match="room for 2 more"):
        basket.add(PEAK, 3)
    with pytest.raises(BasketError):
        basket.add(SNOWDONIA, 0)
    assert basket.items() == [{"book": 101, "quantity": 6}]


@given(st.lists(st.tuples(st.sampled_from([PEAK, SNOWDONIA]), st.integers(1, 9))))
def test_basket_never_holds_more_than_eight_of_one_book(adds: list[tuple[GuideBook, int]]) -> None:
    basket = Basket()
    for book, quantity in adds:
        with contextlib.suppress(BasketError):
            basket.add(book, quantity)
    assert all(1 <= item["quantity"] <= 8 for item in basket.items())
    assert len({item["book"] for item in basket.items()}) == len(basket)


def test_guide_books_are_gathered_from_walks() -> None:
    books = guide_books_in(WALKS)
    assert [book.number for book in books] == [101, 105]
    assert books[0] == GuideBook(101, "More Peak District", 1299, 3)


# The command line ----------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return client.build_parser().parse_args(argv)


def test_options_may_come_before_or_after_the_subcommand(tmp_path: Path) -> None:
    cafile = tmp_path / "server.crt"
    cafile.write_text("pinned")
    before = parse("--port", "9000", "--json", "--cafile", str(cafile), "orders")
    after = parse("orders", "--port", "9000", "--json", "--cafile", str(cafile))
    for options in (before, after):
        settings = client.resolve_settings(options, {})
        assert (settings.host, settings.port, settings.cafile) == ("127.0.0.1", 9000, cafile)
        assert options.json


def test_settings_come_from_the_environment_then_defaults(tmp_path: Path) -> None:
    cafile = tmp_path / "pinned.crt"
    cafile.write_text("pinned")
    environ = {
        "WAYMARK_HOST": "localhost",
        "WAYMARK_PORT": "8443",
        "WAYMARK_CAFILE": str(cafile),
        "WAYMARK_TOKEN_FILE": str(tmp_path / "token"),
    }
    settings = client.resolve_settings(parse("hello"), environ)
    assert (settings.host, settings.port, settings.cafile) == ("localhost", 8443, cafile)
    assert settings.token_file == TokenFile(tmp_path / "token", "localhost:8443")
    assert settings.retry_s == 30
    options = parse("--host", "127.0.0.1", "hello")
    assert client.resolve_settings(options, environ).host == "127.0.0.1"
    environ["WAYMARK_RETRY_S"] = "5"
    assert client.resolve_settings(parse("hello"), environ).retry_s == 5
    assert client.resolve_settings(parse("--retry-s", "0.5", "hello"), environ).retry_s == 0.5
    assert client.connect(client.resolve_settings(parse("hello"), environ)).retry_s == 5
    next_to_client = Path(client.__file__).resolve().parent / "certs" / "server.crt"
    assert next_to_client == client.DEFAULT_CAFILE


def test_a_bad_port_or_a_missing_certificate_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="WAYMARK_PORT"):
        client.resolve_settings(parse("hello"), {"WAYMARK_PORT": "seventy"})
    for soon in ("soon", "-1", "nan", "inf"):
        with pytest.raises(UsageError, match="WAYMARK_RETRY_S='.*' is not a number of seconds"):
            client.resolve_settings(parse("hello"), {"WAYMARK_RETRY_S": soon})
    with pytest.raises(UsageError, match="does not exist"):
        client.resolve_settings(parse("--cafile", str(tmp_path / "nope.crt"), "hello"), {})


def test_search_walks_accepts_difficulty_in_any_case() -> None:
    options = parse("search-walks", "--area", "peak district", "--difficulty", "EaSy")
    assert client.request_for(options) == (
        "search_walks",
        {"area": "peak district", "difficulty": "easy"},
    )


@pytest.mark.parametrize(
    ("argv", "sent"),
    [
        (["buy", "101:2", "105"], ("buy", {"items": [{"book": 101, "quantity": 2},
                                                     {"book": 105, "quantity": 1}]})),
        (["areas"], ("list_areas", {})),
        (["loans"], ("history", {})),
        (["search-books", "the", "hobbit"], ("search_books", {"query": "the hobbit"})),
        (["catalogue"], ("catalogue", {})),
        (["borrow", "3"], ("borrow", {"book_id": 3})),
        (["return", "4"], ("return", {"loan_id": 4})),
        (["renew", "4"], ("renew", {"loan_id": 4})),
        (["cancel-hold", "9"], ("cancel_hold", {"hold_id": 9})),
        (["restock", "101", "5"], ("restock", {"book": 101, "quantity": 5})),
        (["restock", "Snowdonia", "5"], ("restock", {"book": "Snowdonia", "quantity": 5})),
        (["add-book", "/works/OL1W", "2"], ("add_book", {"key": "/works/OL1W", "copies": 2})),
        (["backorders"], ("backorders", {})),
    ],
)  # fmt: skip
def test_subcommands_map_to_protocol_requests(argv: list[str], sent: tuple[str, Any]) -> None:
    assert client.request_for(parse(*argv)) == sent


@pytest.mark.parametrize(
    "argv",
    [
        ["search-walks", "--difficulty", "steep"],
        ["search-walks", "--min-distance", "-1"],
        ["buy", "101:0"],
        ["buy"],
        ["borrow", "abc"],
        ["--port", "99999", "hello"],
        ["--retry-s", "never", "hello"],
        ["no-such-command"],
    ],
)
def test_bad_command_lines_exit_with_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


# The remembered token ------------------------------------------------------------------------


def test_remembered_token_is_private_and_tied_to_its_server(tmp_path: Path) -> None:
    path = tmp_path / "token"
    TokenFile(path, "127.0.0.1:7443").save("secret-token")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert TokenFile(path, "127.0.0.1:7443").load() == "secret-token"
    assert TokenFile(path, "evil.example:7443").load() is None
    path.chmod(0o644)
    with pytest.raises(UsageError, match="other users"):
        TokenFile(path, "127.0.0.1:7443").load()
    TokenFile(path, "127.0.0.1:7443").save("new-token")  # tightens an existing file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    TokenFile(path, "127.0.0.1:7443").forget()
    assert not path.exists()
    assert TokenFile(path, "127.0.0.1:7443").load() is None


# The connection, against a scripted TLS server ---------------------------------------------

DROP = object()  # the scripted server closes the connection instead of answering


class ScriptedServer:
    """A one-connection-at-a-time TLS server whose answers come from a function."""

    def __init__(
        self, directory: Path, answer: Callable[[int, dict[str, Any]], Any], host: str = "127.0.0.1"
    ):
        self.cafile, key = directory / "scripted.crt", directory / "scripted.key"
        tls.ensure_certificate(self.cafile, key)
        self.context = tls.server_context(self.cafile, key)
        self.answer = answer
        self.requests: list[tuple[int, dict[str, Any]]] = []  # (connection number, request)
        self.closed = threading.Event()
        self.listener = socket.create_server((host, 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        connection_number = 0
        while not self.stopping.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            connection_number += 1
            raw.settimeout(SOCKET_TIMEOUT_S)
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    self.converse(conn, connection_number)
            except OSError:
                pass  # a refused handshake or a reset: wait for the next connection
            finally:
                raw.close()
                self.closed.set()

    def converse(self, conn: socket.socket, connection_number: int) -> None:
        reader = conn.makefile("rb")
        try:
            for line in reader:
                request = json.loads(line)
                self.requests.append((connection_number, request))
                reply = self.answer(connection_number, request)
                if reply is DROP:
                    return
                close_after = reply.pop("close_after", False)
                conn.sendall((json.dumps({"id": request["id"], **reply}) + "\n").encode())
                if close_after:
                    return
        finally:
            reader.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=SOCKET_TIMEOUT_S)
        self.listener.close()


def ok(result: dict[str, Any], close_after: bool = False) -> dict[str, Any]:
    return {"ok": True, "result": result, "close_after": close_after}


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(answer: Callable[[int, dict[str, Any]], Any], **options: Any) -> ScriptedServer:
        servers.append(ScriptedServer(tmp_path, answer, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def connect(server: ScriptedServer, **kwargs: Any) -> Connection:
    return Connection("127.0.0.1", server.port, server.cafile, timeout=SOCKET_TIMEOUT_S, **kwargs)


def commands_sent(server: ScriptedServer) -> list[tuple[int, str]]:
    return [(number, request["cmd"]) for number, request in server.requests]


def test_a_call_returns_the_result_and_ids_increase(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(lambda number, request: ok({"echo": request["args"]}))
    with connect(server) as connection:
        assert connection.call("search_walks", area="peak") == {"echo": {"area": "peak"}}
        connection.call("hello")
    assert [request["id"] for _, request in server.requests] == [1, 2]


def test_an_error_answer_raises_server_error(scripted: Callable[..., ScriptedServer]) -> None:
    error = {"code": "not_found", "message": "No book numbered 999.", "details": {"book": 999}}
    server = scripted(lambda number, request: {"ok": False, "error": error})
    with connect(server) as connection, pytest.raises(ServerError) as raised:
        connection.call("borrow", book_id=999)
    assert (raised.value.code, str(raised.value)) == ("not_found", "No book numbered 999.")
    assert raised.value.details == {"book": 999}


def test_an_answer_to_another_request_is_refused(scripted: Callable[..., ScriptedServer]) -> None:
    server = scripted(lambda number, request: {"ok": True, "result": {}, "id": 999})
    with connect(server) as connection, pytest.raises(ConnectionFailedError, match="different"):
        connection.call("hello")


def test_a_reply_that_is_not_a_response_is_refused(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(lambda number, request: {"okay": True})  # no boolean "ok"
    with connect(server) as connection, pytest.raises(ConnectionFailedError, match="cannot read"):
        connection.call("hello")


def answer_with_session(number: int, request: dict[str, Any]) -> dict[str, Any]:
    if request["cmd"] in ("login", "resume"):
        return ok({"token": "tok-1", "user": {"id": 1, "username": "ann", "role": "member"}})
    return ok({"orders": []})


def test_a_read_is_resent_once_after_a_drop_with_the_session_resumed(
    scripted: Callable[..., ScriptedServer],
) -> None:
    def answer(number: int, request: dict[str, Any]) -> Any:
        if number == 1 and request["cmd"] == "orders":
            return DROP
        return answer_with_session(number, request)

    notes: list[str] = []
    server = scripted(answer)
    with connect(server, on_reconnect=notes.append) as connection:
        connection.call("login", username="ann", password="pw")
        assert connection.call("orders") == {"orders": []}
    assert commands_sent(server) == [(1, "login"), (1, "orders"), (2, "resume"), (2, "orders")]
    assert server.requests[2][1]["args"] == {"token": "tok-1"}
    assert notes == ["Reconnected to the server and resumed your session."]


def test_a_write_without_a_key_is_never_resent_after_a_drop(
    scripted: Callable[..., ScriptedServer],
) -> None:
    def answer(number: int, request: dict[str, Any]) -> Any:
        return DROP if request["cmd"] == "register" else ok({"server": "waymark"})

    assert not COMMANDS["register"].takes_idempotency_key  # no login, so no member to key by
    server = scripted(answer)
    with connect(server) as connection:
        with pytest.raises(AnswerLostError, match="check your orders"):
            connection.call("register", username="ann", password="walking-boots")
        connection.call("hello")
    assert commands_sent(server) == [(1, "register"), (2, "hello")]
    assert "idempotency_key" not in server.requests[0][1]


def keys_sent(server: ScriptedServer, cmd: str) -> list[str | None]:
    return [
        request.get("idempotency_key") for _, request in server.requests if request["cmd"] == cmd
    ]


def test_every_write_that_takes_a_key_carries_a_new_one_and_reads_none(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(answer_with_session)
    with connect(server) as connection:
        connection.call("login", username="ann", password="pw")
        for _ in range(2):
            connection.call("buy", items=[{"book": 101, "quantity": 1}])
        connection.call("borrow", book_id=3)
        connection.call("orders")
    buys = keys_sent(server, "buy")
    assert all(isinstance(key, str) and IDEMPOTENCY_KEY.fullmatch(key) for key in buys), buys
    assert len(set(buys + keys_sent(server, "borrow"))) == 3
    assert keys_sent(server, "login") == keys_sent(server, "orders") == [None]


def test_a_write_whose_answer_was_lost_is_resent_with_its_key(
    scripted: Callable[..., ScriptedServer],
) -> None:
    order = {"order": {"id": 12, "total_pence": 1299}}

    def answer(number: int, request: dict[str, Any]) -> Any:
        if request["cmd"] == "buy":
            # The server did it the first time; the answer is lost, then replayed.
            return DROP if number == 1 else {**ok(order), "replayed": True}
        return answer_with_session(number, request)

    notes: list[str] = []
    server = scripted(answer)
    with connect(server, on_reconnect=notes.append) as connection:
        connection.call("login", username="ann", password="pw")
        assert connection.call("buy", items=[{"book": 101, "quantity": 1}]) == order
    assert commands_sent(server) == [(1, "login"), (1, "buy"), (2, "resume"), (2, "buy")]
    first, again = keys_sent(server, "buy")
    assert first is not None and first == again
    assert server.requests[1][1]["args"] == server.requests[3][1]["args"]
    assert notes == ["Reconnected to the server and resumed your session."]


def test_a_read_is_sent_again_until_it_is_answered(
    scripted: Callable[..., ScriptedServer],
) -> None:
    def answer(number: int, request: dict[str, Any]) -> Any:
        if number < 3 and request["cmd"] == "orders":
            return DROP  # a server restarting behind a load balancer, twice over
        return answer_with_session(number, request)

    server = scripted(answer)
    with connect(server) as connection:
        connection.call("login", username="ann", password="pw")
        assert connection.call("orders") == {"orders": []}
    assert commands_sent(server)[-2:] == [(3, "resume"), (3, "orders")]


def test_a_write_that_timed_out_or_found_the_database_away_is_sent_again(
    scripted: Callable[..., ScriptedServer],
) -> None:
    order = {"order": {"id": 12}}
    away = {"code": "unavailable", "message": "The database is unavailable.", "details": {}}

    buys = itertools.count(1)

    def answer(number: int, request: dict[str, Any]) -> Any:
        if request["cmd"] != "buy":
            return answer_with_session(number, request)
        buy = next(buys)
        if buy == 1:
            time.sleep(1.5)  # longer than the client waits for an answer
            return DROP
        if buy == 2:
            return {"ok": False, "error": away}  # cannot say whether the first was done
        return {**ok(order), "replayed": True}

    server = scripted(answer)
    with Connection("127.0.0.1", server.port, server.cafile, timeout=1) as connection:
        connection.call("login", username="ann", password="pw")
        assert connection.call("buy", items=[{"book": 101, "quantity": 1}]) == order
    keys = keys_sent(server, "buy")
    assert len(keys) == 3 and len(set(keys)) == 1, keys


def test_a_write_is_tried_again_for_retry_s_then_its_outcome_is_unknown(
    scripted: Callable[..., ScriptedServer],
) -> None:
    def answer(number: int, request: dict[str, Any]) -> Any:
        return DROP if request["cmd"] == "buy" else answer_with_session(number, request)

    server = scripted(answer)
    with connect(server, retry_s=1.5) as connection:
        connection.call("login", username="ann", password="pw")
        started = time.monotonic()
        with pytest.raises(AnswerLostError) as raised:
            connection.call("buy", items=[{"book": 101, "quantity": 1}])
        waited = time.monotonic() - started
    assert 1.5 <= waited < 4, waited
    assert str(raised.value).startswith(OUTCOME_UNKNOWN)
    keys = keys_sent(server, "buy")
    assert len(keys) >= 3 and len(set(keys)) == 1, keys  # tried again and again, one key


def test_a_refused_write_is_not_sent_again(scripted: Callable[..., ScriptedServer]) -> None:
    refused = {"code": "limit_exceeded", "message": "At most 8 copies.", "details": {}}

    def answer(number: int, request: dict[str, Any]) -> Any:
        if request["cmd"] == "buy":
            return {"ok": False, "error": refused}
        return answer_with_session(number, request)

    server = scripted(answer)
    with connect(server) as connection, pytest.raises(ServerError) as raised:
        connection.call("login", username="ann", password="pw")
        connection.call("buy", items=[{"book": 101, "quantity": 9}])
    assert raised.value.code == "limit_exceeded"
    assert commands_sent(server) == [(1, "login"), (1, "buy")]


def test_a_replayed_new_password_keeps_the_token_it_brings(
    scripted: Callable[..., ScriptedServer],
) -> None:
    def answer(number: int, request: dict[str, Any]) -> Any:
        if request["cmd"] == "change_password":
            return DROP if number == 1 else {**ok({"token": "tok-2"}), "replayed": True}
        return answer_with_session(number, request)

    server = scripted(answer)
    with connect(server) as connection:
        connection.call("login", username="ann", password="pw")
        connection.call("change_password", old_password="pw", new_password="new-secret-1")
        assert connection.token == "tok-2"
    first, again = keys_sent(server, "change_password")
    assert first is not None and first == again


def test_a_session_ended_by_a_lost_new_password_is_said_in_a_sentence(
    scripted: Callable[..., ScriptedServer],
) -> None:
    expired = {"code": "unauthorized", "message": "Your session has ended.", "details": {}}

    def answer(number: int, request: dict[str, Any]) -> Any:
        if request["cmd"] == "change_password":
            return DROP  # done: the old session has ended, but the answer is lost
        if request["cmd"] == "resume":
            return {"ok": False, "error": expired}
        return answer_with_session(number, request)

    notes: list[str] = []
    server = scripted(answer)
    with connect(server, on_reconnect=notes.append) as connection:
        connection.call("login", username="ann", password="pw")
        with pytest.raises(AnswerLostError) as raised:
            connection.call("change_password", old_password="pw", new_password="new-secret-1")
        assert connection.token is None
    assert "Log in again with the new password" in str(raised.value)
    assert notes == ["Reconnected, but your session has expired; please log in again."]
    assert commands_sent(server) == [(1, "login"), (1, "change_password"), (2, "resume")]


def test_a_session_ended_after_a_lost_order_is_said_in_a_sentence(
    scripted: Callable[..., ScriptedServer],
) -> None:
    expired = {"code": "unauthorized", "message": "Your session has ended.", "details": {}}

    def answer(number: int, request: dict[str, Any]) -> Any:
        if request["cmd"] == "buy":
            return DROP
        if request["cmd"] == "resume":
            return {"ok": False, "error": expired}
        return answer_with_session(number, request)

    server = scripted(answer)
    with connect(server) as connection, pytest.raises(AnswerLostError) as raised:
        connection.call("login", username="ann", password="pw")
        connection.call("buy", items=[{"book": 101, "quantity": 1}])
    assert "could not be resumed" in str(raised.value)
    assert "log in again and check" in str(raised.value)


def test_a_connection_closed_while_idle_is_replaced_before_a_write(
    scripted: Callable[..., ScriptedServer],
) -> None:
    def answer(number: int, request: dict[str, Any]) -> Any:
        if request["cmd"] == "borrow":
            return ok({"loan": {"id": 7}})
        reply = answer_with_session(number, request)
        reply["close_after"] = request["cmd"] == "login"  # like a server restarted meanwhile
        return reply

    server = scripted(answer)
    with connect(server) as connection:
        connection.call("login", username="ann", password="pw")
        assert server.closed.wait(SOCKET_TIMEOUT_S)
        assert connection.call("borrow", book_id=3) == {"loan": {"id": 7}}
    assert commands_sent(server) == [(1, "login"), (2, "resume"), (2, "borrow")]


def test_an_expired_session_is_dropped_on_reconnect(
    scripted: Callable[..., ScriptedServer],
) -> None:
    def answer(number: int, request: dict[str, Any]) -> Any:
        if request["cmd"] == "resume":
            error = {"code": "unauthorized", "message": "That session has expired.", "details": {}}
            return {"ok": False, "error": error}
        return ok({"token": "tok-1", "user": {}}, close_after=True)

    notes: list[str] = []
    server = scripted(answer)
    with connect(server, on_reconnect=notes.append) as connection:
        connection.call("login", username="ann", password="pw")
        assert server.closed.wait(SOCKET_TIMEOUT_S)
        connection.call("hello")
        assert connection.token is None
    assert notes == ["Reconnected, but your session has expired; please log in again."]


def test_a_server_that_is_down_gets_a_clear_sentence(tmp_path: Path) -> None:
    cafile, key = tmp_path / "a.crt", tmp_path / "a.key"
    tls.ensure_certificate(cafile, key)
    port = unused_port()
    with (
        Connection("127.0.0.1", port, cafile) as connection,
        pytest.raises(ConnectionFailedError) as raised,
    ):
        connection.call("hello")
    assert (
        str(raised.value) == f"Cannot reach the Waymark server at 127.0.0.1:{port}; is it running?"
    )


def test_a_certificate_that_is_not_the_pinned_one_is_refused(
    scripted: Callable[..., ScriptedServer], tmp_path: Path
) -> None:
    server = scripted(lambda number, request: ok({}))
    other = tmp_path / "other" / "server.crt"
    tls.ensure_certificate(other, tmp_path / "other" / "server.key")
    with (
        Connection("127.0.0.1", server.port, other) as connection,
        pytest.raises(ConnectionFailedError) as raised,
    ):
        connection.call("hello")
    message = str(raised.value)
    assert message.startswith(
        f"The server at 127.0.0.1:{server.port} did not present the expected certificate "
        f"(pinned in {other}):"
    )
    assert server.requests == []


def test_the_hostname_is_checked(scripted: Callable[..., ScriptedServer]) -> None:
    # The certificate names localhost, 127.0.0.1 and ::1, but not this loopback address.
    server = scripted(lambda number, request: ok({}), host="127.0.0.2")
    with (
        Connection("127.0.0.2", server.port, server.cafile) as connection,
        pytest.raises(ConnectionFailedError, match="expected certificate"),
    ):
        connection.call("hello")


# Menu sessions against an in-process fake ---------------------------------------------------

CTRL_C = "<ctrl-c>"
CTRL_D = "<ctrl-d>"


def walk(name: str, area: str, miles: float, difficulty: str, book: GuideBook) -> dict[str, Any]:
    return {
        "id": len(name), "name": name, "area": area, "distance_miles": miles,
        "difficulty": difficulty, "page": 20,
        "book": {"number": book.number, "title": book.title, "price_pence": book.price_pence,
                 "in_stock": book.in_stock},
    }  # fmt: skip


WALKS = [
    walk("Hathersage", "Peak District", 7, "easy", PEAK),
    walk("Hope and Win Hill", "Peak District", 4.5, "medium", PEAK),
    walk("Yr Eifl", "North Wales", 3.5, "medium", SNOWDONIA),
]
USER = {"id": 1, "username": "ann", "role": "member"}


class FakeConnection(Connection):
    """A Connection whose answers come from a table of results (or exceptions), not a server;
    records every call. Everything above the wire (the token and its file) is the real code.
    """

    def __init__(
        self, answers: dict[str, Any], token_file: TokenFile | None = None, remember: bool = False
    ):
        super().__init__(
            "127.0.0.1", 7443, "never-used.crt", token_file=token_file, remember=remember
        )
        self.answers = {
            "hello": {"server": "waymark", "version": "1", "protocol": 1},
            "login": {"token": "tok", "user": USER},
            "logout": {},
            "orders": {"orders": []},
            "holds": {"holds": []},
            "notices": {"notices": [], "unread": 0},
            "guide_books": {"books": [dataclasses.asdict(book) for book in guide_books_in(WALKS)]},
            **answers,
        }
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _request(self, cmd: str, args: Mapping[str, Any]) -> Reply:
        self.calls.append((cmd, dict(args)))
        answer = self.answers[cmd]
        if callable(answer):
            answer = answer(**args)
        if isinstance(answer, list):
            answer = answer.pop(0)
        if isinstance(answer, ServerError):  # an error answer, read as the real link reads it
            return Reply(
                None, False, code=answer.code, message=answer.message, details=answer.details
            )
        if isinstance(answer, Exception):
            raise answer
        return Reply(None, True, result=answer)

    def sent(self, cmd: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == cmd]


def plain_console(out: io.StringIO) -> Console:
    return Console(file=out, width=120, force_terminal=False, color_system=None)


def run_menu(connection: Connection, answers: Sequence[Any], passwords: Sequence[str] = ()) -> str:
    """Run a whole menu session; returns the transcript a person would have seen."""
    out = io.StringIO()
    typed, secrets = list(answers), list(passwords)

    def read(prompt: str, script: list[Any], echo: bool) -> str:
        out.write(prompt)
        while script and callable(script[0]):  # something to do between two answers
            script.pop(0)()
        if not script:
            raise EOFError
        answer = script.pop(0)
        if answer == CTRL_C:
            raise KeyboardInterrupt
        if answer == CTRL_D:
            raise EOFError
        out.write((answer if echo else "") + "\n")
        return answer

    app = App(
        connection,
        plain_console(out),
        input_fn=lambda prompt: read(prompt, typed, echo=True),
        getpass_fn=lambda prompt: read(prompt, secrets, echo=False),
    )
    assert app.run() == 0
    assert typed == [] and secrets == [], f"unused answers {typed} {secrets}\n{out.getvalue()}"
    return out.getvalue()


MENU_OUT = {"find": "1", "recommend": "2", "search books": "3", "register": "5", "log in": "6"}
MENU_IN = {"find": "1", "recommend": "2", "buy": "3", "orders": "4", "cancel back order": "5",
           "search books": "6", "borrow": "7", "loans": "8", "return": "9", "renew": "10", "holds": "11",
           "history": "12", "change password": "13", "messages": "14", "my account": "15",
           "log out": "16"}  # fmt: skip
MENU_ADMIN = {"restock": "16", "add book": "17", "back orders": "18", "overdue": "19",
              "sales": "20", "members": "21", "log out": "22"}  # fmt: skip


def test_register_asks_for_the_password_twice_and_logs_in() -> None:
    taken = ServerError("username_taken", "That username is taken.")
    weak = ServerError("weak_password", "The password is on a list of common passwords.")
    connection = FakeConnection({"register": [taken, weak, {"user": {"id": 1, "username": "ann"}}]})
    transcript = run_menu(
        connection,
        [MENU_OUT["register"], "bob", "", "ann", "0"],
        ["secret-one", "secret-two", "short", "long enough", "long enough",
         "longer still", "longer still"],
    )  # fmt: skip
    assert "The two passwords differ; please type them again." in transcript
    assert "That username is taken." in transcript
    # checked as soon as typed (rules.validate_password), so the server never saw "short"
    assert "The password must be at least 8 characters long." in transcript
    assert "The password is on a list of common passwords." in transcript
    assert "Registered ann." in transcript
    assert "Welcome, ann!" in transcript
    # a taken name asks for another name, not for the password again
    assert connection.sent("register") == [
        {"username": "bob", "password": "long enough"},
        {"username": "ann", "password": "long enough"},
        {"username": "ann", "password": "longer still"},
    ]
    assert connection.sent("login") == [{"username": "ann", "password": "longer still"}]
    assert ("logout", {}) in connection.calls  # quitting ends the session on the server
    assert "Goodbye." in transcript


def test_a_failed_login_shows_the_servers_sentence() -> None:
    refused = ServerError("invalid_credentials", "The username or password is not right.")
    connection = FakeConnection({"login": refused})
    transcript = run_menu(connection, [MENU_OUT["log in"], "ann", "0"], ["wrong"])
    assert "The username or password is not right." in transcript
    assert "Waymark (not logged in)" in transcript.rsplit("Username", 1)[1]
    assert "Traceback" not in transcript


def test_finding_walks_forgives_bad_input() -> None:
    areas = {"areas": [{"area": "North Wales", "walks": 1}, {"area": "Peak District", "walks": 2}]}
    connection = FakeConnection(
        {"list_areas": areas, "search_walks": {"walks": WALKS[:2], "total": 2}}
    )
    transcript = run_menu(
        connection,
        [MENU_OUT["find"], "7", "2", "steep", "MEDIUM", "-3", "three", "4", "2", "6", "0"],
    )
    assert "There is no area 7; enter a number from 1 to 2." in transcript
    assert "'steep' is not a difficulty; choose easy, medium or hard." in transcript
    assert "The distance must be zero or more miles." in transcript
    assert "'three' is not a number of miles; type one such as 4 or 6.5." in transcript
    assert "The longest walk cannot be shorter than the shortest (4)." in transcript
    assert connection.sent("search_walks") == [
        {"limit": 200, "area": "Peak District", "difficulty": "medium", "min_distance": 4.0,
         "max_distance": 6.0}
    ]  # fmt: skip
    assert "Hathersage" in transcript and "More Peak District" in transcript
    assert "£12.99" in transcript
    assert "Log in to buy the guide books." in transcript


def test_a_walk_can_show_optional_fields() -> None:
    extra = dict(WALKS[0], ascent_m=350, time_hours=3.5, route_type="circular")
    out = io.StringIO()
    plain_console(out).print(walks_table([extra, WALKS[1]], numbered=False))
    table = out.getvalue()
    assert "Ascent" in table and "350 m" in table and "3.5 h" in table and "circular" in table
    assert "Start" not in table


ORDER = {
    "id": 12,
    "created_at": "2026-01-17T13:05:00Z",
    "lines": [
        {"book": {"number": 101, "title": "More Peak District"}, "quantity": 5, "fulfilled": 3,
         "backordered": 2, "unit_price_pence": 1299, "line_total_pence": 6495},
        {"book": {"number": 105, "title": "Snowdonia"}, "quantity": 1, "fulfilled": 1,
         "backordered": 0, "unit_price_pence": 1399, "line_total_pence": 1399},
    ],
    "subtotal_pence": 7894,
    "discount_pence": 789,
    "total_pence": 7105,
}  # fmt: skip


def test_buying_a_basket_shows_the_discount_and_back_orders() -> None:
    connection = FakeConnection(
        {"search_walks": {"walks": WALKS, "total": 3}, "buy": {"order": ORDER}}
    )
    transcript = run_menu(
        connection,
        [
            MENU_OUT["log in"], "ann",
            MENU_IN["buy"],
            "1", "101", "9", "2",  # More Peak District: 9 is too many, then 2
            "1", "105", "1",  # Snowdonia
            "1", "101", "3",  # 3 more of More Peak District: the lines merge
            "3", "y",
            "0",
        ],
        ["pw"],
    )  # fmt: skip
    assert "9 is out of range; enter a number from 1 to 8." in transcript
    assert "Your basket now has 5 copies of More Peak District (£64.95)" in transcript
    assert connection.sent("buy") == [
        {"items": [{"book": 101, "quantity": 5}, {"book": 105, "quantity": 1}]}
    ]
    assert "Order 6 copies for £71.05 (£78.94 less the £7.89 discount)? [Y/n]" in transcript
    assert (
        "There are only 3 copies of More Peak District in stock; 2 will be back-ordered"
        in transcript
    )
    assert "There are no copies of Snowdonia in stock; 1 will be back-ordered" in transcript
    assert "Discount" in transcript and "-£7.89" in transcript and "£71.05" in transcript
    assert "You saved £7.89 with the discount." in transcript
    assert "2 copies of More Peak District are back-ordered" in transcript
    assert "Buy guide books\n" in transcript.rsplit("You saved", 1)[1]  # the basket is empty


def test_a_refused_order_keeps_the_basket() -> None:
    refused = ServerError(
        "limit_exceeded",
        "You have already ordered 6 copies of book 101 and each customer may have at most 8, "
        "so you may order 2 more copies.",
        {"book": 101, "limit": 8, "scope": "customer", "allowed": 2},
    )
    connection = FakeConnection({"search_walks": {"walks": WALKS, "total": 3}, "buy": refused})
    transcript = run_menu(
        connection,
        [MENU_OUT["log in"], "ann", MENU_IN["buy"], "1", "101", "4", "3", "", "0", "0", "y"],
        ["pw"],
    )
    # the book by its title, not "book 101"
    assert (
        "Each member may have at most 8 copies of More Peak District, back orders included; "
        "you may order only 2 more copies." in transcript
    )
    assert "book 101" not in transcript
    assert "Buy guide books (basket: 4 copies)" in transcript
    assert "Your basket holds 4 copies, not yet ordered. Quit anyway? [Y/n]" in transcript


def test_an_unknown_outcome_is_explained_and_the_basket_kept() -> None:
    lost = AnswerLostError(OUTCOME_UNKNOWN)
    connection = FakeConnection({"search_walks": {"walks": WALKS, "total": 3}, "buy": lost})
    transcript = run_menu(
        connection,
        [MENU_OUT["log in"], "ann", MENU_IN["buy"], "1", "101", "1", "3", "y", "0"],
        ["pw"],
    )
    assert "it is not known whether that was done; check your orders" in transcript
    assert "Buy guide books (basket: 1 copy)" in transcript


LOAN = {
    "id": 4,
    "book": {"id": 3, "title": "The Hobbit", "authors": ["J. R. R. Tolkien"]},
    "borrowed_at": "2026-01-01T10:00:00Z",
    "due_at": "2026-01-15T10:00:00Z",
    "returned_at": None,
    "overdue": True,
    "days_overdue": 2,
}
CATALOGUE = {
    "books": [
        {"id": 3, "key": "/works/OL1W", "title": "The Hobbit", "authors": ["J. R. R. Tolkien"],
         "first_publish_year": 1937, "copies": 2, "copies_available": 1},
        {"id": 5, "key": "/works/OL2W", "title": "Dune", "authors": ["Frank Herbert"],
         "first_publish_year": 1965, "copies": 1, "copies_available": 0},
    ],
    "total": 2,
}  # fmt: skip


def test_borrowing_and_holding_from_the_catalogue() -> None:
    hold = {"id": 8, "book": {"id": 5, "title": "Dune"}, "position": 2, "created_at": "x"}
    connection = FakeConnection(
        {"catalogue": CATALOGUE, "borrow": {"loan": LOAN}, "hold": {"hold": hold}}
    )
    transcript = run_menu(
        connection,
        [MENU_OUT["log in"], "ann", MENU_IN["borrow"], "", "1", "y",
         MENU_IN["borrow"], "dune", "2", "", "0"],
        ["pw"],
    )  # fmt: skip
    assert "Frank Herbert" in transcript
    due = format_local_time(LOAN["due_at"])
    assert f"You have borrowed The Hobbit; it is due back {due}." in transcript
    assert "No copy of Dune is free. Join the queue for it? [Y/n]" in transcript
    assert "You are number 2 in the queue for Dune." in transcript
    assert connection.sent("catalogue") == [{"limit": 200}, {"limit": 200, "query": "dune"}]


def test_my_loans_show_due_dates_and_overdue_marks_then_return() -> None:
    returned = dict(LOAN, returned_at="2026-01-17T09:00:00Z", overdue=False, days_overdue=0)
    connection = FakeConnection(
        {"history": [{"loans": [LOAN]}, {"loans": [LOAN]}, {"loans": [returned]}],
         "return": {"loan": returned}}
    )  # fmt: skip
    transcript = run_menu(
        connection,
        [MENU_OUT["log in"], "ann", MENU_IN["loans"], MENU_IN["return"], "x", "1", "4", "y",
         MENU_IN["history"], "0"],
        ["pw"],
    )  # fmt: skip
    assert format_local_time(LOAN["due_at"]) in transcript
    assert "OVERDUE by 2 days" in transcript
    # the loan's own number, as "My loans" shows it, not its place in the list
    assert "'x' is not a loan number shown; choose 4." in transcript
    assert "'1' is not a loan number shown; choose 4." in transcript
    assert "Return The Hobbit? [Y/n]" in transcript
    assert "Returned The Hobbit. Thank you!" in transcript
    assert connection.sent("return") == [{"loan_id": 4}]
    assert "returned " + format_local_time(returned["returned_at"]) in transcript


def test_renewing_a_loan_and_cancelling_a_hold() -> None:
    renewed = dict(LOAN, due_at="2026-02-01T10:00:00Z", overdue=False, days_overdue=0)
    holds = {"holds": [{"id": 8, "book": {"id": 5, "title": "Dune"}, "position": 1,
                        "ready": True, "created_at": "2026-01-02T10:00:00Z"}]}  # fmt: skip
    connection = FakeConnection(
        {"history": {"loans": [LOAN]}, "renew": {"loan": renewed}, "holds": holds,
         "cancel_hold": {}}
    )  # fmt: skip
    transcript = run_menu(
        connection,
        [MENU_OUT["log in"], "ann", MENU_IN["renew"], "4", MENU_IN["holds"], "1", "n", "y", "0"],
        ["pw"],
    )
    due = format_local_time(renewed["due_at"])
    assert f"Renewed The Hobbit; it is now due back {due}." in transcript
    assert "a copy is kept for you" in transcript
    assert "Borrow the copy of Dune kept for you? [Y/n] n" in transcript  # not now: cancel it
    assert "Your hold on Dune is cancelled." in transcript
    assert connection.sent("renew") == [{"loan_id": 4}]
    assert connection.sent("cancel_hold") == [{"hold_id": 8}]


def test_searching_books_shows_which_are_held_and_free() -> None:
    hits = {
        "results": [
            {"key": "/works/OL1W", "title": "Dune", "authors": ["Frank Herbert"],
             "first_publish_year": 1965, "held": True, "book_id": 5, "copies_available": 2},
            {"key": "/works/OL2W", "title": "Dune Messiah", "authors": ["Frank Herbert"],
             "first_publish_year": 1969, "held": False, "book_id": None, "copies_available": None},
        ],
        "source": "cache",
        "warning": "Open Library could not be reached, so these results come from an earlier search.",
    }  # fmt: skip
    connection = FakeConnection({"search_books": hits, "borrow": {"loan": LOAN}})
    transcript = run_menu(
        connection,
        [
            MENU_OUT["log in"],
            "ann",
            MENU_IN["search books"],
            "dune",
            "2",
            MENU_IN["search books"],
            "dune",
            "1",
            "y",
            "0",
        ],
        ["pw"],
    )
    assert "these results come from an earlier search" in transcript
    assert "Held here" in transcript and "Free copies" in transcript
    assert "The library does not hold that one; choose one marked 'yes'." in transcript
    assert connection.sent("borrow") == [{"book_id": 5}]


def test_the_menu_says_when_the_server_is_down(tmp_path: Path) -> None:
    cafile = tmp_path / "server.crt"
    tls.ensure_certificate(cafile, tmp_path / "server.key")
    port = unused_port()
    result = subprocess.run(
        [sys.executable, str(CLIENT), "--port", str(port), "--cafile", str(cafile)],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 1
    assert f"Cannot reach the Waymark server at 127.0.0.1:{port}; is it running?" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_ctrl_c_and_ctrl_d_go_back_then_quit_without_a_traceback() -> None:
    connection = FakeConnection({"list_areas": {"areas": []}})
    transcript = run_menu(
        connection, [MENU_OUT["find"], CTRL_C, MENU_OUT["log in"], CTRL_D, "abc", "42", CTRL_D]
    )
    assert "'abc' is not a whole number" in transcript
    assert "42 is out of range; enter a number from 0 to" in transcript
    assert transcript.count("Waymark (not logged in)") == 3
    assert transcript.rstrip().endswith("Goodbye.")
    assert "Traceback" not in transcript


def test_ctrl_c_while_waiting_for_the_server_cancels_that_step() -> None:
    def interrupted(**args: Any) -> Any:
        raise KeyboardInterrupt

    connection = FakeConnection({"list_areas": interrupted})
    transcript = run_menu(connection, [MENU_OUT["find"], "0"])
    assert "Cancelled." in transcript


def test_a_lost_session_logs_the_person_out() -> None:
    expired = ServerError("unauthorized", "Your session has expired; please log in again.")
    connection = FakeConnection({"orders": expired})
    transcript = run_menu(connection, [MENU_OUT["log in"], "ann", MENU_IN["orders"], "0"], ["pw"])
    assert "Your session has expired; please log in again." in transcript
    assert "Waymark (not logged in)" in transcript.rsplit("expired", 1)[1]


def test_server_text_is_printed_as_it_is_not_as_markup() -> None:
    odd = ServerError("not_found", "No guide book is called '[bold]x[/bold]'.")
    connection = FakeConnection({"list_areas": odd})
    transcript = run_menu(connection, [MENU_OUT["find"], "0"])
    assert "No guide book is called '[bold]x[/bold]'." in transcript


def test_an_admin_sees_restock_and_add_book() -> None:
    admin = {"id": 2, "username": "root", "role": "admin"}
    restocked = {
        "book": {"number": 105, "title": "Snowdonia", "in_stock": 3},
        "backorders_filled": [{"order_id": 12, "quantity": 2}],
    }
    hits = {"results": [{"key": "/works/OL9W", "title": "Walking", "authors": ["H. D. Thoreau"],
                         "first_publish_year": 1862, "held": False, "book_id": None,
                         "copies_available": None}], "source": "openlibrary"}  # fmt: skip
    added = {"book": {"id": 9, "key": "/works/OL9W", "title": "Walking", "authors": [],
                      "first_publish_year": 1862, "copies": 2, "copies_available": 2}}  # fmt: skip
    connection = FakeConnection(
        {"login": {"token": "t", "user": admin}, "search_walks": {"walks": WALKS, "total": 3},
         "restock": restocked, "search_books": hits, "add_book": added}
    )  # fmt: skip
    transcript = run_menu(
        connection,
        [
            MENU_OUT["log in"],
            "root",
            MENU_ADMIN["restock"],
            "105",
            "5",
            MENU_ADMIN["add book"],
            "thoreau walking",
            "1",
            "2",
            "0",
        ],
        ["pw"],
    )
    assert "Restock guide books (admin)" in transcript
    assert "Sent 2 back-ordered copies for order 12." in transcript
    assert "Snowdonia now has 3 in stock." in transcript
    assert connection.sent("restock") == [{"book": 105, "quantity": 5}]
    assert connection.sent("add_book") == [{"key": "/works/OL9W", "copies": 2}]
    assert "The library now holds 2 copies of Walking (2 free)." in transcript


def test_a_remembered_login_is_resumed_and_kept(tmp_path: Path) -> None:
    token_file = TokenFile(tmp_path / "token", "127.0.0.1:7443")
    token_file.save("saved")
    connection = FakeConnection(
        {"resume": {"token": "saved", "user": USER}}, token_file=token_file, remember=True
    )
    transcript = run_menu(connection, ["0"])
    assert "Welcome back, ann." in transcript
    assert connection.sent("resume") == [{"token": "saved"}]
    assert connection.sent("logout") == []  # a remembered session outlives the program
    assert token_file.load() == "saved"


def test_an_expired_remembered_login_is_forgotten(tmp_path: Path) -> None:
    token_file = TokenFile(tmp_path / "token", "127.0.0.1:7443")
    token_file.save("old")
    expired = ServerError("unauthorized", "That session has expired or ended; please log in.")
    connection = FakeConnection({"resume": expired}, token_file=token_file)
    transcript = run_menu(connection, ["0"])
    assert "Your remembered login has expired; please log in again." in transcript
    assert not token_file.path.exists()


def test_a_login_is_remembered_only_when_asked_and_forgotten_on_log_out(tmp_path: Path) -> None:
    token_file = TokenFile(tmp_path / "token", "127.0.0.1:7443")
    transcript = run_menu(
        FakeConnection({}, token_file=token_file), [MENU_OUT["log in"], "ann", "0"], ["pw"]
    )
    assert "remembered" not in transcript
    assert not token_file.path.exists()
    connection = FakeConnection({}, token_file=token_file, remember=True)
    transcript = run_menu(connection, [MENU_OUT["log in"], "ann", "0"], ["pw"])
    assert f"Your login is remembered in {token_file.path}." in transcript
    assert token_file.load() == "tok"
    assert connection.sent("logout") == []
    connection = FakeConnection({"resume": {"token": "tok", "user": USER}}, token_file=token_file)
    transcript = run_menu(connection, [MENU_IN["log out"], "0"])
    assert "You are logged out." in transcript
    assert not token_file.path.exists()


def test_a_server_that_is_down_ends_the_menu_with_a_sentence() -> None:
    down = ConnectionFailedError(
        "Cannot reach the Waymark server at 127.0.0.1:7443; is it running?"
    )
    out = io.StringIO()
    app = App(FakeConnection({"hello": down}), plain_console(out))
    assert app.run() == 1
    assert out.getvalue().strip() == str(down)


def test_password_for_scripts_comes_from_the_environment_then_stdin() -> None:
    streams = client.Streams(io.StringIO("from-stdin\n"), io.StringIO(), io.StringIO())
    assert (
        client.read_password({"WAYMARK_PASSWORD": "from-env"}, streams, twice=False) == "from-env"
    )
    assert client.read_password({}, streams, twice=False) == "from-stdin"
    with pytest.raises(UsageError, match="WAYMARK_PASSWORD"):
        client.read_password({}, streams, twice=False)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_password_for_scripts_at_a_terminal_is_typed_twice_when_new() -> None:
    typed = iter(["first-one", "first-one", "second-one", "not-the-same"])
    streams = client.Streams(Terminal(), io.StringIO(), io.StringIO(), lambda prompt: next(typed))
    assert client.read_password({}, streams, twice=True) == "first-one"
    with pytest.raises(UsageError, match="The two passwords differ."):
        client.read_password({}, streams, twice=True)


# End to end, against the real server -------------------------------------------------------

MEMBER_PASSWORD = "walking-boots"


def real_connection(server: ServerProcess, **options: Any) -> Connection:
    return Connection(server.host, server.port, server.cafile, timeout=SOCKET_TIMEOUT_S, **options)


def test_a_whole_menu_session_against_the_real_server(server: ServerProcess) -> None:
    with real_connection(server) as connection:
        transcript = run_menu(
            connection,
            [
                MENU_OUT["register"], "walker", "",  # no email
                MENU_IN["log out"],
                MENU_OUT["log in"], "walker",
                MENU_IN["find"], "peak", "EASY", "", "",  # then its first walk's book, 1 copy
                "1", "1",
                MENU_IN["buy"], "1", "101", "5", "3", "y",  # 5 of book 101 too: 6 x £12.99
                MENU_IN["borrow"], "hobbit", "1", "y",
                MENU_IN["loans"],
                MENU_IN["return"], "1", "y",  # loan 1, the first of this fresh database
                MENU_IN["history"],
                "0",
            ],
            [MEMBER_PASSWORD, MEMBER_PASSWORD, MEMBER_PASSWORD],
        )  # fmt: skip
    assert "Registered walker." in transcript
    assert "You are logged out." in transcript
    assert transcript.count("Welcome, walker!") == 2
    assert "Lord’s Seat" in transcript and "Magpie Mine" not in transcript  # easy ones only
    assert "Subtotal" in transcript and "£77.94" in transcript
    assert "Discount" in transcript and "-£7.79" in transcript and "£70.15" in transcript
    assert "You saved £7.79 with the discount." in transcript
    assert "You have borrowed The Hobbit; it is due back" in transcript
    assert "on loan" in transcript
    assert "Returned The Hobbit. Thank you!" in transcript
    history = transcript.split(f"Choose: {MENU_IN['history']}\n", 1)[1]
    assert "The Hobbit" in history and "returned " in history
    assert "Traceback" not in transcript


def test_the_client_resumes_after_the_server_restarts(server: ServerProcess) -> None:
    notes: list[str] = []
    # remember keeps the session when quitting, so that it can be checked below
    with real_connection(server, on_reconnect=notes.append, remember=True) as connection:
        transcript = run_menu(
            connection,
            [
                MENU_OUT["register"], "walker", "",  # no email
                MENU_IN["buy"], "1", "101", "2", "0",  # two copies in the basket, then back
                server.restart,
                MENU_IN["buy"], "3", "y",  # the basket survived; the order goes through once
                MENU_IN["orders"],
                "0",
            ],
            [MEMBER_PASSWORD, MEMBER_PASSWORD],
        )  # fmt: skip
        assert notes == ["Reconnected to the server and resumed your session."]
        assert len(connection.call("orders")["orders"]) == 1
    after = transcript.split("Choose: 0", 1)[1]  # from the moment the person left the basket
    assert "Order 1, placed" in after
    assert "logged in as walker" in after.rsplit("Waymark (", 1)[1]
    assert "Traceback" not in transcript


def test_a_wrong_certificate_is_refused_with_a_clear_message(
    server: ServerProcess, tmp_path: Path
) -> None:
    other = make_cert(tmp_path)
    out = io.StringIO()
    with Connection(server.host, server.port, other) as connection:
        assert App(connection, plain_console(out)).run() == 1
    expected = (
        f"The server at 127.0.0.1:{server.port} did not present the expected certificate "
        f"(pinned in {other}):"
    )
    assert out.getvalue().startswith(expected)
    result = run_client(server, tmp_path, "--cafile", str(other), "hello")
    assert result.returncode == 1
    assert result.stderr.startswith(expected)


def run_client(
    server: ServerProcess,
    home: Path,
    *argv: str,
    stdin: str = "",
    password: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("WAYMARK_") and key != "HOME"
    }
    environ |= {
        "HOME": str(home),
        "WAYMARK_HOST": server.host,
        "WAYMARK_PORT": str(server.port),
        "WAYMARK_CAFILE": str(server.cafile),
        "WAYMARK_TOKEN_FILE": str(home / "token"),
    }
    if password is not None:
        environ["WAYMARK_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, str(CLIENT), *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        cwd=cwd,
    )


def run_json(
    server: ServerProcess, home: Path, *argv: str, status: int = 0, **options: Any
) -> dict[str, Any]:
    result = run_client(server, home, *argv, "--json", **options)
    assert result.returncode == status, result
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_subcommands_with_json_and_exit_codes(server: ServerProcess, tmp_path: Path) -> None:
    assert run_json(server, tmp_path, "hello")["protocol"] == 1
    walks = run_json(
        server, tmp_path, "search-walks", "--area", "peak district", "--difficulty", "EASY"
    )
    assert walks["total"] == 2
    assert {(w["area"], w["difficulty"]) for w in walks["walks"]} == {("Peak District", "easy")}
    assert run_json(server, tmp_path, "register", "--user", "sam", stdin=MEMBER_PASSWORD + "\n")
    as_sam = {"password": MEMBER_PASSWORD}

    order = run_json(server, tmp_path, "buy", "101:6", "104:1", "--user", "sam", **as_sam)["order"]
    assert (order["subtotal_pence"], order["discount_pence"]) == (7 * 1299, 909)
    assert order["total_pence"] == 7 * 1299 - 909
    refused = run_json(server, tmp_path, "buy", "101:3", "--user", "sam", status=1, **as_sam)
    assert refused["error"]["code"] == "limit_exceeded"
    assert refused["error"]["details"]["allowed"] == 2
    assert len(run_json(server, tmp_path, "orders", "--user", "sam", **as_sam)["orders"]) == 1

    books = run_json(server, tmp_path, "catalogue", "hobbit")["books"]
    loan = run_json(server, tmp_path, "borrow", str(books[0]["id"]), "--user", "sam", **as_sam)
    loan_id = loan["loan"]["id"]
    loans = run_json(server, tmp_path, "loans", "--user", "sam", **as_sam)["loans"]
    assert [item["id"] for item in loans] == [loan_id]
    run_json(server, tmp_path, "return", str(loan_id), "--user", "sam", **as_sam)
    assert run_json(server, tmp_path, "loans", "--user", "sam", **as_sam)["loans"] == []
    history = run_json(server, tmp_path, "history", "--user", "sam", **as_sam)["loans"]
    assert history[0]["returned_at"] is not None
    again = run_json(server, tmp_path, "return", str(loan_id), "--user", "sam", status=1, **as_sam)
    assert again["error"]["code"] == "conflict"

    hits = run_json(server, tmp_path, "search-books", "dune")["results"]
    assert any(hit["held"] and hit["book_id"] for hit in hits)

    wrong = run_json(server, tmp_path, "orders", "--user", "sam", status=1, password="nope")
    assert wrong["error"]["code"] == "invalid_credentials"
    assert run_client(server, tmp_path, "buy", "101:x").returncode == 2
    needs_login = run_client(server, tmp_path, "orders")
    assert needs_login.returncode == 2
    assert "needs a login" in needs_login.stderr


def test_human_output_of_subcommands(server: ServerProcess, tmp_path: Path) -> None:
    result = run_client(server, tmp_path, "search-walks", "--area", "peak", "--difficulty", "hard")
    assert result.returncode == 0
    assert "No" not in result.stderr
    walks = run_client(server, tmp_path, "search-walks", "--area", "cheshire")
    assert walks.returncode == 0
    assert "Dane Valley" in walks.stdout and "£12.99" in walks.stdout
    assert "4 of 4 walks." in walks.stdout
    refused = run_client(server, tmp_path, "orders", "--user", "nobody", password="whatever1")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "The username or password is not right."


def test_remember_keeps_the_token_in_a_private_file(server: ServerProcess, tmp_path: Path) -> None:
    run_json(server, tmp_path, "register", "--user", "sam", password=MEMBER_PASSWORD)
    login = run_json(
        server, tmp_path, "login", "--user", "sam", "--remember", stdin=MEMBER_PASSWORD + "\n"
    )
    assert login["user"]["username"] == "sam" and login["token"]
    token_file = tmp_path / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert run_json(server, tmp_path, "whoami")["user"]["username"] == "sam"
    assert run_json(server, tmp_path, "orders")["orders"] == []
    run_json(server, tmp_path, "logout")
    assert not token_file.exists()
    assert run_client(server, tmp_path, "orders").returncode == 2


def test_admin_subcommands(server: ServerProcess, tmp_path: Path) -> None:
    server.create_admin("boss", "admin-password")
    run_json(server, tmp_path, "register", "--user", "sam", password=MEMBER_PASSWORD)
    run_json(server, tmp_path, "buy", "105:8", "--user", "sam", password=MEMBER_PASSWORD)
    as_boss = {"password": "admin-password"}
    forbidden = run_json(
        server, tmp_path, "restock", "105", "1", "--user", "sam", status=1, password=MEMBER_PASSWORD
    )
    assert forbidden["error"]["code"] == "forbidden"
    backorders = run_json(server, tmp_path, "backorders", "--user", "boss", **as_boss)
    restocked = run_json(
        server, tmp_path, "restock", "Snowdonia", "50", "--user", "boss", **as_boss
    )
    assert restocked["book"]["number"] == 105
    assert sum(f["quantity"] for f in restocked["backorders_filled"]) == sum(
        entry["outstanding"] for entry in backorders["backorders"]
    )
    shown = run_client(server, tmp_path, "restock", "105", "1", "--user", "boss", **as_boss)
    assert shown.returncode == 0 and "Snowdonia now has" in shown.stdout
