"""Lending: the starter catalogue, circulation on both backends, search through Open Library
outages, add_book, and many members racing for the last copy across two server processes.

Store-level tests pass `now` explicitly (UTC epoch seconds), so loan periods, renewals, the
three days a copy is kept for a hold, and overdue loans are tested without sleeping.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

import seed
from commands import Commands, Session, wire_error
from db import Store
from engine import backend_from_url
from errors import DomainError
from openlibrary import WORK_KEY, OpenLibrary
from passwords import PasswordHasher
from protocol import ProtocolError, Request
from tests.fake_openlibrary import FakeOpenLibrary, refused_url
from tests.shaped_store import ShapedStore
from tests.test_shop import found_in_database, rewrite
from tests.wire import ServerProcess, WireClient, register_and_login

T = TypeVar("T")

DAY = 24 * 3600
NOW = 1_700_000_000  # 2023-11-14T22:13:20Z; every store call below names its moment
STARTER = json.loads(
    (Path(__file__).resolve().parent.parent / "data" / "lending_books.json").read_text("utf-8")
)
ISO = "%Y-%m-%dT%H:%M:%SZ"
ROAD_KEY = "/works/OL40873W"  # The Road: one copy in the starter set
HOBBIT_KEY = "/works/OL27482W"  # The Hobbit: three copies
FOX_KEY = "/works/OL45804W"  # Fantastic Mr Fox; /works/OL45883W is a merge redirect to it
MARTIAN_KEY = "/works/OL17091839W"  # in the fake's search answers but not in the library
ADMIN_PASSWORD = "correct horse battery"
SLOW_ANSWER_BOUND_S = 6.5  # the 5 s Open Library read timeout, plus TLS and a catalogue query
RACERS = 8  # threads per store-level race; the store fixture pools 8 connections


def stamp(timestamp: int) -> str:
    """UTC seconds in the protocol's time format."""
    return datetime.fromtimestamp(timestamp, UTC).strftime(ISO)


def seconds(text: str) -> int:
    """A protocol time back as UTC seconds."""
    return int(datetime.strptime(text, ISO).replace(tzinfo=UTC).timestamp())


def book_ids(store: Store) -> dict[str, int]:
    """Lending book ids by Open Library key."""
    books, _ = store.catalogue(None, 200, 0, NOW)
    return {book["key"]: book["id"] for book in books}


def catalogue_entry(store: Store, book_id: int, now: int = NOW) -> dict[str, Any]:
    books, _ = store.catalogue(None, 200, 0, now)
    return next(book for book in books if book["id"] == book_id)


def new_members(store: Store, *names: str) -> list[int]:
    return [store.create_user(name, "not-a-real-hash", NOW)["id"] for name in names]


def code_of(action: Callable[[], object]) -> str:
    """The protocol error code that action raises."""
    with pytest.raises((ProtocolError, DomainError)) as caught:
        action()
    error = caught.value
    return error.code if isinstance(error, ProtocolError) else wire_error(error).code


def assert_circulation_sound(connection_source: Store | ShapedStore | str) -> None:
    """Copies on loan never exceed copies owned; one active loan per member and book; at most 5."""
    backend = (
        backend_from_url(connection_source)
        if isinstance(connection_source, str)
        else connection_source.database.backend
    )
    broken = found_in_database(
        backend,
        "SELECT b.id FROM lending_books b WHERE b.copies < (SELECT COUNT(*) FROM loans l"
        " WHERE l.book_id = b.id AND l.returned_at IS NULL)",
        "SELECT user_id, book_id FROM loans WHERE returned_at IS NULL"
        " GROUP BY user_id, book_id HAVING COUNT(*) > 1",
        "SELECT user_id FROM loans WHERE returned_at IS NULL GROUP BY user_id HAVING COUNT(*) > 5",
    )
    assert broken == [[], [], []]


def race(count: int, attempt: Callable[[int], T]) -> list[T | str]:
    """Run attempt(i) in count threads released together; each outcome or its error code."""
    barrier = threading.Barrier(count)
    outcomes: list[T | str] = ["did not finish"] * count

    def run(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            outcomes[index] = attempt(index)
        except ProtocolError as error:
            outcomes[index] = error.code
        except DomainError as error:
            outcomes[index] = wire_error(error).code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


# The starter catalogue (both backends) --------------------------------------------------------


def test_starter_catalogue_is_loaded_on_an_empty_database(store: Store) -> None:
    books, total = store.catalogue(None, 200, 0, NOW)

    assert total == len(books) == len(STARTER) >= 20
    held = {
        (b["key"], b["title"], tuple(b["authors"]), b["first_publish_year"], b["copies"])
        for b in books
    }
    assert held == {
        (b["key"], b["title"], tuple(b["authors"]), b["first_publish_year"], b["copies"])
        for b in STARTER
    }
    assert all(1 <= b["copies"] <= 3 and b["copies_available"] == b["copies"] for b in books)
    assert all(WORK_KEY.fullmatch(b["key"]) for b in books)


def test_starter_catalogue_is_not_loaded_twice(store: Store, db_url: str) -> None:
    reopened = seed.open_store(db_url)
    try:
        assert reopened.catalogue(None, 200, 0, NOW)[1] == len(STARTER)
    finally:
        reopened.close()


# catalogue through the command handlers (both backends) -------------------------------------


@pytest.fixture
def commands(store: ShapedStore) -> Iterator[Commands]:
    """Command handlers over each backend; Open Library refuses every connection."""
    with OpenLibrary(refused_url(), connect_timeout=0.5, read_timeout=0.5, retries=0) as ol:
        yield Commands(store.store, ol, PasswordHasher(4, 1))


def run(commands: Commands, cmd: str, **args: Any) -> dict[str, Any]:
    return commands.handle(Session(address="127.0.0.1"), Request(1, cmd, args))


def titles(answer: dict[str, Any]) -> list[str]:
    return [book["title"] for book in answer["books"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("HOBBIT", ["The Hobbit"]),
        ("  george   ORWELL ", ["Animal Farm", "Nineteen Eighty-Four"]),
        ("gaiman", ["Good Omens"]),  # a second author matches too
        ("SAINT-EXUPÉRY", ["The Little Prince"]),
        (
            "tolkien",
            [
                "The Fellowship of the Ring",
                "The Hobbit",
                "The Lord of the Rings",
                "The Return of the King",
                "The Two Towers",
            ],
        ),
        ("%", []),  # LIKE wildcards are matched literally
        ("_", []),
        ("no such book anywhere", []),
    ],
)
def test_catalogue_matches_title_or_author_ignoring_case(
    commands: Commands, query: str, expected: list[str]
) -> None:
    answer = run(commands, "catalogue", query=query)

    assert titles(answer) == expected
    assert answer["total"] == len(expected)


def test_catalogue_is_auth_free_sorted_by_title_and_paged(commands: Commands) -> None:
    everything = run(commands, "catalogue")
    pages = [run(commands, "catalogue", limit=10, offset=offset) for offset in (0, 10, 20, 30)]

    assert titles(everything) == sorted(titles(everything), key=str.casefold)
    assert everything["total"] == len(STARTER)
    assert [len(page["books"]) for page in pages] == [10, 10, len(STARTER) - 20, 0]
    assert {page["total"] for page in pages} == {len(STARTER)}
    assert sum((page["books"] for page in pages), []) == everything["books"]
    book = everything["books"][0]
    assert set(book) >= {"id", "key", "title", "authors", "first_publish_year", "copies"}
    assert book["copies_available"] == book["copies"]
    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"query": 7}):
        assert code_of(partial(run, commands, "catalogue", **bad)) == "bad_request"


# Circulation (Store, both backends) ----------------------------------------------------------


def test_borrow_lends_a_copy_for_fourteen_days(store: Store) -> None:
    (alice,) = new_members(store, "alice")
    hobbit = book_ids(store)[HOBBIT_KEY]

    loan = store.lend_copy(alice, hobbit, NOW)

    assert loan["book"] == {"id": hobbit, "title": "The Hobbit", "authors": ["J.R.R. Tolkien"]}
    assert (loan["borrowed_at"], loan["due_at"], loan["returned_at"]) == (
        stamp(NOW),
        stamp(NOW + 14 * DAY),
        None,
    )
    assert catalogue_entry(store, hobbit)["copies_available"] == 2
    assert code_of(lambda: store.lend_copy(alice, 999_999, NOW)) == "not_found"


def test_a_member_may_have_five_books_out_at_once(store: Store) -> None:
    (alice,) = new_members(store, "alice")
    ids = list(book_ids(store).values())
    loans = [store.lend_copy(alice, book, NOW) for book in ids[:5]]

    with pytest.raises(DomainError) as caught:
        store.lend_copy(alice, ids[5], NOW)
    assert wire_error(caught.value).code == "limit_exceeded"
    assert caught.value.details["limit"] == 5
    assert caught.value.details["allowed"] == 0

    store.return_loan(alice, loans[0]["id"], NOW + 1)
    assert store.lend_copy(alice, ids[5], NOW + 2)["book"]["id"] == ids[5]
    assert_circulation_sound(store)


def test_a_member_may_have_one_copy_of_a_book_out(store: Store) -> None:
    (alice,) = new_members(store, "alice")
    hobbit = book_ids(store)[HOBBIT_KEY]
    first = store.lend_copy(alice, hobbit, NOW)

    assert code_of(lambda: store.lend_copy(alice, hobbit, NOW)) == "conflict"

    store.return_loan(alice, first["id"], NOW + DAY)
    again = store.lend_copy(alice, hobbit, NOW + DAY)
    assert [loan["id"] for loan in store.loans_for(alice, NOW + DAY)] == [again["id"], first["id"]]


def test_borrow_when_every_copy_is_out_is_unavailable(store: Store) -> None:
    alice, bob = new_members(store, "alice", "bob")
    road = book_ids(store)[ROAD_KEY]
    store.lend_copy(alice, road, NOW)

    with pytest.raises(DomainError) as caught:
        store.lend_copy(bob, road, NOW)
    assert wire_error(caught.value).code == "unavailable"
    assert catalogue_entry(store, road)["copies_available"] == 0


def test_return_ends_only_ones_own_active_loan(store: Store) -> None:
    alice, bob = new_members(store, "alice", "bob")
    road = book_ids(store)[ROAD_KEY]
    loan = store.lend_copy(alice, road, NOW)

    assert code_of(lambda: store.return_loan(bob, loan["id"], NOW)) == "forbidden"
    assert code_of(lambda: store.return_loan(alice, 999_999, NOW)) == "not_found"
    returned = store.return_loan(alice, loan["id"], NOW + DAY)
    assert returned["returned_at"] == stamp(NOW + DAY)
    assert code_of(lambda: store.return_loan(alice, loan["id"], NOW + DAY)) == "conflict"
    assert store.lend_copy(bob, road, NOW + DAY)["book"]["id"] == road


def test_renew_counts_from_the_later_of_now_and_the_due_date_twice_at_most(store: Store) -> None:
    (alice,) = new_members(store, "alice")
    loan = store.lend_copy(alice, book_ids(store)[HOBBIT_KEY], NOW)

    early = store.renew_loan(alice, loan["id"], NOW + DAY)  # due date is later than now
    assert early["due_at"] == stamp(NOW + 28 * DAY)
    late = store.renew_loan(alice, loan["id"], NOW + 40 * DAY)  # overdue: counted from now
    assert late["due_at"] == stamp(NOW + 54 * DAY)

    with pytest.raises(DomainError) as caught:
        store.renew_loan(alice, loan["id"], NOW + 41 * DAY)
    assert wire_error(caught.value).code == "limit_exceeded"
    assert caught.value.details["limit"] == 2
    assert store.loans_for(alice, NOW + 41 * DAY)[0]["due_at"] == stamp(NOW + 54 * DAY)


def test_renew_is_refused_while_another_member_holds_the_book(store: Store) -> None:
    alice, bob = new_members(store, "alice", "bob")
    road = book_ids(store)[ROAD_KEY]
    loan = store.lend_copy(alice, road, NOW)
    hold = store.place_hold(bob, road, NOW)

    assert code_of(lambda: store.renew_loan(alice, loan["id"], NOW)) == "conflict"
    assert code_of(lambda: store.renew_loan(bob, loan["id"], NOW)) == "forbidden"

    store.cancel_hold(bob, hold["id"], NOW)
    assert store.renew_loan(alice, loan["id"], NOW)["due_at"] == stamp(NOW + 28 * DAY)
    store.return_loan(alice, loan["id"], NOW)
    assert code_of(lambda: store.renew_loan(alice, loan["id"], NOW)) == "conflict"


def test_hold_only_joins_a_queue_worth_joining(store: Store) -> None:
    alice, bob = new_members(store, "alice", "bob")
    road = book_ids(store)[ROAD_KEY]

    assert code_of(lambda: store.place_hold(alice, road, NOW)) == "conflict"  # a copy is free
    store.lend_copy(alice, road, NOW)
    assert code_of(lambda: store.place_hold(alice, road, NOW)) == "conflict"  # she has it out
    hold = store.place_hold(bob, road, NOW)
    assert hold["book"] == {"id": road, "title": "The Road"}
    assert (hold["position"], hold["created_at"]) == (1, stamp(NOW))
    assert code_of(lambda: store.place_hold(bob, road, NOW)) == "conflict"  # already queued
    assert code_of(lambda: store.place_hold(bob, 999_999, NOW)) == "not_found"


def test_a_returned_copy_is_kept_for_the_first_in_the_queue(store: Store) -> None:
    alice, bob, carol, dave = new_members(store, "alice", "bob", "carol", "dave")
    road = book_ids(store)[ROAD_KEY]
    loan = store.lend_copy(alice, road, NOW)
    for offset, member in enumerate((bob, carol, dave)):
        store.place_hold(member, road, NOW + offset)

    store.return_loan(alice, loan["id"], NOW + DAY)

    def queue(now: int = NOW + DAY) -> list[tuple[int, bool]]:
        return [
            (h["position"], h["ready"])
            for member in (bob, carol, dave)
            for h in store.holds_for(member, now)
        ]

    assert queue() == [(1, True), (2, False), (3, False)]
    assert catalogue_entry(store, road, NOW + DAY)["copies_available"] == 0
    for other in (carol, alice):
        assert code_of(partial(store.lend_copy, other, road, NOW + DAY)) == "unavailable"
    assert store.lend_copy(bob, road, NOW + DAY)["book"]["id"] == road
    assert store.holds_for(bob, NOW + DAY) == []  # borrowing ended her hold
    assert queue() == [(1, False), (2, False)]
    assert_circulation_sound(store)


def test_a_kept_copy_passes_to_the_next_in_the_queue_after_three_days(store: Store) -> None:
    alice, bob, carol = new_members(store, "alice", "bob", "carol")
    road = book_ids(store)[ROAD_KEY]
    loan = store.lend_copy(alice, road, NOW)
    store.place_hold(bob, road, NOW)
    store.place_hold(carol, road, NOW + 1)
    store.return_loan(alice, loan["id"], NOW + DAY)
    last_moment = NOW + 4 * DAY - 1

    assert [h["ready"] for h in store.holds_for(bob, last_moment)] == [True]
    assert code_of(lambda: store.lend_copy(carol, road, last_moment)) == "unavailable"

    expired = NOW + 4 * DAY
    assert code_of(lambda: store.lend_copy(bob, road, expired)) == "unavailable"
    assert store.holds_for(bob, expired) == []
    assert [(h["position"], h["ready"]) for h in store.holds_for(carol, expired)] == [(1, True)]
    assert store.lend_copy(carol, road, expired + DAY)["book"]["id"] == road
    assert_circulation_sound(store)


def test_an_uncollected_copy_with_nobody_else_waiting_is_free_again(store: Store) -> None:
    alice, bob, carol = new_members(store, "alice", "bob", "carol")
    road = book_ids(store)[ROAD_KEY]
    loan = store.lend_copy(alice, road, NOW)
    store.place_hold(bob, road, NOW)
    store.return_loan(alice, loan["id"], NOW)

    assert catalogue_entry(store, road, NOW + 3 * DAY)["copies_available"] == 1
    assert store.lend_copy(carol, road, NOW + 3 * DAY)["book"]["id"] == road
    assert store.holds_for(bob, NOW + 3 * DAY) == []


def test_catalogue_does_not_offer_a_copy_that_passes_to_the_next_in_the_queue(
    store: Store,
) -> None:
    # Bob's reservation has lapsed unread; the copy belongs to Carol, next in the queue, so
    # nobody else can borrow it and the catalogue must not say it is available.
    alice, bob, carol, dave = new_members(store, "alice", "bob", "carol", "dave")
    road = book_ids(store)[ROAD_KEY]
    loan = store.lend_copy(alice, road, NOW)
    store.place_hold(bob, road, NOW)
    store.place_hold(carol, road, NOW + 1)
    store.return_loan(alice, loan["id"], NOW)
    lapsed = NOW + 3 * DAY

    shown = catalogue_entry(store, road, lapsed)["copies_available"]
    borrowed = code_of(lambda: store.lend_copy(dave, road, lapsed))

    assert (shown, borrowed) == (0, "unavailable")


def test_cancel_hold_closes_the_queue_up(store: Store) -> None:
    alice, bob, carol, dave = new_members(store, "alice", "bob", "carol", "dave")
    road = book_ids(store)[ROAD_KEY]
    store.lend_copy(alice, road, NOW)
    holds = {m: store.place_hold(m, road, NOW + i) for i, m in enumerate((bob, carol, dave))}

    assert code_of(lambda: store.cancel_hold(dave, holds[bob]["id"], NOW)) == "forbidden"
    assert code_of(lambda: store.cancel_hold(dave, 999_999, NOW)) == "not_found"
    store.cancel_hold(carol, holds[carol]["id"], NOW)
    assert [h["position"] for h in store.holds_for(dave, NOW)] == [2]
    store.cancel_hold(bob, holds[bob]["id"], NOW)
    assert [h["position"] for h in store.holds_for(dave, NOW)] == [1]
    assert store.holds_for(bob, NOW) == []
    assert code_of(lambda: store.cancel_hold(bob, holds[bob]["id"], NOW)) == "conflict"


def test_cancelling_a_ready_hold_passes_the_copy_on(store: Store) -> None:
    alice, bob, carol = new_members(store, "alice", "bob", "carol")
    road = book_ids(store)[ROAD_KEY]
    loan = store.lend_copy(alice, road, NOW)
    bobs = store.place_hold(bob, road, NOW)
    store.place_hold(carol, road, NOW)
    store.return_loan(alice, loan["id"], NOW)

    store.cancel_hold(bob, bobs["id"], NOW + 1)

    assert [(h["position"], h["ready"]) for h in store.holds_for(carol, NOW + 1)] == [(1, True)]
    assert code_of(lambda: store.lend_copy(alice, road, NOW + 1)) == "unavailable"


def test_added_copies_go_to_the_queue_first(store: Store) -> None:
    alice, bob, carol = new_members(store, "alice", "bob", "carol")
    road = book_ids(store)[ROAD_KEY]
    store.lend_copy(alice, road, NOW)
    store.place_hold(bob, road, NOW)

    book = store.add_copies(ROAD_KEY, 1, NOW)

    assert book is not None
    assert (book["copies"], book["copies_available"]) == (2, 0)
    assert [h["ready"] for h in store.holds_for(bob, NOW)] == [True]
    assert code_of(lambda: store.lend_copy(carol, road, NOW)) == "unavailable"
    assert store.lend_copy(bob, road, NOW)["book"]["id"] == road
    assert store.add_copies("/works/OL1W", 1, NOW) is None
    assert_circulation_sound(store)


def test_history_lists_every_loan_newest_first_and_marks_overdue_ones(store: Store) -> None:
    alice, bob = new_members(store, "alice", "bob")
    ids = book_ids(store)
    hobbit = store.lend_copy(alice, ids[HOBBIT_KEY], NOW)
    road = store.lend_copy(alice, ids[ROAD_KEY], NOW + 60)
    store.return_loan(alice, hobbit["id"], NOW + 30 * DAY)  # returned late

    def overdue(now: int) -> list[tuple[int, bool, int]]:
        return [(h["id"], h["overdue"], h["days_overdue"]) for h in store.loans_for(alice, now)]

    due = NOW + 60 + 14 * DAY
    assert overdue(due) == [(road["id"], False, 0), (hobbit["id"], False, 0)]
    assert overdue(due + 1) == [(road["id"], True, 1), (hobbit["id"], False, 0)]
    assert overdue(due + 6 * DAY) == [(road["id"], True, 6), (hobbit["id"], False, 0)]
    history = store.loans_for(alice, due)
    assert history[1]["returned_at"] == stamp(NOW + 30 * DAY)
    assert history[0]["returned_at"] is None
    assert store.loans_for(bob, due) == []


# Two requests for the same change at the same moment (both backends) ------------------------


def test_concurrent_renewals_never_pass_the_limit(store: Store) -> None:
    (alice,) = new_members(store, "alice")
    loan = store.lend_copy(alice, book_ids(store)[HOBBIT_KEY], NOW)
    store.renew_loan(alice, loan["id"], NOW)  # one renewal left

    outcomes = race(RACERS, lambda _: store.renew_loan(alice, loan["id"], NOW)["renewals"])

    assert sorted(map(str, outcomes)) == ["2"] + ["limit_exceeded"] * (RACERS - 1)
    assert store.loans_for(alice, NOW)[0]["renewals"] == 2


def test_concurrent_returns_of_one_loan_succeed_once(store: Store) -> None:
    (alice,) = new_members(store, "alice")
    loan = store.lend_copy(alice, book_ids(store)[ROAD_KEY], NOW)

    outcomes = race(RACERS, lambda i: store.return_loan(alice, loan["id"], NOW + i)["returned_at"])

    assert Counter(o == "conflict" for o in outcomes) == Counter({True: RACERS - 1, False: 1})


def test_concurrent_cancels_of_one_hold_succeed_once(store: Store) -> None:
    alice, bob = new_members(store, "alice", "bob")
    road = book_ids(store)[ROAD_KEY]
    store.lend_copy(alice, road, NOW)
    hold = store.place_hold(bob, road, NOW)

    outcomes = race(RACERS, lambda _: store.cancel_hold(bob, hold["id"], NOW))

    assert sorted(map(str, outcomes)) == ["None"] + ["conflict"] * (RACERS - 1)


def test_concurrent_borrows_of_the_last_copy_lend_it_once(store: Store) -> None:
    road = book_ids(store)[ROAD_KEY]
    members = new_members(store, *(f"member{i}" for i in range(RACERS)))

    outcomes = race(RACERS, lambda i: store.lend_copy(members[i], road, NOW)["book"]["id"])

    assert sorted(map(str, outcomes)) == [str(road)] + ["unavailable"] * (RACERS - 1)
    assert_circulation_sound(store)


# Circulation over the wire (real server, both backends) --------------------------------------


def test_circulation_over_the_wire(backend_server: ServerProcess) -> None:
    with (
        backend_server.client() as anonymous,
        backend_server.client() as alice,
        backend_server.client() as bob,
        backend_server.client() as carol,
    ):
        books = anonymous.call("catalogue", query="the road")["books"]
        assert [b["title"] for b in books] == ["The Road"]
        road = books[0]["id"]
        assert anonymous.error("borrow", book_id=road)["code"] == "unauthorized"
        for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            register_and_login(client, name)

        loan = alice.call("borrow", book_id=road)["loan"]
        assert loan["book"] == {"id": road, "title": "The Road", "authors": ["Cormac McCarthy"]}
        assert seconds(loan["due_at"]) - seconds(loan["borrowed_at"]) == 14 * DAY
        assert loan["returned_at"] is None
        assert abs(seconds(loan["borrowed_at"]) - time.time()) < 120
        assert bob.error("borrow", book_id=road)["code"] == "unavailable"
        assert alice.error("borrow", book_id=road)["code"] == "conflict"
        assert bob.error("borrow", book_id="road")["code"] == "bad_request"
        assert bob.error("borrow", book_id=999_999)["code"] == "not_found"

        bobs = bob.call("hold", book_id=road)["hold"]
        assert (bobs["book"], bobs["position"]) == ({"id": road, "title": "The Road"}, 1)
        assert bobs["created_at"].endswith("Z")
        carols = carol.call("hold", book_id=road)["hold"]
        assert carols["position"] == 2
        assert alice.error("renew", loan_id=loan["id"])["code"] == "conflict"
        assert bob.error("return", loan_id=loan["id"])["code"] == "forbidden"
        assert bob.error("cancel_hold", hold_id=carols["id"])["code"] == "forbidden"

        returned = alice.call("return", loan_id=loan["id"])["loan"]
        assert returned["returned_at"] is not None and returned["id"] == loan["id"]
        assert alice.error("return", loan_id=loan["id"])["code"] == "conflict"
        assert [(h["position"], h["ready"]) for h in bob.call("holds")["holds"]] == [(1, True)]
        assert [(h["position"], h["ready"]) for h in carol.call("holds")["holds"]] == [(2, False)]
        assert carol.error("borrow", book_id=road)["code"] == "unavailable"
        assert anonymous.call("catalogue", query="the road")["books"][0]["copies_available"] == 0

        bobs_loan = bob.call("borrow", book_id=road)["loan"]
        assert bob.call("holds") == {"holds": []}
        assert [(h["position"], h["ready"]) for h in carol.call("holds")["holds"]] == [(1, False)]
        assert carol.call("cancel_hold", hold_id=carols["id"]) == {}
        assert carol.call("holds") == {"holds": []}
        renewed = bob.call("renew", loan_id=bobs_loan["id"])["loan"]
        assert seconds(renewed["due_at"]) - seconds(bobs_loan["due_at"]) == 14 * DAY

        history = alice.call("history")["loans"]
        assert [(h["id"], h["overdue"], h["days_overdue"]) for h in history] == [
            (loan["id"], False, 0)
        ]
        assert carol.call("history") == {"loans": []}
    assert_circulation_sound(backend_server.db_url)


def test_search_marks_held_hits_with_copies_available(backend_server: ServerProcess) -> None:
    with backend_server.client() as client:
        register_and_login(client, "alice")
        nineteen = client.call("catalogue", query="nineteen eighty")["books"][0]
        client.call("borrow", book_id=nineteen["id"])

        answer = client.call("search_books", query="orwell")

    assert answer["source"] == "openlibrary"
    assert "warning" not in answer
    hits = {hit["key"]: hit for hit in answer["results"]}
    assert hits["/works/OL1168083W"] == {
        "key": "/works/OL1168083W",
        "title": "Nineteen Eighty-Four",
        "authors": ["George Orwell"],
        "first_publish_year": 1949,
        "held": True,
        "book_id": nineteen["id"],
        "copies_available": 2,
    }
    assert hits["/works/OL1168007W"]["held"] is True
    assert hits["/works/OL1168007W"]["copies_available"] == 2
    unheld = hits["/works/OL14905934W"]
    assert (unheld["held"], unheld["book_id"], unheld["copies_available"]) == (False, None, None)


# search_books when Open Library fails --------------------------------------------------------


def test_search_identifies_itself_to_open_library(
    server: ServerProcess, openlibrary_fake: FakeOpenLibrary
) -> None:
    with server.client() as client:
        client.call("search_books", query="dune")

    assert openlibrary_fake.user_agents
    for agent in openlibrary_fake.user_agents:
        assert agent.startswith("Waymark/")
        assert "contact" in agent
        assert re.search(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", agent)


def test_outage_is_answered_from_cache_then_catalogue_then_upstream_unavailable(
    server: ServerProcess, openlibrary_fake: FakeOpenLibrary
) -> None:
    with server.client() as client:
        first = client.call("search_books", query="Dune")
        again = client.call("search_books", query="  dune ")
        assert openlibrary_fake.requests["/search.json"] == 1
        assert (first["source"], again["source"]) == ("openlibrary", "cache")
        assert "warning" not in again
        assert again["results"] == first["results"]

        openlibrary_fake.mode = "500"
        cached = client.call("search_books", query="dune")  # still fresh: no upstream call
        tolkien = client.call("search_books", query="TOLKIEN", limit=3)
        unknown = client.error("search_books", query="zzz no such book")
        empty = client.error("search_books", query="   ")

    assert (cached["source"], "warning" in cached) == ("cache", False)
    assert tolkien["source"] == "catalogue"
    assert "Open Library" in tolkien["warning"]
    assert [hit["title"] for hit in tolkien["results"]] == [
        "The Fellowship of the Ring",
        "The Hobbit",
        "The Lord of the Rings",
    ]
    hobbit = tolkien["results"][1]
    assert (hobbit["key"], hobbit["held"], hobbit["copies_available"]) == (HOBBIT_KEY, True, 3)
    assert isinstance(hobbit["book_id"], int)
    assert unknown["code"] == "upstream_unavailable"
    assert empty["code"] == "bad_request"
    assert openlibrary_fake.requests["/search.json"] > 1  # the outage was really met


def test_a_stale_cached_answer_is_served_with_a_warning(
    tmp_path: Path, openlibrary_fake: FakeOpenLibrary
) -> None:
    # The server offers no cache TTL setting, so the stale path runs through the handlers with
    # a client whose answers expire at once but are kept for an outage.
    store = seed.open_store(f"sqlite:///{tmp_path / 'stale.db'}")
    try:
        with OpenLibrary(openlibrary_fake.url, cache_ttl_s=0, read_timeout=1) as ol:
            commands = Commands(store, ol, PasswordHasher(4, 1))
            fresh = run(commands, "search_books", query="dune")
            (alice,) = new_members(store, "alice")
            dune = book_ids(store)["/works/OL893415W"]
            store.lend_copy(alice, dune, int(time.time()))
            openlibrary_fake.mode = "500"
            stale = run(commands, "search_books", query="dune")
            assert code_of(lambda: run(commands, "search_books", query="zzz")) == (
                "upstream_unavailable"
            )
    finally:
        store.close()

    assert (fresh["source"], "warning" in fresh) == ("openlibrary", False)
    assert stale["source"] == "cache"
    assert "earlier" in stale["warning"]
    assert [hit["key"] for hit in stale["results"]] == [hit["key"] for hit in fresh["results"]]
    held = [hit for hit in stale["results"] if hit["held"]]
    # Which copies are free comes from the catalogue now, not from the cached answer.
    assert [(h["book_id"], h["copies_available"]) for h in held] == [(dune, 1)]


def test_search_answers_in_time_when_open_library_hangs(
    server: ServerProcess, openlibrary_fake: FakeOpenLibrary
) -> None:
    openlibrary_fake.slow_s = 15.0  # far beyond the server's 5 s read timeout
    openlibrary_fake.mode = "slow"
    answers: dict[str, tuple[dict[str, Any], float]] = {}

    def search(query: str) -> None:
        with WireClient(server.host, server.port, server.cafile) as client:
            started = time.monotonic()
            answer = client.request("search_books", query=query)
            answers[query] = (answer, time.monotonic() - started)

    threads = [threading.Thread(target=search, args=(q,)) for q in ("orwell", "zzz nothing")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    fallback, fallback_s = answers["orwell"]
    nothing, nothing_s = answers["zzz nothing"]
    assert fallback["ok"] and fallback["result"]["source"] == "catalogue"
    assert [h["title"] for h in fallback["result"]["results"]] == [
        "Animal Farm",
        "Nineteen Eighty-Four",
    ]
    assert nothing["error"]["code"] == "upstream_unavailable"
    assert fallback_s < SLOW_ANSWER_BOUND_S and nothing_s < SLOW_ANSWER_BOUND_S
    assert openlibrary_fake.requests["/search.json"] == 2  # a timeout is not retried


# add_book --------------------------------------------------------------------------------------


def admin_client(server: ServerProcess) -> WireClient:
    server.create_admin("librarian", ADMIN_PASSWORD)
    client = server.client()
    client.call("login", username="librarian", password=ADMIN_PASSWORD)
    return client


def test_add_book_is_for_admins_with_a_valid_key(server: ServerProcess) -> None:
    with server.client() as member, admin_client(server) as admin:
        assert member.error("add_book", key=HOBBIT_KEY, copies=1)["code"] == "unauthorized"
        register_and_login(member, "alice")
        assert member.error("add_book", key=HOBBIT_KEY, copies=1)["code"] == "forbidden"
        for key in ("OL27482W", "/books/OL27482M", "/works/OL27482W/x", "/works/OLW", ""):
            assert admin.error("add_book", key=key, copies=1)["code"] == "bad_request", key
        assert admin.error("add_book", key=HOBBIT_KEY, copies=0)["code"] == "bad_request"
        assert admin.error("add_book", key=HOBBIT_KEY)["code"] == "bad_request"
        assert member.call("catalogue")["total"] == len(STARTER)


def test_add_book_fetches_a_new_work_from_open_library(
    server: ServerProcess, openlibrary_fake: FakeOpenLibrary
) -> None:
    openlibrary_fake.works["OL17091839W"] = {
        "key": MARTIAN_KEY,
        "title": "The Martian",
        "type": {"key": "/type/work"},
        "first_publish_date": "2011",
        "authors": [
            {"author": {"key": "/authors/OL7234434A"}, "type": {"key": "/type/author_role"}}
        ],
    }
    openlibrary_fake.authors["OL7234434A"] = {"key": "/authors/OL7234434A", "name": "Andy Weir"}
    with admin_client(server) as admin:
        book = admin.call("add_book", key=MARTIAN_KEY, copies=2)["book"]
        listed = admin.call("catalogue", query="andy weir")["books"]
        found = admin.call("search_books", query="martian")["results"]

    assert book == {
        "id": book["id"],
        "key": MARTIAN_KEY,
        "title": "The Martian",
        "authors": ["Andy Weir"],
        "first_publish_year": 2011,
        "copies": 2,
        "copies_available": 2,
    }
    assert listed == [book]
    assert openlibrary_fake.requests["/works/OL17091839W.json"] == 1
    assert openlibrary_fake.requests["/authors/OL7234434A.json"] == 1
    assert [(h["held"], h["book_id"], h["copies_available"]) for h in found] == [
        (True, book["id"], 2)
    ]


def test_add_book_adds_copies_to_a_held_work_even_during_an_outage(
    server: ServerProcess, openlibrary_fake: FakeOpenLibrary
) -> None:
    openlibrary_fake.mode = "500"
    with admin_client(server) as admin:
        before = admin.call("catalogue", query="hobbit")["books"][0]
        book = admin.call("add_book", key=HOBBIT_KEY, copies=2)["book"]
        total = admin.call("catalogue")["total"]

    assert (book["id"], book["copies"], book["copies_available"]) == (before["id"], 5, 5)
    assert total == len(STARTER)
    assert openlibrary_fake.total_requests == 0  # a held work needs no lookup


def test_add_book_of_an_unknown_or_unreachable_work_adds_nothing(
    server: ServerProcess, openlibrary_fake: FakeOpenLibrary
) -> None:
    with admin_client(server) as admin:
        unknown = admin.error("add_book", key="/works/OL999999999W", copies=1)
        openlibrary_fake.mode = "500"
        unreachable = admin.error("add_book", key=MARTIAN_KEY, copies=1)
        total = admin.call("catalogue")["total"]

    assert unknown["code"] == "not_found"
    assert unreachable["code"] == "upstream_unavailable"
    assert total == len(STARTER)


def test_add_book_of_a_merged_work_adds_copies_to_the_held_work(
    server: ServerProcess, openlibrary_fake: FakeOpenLibrary
) -> None:
    # Open Library answers /works/OL45883W with a redirect to /works/OL45804W (Fantastic Mr
    # Fox), which the library already holds: the same work must not be listed twice.
    with admin_client(server) as admin:
        book = admin.call("add_book", key="/works/OL45883W", copies=1)["book"]
        foxes = admin.call("catalogue", query="fantastic mr fox")["books"]

    assert [(b["key"], b["copies"]) for b in foxes] == [(FOX_KEY, 4)]
    assert (book["key"], book["copies"]) == (FOX_KEY, 4)


# The last copy, wanted by twenty members on two servers (MySQL) ------------------------------


def test_twenty_members_race_for_the_last_copy_across_two_servers(
    two_mysql_servers: tuple[ServerProcess, ServerProcess], mysql_url: str
) -> None:
    first, second = two_mysql_servers
    with first.client() as setup:
        hobbit = setup.call("catalogue", query="the hobbit")["books"][0]
        assert hobbit["copies"] == 3
        for name in ("early1", "early2"):  # two of the three copies go out first
            register_and_login(setup, name)
            setup.call("borrow", book_id=hobbit["id"])
            setup.call("logout")
        assert setup.call("catalogue", query="the hobbit")["books"][0]["copies_available"] == 1

    servers = [first if i % 2 == 0 else second for i in range(20)]
    clients = [server.client() for server in servers]
    try:
        for i, client in enumerate(clients):
            register_and_login(client, f"racer{i}")

        def borrow(i: int) -> dict[str, Any]:
            return clients[i].request("borrow", book_id=hobbit["id"])

        responses = race(20, borrow)
    finally:
        for client in clients:
            client.close()

    outcomes = [
        ("ok" if r["ok"] else r["error"]["code"]) if isinstance(r, dict) else r for r in responses
    ]
    by_server = Counter((servers[i] is first, outcome) for i, outcome in enumerate(outcomes))
    print(f"race outcomes: {Counter(outcomes)}; by (first server?, outcome): {by_server}")
    assert Counter(outcomes) == Counter({"ok": 1, "unavailable": 19})
    assert by_server[(True, "unavailable")] >= 9 and by_server[(False, "unavailable")] >= 9
    with second.client() as check:
        after = check.call("catalogue", query="the hobbit")["books"][0]
    assert (after["copies"], after["copies_available"]) == (3, 0)
    assert_circulation_sound(mysql_url)


def test_the_lending_terms_are_configurable(tmp_path: Path) -> None:
    terms = ("--loan-days", "7", "--max-active-loans", "1", "--max-renewals", "0")
    with ServerProcess(
        tmp_path, db_url=f"sqlite:///{tmp_path / 'w.db'}", extra_args=terms
    ) as server:
        with server.client() as client:
            register_and_login(client, "strict")
            books = client.call("catalogue")["books"]
            loan = client.call("borrow", book_id=books[0]["id"])["loan"]
            borrowed = datetime.fromisoformat(loan["borrowed_at"].replace("Z", "+00:00"))
            due = datetime.fromisoformat(loan["due_at"].replace("Z", "+00:00"))
            assert (due - borrowed).days == 7
            error = client.error("borrow", book_id=books[1]["id"])
            assert error["code"] == "limit_exceeded" and error["details"]["limit"] == 1
            assert client.error("renew", loan_id=loan["id"])["details"]["limit"] == 0


@pytest.fixture
def store(store: Store) -> ShapedStore:
    """The conftest Store, answering in wire shapes as the commands do."""
    return ShapedStore(store)


# The overdue report (real server, both backends) ------------------------------------------------


def test_overdue_lists_late_unreturned_loans_longest_first_with_their_members(
    backend_server: ServerProcess,
) -> None:
    backend_server.create_admin("librarian", ADMIN_PASSWORD)
    with ExitStack() as stack:
        admin, alice, bob, carol, dave = (
            stack.enter_context(backend_server.client()) for _ in range(5)
        )
        admin.call("login", username="librarian", password=ADMIN_PASSWORD)
        clients = {"alice": alice, "bob": bob, "carol": carol, "dave": dave}
        members = {name: register_and_login(c, name)["user"] for name, c in clients.items()}
        assert admin.call("overdue") == {"loans": []}
        books = {b["title"]: b["id"] for b in admin.call("catalogue", limit=200)["books"]}
        loans = {
            (name, title): client.call("borrow", book_id=books[title])["loan"]
            for name, client, title in [
                ("alice", alice, "The Hobbit"), ("alice", alice, "The Road"),
                ("bob", bob, "Animal Farm"), ("carol", carol, "The Hobbit"),
                ("dave", dave, "Nineteen Eighty-Four"),
            ]
        }  # fmt: skip
        # Date the loans back: each is due `late` days ago, less an hour.
        now = int(time.time())
        late = {("alice", "The Hobbit"): 4, ("alice", "The Road"): 10,
                ("bob", "Animal Farm"): 1, ("carol", "The Hobbit"): 30}  # fmt: skip
        for key, days in late.items():
            due = now - days * DAY + 3600
            rewrite(
                backend_server.db_url,
                "UPDATE loans SET borrowed_at = ?, due_at = ? WHERE id = ?",
                *(due - 14 * DAY, due, loans[key]["id"]),
            )
        carol.call("return", loan_id=loans["carol", "The Hobbit"]["id"])  # returned: not overdue

        overdue = admin.call("overdue")["loans"]
        listed = [(o["member"]["username"], o["book"]["title"], o["days_overdue"]) for o in overdue]
        assert listed == [
            ("alice", "The Road", 10),
            ("alice", "The Hobbit", 4),
            ("bob", "Animal Farm", 1),
        ]
        # Each is the Loan its member's history shows, with the member added.
        history = {
            loan["id"]: {**loan, "member": {"id": members[name]["id"], "username": name}}
            for name in ("alice", "bob")
            for loan in clients[name].call("history")["loans"]
        }
        assert overdue == [history[entry["id"]] for entry in overdue]
        assert all(entry["overdue"] and entry["returned_at"] is None for entry in overdue)
        assert bob.error("overdue")["code"] == "forbidden"
        anonymous = stack.enter_context(backend_server.client())
        assert anonymous.error("overdue")["code"] == "unauthorized"
