"""Writes that are safe to retry (PROTOCOL.md 1.2, idempotency_key), through the real protocol."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.test_shop import race
from tests.wire import ServerProcess, WireClient, register_and_login

BOOK = 104  # Peak District, in stock in the sample catalogue


def orders(client: WireClient) -> list[dict[str, Any]]:
    return client.call("orders")["orders"]


def test_a_write_sent_again_with_its_key_is_answered_not_done_again(
    backend_server: ServerProcess,
) -> None:
    with backend_server.client() as client:
        register_and_login(client, "keyholder")
        first = client.keyed("buy", "order-0001", items=[{"book": BOOK, "quantity": 2}])
        again = client.keyed("buy", "order-0001", items=[{"book": BOOK, "quantity": 2}])
        assert first["ok"] and "replayed" not in first
        assert again["ok"] and again["replayed"] is True
        assert again["result"] == first["result"]
        assert [o["id"] for o in orders(client)] == [first["result"]["order"]["id"]]
        # A new key is a new order.
        assert client.keyed("buy", "order-0002", items=[{"book": BOOK, "quantity": 1}])["ok"]
        assert len(orders(client)) == 2


def test_the_same_key_with_other_args_or_another_command_is_a_conflict(
    backend_server: ServerProcess,
) -> None:
    with backend_server.client() as client:
        register_and_login(client, "keyreuser")
        assert client.keyed("buy", "reused-key", items=[{"book": BOOK, "quantity": 1}])["ok"]
        for cmd, args in (
            ("buy", {"items": [{"book": BOOK, "quantity": 3}]}),
            ("borrow", {"book_id": 1}),
        ):
            error = client.keyed(cmd, "reused-key", **args)["error"]
            assert error["code"] == "conflict"
            assert error["details"]["idempotency_key"] == "reused-key"
        assert len(orders(client)) == 1


def test_only_a_successful_answer_is_remembered(backend_server: ServerProcess) -> None:
    with backend_server.client() as client:
        register_and_login(client, "keyretrier")
        too_many = client.keyed("buy", "retry-after-error", items=[{"book": BOOK, "quantity": 9}])
        assert too_many["error"]["code"] == "limit_exceeded"
        # Not remembered: the same key now does the (allowed) work.
        done = client.keyed("buy", "retry-after-error", items=[{"book": BOOK, "quantity": 1}])
        assert done["ok"] and "replayed" not in done


def test_keys_belong_to_their_member(backend_server: ServerProcess) -> None:
    with backend_server.client() as ann, backend_server.client() as bob:
        register_and_login(ann, "keyann")
        register_and_login(bob, "keybob")
        assert ann.keyed("buy", "shared-key-1", items=[{"book": BOOK, "quantity": 1}])["ok"]
        theirs = bob.keyed("buy", "shared-key-1", items=[{"book": BOOK, "quantity": 1}])
        assert theirs["ok"] and "replayed" not in theirs
        assert len(orders(bob)) == 1


@pytest.mark.parametrize(
    "key", ["short", "x" * 65, "has space1", "naïve-key", 12345678, True, ["a" * 8]]
)
def test_a_malformed_key_is_a_bad_request_naming_it(server: ServerProcess, key: Any) -> None:
    with server.client() as client:
        register_and_login(client, f"badkey{abs(hash(str(key))) % 10_000}")
        error = client.keyed("buy", key, items=[{"book": BOOK, "quantity": 1}])["error"]
        assert error["code"] == "bad_request"
        assert error["details"] == {"argument": "idempotency_key"}
        assert orders(client) == []
        # Where keys do not apply they are ignored, whatever they look like.
        assert client.keyed("hello", key)["ok"]


def test_two_requests_with_one_key_at_once_do_the_work_once(
    backend_server: ServerProcess,
) -> None:
    with backend_server.client() as first:
        token = register_and_login(first, "keytwins")["token"]
    clients = [backend_server.client() for _ in range(4)]
    try:
        for client in clients:
            client.call("resume", token=token)
        outcomes: Counter[str] = Counter()
        for round_number in range(8):
            key = f"twin-key-{round_number:03d}"
            answers, _, _ = race(
                clients,
                lambda c, key=key: c.keyed("buy", key, items=[{"book": BOOK, "quantity": 1}]),
            )
            done = [a for a in answers if a["ok"] and not a.get("replayed")]
            assert len(done) == 1, answers
            for answer in answers:
                if answer["ok"]:
                    assert answer["result"] == done[0]["result"]
                    outcomes["replayed" if answer.get("replayed") else "done"] += 1
                else:  # the contract's other answer: the first is still in progress
                    assert answer["error"]["code"] == "conflict", answer
                    assert answer["error"]["details"].get("in_progress") is True, answer
                    outcomes["in_progress"] += 1
        assert len(orders(clients[0])) == 8
        assert outcomes["done"] == 8
    finally:
        for client in clients:
            client.close()


def test_a_password_change_sent_again_gives_a_working_token(
    backend_server: ServerProcess,
) -> None:
    with backend_server.client() as client:
        register_and_login(client, "keychanger")
        args = {"old_password": "correct horse", "new_password": "battery staple"}
        first = client.keyed("change_password", "pw-change-1", **args)
        again = client.keyed("change_password", "pw-change-1", **args)
        assert first["ok"] and again["replayed"] is True
        for token in (first["result"]["token"], again["result"]["token"]):
            with backend_server.client() as other:
                assert other.call("resume", token=token)["user"]["username"] == "keychanger"
        assert client.call("login", username="keychanger", password="battery staple")
