"""The command table's completeness: every row has a handler, a result shape and docs, every
domain error a wire code, and every answer the keys of the shape its row names."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

import errors
import protocol
import results
from commands import WIRE_CODES, Commands, Session, wire_code, wire_error
from db import Store
from openlibrary import OpenLibrary
from passwords import PasswordHasher
from protocol import COMMANDS, Request
from tests.fake_openlibrary import FakeOpenLibrary
from tests.wire import PROJECT_DIR


def domain_errors() -> list[type[errors.DomainError]]:
    """Every domain error class, however deep below DomainError."""
    found, waiting = [], [errors.DomainError]
    while waiting:
        for kind in waiting.pop().__subclasses__():
            if kind.__module__ == "errors":
                found.append(kind)
                waiting.append(kind)
    return found


def test_every_domain_error_has_a_wire_code() -> None:
    assert len(domain_errors()) >= 10
    for kind in domain_errors():
        assert wire_code(kind) in protocol.ERROR_CODES, kind.__name__


def test_a_domain_error_with_no_wire_code_is_caught_by_the_check() -> None:
    class Unmapped(errors.DomainError):
        pass

    assert wire_code(Unmapped) is None
    with pytest.raises(TypeError, match="Unmapped has no wire code"):
        wire_error(Unmapped("Something new went wrong."))


def test_a_subclass_takes_the_code_of_its_nearest_mapped_class() -> None:
    class VeryBusy(errors.TryAgainError):
        pass

    assert WIRE_CODES.get(VeryBusy) is None
    error = wire_error(VeryBusy("Busy; nothing was changed.", {"retry_after_s": 2}))
    assert (error.code, error.message, error.details) == (
        "unavailable",
        "Busy; nothing was changed.",
        {"retry_after_s": 2},
    )
    assert wire_code(errors.DatabaseUnavailableError) == "unavailable"
    assert wire_code(errors.UsernameTakenError) == "username_taken"


def test_every_command_has_a_handler_and_no_handler_is_unlisted() -> None:
    handlers = {name.removeprefix("do_") for name in dir(Commands) if name.startswith("do_")}
    assert handlers == COMMANDS.keys()


def test_every_command_names_a_result_shape_in_results() -> None:
    for name, command in COMMANDS.items():
        shape = getattr(results, command.result, None)
        assert shape is not None, f"{name}: results.{command.result} is missing"
        assert hasattr(shape, "__required_keys__"), f"{name}: {command.result} is no TypedDict"


def test_every_command_is_documented_in_the_protocol_text() -> None:
    doc = (PROJECT_DIR / "docs" / "PROTOCOL.md").read_text()
    headings = set(re.findall(r"^###\s+`?(\w+)", doc, re.M))
    assert COMMANDS.keys() - headings == set()


def test_the_table_says_which_commands_carry_a_token_and_take_an_idempotency_key() -> None:
    assert {n for n, c in COMMANDS.items() if c.returns_token} == {
        "login",
        "resume",
        "change_password",
    }
    # PROTOCOL.md 1.2: the commands that need a login and are not safe to repeat.
    assert {n for n, c in COMMANDS.items() if c.takes_idempotency_key} >= {
        "buy",
        "cancel_backorder",
        "borrow",
        "return",
        "renew",
        "hold",
        "cancel_hold",
        "restock",
        "add_book",
        "change_password",
    }
    assert not any(COMMANDS[n].takes_idempotency_key for n in ("register", "login", "orders"))


# -- every answer has its shape's keys, on both backends ------------------------------------


class Caller:
    """Runs commands in process as one connection would, checking each answer's keys."""

    def __init__(self, commands: Commands):
        self.commands = commands
        self.session = Session(address="127.0.0.1")
        self.seen: set[str] = set()

    def __call__(self, cmd: str, **args: Any) -> dict[str, Any]:
        answer = self.commands.handle(self.session, Request(1, cmd, args))
        shape = getattr(results, COMMANDS[cmd].result)
        keys = set(answer)
        assert (
            shape.__required_keys__ <= keys <= shape.__required_keys__ | shape.__optional_keys__
        ), (
            cmd,
            sorted(keys),
        )
        self.seen.add(cmd)
        return dict(answer)


@pytest.fixture
def commands(store: Store, openlibrary_fake: FakeOpenLibrary) -> Iterator[Commands]:
    with OpenLibrary(openlibrary_fake.url, retries=0) as ol:
        yield Commands(store, ol, PasswordHasher(4, 1))


def test_every_command_answers_with_the_keys_of_its_shape(commands: Commands, store: Store) -> None:
    member, admin, other = Caller(commands), Caller(commands), Caller(commands)
    password = "correct horse battery"
    member("hello")
    member("health")
    for caller, name in ((member, "shape_member"), (other, "shape_other")):
        caller("register", username=name, password=password)
        token = caller("login", username=name, password=password)["token"]
    store.make_admin("shape_admin", PasswordHasher(4, 1).hash(password), int(time.time()))
    admin("login", username="shape_admin", password=password)
    other("resume", token=token)
    member("whoami")
    member("list_areas")
    member("search_walks", area="peak")
    member("recommend_books", area="peak")

    def new_member(name: str) -> Caller:
        caller = Caller(commands)
        caller("register", username=name, password=password)
        caller("login", username=name, password=password)
        return caller

    scarcest = min(member("guide_books")["books"], key=lambda b: b["in_stock"])
    number, in_stock = scarcest["number"], scarcest["in_stock"]
    for n in range(in_stock // 8):  # others buy it down to fewer than 8 copies
        new_member(f"shape_buyer{n}")("buy", items=[{"book": number, "quantity": 8}])
    in_stock %= 8
    order = member("buy", items=[{"book": number, "quantity": min(in_stock + 2, 8)}])["order"]
    member("orders")
    admin("sales")
    admin("backorders")
    admin("stats")
    member("search_books", query="orwell")
    catalogue = member("catalogue", query="hobbit")["books"]
    admin("add_book", key=catalogue[0]["key"], copies=1)
    book_id = min(
        (b for b in member("catalogue")["books"]),
        key=lambda b: (b["copies"], b["id"]),
    )["id"]
    loans = [member("borrow", book_id=book_id)["loan"]]
    member("renew", loan_id=loans[0]["id"])
    member("history")
    admin("overdue")
    copies = next(b for b in member("catalogue")["books"] if b["id"] == book_id)
    # Take every other copy with fresh members, so that `other` must queue for it.
    for n in range(copies["copies_available"]):
        new_member(f"shape_borrower{n}")("borrow", book_id=book_id)
    hold = other("hold", book_id=book_id)["hold"]
    other("holds")
    other("cancel_hold", hold_id=hold["id"])
    member("return", loan_id=loans[0]["id"])
    assert member("cancel_backorder", order_id=order["id"], book=number)["refund_pence"] > 0
    admin("restock", book=number, quantity=1)
    # 1.2: notices, the desk, members' own data.
    member("set_email", email="shape.member@example.org")
    notices = member("notices")["notices"]
    assert {n["kind"] for n in notices} >= {"order_placed"}
    member("mark_read", ids=[notices[0]["id"]])
    admin("sweep_notices")
    admin("members", query="shape")
    admin("member", username="shape_member")
    admin("block_member", username="shape_other", reason="Lost two books.")
    admin("unblock_member", username="shape_other")
    desk_loan = admin("lend", username="shape_other", book_id=book_id)["loan"]
    admin("checkin", loan_id=desk_loan["id"])
    member("my_data")
    member("change_password", old_password=password, new_password=password + "!")
    temporary = admin("reset_password", username="shape_member")["temporary_password"]
    member("login", username="shape_member", password=temporary)
    member("change_password", old_password=temporary, new_password=password)
    member("logout")
    other("delete_account", password=password)
    assert member.seen | admin.seen | other.seen == COMMANDS.keys()
