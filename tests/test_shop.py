"""The shop: sample catalogue, walk search, import, buying, limits, back orders and restock.

Store tests and protocol tests run on both backends (SQLite and MySQL); the races run two
server.py processes on one MySQL database, half the clients on each.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import rules
import seed
from commands import wire_error
from db import Store
from engine import Backend, Database, backend_from_url
from errors import DomainError
from shop_import import read_walks
from tests.shaped_store import ShapedStore
from tests.wire import ServerProcess, WireClient, register_and_login

PASSWORD = "correct horse"
ADMIN = "stockkeeper"
ADMIN_PASSWORD = "admin horse battery"

# The seven sample guide books and their prices in pence (data/books_cost.csv).
SAMPLE_BOOKS = {
    101: ("More Peak District", 1299),
    102: ("Lincolnshire Wolds", 1099),
    103: ("Vale of York", 1199),
    104: ("Peak District", 1299),
    105: ("Snowdonia", 1399),
    106: ("Malvern and Warwickshire", 1099),
    107: ("Cheshire", 1299),
}
SAMPLE_AREAS = [
    {"area": "Cheshire", "walks": 4},
    {"area": "Lincolnshire", "walks": 2},
    {"area": "North Wales", "walks": 2},
    {"area": "Peak District", "walks": 4},
    {"area": "Warwickshire", "walks": 2},
    {"area": "York", "walks": 2},
]
PEAK_WALKS = {"Hathasage", "Hope and Win Hill", "Magpie Mine", "Lord’s Seat"}
WALK_KEYS = {"id", "name", "area", "distance_miles", "difficulty", "page", "book"}
ORDER_KEYS = {"id", "created_at", "lines", "subtotal_pence", "discount_pence", "total_pence"}
LINE_KEYS = {
    "book", "quantity", "fulfilled", "backordered", "backorder_outstanding",
    "backorder_cancelled", "unit_price_pence", "line_total_pence",
}  # fmt: skip
SQL_METACHARACTERS = ["'; DROP TABLE walks; --", "%", "_", "!", "\\", "' OR '1'='1", '"']
LIMIT = 8


# Helpers ------------------------------------------------------------------------------------


class Shop:
    """Clients of one or more servers sharing a database: guests, customers and an admin."""

    def __init__(self, *servers: ServerProcess):
        self.servers = servers
        self._stack = ExitStack()
        self._names = itertools.count(1)
        self._admin: WireClient | None = None

    def close(self) -> None:
        """Close every client this shop opened."""
        self._stack.close()

    def guest(self, server: int = 0) -> WireClient:
        """A connection that is not logged in."""
        return self._stack.enter_context(self.servers[server].client())

    def customer(self, server: int = 0, name: str | None = None) -> WireClient:
        """A newly registered member, logged in on a new connection."""
        client = self.guest(server)
        register_and_login(client, name or f"customer{next(self._names):03d}", PASSWORD)
        return client

    def admin(self) -> WireClient:
        """One logged-in admin connection (created with `server.py create-admin`)."""
        if self._admin is None:
            self.servers[0].create_admin(ADMIN, ADMIN_PASSWORD)
            self._admin = self.guest()
            login = self._admin.call("login", username=ADMIN, password=ADMIN_PASSWORD)
            assert login["user"]["role"] == "admin"
        return self._admin

    def set_stock(self, book: int, target: int) -> None:
        """Bring a book's stock to target: restock up, or sell the excess to fresh customers."""
        current = stock(self.guest())[book]
        if current < target:
            self.admin().call("restock", book=book, quantity=target - current)
        while current > target:
            take = min(LIMIT, current - target)
            order = self.customer().call("buy", items=[{"book": book, "quantity": take}])["order"]
            assert order["lines"][0]["fulfilled"] == take
            current -= take
        assert stock(self.guest())[book] == target


@pytest.fixture
def shop(backend_server: ServerProcess) -> Iterator[Shop]:
    """Clients of one real server, once on SQLite and once on MySQL."""
    opened = Shop(backend_server)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def racing_shop(two_mysql_servers: tuple[ServerProcess, ServerProcess]) -> Iterator[Shop]:
    """Clients of two server processes on one MySQL database; neither may log an internal error."""
    opened = Shop(*two_mysql_servers)
    try:
        yield opened
    finally:
        opened.close()
    for server in two_mysql_servers:
        assert "internal error" not in server.log()


def stock(client: WireClient) -> dict[int, int]:
    """Every guide book's stock, as search results report it."""
    walks = client.call("search_walks", limit=200)["walks"]
    return {walk["book"]["number"]: walk["book"]["in_stock"] for walk in walks}


def names(result: dict[str, Any]) -> set[str]:
    """The walk names of a search result."""
    return {walk["name"] for walk in result["walks"]}


def limit_details(error: dict[str, Any]) -> dict[str, Any]:
    """The documented part of a limit_exceeded error's details."""
    assert error["code"] == "limit_exceeded", error
    return {key: error["details"][key] for key in ("book", "limit", "allowed")}


def only_line(order: dict[str, Any]) -> dict[str, Any]:
    """The one line of an order, checked for shape and arithmetic."""
    assert set(order) == ORDER_KEYS
    [line] = order["lines"]
    assert set(line) == LINE_KEYS
    assert line["fulfilled"] + line["backordered"] == line["quantity"]
    return line


def copies_ordered(client: WireClient, book: int) -> int:
    """Copies of a book this customer has ordered, back orders included."""
    return sum(
        line["quantity"]
        for order in client.call("orders")["orders"]
        for line in order["lines"]
        if line["book"]["number"] == book
    )


def race(
    clients: list[WireClient], send: Callable[[WireClient], dict[str, Any]]
) -> tuple[list[dict[str, Any]], float, float]:
    """Run send on every client at once (a barrier releases them together).

    Returns the responses in client order, the spread of the moments the threads were
    released (seconds), and the time until the last answer arrived.
    """
    barrier = threading.Barrier(len(clients), timeout=30)
    responses: list[Any] = [None] * len(clients)
    released: list[float] = [0.0] * len(clients)
    answered: list[float] = [0.0] * len(clients)

    def run(index: int, client: WireClient) -> None:
        try:
            barrier.wait()
            released[index] = time.monotonic()
            responses[index] = send(client)
            answered[index] = time.monotonic()
        except Exception as error:  # noqa: BLE001 - reported by the main thread below
            responses[index] = error

    threads = [
        threading.Thread(target=run, args=(index, client), daemon=True)
        for index, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a racing client hung"
    failures = [r for r in responses if isinstance(r, BaseException)]
    assert not failures, failures
    return responses, max(released) - min(released), max(answered) - min(released)


def race_requests(plan: list[tuple[WireClient, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Send each client its own request (client, cmd, args), all released together by race();
    the responses in the plan's order."""
    by_client = {id(client): (cmd, args) for client, cmd, args in plan}
    responses, _, _ = race(
        [client for client, _, _ in plan],
        lambda c: c.request(by_client[id(c)][0], **by_client[id(c)][1]),
    )
    return responses


def import_walks(
    server: ServerProcess, tmp_path: Path, walks_csv: str, books_csv: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `server.py import-walks` against the server's database, as an admin would."""
    walks_file = tmp_path / "walks.csv"
    walks_file.write_text(walks_csv, encoding="utf-8")
    extra: list[str] = []
    if books_csv is not None:
        books_file = tmp_path / "books.csv"
        books_file.write_text(books_csv, encoding="utf-8")
        extra = ["--books", str(books_file)]
    return run_import(server, tmp_path, str(walks_file), *extra)


def run_import(server: ServerProcess, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`server.py import-walks ARGS` with the server's database; never hangs."""
    return subprocess.run(
        server.command("import-walks", *args),
        capture_output=True,
        text=True,
        env=server.environment(),
        cwd=cwd,
        timeout=60,
        check=False,
    )


# Store: the sample catalogue ----------------------------------------------------------------


def test_store_loads_the_cleaned_sample_catalogue(store: Store) -> None:
    books = store.shop_books()
    assert [(b["number"], b["title"], b["price_pence"]) for b in books] == [
        (number, title, price) for number, (title, price) in SAMPLE_BOOKS.items()
    ]
    assert all(10 <= b["in_stock"] <= 40 for b in books), books

    walks, total = store.search_walks(None, None, None, None, limit=200, offset=0)
    assert total == len(walks) == 16
    assert store.list_areas() == SAMPLE_AREAS
    for walk in walks:
        assert set(walk) == WALK_KEYS
        assert walk["difficulty"] in rules.DIFFICULTIES
        for text in (walk["name"], walk["area"], walk["book"]["title"]):
            assert text == " ".join(text.split()), text
    by_name = {walk["name"]: walk for walk in walks}
    # "Vale Of York" and "Vale of York" are one book; line breaks in names are one space.
    assert {by_name[n]["book"]["number"] for n in ("Cowlam and Cotham", "Fridaythorpe")} == {103}
    assert by_name["Cowlam and Cotham"]["book"]["title"] == "Vale of York"
    assert by_name["Hope and Win Hill"]["difficulty"] == "medium"
    assert by_name["Tennyson County"]["difficulty"] == "hard"
    assert by_name["Edge Hill"]["book"]["title"] == "Malvern and Warwickshire"
    assert by_name["Delamere Forest"]["distance_miles"] == 5.5
    assert by_name["Hathasage"]["distance_miles"] == 7


def test_store_search_matches_part_of_an_area_ignoring_case_and_spaces(store: Store) -> None:
    walks, total = store.search_walks(rules.match_key("  PEAK \n "), None, None, None, 50, 0)
    assert total == 4
    assert {w["name"] for w in walks} == PEAK_WALKS
    walks, total = store.search_walks(None, 4.5, 5, "easy", 50, 0)
    assert (total, {w["name"] for w in walks}) == (1, {"Dane Valley"})
    for text in SQL_METACHARACTERS:
        assert store.search_walks(rules.match_key(text), None, None, None, 50, 0) == ([], 0)


# Store: orders, limits, back orders, restock -------------------------------------------------


def test_store_sells_stock_then_back_orders_and_restock_fills_oldest_first(store: Store) -> None:
    now = int(time.time())
    first, second, third = (
        store.create_user(f"shopper{i}", "not a real hash", now)["id"] for i in range(3)
    )
    start = {b["number"]: b["in_stock"] for b in store.shop_books()}
    assert LIMIT < start[102] < 2 * LIMIT  # so that the second order runs short

    order = store.place_order(first, {102: LIMIT}, now)
    assert only_line(order)["fulfilled"] == LIMIT
    left = start[102] - LIMIT
    order = store.place_order(second, {102: LIMIT, 101: 1}, now)
    short, other = order["lines"]
    assert (short["book"]["number"], short["fulfilled"], short["backordered"]) == (
        102, left, LIMIT - left,
    )  # fmt: skip
    assert short["backorder_outstanding"] == LIMIT - left
    assert (other["book"]["number"], other["fulfilled"], other["backordered"]) == (101, 1, 0)
    assert order["subtotal_pence"] == LIMIT * 1099 + 1299
    third_order = store.place_order(third, {102: 2}, now)
    assert (only_line(third_order)["fulfilled"], only_line(third_order)["backordered"]) == (0, 2)

    stocked = {b["number"]: b["in_stock"] for b in store.shop_books()}
    assert stocked == {**start, 101: start[101] - 1, 102: 0}
    assert [(b["order_id"], b["outstanding"]) for b in store.outstanding_backorders()] == [
        (order["id"], LIMIT - left),
        (third_order["id"], 2),
    ]

    # Oldest order first; the rest goes to stock only when every back order is supplied.
    restocked = store.restock(102, LIMIT - left + 1, now)
    assert restocked == {
        "book": {"number": 102, "title": "Lincolnshire Wolds", "in_stock": 0},
        "backorders_filled": [
            {"order_id": order["id"], "quantity": LIMIT - left},
            {"order_id": third_order["id"], "quantity": 1},
        ],
    }
    restocked = store.restock(102, 4, now)
    assert restocked["backorders_filled"] == [{"order_id": third_order["id"], "quantity": 1}]
    assert restocked["book"]["in_stock"] == 3
    assert store.outstanding_backorders() == []
    assert [line["backorder_outstanding"] for line in store.orders_for(second)[0]["lines"]] == [
        0,
        0,
    ]
    with pytest.raises(DomainError) as caught:
        store.restock(999, 1, now)
    assert wire_error(caught.value).code == "not_found"


def test_store_limits_reject_the_whole_order_and_store_nothing(store: Store) -> None:
    now = int(time.time())
    user = store.create_user("limited", "not a real hash", now)["id"]
    before = store.shop_books()
    cases = [
        ({101: 1, 102: LIMIT + 1}, "limit_exceeded", {"book": 102, "limit": 8, "allowed": 8}),
        ({101: 1, 999: 1}, "not_found", {"book": 999}),
    ]
    for requested, code, details in cases:
        with pytest.raises(DomainError) as caught:
            store.place_order(user, requested, now)
        assert wire_error(caught.value).code == code
        assert {k: caught.value.details[k] for k in details} == details
    assert store.orders_for(user) == []
    assert store.shop_books() == before

    store.place_order(user, {104: 5}, now)
    with pytest.raises(DomainError) as caught:
        store.place_order(user, {101: 1, 104: 4}, now)
    assert wire_error(caught.value).code == "limit_exceeded"
    assert {k: caught.value.details[k] for k in ("book", "limit", "allowed")} == {
        "book": 104, "limit": 8, "allowed": 3,
    }  # fmt: skip
    assert len(store.orders_for(user)) == 1
    store.place_order(user, {104: 3}, now)
    with pytest.raises(DomainError) as caught:
        store.place_order(user, {104: 1}, now)
    assert caught.value.details["allowed"] == 0


# Store: importing ---------------------------------------------------------------------------

EXTRA_COLUMNS_CSV = (
    "Area,Book,WalkName,Distance,Difficult,Page,Ascent,Time,Route Type,Start Grid Ref\n"
    "Peak District,peak  district,Kinder Scout,8,HARD,90,600,4.5,Circular,SK 085 875\n"
    'peak district,Peak District,"Stanage\nEdge",6,easy,12,,2:30,out and back,sk2270084400\n'
)


def test_store_import_is_idempotent_and_keeps_live_stock(store: Store) -> None:
    sample = (seed.DATA_DIR / "circular_walks.csv").read_text(encoding="utf-8")
    titles = [b["title"] for b in store.shop_books()]
    unchanged = {"books": 0, "walks_added": 0, "walks_updated": 0}
    # The sample, spelled "Vale Of York" and all, is already there: nothing changes.
    assert store.import_walks(seed.shop_books(), read_walks(sample, titles).walks) == unchanged

    report = read_walks(EXTRA_COLUMNS_CSV, titles)
    assert report.rejected == []
    assert store.import_walks([], report.walks) == {
        "books": 0,
        "walks_added": 2,
        "walks_updated": 0,
    }
    assert store.import_walks([], report.walks) == unchanged
    walks, total = store.search_walks("peak district", None, None, "hard", 50, 0)
    assert total == 1
    assert walks[0]["name"] == "Kinder Scout"
    assert (walks[0]["ascent_m"], walks[0]["time_hours"]) == (600, 4.5)
    assert (walks[0]["route_type"], walks[0]["start_grid_ref"]) == ("circular", "SK 085 875")

    # Re-importing the price list never touches live stock.
    user = store.create_user("reader", "not a real hash", int(time.time()))["id"]
    store.place_order(user, {101: 2}, int(time.time()))
    before = store.shop_books()
    assert store.import_walks(seed.shop_books(), read_walks(sample, titles).walks) == unchanged
    assert store.shop_books() == before


# Protocol: browsing -------------------------------------------------------------------------


def test_list_areas_and_the_walks_of_the_sample_catalogue(shop: Shop) -> None:
    guest = shop.guest()
    assert guest.call("list_areas") == {"areas": SAMPLE_AREAS}
    found = guest.call("search_walks")
    assert found["total"] == len(found["walks"]) == 16
    for walk in found["walks"]:
        assert set(walk) >= WALK_KEYS
        assert set(walk["book"]) == {"number", "title", "price_pence", "in_stock"}
        title, price = SAMPLE_BOOKS[walk["book"]["number"]]
        assert (walk["book"]["title"], walk["book"]["price_pence"]) == (title, price)
        assert 10 <= walk["book"]["in_stock"] <= 40
        assert "\n" not in walk["name"]
        assert walk["difficulty"] in rules.DIFFICULTIES
    assert {"Hope and Win Hill", "Cowlam and Cotham", "Delamere Forest"} <= names(found)


SEARCHES: list[tuple[dict[str, Any], set[str] | None]] = [
    ({"area": "peak"}, PEAK_WALKS),
    ({"area": "  PEAK \t\n  District "}, PEAK_WALKS),
    ({"area": "north   wales"}, {"Around Aber", "Yr Eifl"}),
    ({"area": "shire", "difficulty": "HARD"}, {"Tennyson County", "Farndon"}),
    ({"difficulty": "Hard"}, {"Tennyson County", "Cowlam and Cotham", "Around Aber", "Farndon"}),
    ({"min_distance": 4.5, "max_distance": 5}, {"Hope and Win Hill", "Magpie Mine", "Tennyson County", "Dane Valley"}),
    ({"min_distance": 8.5, "max_distance": 8.5}, {"Bidford-Upon-Avon", "Malpas"}),
    ({"min_distance": 8.5}, {"Bidford-Upon-Avon", "Malpas"}),
    ({"max_distance": 3.5}, {"Thornton Abbey", "Yr Eifl"}),
    ({"min_distance": 0, "max_distance": 10_000}, None),
    ({"area": "cheshire", "difficulty": "easy", "max_distance": 5.5}, {"Dane Valley", "Delamere Forest"}),
    ({"area": "nowhere at all"}, set()),
]  # fmt: skip


def test_search_filters_by_area_difficulty_and_inclusive_distance(shop: Shop) -> None:
    guest = shop.guest()
    every_walk = names(guest.call("search_walks"))
    for args, expected in SEARCHES:
        found = guest.call("search_walks", **args)
        wanted = every_walk if expected is None else expected
        assert names(found) == wanted, args
        assert found["total"] == len(wanted), args


def test_search_pages_with_limit_and_offset_and_counts_every_match(shop: Shop) -> None:
    guest = shop.guest()
    everything = guest.call("search_walks", limit=200)["walks"]
    pages = [guest.call("search_walks", limit=5, offset=offset) for offset in (0, 5, 10, 15, 20)]
    assert [page["total"] for page in pages] == [16] * 5
    assert [len(page["walks"]) for page in pages] == [5, 5, 5, 1, 0]
    assert [w["id"] for page in pages for w in page["walks"]] == [w["id"] for w in everything]
    assert len({w["id"] for w in everything}) == 16
    found = guest.call("search_walks", area="district", limit=1, offset=1)
    assert (found["total"], len(found["walks"])) == (4, 1)
    assert len(guest.call("search_walks")["walks"]) == 16  # default limit 50


def test_bad_search_arguments_are_bad_requests(shop: Shop) -> None:
    guest = shop.guest()
    cases = [
        ({"difficulty": "extreme"}, "difficulty"),
        ({"difficulty": ""}, "difficulty"),
        ({"difficulty": 1}, "difficulty"),
        ({"min_distance": -1}, "min_distance"),
        ({"max_distance": -0.5}, "max_distance"),
        ({"min_distance": 6, "max_distance": 5}, "min_distance"),
        ({"min_distance": "3"}, "min_distance"),
        ({"max_distance": True}, "max_distance"),
        ({"area": 5}, "area"),
        ({"area": ["peak"]}, "area"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": 1.5}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": "1"}, "offset"),
    ]
    for args, argument in cases:
        error = guest.error("search_walks", **args)
        assert error["code"] == "bad_request", (args, error)
        assert error["details"].get("argument") == argument, (args, error)
        assert argument in error["message"], (args, error)
    error = guest.error("search_walks", difficulty="extreme")
    assert error["details"]["allowed"] == ["easy", "medium", "hard"]
    assert guest.call("search_walks")["total"] == 16  # the connection stays usable


def test_search_treats_sql_metacharacters_as_plain_text(shop: Shop) -> None:
    guest = shop.guest()
    for text in SQL_METACHARACTERS:
        assert guest.call("search_walks", area=text) == {"walks": [], "total": 0}, text
        assert guest.call("search_walks", area=f"peak{text}")["total"] == 0, text
    assert guest.call("search_walks")["total"] == 16
    assert guest.call("list_areas") == {"areas": SAMPLE_AREAS}


def test_a_huge_offset_is_a_bad_request_or_an_empty_page(shop: Shop) -> None:
    guest = shop.guest()
    for offset in (2**63, 10**20):
        response = guest.request("search_walks", offset=offset)
        if response["ok"]:
            assert response["result"] == {"walks": [], "total": 16}
        else:
            assert response["error"]["code"] == "bad_request", (offset, response["error"])
            assert response["error"]["details"].get("argument") == "offset"


# Protocol: recommending guide books -----------------------------------------------------------

# Sample walks per book (data/circular_walks.csv) and prices (data/books_cost.csv): 107 Cheshire
# has 4 walks at 1299; every other book has 2, at 1099 (102, 106), 1199 (103), 1299 (101, 104)
# and 1399 (105). Each row: (filters, the books in order, each with its matching walks).
RECOMMENDATIONS: list[tuple[dict[str, Any], list[tuple[int, list[str]]]]] = [
    ({}, [
        (107, ["Dane Valley", "Delamere Forest", "Farndon", "Malpas"]),  # 4 walks
        (102, ["Thornton Abbey", "Tennyson County"]),  # 2 walks at 1099, the lower number
        (106, ["Edge Hill", "Bidford-Upon-Avon"]),  # 2 at 1099
        (103, ["Fridaythorpe", "Cowlam and Cotham"]),  # 2 at 1199
        (101, ["Hope and Win Hill", "Hathasage"]),  # 2 at 1299
        (104, ["Magpie Mine", "Lord’s Seat"]),  # 2 at 1299, the higher number
        (105, ["Yr Eifl", "Around Aber"]),  # 2 at 1399
    ]),
    ({"area": "  PEAK  "}, [(101, ["Hope and Win Hill", "Hathasage"]),
                            (104, ["Magpie Mine", "Lord’s Seat"])]),
    ({"area": "shire"}, [(107, ["Dane Valley", "Delamere Forest", "Farndon", "Malpas"]),
                         (102, ["Thornton Abbey", "Tennyson County"]),
                         (106, ["Edge Hill", "Bidford-Upon-Avon"])]),
    # Cheshire's 2 easy walks first, then one each: cheaper first, then the lower number.
    ({"difficulty": "EASY"}, [(107, ["Dane Valley", "Delamere Forest"]), (102, ["Thornton Abbey"]),
                              (106, ["Edge Hill"]), (103, ["Fridaythorpe"]),
                              (101, ["Hathasage"]), (104, ["Lord’s Seat"])]),
    ({"difficulty": "hard"}, [(102, ["Tennyson County"]), (103, ["Cowlam and Cotham"]),
                              (107, ["Farndon"]), (105, ["Around Aber"])]),
    # 5 miles or less: two walks each for 102 and 105 (1399 comes second), then one each.
    ({"max_distance": 5}, [(102, ["Thornton Abbey", "Tennyson County"]),
                           (105, ["Yr Eifl", "Around Aber"]), (106, ["Edge Hill"]),
                           (101, ["Hope and Win Hill"]), (104, ["Magpie Mine"]),
                           (107, ["Dane Valley"])]),
    ({"min_distance": 8}, [(106, ["Bidford-Upon-Avon"]), (103, ["Cowlam and Cotham"]),
                           (107, ["Malpas"])]),
    ({"min_distance": 4.5, "max_distance": 4.5}, [(101, ["Hope and Win Hill"]),
                                                  (104, ["Magpie Mine"])]),
    ({"limit": 3}, [(107, ["Dane Valley", "Delamere Forest", "Farndon", "Malpas"]),
                    (102, ["Thornton Abbey", "Tennyson County"]),
                    (106, ["Edge Hill", "Bidford-Upon-Avon"])]),
    ({"area": "york", "limit": 50}, [(103, ["Fridaythorpe", "Cowlam and Cotham"])]),
    ({"area": "nowhere at all"}, []),
    ({"area": "%"}, []),
    ({"area": "' OR '1'='1"}, []),
]  # fmt: skip


def test_recommend_books_ranks_by_matching_walks_then_price_then_number(shop: Shop) -> None:
    guest = shop.guest()  # no login needed
    for args, expected in RECOMMENDATIONS:
        books = guest.call("recommend_books", **args)["books"]
        assert [(b["book"]["number"], [w["name"] for w in b["walks"]]) for b in books] == (
            expected
        ), args
        for entry in books:
            assert set(entry) == {"book", "matching_walks", "walks"}
            assert entry["matching_walks"] == len(entry["walks"])
            number = entry["book"]["number"]
            assert entry["book"] == {
                "number": number,
                "title": SAMPLE_BOOKS[number][0],
                "price_pence": SAMPLE_BOOKS[number][1],
                "in_stock": entry["book"]["in_stock"],
            }
            for walk in entry["walks"]:
                assert set(walk) >= WALK_KEYS - {"book"} and "book" not in walk


def test_recommend_books_matches_exactly_the_walks_search_walks_finds(shop: Shop) -> None:
    guest = shop.guest()
    for args, _ in SEARCHES:
        walks = guest.call("search_walks", **args)["walks"]
        books = guest.call("recommend_books", **args, limit=50)["books"]
        recommended = {(b["book"]["number"], w["id"]) for b in books for w in b["walks"]}
        assert recommended == {(w["book"]["number"], w["id"]) for w in walks}, args
        assert len(books) == len({w["book"]["number"] for w in walks}), args  # each book once


def test_bad_recommend_arguments_are_bad_requests(shop: Shop) -> None:
    guest = shop.guest()
    cases = [
        ({"min_distance": 6, "max_distance": 5}, "min_distance"),
        ({"min_distance": -1}, "min_distance"),
        ({"max_distance": "5"}, "max_distance"),
        ({"max_distance": 10_001}, "max_distance"),
        ({"min_distance": 10**309}, "min_distance"),
        ({"difficulty": "extreme"}, "difficulty"),
        ({"difficulty": 3}, "difficulty"),
        ({"area": ["peak"]}, "area"),
        ({"area": "x" * 201}, "area"),
        ({"limit": 0}, "limit"),
        ({"limit": 51}, "limit"),
        ({"limit": 2.5}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": 10**309}, "limit"),
    ]
    for args, argument in cases:
        error = guest.error("recommend_books", **args)
        assert (error["code"], error["details"].get("argument")) == ("bad_request", argument), args
        assert argument in error["message"], (args, error)
    assert guest.error("recommend_books", difficulty="extreme")["details"]["allowed"] == [
        "easy", "medium", "hard",
    ]  # fmt: skip
    assert len(guest.call("recommend_books")["books"]) == 7  # the connection stays usable


# Protocol: buying ---------------------------------------------------------------------------


def test_buy_by_number_or_title_and_same_book_lines_add_up(shop: Shop) -> None:
    customer = shop.customer()
    before = stock(customer)
    order = customer.call(
        "buy",
        items=[
            {"book": 101, "quantity": 2},
            {"book": "  more   PEAK\tdistrict ", "quantity": 1},
            {"book": "VALE OF YORK", "quantity": 1},
            {"book": "Vale Of  York", "quantity": 2},
        ],
    )["order"]
    assert set(order) == ORDER_KEYS
    assert order["created_at"].endswith("Z")
    assert [(line["book"], line["quantity"]) for line in order["lines"]] == [
        ({"number": 101, "title": "More Peak District"}, 3),
        ({"number": 103, "title": "Vale of York"}, 3),
    ]
    for line in order["lines"]:
        assert set(line) == LINE_KEYS
        assert (line["fulfilled"], line["backordered"], line["backorder_outstanding"]) == (3, 0, 0)
        assert line["line_total_pence"] == line["quantity"] * line["unit_price_pence"]
    assert order["subtotal_pence"] == 3 * 1299 + 3 * 1199 == 7494
    assert (order["discount_pence"], order["total_pence"]) == (0, 7494)
    assert stock(customer) == {**before, 101: before[101] - 3, 103: before[103] - 3}
    assert customer.call("orders") == {"orders": [order]}


def test_an_unknown_title_suggests_close_titles(shop: Shop) -> None:
    customer = shop.customer()
    error = customer.error("buy", items=[{"book": "Peak Distrct", "quantity": 1}])
    assert error["code"] == "not_found"
    assert "Peak District" in error["details"]["suggestions"]
    assert "Peak District" in error["message"]
    error = customer.error("buy", items=[{"book": "snowdon ia", "quantity": 1}])
    assert error["details"]["suggestions"][0] == "Snowdonia"
    error = customer.error("buy", items=[{"book": "Zzzzzzzzzzzzzzz", "quantity": 1}])
    assert (error["code"], error["details"]["suggestions"]) == ("not_found", [])
    assert customer.call("orders") == {"orders": []}


BAD_ORDERS: list[tuple[Any, str, str | None]] = [
    # (items, error code, argument a bad_request must name)
    ([{"book": 999, "quantity": 1}], "not_found", None),
    ([{"book": 0, "quantity": 1}], "not_found", None),
    ([{"book": -101, "quantity": 1}], "not_found", None),
    ([{"book": "No Such Guide", "quantity": 1}], "not_found", None),
    ([{"book": "", "quantity": 1}], "not_found", None),
    *[([{"book": text, "quantity": 1}], "not_found", None) for text in SQL_METACHARACTERS],
    ([{"book": "More Peak District%", "quantity": 1}], "not_found", None),
    ([{"book": 101, "quantity": 0}], "bad_request", "quantity"),
    ([{"book": 101, "quantity": -1}], "bad_request", "quantity"),
    ([{"book": 101, "quantity": 1.5}], "bad_request", "quantity"),
    ([{"book": 101, "quantity": "2"}], "bad_request", "quantity"),
    ([{"book": 101, "quantity": None}], "bad_request", "quantity"),
    ([{"book": 101, "quantity": True}], "bad_request", "quantity"),
    ([{"book": 101, "quantity": [1]}], "bad_request", "quantity"),
    ([{"book": 101}], "bad_request", "quantity"),
    ([{"book": None, "quantity": 1}], "bad_request", "book"),
    ([{"book": 101.5, "quantity": 1}], "bad_request", "book"),
    ([{"book": True, "quantity": 1}], "bad_request", "book"),
    ([{"book": {"number": 101}, "quantity": 1}], "bad_request", "book"),
    ([{"quantity": 1}], "bad_request", "book"),
    ([], "bad_request", "items"),
    ({}, "bad_request", "items"),
    ({"book": 101, "quantity": 1}, "bad_request", "items"),
    ("101", "bad_request", "items"),
    (101, "bad_request", "items"),
    (None, "bad_request", "items"),
    ([101], "bad_request", "items"),
    ([None], "bad_request", "items"),
    ([[101, 1]], "bad_request", "items"),
    ([{"book": 101, "quantity": 1}] * 51, "bad_request", "items"),
    # One bad line rejects the whole order, good lines included.
    ([{"book": 101, "quantity": 1}, {"book": 999, "quantity": 1}], "not_found", None),
    ([{"book": 101, "quantity": 1}, {"book": "%", "quantity": 1}], "not_found", None),
    ([{"book": 101, "quantity": 1}, {"book": 102, "quantity": 0}], "bad_request", "quantity"),
    ([{"book": 101, "quantity": 1}, {"book": 102, "quantity": 9}], "limit_exceeded", None),
    ([{"book": 101, "quantity": 5}, {"book": "more peak district", "quantity": 4}], "limit_exceeded", None),
    ([{"book": 101, "quantity": 1001}], "bad_request", "quantity"),
]  # fmt: skip


def test_every_bad_order_is_refused_clearly_and_stores_nothing(shop: Shop) -> None:
    customer = shop.customer()
    before = stock(customer)
    for items, code, argument in BAD_ORDERS:
        error = customer.error("buy", items=items)
        assert error["code"] == code, (items, error)
        assert error["message"].endswith((".", "?")), error
        if argument is not None:
            assert error["details"].get("argument") == argument, (items, error)
            assert f"'{argument}'" in error["message"], (items, error)
    error = customer.error("buy")
    assert (error["code"], error["details"]) == ("bad_request", {"argument": "items"})
    assert customer.call("orders") == {"orders": []}
    assert stock(customer) == before
    assert customer.call("search_walks")["total"] == 16
    assert shop.admin().call("backorders") == {"backorders": []}
    # The same connection can still buy: nothing above left a lock or a half-made order.
    assert only_line(customer.call("buy", items=[{"book": 101, "quantity": 1}])["order"])


def test_buying_needs_a_login(shop: Shop) -> None:
    guest = shop.guest()
    before = stock(guest)
    for cmd, args in [
        ("buy", {"items": [{"book": 101, "quantity": 1}]}),
        ("orders", {}),
        ("restock", {"book": 101, "quantity": 5}),
        ("backorders", {}),
    ]:
        assert guest.error(cmd, **args)["code"] == "unauthorized", cmd
    assert stock(guest) == before


def test_per_order_and_per_customer_limits(shop: Shop) -> None:
    customer = shop.customer()
    error = customer.error("buy", items=[{"book": 104, "quantity": 9}])
    assert limit_details(error) == {"book": 104, "limit": 8, "allowed": 8}
    error = customer.error(
        "buy", items=[{"book": 104, "quantity": 5}, {"book": "peak district", "quantity": 4}]
    )
    assert limit_details(error) == {"book": 104, "limit": 8, "allowed": 8}

    assert only_line(customer.call("buy", items=[{"book": 104, "quantity": 5}])["order"])
    error = customer.error(
        "buy", items=[{"book": 101, "quantity": 1}, {"book": 104, "quantity": 4}]
    )
    assert limit_details(error) == {"book": 104, "limit": 8, "allowed": 3}
    assert "3" in error["message"]
    assert only_line(customer.call("buy", items=[{"book": 104, "quantity": 3}])["order"])
    error = customer.error("buy", items=[{"book": 104, "quantity": 1}])
    assert limit_details(error) == {"book": 104, "limit": 8, "allowed": 0}
    assert copies_ordered(customer, 104) == 8
    assert len(customer.call("orders")["orders"]) == 2
    # The limit is per book: other books can still be bought.
    assert only_line(customer.call("buy", items=[{"book": 105, "quantity": 8}])["order"])
    # And per customer: someone else starts at zero.
    other = shop.customer()
    assert only_line(other.call("buy", items=[{"book": 104, "quantity": 8}])["order"])


def test_back_ordered_copies_count_towards_the_customer_limit(shop: Shop) -> None:
    shop.set_stock(102, 3)
    customer = shop.customer()
    line = only_line(customer.call("buy", items=[{"book": 102, "quantity": 8}])["order"])
    assert (line["fulfilled"], line["backordered"], line["backorder_outstanding"]) == (3, 5, 5)
    assert stock(customer)[102] == 0
    error = customer.error("buy", items=[{"book": 102, "quantity": 1}])
    assert limit_details(error) == {"book": 102, "limit": 8, "allowed": 0}
    # Supplying the back order does not give the customer more room.
    shop.admin().call("restock", book=102, quantity=10)
    assert customer.error("buy", items=[{"book": 102, "quantity": 1}])["code"] == "limit_exceeded"


# Each row: (quantities by book, subtotal, discount). Prices 1299, 1099, 1199, 1299, 1399,
# 1099, 1299; every sum of whole copies misses 7500, so 7494 is the largest at or under it.
DISCOUNT_CASES = [
    ({101: 1}, 1299, 0),
    ({103: 3, 101: 3}, 7494, 0),  # largest subtotal <= 7500: no discount
    ({103: 4, 104: 1, 105: 1}, 7494, 0),
    ({102: 1, 104: 5}, 7594, 759),  # smallest > 7500: 759.4 rounds down
    ({106: 7}, 7693, 769),  # 769.3
    ({105: 8, 103: 3}, 14789, 1479),  # 1478.9 rounds up
    ({101: 8, 102: 7}, 18085, 1809),  # 1808.5: half rounds up
]


def test_the_discount_boundary_in_exact_pence(shop: Shop) -> None:
    for quantities, subtotal, discount in DISCOUNT_CASES:
        customer = shop.customer()
        items = [{"book": book, "quantity": quantity} for book, quantity in quantities.items()]
        order = customer.call("buy", items=items)["order"]
        assert sum(q * SAMPLE_BOOKS[b][1] for b, q in quantities.items()) == subtotal
        assert (order["subtotal_pence"], order["discount_pence"], order["total_pence"]) == (
            subtotal, discount, subtotal - discount,
        ), quantities  # fmt: skip
        for line in order["lines"]:
            assert line["unit_price_pence"] == SAMPLE_BOOKS[line["book"]["number"]][1]
            assert line["line_total_pence"] == line["quantity"] * line["unit_price_pence"]
        assert customer.call("orders")["orders"] == [order]


def test_orders_are_newest_first_and_only_the_customers_own(shop: Shop) -> None:
    alice, bob = shop.customer(name="alice"), shop.customer(name="bob")
    assert alice.call("orders") == {"orders": []}
    first = alice.call("buy", items=[{"book": 105, "quantity": 1}])["order"]
    theirs = bob.call("buy", items=[{"book": 105, "quantity": 2}])["order"]
    second = alice.call("buy", items=[{"book": 106, "quantity": 2}])["order"]
    assert first["id"] < theirs["id"] < second["id"]
    assert alice.call("orders") == {"orders": [second, first]}
    assert bob.call("orders") == {"orders": [theirs]}


# Protocol: restock and back orders ---------------------------------------------------------


def test_restock_supplies_back_orders_oldest_first_then_stock(shop: Shop) -> None:
    admin = shop.admin()
    shop.set_stock(102, 0)
    carol, dave, erin = (shop.customer() for _ in range(3))
    ids = []
    for customer, quantity in ((carol, 4), (dave, 3), (erin, 2)):
        order = customer.call("buy", items=[{"book": 102, "quantity": quantity}])["order"]
        assert only_line(order)["backordered"] == quantity
        ids.append(order["id"])
    assert ids == sorted(ids)

    for forbidden in (carol.error("restock", book=102, quantity=5), carol.error("backorders")):
        assert forbidden["code"] == "forbidden"
    assert stock(carol)[102] == 0

    listed = admin.call("backorders")["backorders"]
    assert [(b["order_id"], b["book"]["number"], b["outstanding"]) for b in listed] == [
        (ids[0], 102, 4), (ids[1], 102, 3), (ids[2], 102, 2),
    ]  # fmt: skip

    result = admin.call("restock", book=102, quantity=5)
    assert result == {
        "book": {"number": 102, "title": "Lincolnshire Wolds", "in_stock": 0},
        "backorders_filled": [
            {"order_id": ids[0], "quantity": 4},
            {"order_id": ids[1], "quantity": 1},
        ],
    }
    outstanding = [only_line(c.call("orders")["orders"][0]) for c in (carol, dave, erin)]
    assert [line["backorder_outstanding"] for line in outstanding] == [0, 2, 2]
    assert [(line["fulfilled"], line["backordered"]) for line in outstanding] == [
        (0, 4), (0, 3), (0, 2),
    ]  # fmt: skip
    assert [(b["order_id"], b["outstanding"]) for b in admin.call("backorders")["backorders"]] == [
        (ids[1], 2), (ids[2], 2),
    ]  # fmt: skip

    result = admin.call("restock", book=" lincolnshire   WOLDS ", quantity=10)
    assert result["backorders_filled"] == [
        {"order_id": ids[1], "quantity": 2},
        {"order_id": ids[2], "quantity": 2},
    ]
    assert result["book"]["in_stock"] == 6
    assert admin.call("backorders") == {"backorders": []}
    assert stock(admin)[102] == 6
    # Without back orders, a restock all goes to stock.
    assert admin.call("restock", book=105, quantity=3)["backorders_filled"] == []
    # The restocked copies are sold, not back-ordered.
    line = only_line(shop.customer().call("buy", items=[{"book": 102, "quantity": 6}])["order"])
    assert (line["fulfilled"], line["backordered"]) == (6, 0)


def test_bad_restocks_are_refused_and_change_nothing(shop: Shop) -> None:
    admin = shop.admin()
    before = stock(admin)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"book": 999, "quantity": 1}, "not_found"),
        ({"book": "No Such Guide", "quantity": 1}, "not_found"),
        *[({"book": text, "quantity": 1}, "not_found") for text in SQL_METACHARACTERS],
        ({"book": 101, "quantity": 0}, "bad_request"),
        ({"book": 101, "quantity": -1}, "bad_request"),
        ({"book": 101, "quantity": 1.5}, "bad_request"),
        ({"book": 101, "quantity": "2"}, "bad_request"),
        ({"book": 101, "quantity": None}, "bad_request"),
        ({"book": None, "quantity": 1}, "bad_request"),
        ({"book": [101], "quantity": 1}, "bad_request"),
    ]
    for args, code in cases:
        assert admin.error("restock", **args)["code"] == code, args
    assert stock(admin) == before
    suggestion = admin.error("restock", book="Snowdona", quantity=1)
    assert suggestion["details"]["suggestions"] == ["Snowdonia"]


# Protocol: cancelling back orders -----------------------------------------------------------

# Each row: (book, copies in stock, copies ordered, pricing before, pricing after, refund).
CANCELLATIONS = [
    # 8 x 1099 = 8792 earns 879 off; cancelling 5 leaves 3297, under £75: no discount.
    (102, 3, 8, (8792, 879, 7913), (3297, 0, 3297), 4616),
    # 8 x 1299 = 10392 earns 1039 off; cancelling 2 leaves 7794, still over £75: 779 off.
    (104, 6, 8, (10392, 1039, 9353), (7794, 779, 7015), 2338),
    # Nothing in stock: cancelling everything refunds the whole total.
    (105, 0, 3, (4197, 0, 4197), (0, 0, 0), 4197),
]


def pricing_of(order: dict[str, Any]) -> tuple[int, int, int]:
    """An order's (subtotal, discount, total) in pence."""
    return (order["subtotal_pence"], order["discount_pence"], order["total_pence"])


@pytest.mark.parametrize(
    ("book", "in_stock", "quantity", "before", "after", "refund"), CANCELLATIONS
)
def test_cancel_backorder_reprices_the_order_and_refunds_the_difference(
    shop: Shop,
    book: int,
    in_stock: int,
    quantity: int,
    before: tuple[int, int, int],
    after: tuple[int, int, int],
    refund: int,
) -> None:
    shop.set_stock(book, in_stock)
    customer = shop.customer()
    order = customer.call("buy", items=[{"book": book, "quantity": quantity}])["order"]
    assert pricing_of(order) == before
    assert only_line(order)["backorder_cancelled"] == 0

    result = customer.call("cancel_backorder", order_id=order["id"], book=book)
    assert set(result) == {"order", "refund_pence"}
    cancelled = result["order"]
    assert (pricing_of(cancelled), result["refund_pence"]) == (after, refund)
    assert refund == before[2] - after[2]
    line = only_line(cancelled)
    assert (line["quantity"], line["fulfilled"], line["backordered"]) == (
        quantity, in_stock, quantity - in_stock,
    )  # fmt: skip
    assert (line["backorder_outstanding"], line["backorder_cancelled"]) == (0, quantity - in_stock)
    assert line["line_total_pence"] == in_stock * line["unit_price_pence"] == after[0]
    assert {k: v for k, v in cancelled.items() if k != "lines"} == {
        **{k: v for k, v in order.items() if k != "lines"},
        "subtotal_pence": after[0], "discount_pence": after[1], "total_pence": after[2],
    }  # fmt: skip
    assert customer.call("orders") == {"orders": [cancelled]}
    assert shop.admin().call("backorders") == {"backorders": []}


def test_cancelled_copies_leave_the_limit_and_are_never_supplied(shop: Shop) -> None:
    shop.set_stock(102, 3)
    customer, later = shop.customer(), shop.customer()
    first = customer.call("buy", items=[{"book": 102, "quantity": 8}])["order"]
    waiting = later.call("buy", items=[{"book": 102, "quantity": 2}])["order"]
    assert (
        limit_details(customer.error("buy", items=[{"book": 102, "quantity": 1}]))["allowed"] == 0
    )

    customer.call("cancel_backorder", order_id=first["id"], book=102)
    # The 5 cancelled copies no longer count: the 3 sold still do.
    error = customer.error("buy", items=[{"book": 102, "quantity": 6}])
    assert limit_details(error) == {"book": 102, "limit": 8, "allowed": 5}
    again = customer.call("buy", items=[{"book": 102, "quantity": 5}])["order"]
    assert copies_ordered(customer, 102) == 13  # 8 + 5 ordered, of which 5 cancelled

    # Oldest first, but the cancelled copies are skipped: the later orders get theirs.
    restocked = shop.admin().call("restock", book=102, quantity=10)
    assert restocked["backorders_filled"] == [
        {"order_id": waiting["id"], "quantity": 2},
        {"order_id": again["id"], "quantity": 5},
    ]
    assert restocked["book"]["in_stock"] == 3
    [line] = [only_line(o) for o in customer.call("orders")["orders"] if o["id"] == first["id"]]
    assert (line["backorder_outstanding"], line["backorder_cancelled"]) == (0, 5)
    error = customer.error("cancel_backorder", order_id=again["id"], book=102)
    assert error["code"] == "conflict"  # supplied in full: nothing left to cancel


def test_cancel_backorder_refuses_what_it_cannot_cancel(shop: Shop) -> None:
    shop.set_stock(106, 1)
    owner, stranger = shop.customer(), shop.customer()
    order = owner.call("buy", items=[{"book": 106, "quantity": 3}, {"book": 101, "quantity": 1}])[
        "order"
    ]
    cases = [
        (stranger, {"order_id": order["id"], "book": 106}, "forbidden"),
        (owner, {"order_id": order["id"] + 1000, "book": 106}, "not_found"),
        (owner, {"order_id": order["id"], "book": 105}, "not_found"),  # not on this order
        (owner, {"order_id": order["id"], "book": 999}, "not_found"),  # no such book at all
        (owner, {"order_id": order["id"], "book": 101}, "conflict"),  # sold, none owed
    ]
    for client, args, code in cases:
        error = client.error("cancel_backorder", **args)
        assert error["code"] == code, (args, error)
        assert error["message"].endswith("."), error
    assert owner.call("cancel_backorder", order_id=order["id"], book=106)["refund_pence"] == 2198
    assert owner.error("cancel_backorder", order_id=order["id"], book=106)["code"] == "conflict"
    assert shop.guest().error("cancel_backorder", order_id=order["id"], book=106)["code"] == (
        "unauthorized"
    )


BAD_CANCELLATIONS: list[tuple[dict[str, Any], str]] = [
    ({}, "order_id"),
    ({"book": 102}, "order_id"),
    ({"order_id": 1}, "book"),
    ({"order_id": "1", "book": 102}, "order_id"),
    ({"order_id": 1.5, "book": 102}, "order_id"),
    ({"order_id": True, "book": 102}, "order_id"),
    ({"order_id": [1], "book": 102}, "order_id"),
    ({"order_id": 0, "book": 102}, "order_id"),
    ({"order_id": -1, "book": 102}, "order_id"),
    ({"order_id": 10**309, "book": 102}, "order_id"),
    ({"order_id": 2**63, "book": 102}, "order_id"),
    ({"order_id": 1, "book": "102"}, "book"),
    ({"order_id": 1, "book": "Lincolnshire Wolds"}, "book"),
    ({"order_id": 1, "book": 10**309}, "book"),
    ({"order_id": 1, "book": None}, "book"),
    *[({"order_id": 1, "book": text}, "book") for text in SQL_METACHARACTERS],
    *[({"order_id": text, "book": 102}, "order_id") for text in SQL_METACHARACTERS],
]


def test_bad_cancellations_are_bad_requests_and_change_nothing(shop: Shop) -> None:
    shop.set_stock(102, 0)
    customer = shop.customer()
    order = customer.call("buy", items=[{"book": 102, "quantity": 4}])["order"]
    for args, argument in BAD_CANCELLATIONS:
        error = customer.error("cancel_backorder", **{**args} if args else {})
        assert (error["code"], error["details"].get("argument")) == ("bad_request", argument), args
        assert f"'{argument}'" in error["message"], (args, error)
    # A float too big for a double is not JSON this server accepts (it would be infinity).
    customer.send_raw(b'{"cmd": "cancel_backorder", "args": {"order_id": 1e309, "book": 102}}\n')
    assert customer.read()["error"]["code"] == "bad_request"
    assert customer.call("orders") == {"orders": [order]}
    assert stock(customer)[102] == 0
    backorders = shop.admin().call("backorders")["backorders"]
    assert [(b["order_id"], b["outstanding"]) for b in backorders] == [(order["id"], 4)]


# Races: cancelling back orders from two server processes on one MySQL database ---------------

CANCEL_CUSTOMERS = 4
CANCEL_CONNECTIONS = 6  # each customer's, half on each server


def test_cancels_of_one_line_from_two_servers_succeed_once(
    racing_shop: Shop, two_mysql_servers: tuple[ServerProcess, ServerProcess]
) -> None:
    book = 103
    racing_shop.set_stock(book, 0)
    groups, orders = [], []
    for number in range(CANCEL_CUSTOMERS):
        first = racing_shop.guest(server=0)
        token = register_and_login(first, f"canceller{number}", PASSWORD)["token"]
        orders.append(first.call("buy", items=[{"book": book, "quantity": 7}])["order"])
        others = [racing_shop.guest(server=i % 2) for i in range(1, CANCEL_CONNECTIONS)]
        for other in others:
            other.call("resume", token=token)
        groups.append([first, *others])
    everyone = [client for clients in groups for client in clients]
    order_of = {
        id(c): order for clients, order in zip(groups, orders, strict=True) for c in clients
    }
    responses, spread, elapsed = race(
        everyone,
        lambda c: c.request("cancel_backorder", order_id=order_of[id(c)]["id"], book=book),
    )
    outcomes: Counter[str] = Counter()
    for number, clients in enumerate(groups):
        mine = responses[number * CANCEL_CONNECTIONS : (number + 1) * CANCEL_CONNECTIONS]
        won = [r["result"] for r in mine if r["ok"]]
        lost = [r["error"]["code"] for r in mine if not r["ok"]]
        outcomes.update(["ok"] * len(won) + lost)
        assert (len(won), lost) == (1, ["conflict"] * (CANCEL_CONNECTIONS - 1)), mine
        assert won[0]["refund_pence"] == 7 * 1199 - rules.discount_pence(7 * 1199)
        assert clients[1].call("orders") == {"orders": [won[0]["order"]]}
    print(
        f"\ncancel race: {len(everyone)} cancels of {CANCEL_CUSTOMERS} lines from 2 servers:"
        f" {dict(outcomes)}; released within {spread * 1000:.1f} ms, answered in"
        f" {elapsed * 1000:.0f} ms"
    )
    assert racing_shop.admin().call("backorders") == {"backorders": []}
    assert racing_shop.admin().call("restock", book=book, quantity=5)["backorders_filled"] == []
    assert_order_lines_sound(two_mysql_servers[0].db_url)


RESTOCK_ROUNDS = 4
RESTOCK_CUSTOMERS = 12
RESTOCKS = 4  # admins on both servers, each restocking RESTOCK_COPIES at the same moment
RESTOCK_COPIES = 7
OWED_EACH = 4


def test_cancel_racing_restock_never_supplies_a_cancelled_copy_nor_loses_one(
    racing_shop: Shop, two_mysql_servers: tuple[ServerProcess, ServerProcess]
) -> None:
    racing_shop.admin()  # creates the admin account
    admins = [racing_shop.guest(server=i % 2) for i in range(RESTOCKS)]
    for admin in admins:
        admin.call("login", username=ADMIN, password=ADMIN_PASSWORD)
    kinds: Counter[str] = Counter()
    for _ in range(RESTOCK_ROUNDS):
        kinds += race_cancels_against_restocks(racing_shop, admins, book=107)
    print(
        f"\ncancel/restock race, {RESTOCK_ROUNDS} rounds of {RESTOCK_CUSTOMERS} cancels of"
        f" {OWED_EACH} owed copies against {RESTOCKS} restocks of {RESTOCK_COPIES}, on 2"
        f" servers: {dict(kinds)}"
    )
    assert_order_lines_sound(two_mysql_servers[0].db_url)


def race_cancels_against_restocks(shop: Shop, admins: list[WireClient], book: int) -> Counter[str]:
    """One round: every customer cancels their back order while the admins restock the book."""
    shop.set_stock(book, 0)
    customers = [shop.customer(server=i % 2) for i in range(RESTOCK_CUSTOMERS)]
    orders = [
        c.call("buy", items=[{"book": book, "quantity": OWED_EACH}])["order"] for c in customers
    ]
    responses = race_requests(
        [(c, "cancel_backorder", {"order_id": o["id"], "book": book})
         for c, o in zip(customers, orders, strict=True)]
        + [(a, "restock", {"book": book, "quantity": RESTOCK_COPIES}) for a in admins]
    )  # fmt: skip
    supplied: Counter[int] = Counter()
    for response in responses[RESTOCK_CUSTOMERS:]:
        assert response["ok"], response
        for fill in response["result"]["backorders_filled"]:
            supplied[fill["order_id"]] += fill["quantity"]
    kinds: Counter[str] = Counter()
    for customer, order, response in zip(
        customers, orders, responses[:RESTOCK_CUSTOMERS], strict=True
    ):
        [line] = [only_line(o) for o in customer.call("orders")["orders"]]
        got = supplied[order["id"]]
        # Every copy owed was either supplied or cancelled, never both, never neither.
        assert line["backorder_cancelled"] + got == OWED_EACH, (line, got)
        assert line["backorder_outstanding"] == 0
        if response["ok"]:
            assert only_line(response["result"]["order"]) == line
            kinds["cancelled all" if got == 0 else "supplied in part, cancelled the rest"] += 1
        else:
            assert (response["error"]["code"], got) == ("conflict", OWED_EACH)
            kinds["supplied in full, cancel refused"] += 1
    assert stock(shop.guest(1))[book] == RESTOCKS * RESTOCK_COPIES - sum(supplied.values())
    return kinds


def assert_order_lines_sound(db_url: str) -> None:
    """Straight from the database: no line owes or cancels more than it back-ordered."""
    broken = found_in_database(
        backend_from_url(db_url),
        "SELECT id FROM order_lines WHERE fulfilled + backordered <> quantity"
        " OR backorder_outstanding < 0 OR backorder_cancelled < 0"
        " OR backorder_outstanding + backorder_cancelled > backordered",
        "SELECT o.id FROM orders o WHERE o.subtotal_pence <> (SELECT SUM((l.quantity"
        " - l.backorder_cancelled) * l.unit_price_pence) FROM order_lines l WHERE l.order_id = o.id)",
    )
    assert broken == [[], []]


def found_in_database(backend: Backend, *queries: str) -> list[list[tuple[Any, ...]]]:
    """The rows each query finds, asked of the database itself rather than through a server."""
    connection = backend.connect()
    try:
        cursor = connection.cursor()
        found = []
        for query in queries:
            cursor.execute(query)
            found.append(cursor.fetchall())
        cursor.close()
    finally:
        connection.close()
    return found


# Protocol: the sales report ------------------------------------------------------------------


def rewrite(db_url: str, statement: str, *params: Any) -> None:
    """Change rows behind the server's back ("?" placeholders), e.g. to date an order."""
    database = Database(backend_from_url(db_url))
    try:
        database.write(lambda tx: tx.run(statement, params))
    finally:
        database.close()


def utc(text: str) -> int:
    """An ISO-8601 UTC time as UTC seconds."""
    return int(datetime.fromisoformat(text).timestamp())


def test_sales_counts_the_orders_of_a_window_without_cancelled_copies(
    shop: Shop, backend_server: ServerProcess
) -> None:
    for book, copies in ((102, 3), (105, 1), (103, 0)):
        shop.set_stock(book, copies)
    first, second, third, fourth = (shop.customer() for _ in range(4))
    placed = {
        # 101 x1 sold; 102 x8: 3 sold, 5 back-ordered and then cancelled.
        "2021-03-01T00:00:00+00:00": (first, [(101, 1), (102, 8)]),
        "2021-03-10T08:00:00+00:00": (fourth, [(103, 4)]),  # all back-ordered, all cancelled
        "2021-03-15T12:00:00+00:00": (second, [(104, 7)]),  # 9093: 909 off
        "2021-03-31T23:59:59+00:00": (second, [(105, 3)]),  # 1 sold, 2 back-ordered, 1 supplied
        "2021-04-01T00:00:00+00:00": (third, [(101, 1)]),  # the first moment after March
    }
    ids = {}
    for moment, (customer, items) in placed.items():
        order = customer.call("buy", items=[{"book": b, "quantity": q} for b, q in items])["order"]
        rewrite(
            backend_server.db_url,
            "UPDATE orders SET created_at = ? WHERE id = ?",
            utc(moment),
            order["id"],
        )
        ids[moment] = order["id"]
    first.call("cancel_backorder", order_id=ids["2021-03-01T00:00:00+00:00"], book=102)
    fourth.call("cancel_backorder", order_id=ids["2021-03-10T08:00:00+00:00"], book=103)
    admin = shop.admin()
    admin.call("restock", book=105, quantity=1)

    march = admin.call("sales", since="2021-03-01", until="2021-04-01T00:00:00Z")
    assert march == {
        "orders": 3,  # the order of cancelled copies only is left out
        "subtotal_pence": 4596 + 9093 + 4197,
        "discount_pence": 909,
        "total_pence": 4596 + 9093 + 4197 - 909,
        "books": [
            {"number": 101, "title": "More Peak District", "copies_ordered": 1,
             "copies_sent": 1, "backorder_outstanding": 0, "line_total_pence": 1299},
            {"number": 102, "title": "Lincolnshire Wolds", "copies_ordered": 3,
             "copies_sent": 3, "backorder_outstanding": 0, "line_total_pence": 3297},
            {"number": 104, "title": "Peak District", "copies_ordered": 7,
             "copies_sent": 7, "backorder_outstanding": 0, "line_total_pence": 9093},
            {"number": 105, "title": "Snowdonia", "copies_ordered": 3,
             "copies_sent": 2, "backorder_outstanding": 1, "line_total_pence": 4197},
        ],
    }  # fmt: skip
    assert sum(b["line_total_pence"] for b in march["books"]) == march["subtotal_pence"]
    # The same window, written with other offsets: every time is converted to UTC.
    for since, until in [
        ("2021-03-01T00:00:00+00:00", "2021-04-01T01:00:00+01:00"),
        ("2021-02-28T19:00:00-05:00", "2021-03-31T19:00:00-05:00"),
        ("2021-03-01T00:00:00.000Z", "2021-04-01"),
        ("  2021-03-01T00:00  ", "2021-04-01 00:00:00"),  # no offset: UTC
    ]:
        assert admin.call("sales", since=since, until=until) == march, (since, until)

    def window(since: str, until: str) -> tuple[int, list[int]]:
        report = admin.call("sales", since=since, until=until)
        return report["orders"], [b["number"] for b in report["books"]]

    assert window("2021-03-15T12:00:00Z", "2021-03-15T12:00:01Z") == (1, [104])  # since inclusive
    assert window("2021-03-15T12:00:01Z", "2021-04-01T00:00:01Z") == (2, [101, 105])
    assert window("2021-03-10T00:00:00Z", "2021-03-11T00:00:00Z") == (0, [])  # cancelled only
    empty = admin.call("sales", until="2021-03-01T00:00:00Z")  # until exclusive
    assert empty == {
        "orders": 0,
        "subtotal_pence": 0,
        "discount_pence": 0,
        "total_pence": 0,
        "books": [],
    }
    assert admin.call("sales", since="2021-03-20", until="2021-03-20") == empty
    everything = admin.call("sales")
    assert everything == admin.call("sales", since="0001-01-01", until="9999-12-31T23:59:59Z")
    assert admin.call("sales", since="2021-04-01", until="2021-04-02")["orders"] == 1
    assert everything["orders"] >= 5


def test_bad_sales_windows_are_bad_requests_naming_the_argument(shop: Shop) -> None:
    admin = shop.admin()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"since": "2021-13-01"}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"since": ""}, "since"),
        ({"until": "2021-03-01T25:00:00Z"}, "until"),
        ({"until": "2021-03-01T00:00:00+25:00"}, "until"),
        ({"until": "2021-03-01T00:00:00 UTC"}, "until"),
        ({"since": 20210301}, "since"),
        ({"since": 10**309}, "since"),
        ({"until": ["2021-03-01"]}, "until"),
        ({"since": "2021-03-01" + " " * 60}, "since"),
        ({"since": "2021-04-01", "until": "2021-03-01"}, "since"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since"),  # before the first year
        *[({"since": text}, "since") for text in SQL_METACHARACTERS],
    ]
    for args, argument in cases:
        error = admin.error("sales", **args)
        assert (error["code"], error["details"].get("argument")) == ("bad_request", argument), args
        assert f"'{argument}'" in error["message"], (args, error)
    assert shop.customer().error("sales")["code"] == "forbidden"
    assert shop.guest().error("sales")["code"] == "unauthorized"
    assert admin.call("sales")["orders"] == 0  # the connection stays usable


# Importing from the command line (both backends, while a server runs on the database) ----------

IMPORT_BOOKS_CSV = "Books,Book Number,Price\nYorkshire Dales Walks,108,9.99\n"
IMPORT_WALKS_CSV = (
    "Area,Book,WalkName,Distance,Difficult,Page,Ascent,Time,Route Type,Start Grid Ref\n"
    "Yorkshire Dales,Yorkshire Dales Walks,Malham Cove,7.5,Medium,14,320,3.5,Circular,SD 897 641\n"
    'Yorkshire   dales,yorkshire dales walks,"Ingleborough\nSummit",8,HARD,22,700,5:30,'
    "out and back,sd741745\n"
    "Peak District,Peak District,Mam Tor,3,easy,33,,,linear,\n"
)


def test_import_walks_with_extra_columns_is_searchable_and_idempotent(
    backend_server: ServerProcess, tmp_path: Path
) -> None:
    done = import_walks(backend_server, tmp_path, IMPORT_WALKS_CSV, IMPORT_BOOKS_CSV)
    assert done.returncode == 0, done.stderr
    assert "3 walks added, 0 updated, 1 books added or updated, 0 rows rejected" in done.stdout

    with backend_server.client() as client:
        dales = client.call("search_walks", area="yorkshire dales")
        assert dales["total"] == 2
        by_name = {walk["name"]: walk for walk in dales["walks"]}
        malham, summit = by_name["Malham Cove"], by_name["Ingleborough Summit"]
        assert (malham["area"], summit["area"]) == ("Yorkshire Dales", "Yorkshire Dales")
        assert (malham["difficulty"], summit["difficulty"]) == ("medium", "hard")
        assert (malham["ascent_m"], malham["time_hours"]) == (320, 3.5)
        assert (malham["route_type"], malham["start_grid_ref"]) == ("circular", "SD 897 641")
        assert (summit["time_hours"], summit["route_type"]) == (5.5, "out-and-back")
        assert summit["start_grid_ref"] == "SD 741 745"
        book = summit["book"]
        assert (book["number"], book["title"], book["price_pence"]) == (
            108, "Yorkshire Dales Walks", 999,
        )  # fmt: skip
        assert book["in_stock"] == 0  # a price list with no Stock column gives a new book none
        [mam_tor] = client.call("search_walks", area="peak", max_distance=3)["walks"]
        assert (mam_tor["name"], mam_tor["route_type"], mam_tor.get("ascent_m")) == (
            "Mam Tor", "linear", None,
        )  # fmt: skip
        assert client.call("search_walks")["total"] == 19
        everything = client.call("search_walks", limit=200)

        again = import_walks(backend_server, tmp_path, IMPORT_WALKS_CSV, IMPORT_BOOKS_CSV)
        assert again.returncode == 0, again.stderr
        assert "0 walks added, 0 updated, 0 books added or updated" in again.stdout
        sample = run_import(backend_server, tmp_path, str(seed.DATA_DIR / "circular_walks.csv"))
        assert sample.returncode == 0, sample.stderr
        assert "0 walks added, 0 updated, 0 books added or updated" in sample.stdout
        assert client.call("search_walks", limit=200) == everything

        register_and_login(client, "dalesman")
        order = client.call("buy", items=[{"book": "Yorkshire Dales  WALKS", "quantity": 1}])
        assert only_line(order["order"])["book"] == {
            "number": 108,
            "title": "Yorkshire Dales Walks",
        }


REJECTING_CSV = (
    "Area,Book,WalkName,Distance,Difficult,Page\n"
    "Peak District,Peak District,Good Walk,4,easy,10\n"  # line 2
    "Peak District,Peak District,Bad Difficulty,4,extreme,11\n"  # line 3
    "Peak District,No Such Book,Orphan,4,easy,12\n"  # line 4
    'Peak District,Peak District,"Two\nLines",-2,easy,13\n'  # lines 5-6
    "Peak District,Peak District,Bad Page,4,easy,page 9\n"  # line 7
    "Peak District,Peak District,good  walk,4,easy,10\n"  # line 8
    "Peak District,Peak District,Another Good,5,hard,14\n"  # line 9
)


def test_import_reports_rejected_rows_with_line_numbers(
    backend_server: ServerProcess, tmp_path: Path
) -> None:
    done = import_walks(backend_server, tmp_path, REJECTING_CSV)
    assert done.returncode == 1, done.stderr
    assert "2 walks added" in done.stdout
    assert "5 rows rejected" in done.stdout
    reasons = {
        int(line.split(":", 1)[0].split()[-1]): line.split(":", 1)[1]
        for line in done.stdout.splitlines()
        if line.strip().startswith("line ")
    }
    assert sorted(reasons) == [3, 4, 5, 7, 8]
    assert "difficulty" in reasons[3]
    assert "No Such Book" in reasons[4]
    assert "distance" in reasons[5]
    assert "page" in reasons[7]
    assert "Duplicate" in reasons[8] and "line 2" in reasons[8]
    assert "Traceback" not in done.stderr

    with backend_server.client() as client:
        assert client.call("search_walks")["total"] == 18
        assert names(client.call("search_walks", area="peak", min_distance=4, max_distance=5)) >= {
            "Good Walk",
            "Another Good",
        }
        again = import_walks(backend_server, tmp_path, REJECTING_CSV)
        assert again.returncode == 1
        assert "0 walks added, 0 updated" in again.stdout
        assert client.call("search_walks")["total"] == 18


def test_import_rejects_values_too_long_to_store_instead_of_crashing(
    backend_server: ServerProcess, tmp_path: Path
) -> None:
    too_long = (
        "Area,Book,WalkName,Distance,Difficult,Page\n"
        f"{'A' * 150},Peak District,Long Area,3,easy,5\n"  # line 2: areas are VARCHAR(100)
        f"Peak District,Peak District,{'W' * 250},3,easy,6\n"  # line 3: names are VARCHAR(200)
        "Peak District,Peak District,Fine Walk,3,easy,7\n"  # line 4
    )
    done = import_walks(backend_server, tmp_path, too_long)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 1, done.stdout
    assert "line 2:" in done.stdout and "line 3:" in done.stdout
    assert "1 walks added" in done.stdout
    with backend_server.client() as client:
        assert "Fine Walk" in names(client.call("search_walks", area="peak", max_distance=3))
        assert client.call("search_walks")["total"] == 17


# Races: two server processes on one MySQL database ------------------------------------------

RACE_BOOK = 107
RACERS = 40
LAST_COPIES = 10


def test_forty_customers_race_for_the_last_ten_copies(racing_shop: Shop) -> None:
    racing_shop.set_stock(RACE_BOOK, LAST_COPIES)
    racers = [racing_shop.customer(server=index % 2) for index in range(RACERS)]
    responses, release_spread, elapsed = race(
        racers, lambda c: c.request("buy", items=[{"book": RACE_BOOK, "quantity": 1}])
    )
    failed = [r for r in responses if not r["ok"]]
    assert not failed, failed
    lines = [only_line(r["result"]["order"]) for r in responses]
    sold = sum(line["fulfilled"] for line in lines)
    backordered = sum(line["backordered"] for line in lines)
    winners = [i for i, line in enumerate(lines) if line["fulfilled"] == 1]
    per_server = [sum(1 for i in winners if i % 2 == s) for s in (0, 1)]
    print(
        f"\nrace: {RACERS} customers on 2 server processes (20 each) bought 1 copy each of"
        f" the last {LAST_COPIES} of book {RACE_BOOK}: {sold} sold"
        f" ({per_server[0]} via server 1, {per_server[1]} via server 2),"
        f" {backordered} back-ordered, {len(failed)} errors;"
        f" released within {release_spread * 1000:.1f} ms, all answered in"
        f" {elapsed * 1000:.0f} ms"
    )
    assert (sold, backordered) == (LAST_COPIES, RACERS - LAST_COPIES)
    for server in (0, 1):
        assert stock(racing_shop.guest(server))[RACE_BOOK] == 0

    listed = racing_shop.admin().call("backorders")["backorders"]
    assert sorted(b["order_id"] for b in listed) == sorted(
        r["result"]["order"]["id"]
        for r, line in zip(responses, lines, strict=True)
        if line["backordered"]
    )
    assert all(b["outstanding"] == 1 for b in listed)
    for racer, response in zip(racers, responses, strict=True):
        assert racer.call("orders") == {"orders": [response["result"]["order"]]}

    restocked = racing_shop.admin().call("restock", book=RACE_BOOK, quantity=RACERS - LAST_COPIES)
    filled = [fill["order_id"] for fill in restocked["backorders_filled"]]
    assert filled == sorted(b["order_id"] for b in listed)
    assert restocked["book"]["in_stock"] == 0
    assert racing_shop.admin().call("backorders") == {"backorders": []}
    print(
        f"race: restock of {RACERS - LAST_COPIES} supplied all {len(filled)} back orders"
        " oldest first; stock 0"
    )


OWN_LIMIT_CUSTOMERS = 5
CONNECTIONS_EACH = 4


def test_customers_race_their_own_limit_from_four_connections(racing_shop: Shop) -> None:
    book = 105
    start_stock = stock(racing_shop.guest())[book]
    connections: list[list[WireClient]] = []
    for number in range(OWN_LIMIT_CUSTOMERS):
        first = racing_shop.guest(server=0)
        token = register_and_login(first, f"greedy{number}", PASSWORD)["token"]
        others = [racing_shop.guest(server=index % 2) for index in range(1, CONNECTIONS_EACH)]
        for other in others:
            other.call("resume", token=token)
        connections.append([first, *others])
    everyone = [c for group in connections for c in group]

    outcomes = []
    # Round 1: four times 3 copies; round 2: four times 1 copy. The limit is 8 in all.
    for quantity, wins, allowed in ((3, 2, 2), (1, 2, 0)):
        responses, spread, elapsed = race(
            everyone,
            lambda c, q=quantity: c.request("buy", items=[{"book": book, "quantity": q}]),
        )
        for group in range(OWN_LIMIT_CUSTOMERS):
            mine = responses[group * CONNECTIONS_EACH : (group + 1) * CONNECTIONS_EACH]
            accepted = [r for r in mine if r["ok"]]
            refused = [r["error"] for r in mine if not r["ok"]]
            assert len(accepted) == wins, mine
            for error in refused:
                assert limit_details(error) == {"book": book, "limit": 8, "allowed": allowed}
        outcomes.append(
            f"{CONNECTIONS_EACH} x {quantity} copies: {wins} accepted and"
            f" {CONNECTIONS_EACH - wins} limit_exceeded (allowed {allowed}) for each of"
            f" {OWN_LIMIT_CUSTOMERS} customers, answered in {elapsed * 1000:.0f} ms"
        )
    print("\nown-limit race:", "; ".join(outcomes))

    sold = 0
    for group in connections:
        assert copies_ordered(group[0], book) == LIMIT
        sold += sum(
            line["fulfilled"]
            for order in group[0].call("orders")["orders"]
            for line in order["lines"]
        )
    assert sold == min(start_stock, OWN_LIMIT_CUSTOMERS * LIMIT)
    assert stock(racing_shop.guest(1))[book] == start_stock - sold


def test_guide_books_lists_every_book_for_sale_without_login(backend_server: ServerProcess) -> None:
    with backend_server.client() as client:
        books = client.call("guide_books")["books"]
    assert [b["number"] for b in books] == [101, 102, 103, 104, 105, 106, 107]
    assert books[2] == {
        "number": 103,
        "title": "Vale of York",
        "price_pence": 1199,
        "in_stock": books[2]["in_stock"],
    }
    assert all(10 <= b["in_stock"] <= 40 for b in books)


@pytest.fixture
def store(store: Store) -> ShapedStore:
    """The conftest Store, answering in wire shapes as the commands do."""
    return ShapedStore(store)
