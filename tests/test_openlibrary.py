"""openlibrary.py against a local stand-in for Open Library, including its failure modes."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from openlibrary import (
    MAX_RETRY_AFTER_S,
    SEARCH_FIELDS,
    BookHit,
    OpenLibrary,
    UpstreamNotFoundError,
    UpstreamUnavailableError,
    Work,
    _TimeBoundRetry,
    parse_year,
)
from tests.fake_openlibrary import FakeOpenLibrary, refused_url

READ_TIMEOUT_S = 0.5


@pytest.fixture
def fake() -> Iterator[FakeOpenLibrary]:
    with FakeOpenLibrary() as server:
        yield server


def make_client(url: str, **options: object) -> OpenLibrary:
    options = {"connect_timeout": 0.5, "read_timeout": READ_TIMEOUT_S, **options}
    return OpenLibrary(url, **options)  # type: ignore[arg-type]


@pytest.fixture
def client(fake: FakeOpenLibrary) -> Iterator[OpenLibrary]:
    with make_client(fake.url) as ol:
        yield ol


@pytest.fixture
def stale_client(fake: FakeOpenLibrary) -> Iterator[OpenLibrary]:
    """A client whose cached answers expire at once but are kept for fallback."""
    with make_client(fake.url, cache_ttl_s=0) as ol:
        yield ol


# Search -----------------------------------------------------------------------------------


def test_search_parses_recorded_answer(client: OpenLibrary) -> None:
    answer = client.search("orwell")

    assert answer.hits[0] == BookHit(
        key="/works/OL1168083W",
        title="Nineteen Eighty-Four",
        authors=("George Orwell",),
        first_publish_year=1949,
    )
    assert [hit.key for hit in answer.hits] == [
        "/works/OL1168083W",
        "/works/OL1167981W",
        "/works/OL1168007W",
        "/works/OL11326416W",
        "/works/OL14905934W",
    ]
    assert answer.hits[3].authors == ("Michael Dean", "George Orwell")
    assert (answer.from_cache, answer.stale) == (False, False)


def test_search_skips_malformed_documents(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    fake.search_docs[:0] = [
        {"title": "Zebra without a key"},
        {"key": "/books/OL1M", "title": "Zebra edition, not a work"},
        {"key": "/works/OL9W", "title": "Zebra", "author_name": "A. N. Other"},
        {"key": "/works/OL8W", "title": "Zebra stripes", "first_publish_year": True},
    ]
    assert client.search("zebra").hits == (
        BookHit("/works/OL9W", "Zebra", (), None),
        BookHit("/works/OL8W", "Zebra stripes", (), None),
    )


def test_search_with_no_matches_is_empty(client: OpenLibrary) -> None:
    assert client.search("zzyzx quux").hits == ()


def test_search_sends_query_limit_and_fields(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    answer = client.search("  Dune \t herbert ", limit=2)

    assert fake.queries == [{"q": "Dune herbert", "limit": "2", "fields": SEARCH_FIELDS}]
    assert [hit.title for hit in answer.hits] == ["Dune", "Dune Messiah"]


def test_user_agent_names_waymark_and_a_contact(fake: FakeOpenLibrary) -> None:
    with make_client(fake.url) as default, make_client(fake.url, contact="ops@library.test") as own:
        default.search("dune")
        own.search("dune")

    assert re.fullmatch(
        r"Waymark/\d+\.\d+ \(\+contact: waymark-admin@example\.org\)", fake.user_agents[0]
    )
    assert fake.user_agents[1] == "Waymark/1.0 (+contact: ops@library.test)"


def test_explicit_user_agent_is_sent_as_given(fake: FakeOpenLibrary) -> None:
    with make_client(fake.url, user_agent="Waymark-test/0 (+ci@example.org)") as ol:
        ol.search("dune")
    assert fake.user_agents == ["Waymark-test/0 (+ci@example.org)"]


def test_repeated_search_is_answered_from_cache(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    first = client.search("Dune Herbert")
    second = client.search("  dune   HERBERT")

    assert fake.requests["/search.json"] == 1
    assert (second.from_cache, second.stale) == (True, False)
    assert second.hits == first.hits


def test_cache_key_includes_limit(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    client.search("dune", limit=2)
    client.search("dune", limit=3)
    assert fake.requests["/search.json"] == 2


def test_cache_evicts_the_oldest_entry(fake: FakeOpenLibrary) -> None:
    with make_client(fake.url, cache_max_entries=2) as ol:
        for query in ("dune", "orwell", "tolkien", "tolkien", "dune"):
            ol.search(query)
    # "dune" was pushed out by "tolkien", so its second search went upstream again.
    assert fake.requests["/search.json"] == 4


@pytest.mark.parametrize("mode", ["500", "429", "slow", "trickle", "bad_json"])
def test_failed_search_falls_back_to_stale_answer(
    fake: FakeOpenLibrary, stale_client: OpenLibrary, mode: str
) -> None:
    fresh = stale_client.search("tolkien")
    fake.mode = mode
    fake.retry_after = "0"

    answer = stale_client.search("tolkien")

    assert (answer.from_cache, answer.stale) == (True, True)
    assert answer.hits == fresh.hits
    assert [hit.title for hit in answer.hits][:2] == ["The Hobbit", "The Lord of the Rings"]


def test_refused_connection_falls_back_to_stale_answer(
    fake: FakeOpenLibrary, stale_client: OpenLibrary
) -> None:
    fresh = stale_client.search("austen")
    fake.stop()

    answer = stale_client.search("austen")

    assert answer.stale and answer.hits == fresh.hits


def test_expired_entry_is_refreshed_when_upstream_answers(
    fake: FakeOpenLibrary, stale_client: OpenLibrary
) -> None:
    stale_client.search("austen")
    answer = stale_client.search("austen")
    assert (answer.from_cache, answer.stale) == (False, False)
    assert fake.requests["/search.json"] == 2


@pytest.mark.parametrize("mode", ["500", "429", "slow", "trickle", "bad_json"])
def test_failed_search_without_cache_raises(
    fake: FakeOpenLibrary, client: OpenLibrary, mode: str
) -> None:
    fake.mode = mode
    fake.retry_after = "0"
    with pytest.raises(UpstreamUnavailableError):
        client.search("tolkien")


def test_refused_connection_without_cache_raises() -> None:
    with make_client(refused_url()) as ol, pytest.raises(UpstreamUnavailableError) as caught:
        ol.search("tolkien")
    assert caught.value.__cause__ is not None


def test_bad_json_is_mapped_with_its_cause(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    fake.mode = "bad_json"
    with pytest.raises(UpstreamUnavailableError) as caught:
        client.search("tolkien")
    assert isinstance(caught.value.__cause__, ValueError)


def test_unreadable_retry_after_is_mapped(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    fake.mode = "429"
    fake.retry_after = "whenever"
    with pytest.raises(UpstreamUnavailableError):
        client.search("tolkien")


def test_429_is_retried_after_retry_after(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    fake.mode = "429_once"
    fake.retry_after = "1"

    started = time.monotonic()
    answer = client.search("austen")
    elapsed = time.monotonic() - started

    assert [hit.title for hit in answer.hits] == ["Pride and Prejudice"]
    assert fake.requests["/search.json"] == 2
    assert 0.9 <= elapsed < 2.5


def test_long_retry_after_is_capped(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    fake.mode = "429_once"
    fake.retry_after = "3600"

    started = time.monotonic()
    answer = client.search("austen")

    assert answer.hits and not answer.from_cache
    assert time.monotonic() - started < MAX_RETRY_AFTER_S + 1


def test_server_error_is_retried(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    fake.mode = "500_once"
    assert client.search("austen").hits
    assert fake.requests["/search.json"] == 2


def test_persistent_server_error_gives_up_after_the_retries(fake: FakeOpenLibrary) -> None:
    fake.mode = "500"
    with (
        make_client(fake.url, retries=2) as ol,
        pytest.raises(UpstreamUnavailableError, match="500"),
    ):
        ol.search("austen")
    assert fake.requests["/search.json"] == 3


def test_hanging_server_costs_one_read_timeout(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    fake.mode = "slow"
    fake.slow_s = 5

    started = time.monotonic()
    with pytest.raises(UpstreamUnavailableError):
        client.search("austen")

    assert time.monotonic() - started < READ_TIMEOUT_S + 1
    assert fake.requests["/search.json"] == 1


def test_connect_timeout_is_not_retried_but_a_refusal_is() -> None:
    retry = _TimeBoundRetry(total=2, connect=2)
    with pytest.raises(ConnectTimeoutError):
        retry.increment("GET", "/search.json", error=ConnectTimeoutError("timed out"))
    refused = NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    assert retry.increment("GET", "/search.json", error=refused).connect == 1


def test_trickling_answer_is_cut_off(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    fake.mode = "trickle"  # every piece arrives well within the read timeout

    started = time.monotonic()
    with pytest.raises(UpstreamUnavailableError, match="too slowly"):
        client.search("tolkien")

    assert time.monotonic() - started < READ_TIMEOUT_S + 1


@pytest.mark.parametrize(
    ("query", "limit"), [("", 10), ("   ", 10), ("dune", 0), ("dune", 101), ("dune", -1)]
)
def test_invalid_search_is_refused_locally(
    fake: FakeOpenLibrary, client: OpenLibrary, query: str, limit: int
) -> None:
    with pytest.raises(ValueError):
        client.search(query, limit=limit)
    assert fake.total_requests == 0


def test_concurrent_searches_agree(fake: FakeOpenLibrary) -> None:
    client = make_client(fake.url, read_timeout=10.0)  # generous: the machine may be busy
    results: list[tuple[BookHit, ...]] = []
    lock = threading.Lock()

    def search() -> None:
        hits = client.search("dune").hits
        with lock:
            results.append(hits)

    threads = [threading.Thread(target=search) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    client.close()
    assert len(results) == 8
    assert all(hits == results[0] for hits in results)


# Works ------------------------------------------------------------------------------------


def test_work_with_string_description(client: OpenLibrary) -> None:
    work = client.work("/works/OL66554W")

    assert work.key == "/works/OL66554W"
    assert work.title == "Pride and Prejudice"
    assert work.authors == ("Jane Austen",)
    # Open Library's record says 1853; the client reports what the record says.
    assert work.first_publish_year == 1853
    assert work.description is not None
    assert work.description.startswith("Pride and Prejudice is an 1813 novel of manners")


def test_work_with_typed_description(client: OpenLibrary) -> None:
    assert client.work("/works/OL45804W") == Work(
        key="/works/OL45804W",
        title="Fantastic Mr Fox",
        authors=("Roald Dahl",),
        first_publish_year=1970,
        description="Mr Fox outwits the three meanest farmers around, Boggis, Bunce and Bean, "
        "to feed his family.",
    )


@pytest.mark.parametrize(
    ("key", "year"),
    [
        ("/works/OL27482W", 1938),  # "January 1938"
        ("/works/OL2163649W", 1984),  # "March 3, 1984"
        ("/works/OL893415W", None),  # no first_publish_date
    ],
)
def test_work_publish_year(client: OpenLibrary, key: str, year: int | None) -> None:
    assert client.work(key).first_publish_year == year


def test_work_without_description(client: OpenLibrary) -> None:
    work = client.work("/works/OL1168083W")
    assert (work.title, work.authors, work.description) == (
        "Nineteen Eighty-Four",
        ("George Orwell",),
        None,
    )


def test_work_looks_up_each_author(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    fake.works["OL1W"] = {
        "key": "/works/OL1W",
        "title": "Good Omens",
        "type": {"key": "/type/work"},
        "authors": [
            {"author": {"key": "/authors/OL2A"}, "type": {"key": "/type/author_role"}},
            {"author": {"key": "/authors/OL3A"}, "type": {"key": "/type/author_role"}},
            {"author": {"key": "/authors/OL2A"}, "type": {"key": "/type/author_role"}},
        ],
    }
    fake.authors["OL2A"] = {"key": "/authors/OL2A", "name": "Terry Pratchett"}
    fake.authors["OL3A"] = {"key": "/authors/OL3A", "personal_name": "Neil Gaiman"}

    assert client.work("/works/OL1W").authors == ("Terry Pratchett", "Neil Gaiman")
    assert fake.requests["/authors/OL2A.json"] == 1


def test_work_skips_an_author_open_library_lacks(
    fake: FakeOpenLibrary, client: OpenLibrary
) -> None:
    fake.works["OL1W"] = {
        "key": "/works/OL1W",
        "title": "Orphan",
        "authors": [{"author": {"key": "/authors/OL404A"}}],
    }
    assert client.work("/works/OL1W").authors == ()


def test_work_follows_a_merge_redirect(client: OpenLibrary) -> None:
    work = client.work("/works/OL45883W")
    assert (work.key, work.title) == ("/works/OL45804W", "Fantastic Mr Fox")


def test_unknown_work_is_not_found(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    with pytest.raises(UpstreamNotFoundError):
        client.work("/works/OL999999999W")
    assert fake.requests["/works/OL999999999W.json"] == 1


def test_deleted_work_is_not_found(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    fake.works["OL2W"] = {"key": "/works/OL2W", "type": {"key": "/type/delete"}}
    with pytest.raises(UpstreamNotFoundError):
        client.work("/works/OL2W")


def test_unavailable_work_lookup_is_not_not_found(
    fake: FakeOpenLibrary, client: OpenLibrary
) -> None:
    fake.mode = "500"
    with pytest.raises(UpstreamUnavailableError) as caught:
        client.work("/works/OL66554W")
    assert not isinstance(caught.value, UpstreamNotFoundError)


@pytest.mark.parametrize(
    "key",
    [
        "OL45804W",
        "/works/OL45804",
        "/books/OL45804M",
        "/works/OLW",
        "/works/OL\u0661W",  # an Arabic-Indic digit: str.isdigit() says yes, Open Library no
        "/works/OL1W/../x",
        "/works/OL" + "1" * 16 + "W",
        "",
    ],
)
def test_malformed_work_key_is_refused_locally(
    fake: FakeOpenLibrary, client: OpenLibrary, key: str
) -> None:
    with pytest.raises(ValueError):
        client.work(key)
    assert fake.total_requests == 0


def test_work_is_cached(fake: FakeOpenLibrary, client: OpenLibrary) -> None:
    first = client.work("/works/OL27482W")
    requests_made = fake.total_requests
    assert client.work("/works/OL27482W") == first
    assert fake.total_requests == requests_made == 2  # the work and its author


def test_work_falls_back_to_stale_copy(fake: FakeOpenLibrary, stale_client: OpenLibrary) -> None:
    fresh = stale_client.work("/works/OL27482W")
    fake.mode = "500"
    assert stale_client.work("/works/OL27482W") == fresh


# Helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("date", "year"),
    [
        ("1965", 1965),
        ("August 1965", 1965),
        ("1965-08-01", 1965),
        ("March 3, 1984", 1984),
        ("c1965", 1965),
        ("12345", None),
        ("no date", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_year(date: str | None, year: int | None) -> None:
    assert parse_year(date) == year


@pytest.mark.parametrize(
    "options",
    [{"read_timeout": 0}, {"connect_timeout": -1}, {"retries": -1}, {"cache_max_entries": 0}],
)
def test_bad_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        OpenLibrary("http://127.0.0.1:9", **options)  # type: ignore[arg-type]
