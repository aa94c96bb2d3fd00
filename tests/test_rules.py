"""Table and property tests for rules.py: every boundary of every business rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rules
from commands import wire_error
from errors import DomainError
from protocol import (
    BAD_REQUEST,
    CONFLICT,
    LIMIT_EXCEEDED,
    WEAK_PASSWORD,
)

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


# Constants ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DISCOUNT_THRESHOLD_PENCE", 7500),
        ("DISCOUNT_PERCENT", 10),
        ("MAX_COPIES_PER_ORDER", 8),
        ("MAX_COPIES_PER_CUSTOMER", 8),
        ("LOAN_PERIOD", timedelta(days=14)),
        ("MAX_ACTIVE_LOANS", 5),
        ("MAX_RENEWALS", 2),
        ("HOLD_KEPT_FOR", timedelta(days=3)),
        ("MIN_PASSWORD_LENGTH", 8),
        ("MAX_PASSWORD_LENGTH", 1024),
        ("DIFFICULTIES", ("easy", "medium", "hard")),
    ],
)
def test_constants_match_the_protocol(name: str, value: object) -> None:
    assert getattr(rules, name) == value


# Text matching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Vale of York", "Vale of York"),
        ("  Vale   of\tYork  ", "Vale of York"),
        ("Hope and Win\nHill", "Hope and Win Hill"),
        ("Hope and Win\r\nHill", "Hope and Win Hill"),
        ("Malvern and\n\n  Warwickshire", "Malvern and Warwickshire"),
        ("Lord\u2019s\u00a0Seat", "Lord\u2019s Seat"),
        ("", ""),
        (" \n\t ", ""),
    ],
)
def test_normalise_spaces(text: str, expected: str) -> None:
    assert rules.normalise_spaces(text) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Vale Of York", "Vale of York"),
        ("vale of  york", "VALE OF\nYORK"),
        ("Peak District", " peak district "),
        ("Strasse", "STRASSE"),
        ("straße", "STRASSE"),
    ],
)
def test_match_key_ignores_case_and_spaces(a: str, b: str) -> None:
    assert rules.match_key(a) == rules.match_key(b)


def test_match_key_keeps_words_apart() -> None:
    assert rules.match_key("Peak District") != rules.match_key("PeakDistrict")


def test_book_search_key_joins_title_and_authors_as_match_keys() -> None:
    key = rules.book_search_key("The  Hobbit", ["J. R. R. TOLKIEN", "Alan\nLee"])
    assert key == "the hobbit | j. r. r. tolkien | alan lee"
    assert rules.book_search_key("Dune", []) == "dune"


# Usernames ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "username",
    ["abc", "a" * 32, "walker_1", "Jo.Smith", "x-y", "A.B_C-9", "___", "123"],
)
def test_valid_usernames_are_returned_as_given(username: str) -> None:
    assert rules.validate_username(username) == username


@pytest.mark.parametrize(
    ("username", "reason"),
    [
        ("ab", "3 to 32"),
        ("a" * 33, "3 to 32"),
        ("a" * 31 + "!", "only"),  # 32 long: the length is fine, the character is not
        ("ab!", "only"),  # 3 long, likewise
        ("", "3 to 32"),
        (" abc", "only"),
        ("abc ", "only"),
        ("jo smith", "only"),
        ("jo@home", "only"),
        ("jo/../x", "only"),
        ("jo\nsmith", "only"),
        ("abc\n", "only"),
        ("jos\u00e9", "only"),
        ("\u0430dmin", "only"),  # Cyrillic a: looks like "admin"
        ("\uff41\uff42\uff43", "only"),  # fullwidth abc
        ("\u0661\u0662\u0663", "only"),  # Arabic-Indic digits
    ],
)
def test_invalid_usernames_are_bad_requests_naming_username(username: str, reason: str) -> None:
    with pytest.raises(DomainError) as caught:
        rules.validate_username(username)
    assert wire_error(caught.value).code == BAD_REQUEST
    assert "username" in caught.value.message
    assert reason in caught.value.message
    assert caught.value.details == {"argument": "username"}


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("ab", "The username must be 3 to 32 characters long."),
        ("jo smith", "The username may use only the letters A-Z, digits, '_', '.' and '-'."),
    ],
)
def test_username_messages_are_whole_sentences(username: str, message: str) -> None:
    with pytest.raises(DomainError) as caught:
        rules.validate_username(username)
    assert caught.value.message == message


@pytest.mark.parametrize(("a", "b"), [("Alice", "alice"), ("ALICE", "alice"), ("a.B-c", "A.b-C")])
def test_username_key_ignores_case(a: str, b: str) -> None:
    assert rules.username_key(a) == rules.username_key(b)


def test_username_key_keeps_different_names_apart() -> None:
    assert rules.username_key("alice") != rules.username_key("alice_")


# Passwords ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "a" * 8,
        "correct horse",
        " padded ",
        "x" * 72,
        "x" * 73,  # past bcrypt's 72-byte limit: supported by pre-hashing, not rejected
        "\u00e9" * 40,  # 40 characters, 80 bytes in UTF-8
        "\U0001f511" * 8,  # 8 characters, 32 bytes
        "\u5bc6\u7801\u5bc6\u7801\u5bc6\u7801\u5bc6\u7801",
        "x" * 1024,
    ],
)
def test_acceptable_passwords(password: str) -> None:
    rules.validate_password(password)


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("", "at least 8 characters"),
        ("a" * 7, "at least 8 characters"),
        ("\u00e9" * 7, "at least 8 characters"),  # 14 bytes, but 7 characters
        (" " * 7, "at least 8 characters"),
        (" " * 8, "only spaces"),
        ("\t\n  \r\n  ", "only spaces"),
        ("x" * 1025, "at most 1024 characters"),
    ],
)
def test_weak_passwords(password: str, expected: str) -> None:
    with pytest.raises(DomainError) as caught:
        rules.validate_password(password)
    assert wire_error(caught.value).code == WEAK_PASSWORD
    assert expected in caught.value.message
    assert caught.value.message.endswith(".")


@pytest.mark.parametrize(
    ("password", "message", "details"),
    [
        ("a" * 7, "The password must be at least 8 characters long.", {"min_length": 8}),
        ("x" * 1025, "The password must be at most 1024 characters long.", {"max_length": 1024}),
        (" " * 8, "The password must not be only spaces.", {}),
    ],
)
def test_weak_password_messages_and_details(password: str, message: str, details: dict) -> None:
    # A client shows the message as it is and reads the limit from the details.
    with pytest.raises(DomainError) as caught:
        rules.validate_password(password)
    assert (caught.value.message, caught.value.details) == (message, details)


# Email addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "ann@example.org",
        "a@.",  # 3 characters: the shortest the rule allows
        "Ann.Smith+walks@mail.example.co.uk",
        "x@" + "d" * 248 + ".org",  # 254 characters exactly
        "jos\u00e9@example.org",
    ],
)
def test_acceptable_email_addresses_are_returned_as_given(email: str) -> None:
    assert rules.validate_email(email) == email


@pytest.mark.parametrize(
    "email",
    [
        "",
        "a@",
        "x@" + "d" * 249 + ".org",  # 255 characters
        "ann.example.org",  # no @
        "@example.org",  # no name before it
        "ann@example@org.uk",  # two @
        "ann@localhost",  # no dot after it
        "ann smith@example.org",
        "ann@example.org\nBcc: eve@example.org",  # a second header line
        "ann@example.org\r",
        "ann\t@example.org",
        "ann\u00a0@example.org",  # a no-break space
    ],
)
def test_unusable_email_addresses_are_bad_requests_naming_email(email: str) -> None:
    with pytest.raises(DomainError) as caught:
        rules.validate_email(email)
    assert wire_error(caught.value).code == BAD_REQUEST
    assert caught.value.message == (
        "The email address must be like name@example.org: one @, a name before it, a domain"
        " with a dot after it, no spaces, and at most 254 characters."
    )
    assert caught.value.details == {"argument": "email"}


# Difficulty ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("easy", "easy"),
        ("Easy", "easy"),
        ("EASY", "easy"),
        ("mEdIuM", "medium"),
        ("Hard", "hard"),
        (" hard ", "hard"),
    ],
)
def test_difficulty_in_any_case(value: str, expected: str) -> None:
    assert rules.normalise_difficulty(value) == expected


@pytest.mark.parametrize("value", ["", "extreme", "moderate", "easy-ish", "eas y", "1"])
def test_bad_difficulty_lists_the_valid_ones(value: str) -> None:
    with pytest.raises(DomainError) as caught:
        rules.normalise_difficulty(value)
    error = caught.value
    assert wire_error(error).code == BAD_REQUEST
    assert "difficulty" in error.message
    assert all(name in error.message for name in ("easy", "medium", "hard"))
    assert error.message == "The difficulty must be easy, medium or hard."
    assert error.details == {"argument": "difficulty", "allowed": ["easy", "medium", "hard"]}


# Pricing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subtotal", "discount"),
    [
        (0, 0),
        (1299, 0),
        (7499, 0),
        (7500, 0),  # exactly £75.00 does not qualify
        (7501, 750),  # 750.1 rounds down
        (7504, 750),  # 750.4 rounds down
        (7505, 751),  # 750.5 rounds half up
        (7509, 751),
        (7510, 751),
        (7515, 752),
        (7795, 780),  # 779.5 rounds half up
        (10000, 1000),
        (10392, 1039),  # 8 x £12.99
        (103_920, 10_392),
    ],
)
def test_discount_boundaries_and_rounding(subtotal: int, discount: int) -> None:
    assert rules.discount_pence(subtotal) == discount


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], rules.Pricing(0, 0, 0)),
        ([(1, 1299)], rules.Pricing(1299, 0, 1299)),
        ([(5, 1500)], rules.Pricing(7500, 0, 7500)),
        ([(5, 1500), (1, 1)], rules.Pricing(7501, 750, 6751)),
        ([(4, 1299), (2, 1099), (1, 1199)], rules.Pricing(8593, 859, 7734)),
        ([(8, 1299)], rules.Pricing(10392, 1039, 9353)),
        ([(0, 1299)], rules.Pricing(0, 0, 0)),
    ],
)
def test_price_order(lines: list[tuple[int, int]], expected: rules.Pricing) -> None:
    assert rules.price_order(lines) == expected


@pytest.mark.parametrize("line", [(-1, 1299), (1, -1)])
def test_price_order_refuses_negative_values(line: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="cannot price"):
        rules.price_order([line])


@given(st.integers(min_value=0, max_value=10**9))
def test_discount_is_at_most_a_tenth_and_total_adds_up(subtotal: int) -> None:
    discount = rules.discount_pence(subtotal)
    assert (discount > 0) == (subtotal > 7500)
    if discount:
        # Within half a penny of the exact tenth, and half a penny rounds up.
        assert -5 < 10 * discount - subtotal <= 5


@given(
    st.lists(
        st.tuples(st.integers(min_value=1, max_value=8), st.integers(min_value=0, max_value=10**6)),
        max_size=20,
    )
)
def test_pricing_total_is_subtotal_less_discount(lines: list[tuple[int, int]]) -> None:
    pricing = rules.price_order(lines)
    assert pricing.subtotal_pence == sum(q * p for q, p in lines)
    assert pricing.discount_pence == rules.discount_pence(pricing.subtotal_pence)
    assert pricing.total_pence == pricing.subtotal_pence - pricing.discount_pence
    assert 0 <= pricing.total_pence <= pricing.subtotal_pence


# Each row: (total before, (quantity, cancelled, unit price) lines after, new pricing, refund).
REPRICINGS = [
    # 7501 -> 7499: the order falls to the threshold, so the discount goes, and the customer
    # owes 748p more than the 2p of the copies cancelled would suggest.
    (6751, [(1, 0, 7499), (1, 1, 2)], rules.Pricing(7499, 0, 7499), -748),
    # 7501 -> 7500: exactly £75.00 earns no discount either.
    (6751, [(1, 0, 7500), (1, 1, 1)], rules.Pricing(7500, 0, 7500), -749),
    # A book's worth cancelled across the threshold: a refund, smaller than the book.
    (7734, [(4, 0, 1299), (2, 2, 1099), (1, 0, 1199)], rules.Pricing(6395, 0, 6395), 1339),
    # Everything cancelled: the whole total back.
    (9353, [(8, 8, 1299)], rules.Pricing(0, 0, 0), 9353),
    (1299, [(1, 1, 1299)], rules.Pricing(0, 0, 0), 1299),
    # The discount stays (still over £75.00), at 10% of the smaller subtotal.
    (9353, [(8, 2, 1299)], rules.Pricing(7794, 779, 7015), 2338),
    # Part of a line cancelled, another line untouched, nothing cancelled elsewhere.
    (13310, [(8, 3, 1399), (3, 0, 1199)], rules.Pricing(10592, 1059, 9533), 3777),
    # Nothing cancelled: nothing changes.
    (7734, [(4, 0, 1299), (2, 0, 1099), (1, 0, 1199)], rules.Pricing(8593, 859, 7734), 0),
]


@pytest.mark.parametrize(("before", "lines", "pricing", "refund"), REPRICINGS)
def test_reprice_cancelled(
    before: int, lines: list[tuple[int, int, int]], pricing: rules.Pricing, refund: int
) -> None:
    assert rules.reprice_cancelled(before, lines) == (pricing, refund)


@pytest.mark.parametrize("line", [(2, 3, 1299), (2, -1, 1299)])
def test_reprice_cancelled_refuses_impossible_cancellations(line: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="cannot cancel"):
        rules.reprice_cancelled(0, [line])


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=8),
            st.integers(min_value=0, max_value=8),
            st.integers(min_value=0, max_value=10**5),
        ),
        max_size=10,
    )
)
def test_repricing_matches_pricing_the_copies_kept(lines: list[tuple[int, int, int]]) -> None:
    lines = [(quantity, min(cancelled, quantity), price) for quantity, cancelled, price in lines]
    before = rules.price_order((quantity, price) for quantity, _, price in lines)
    after, refund = rules.reprice_cancelled(before.total_pence, lines)
    assert after == rules.price_order((q - c, p) for q, c, p in lines)
    assert refund == before.total_pence - after.total_pence
    # A refund is never more than the order cost, and only losing the discount makes it negative.
    assert refund <= before.total_pence
    if refund < 0:
        assert before.discount_pence > 0 and after.discount_pence == 0


# Each row: (matching walks by book, prices by book, expected order).
RANKINGS = [
    ({}, {}, []),
    ({104: 1}, {104: 1299}, [104]),
    ({101: 1, 104: 2}, {101: 999, 104: 1299}, [104, 101]),  # more walks beat a lower price
    ({101: 2, 104: 2, 105: 2}, {101: 1299, 104: 1099, 105: 1399}, [104, 101, 105]),
    ({107: 2, 101: 2, 104: 2}, {107: 1299, 101: 1299, 104: 1299}, [101, 104, 107]),
    ({103: 1, 102: 3, 106: 1, 105: 1}, {103: 1199, 102: 1099, 106: 1099, 105: 1399},
     [102, 106, 103, 105]),
]  # fmt: skip


@pytest.mark.parametrize(("matching", "prices", "expected"), RANKINGS)
def test_rank_guide_books(
    matching: dict[int, int], prices: dict[int, int], expected: list[int]
) -> None:
    assert rules.rank_guide_books(matching, prices) == expected


# Time ---------------------------------------------------------------------------------------


def test_seconds_and_datetimes_convert_both_ways_in_utc() -> None:
    assert rules.from_seconds(1_700_000_000) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert (
        rules.to_seconds(datetime(2023, 11, 14, 22, 13, 20, 999_999, tzinfo=UTC)) == 1_700_000_000
    )
    assert rules.to_seconds(rules.from_seconds(-1)) == -1
    # Before 1970 too, the part of a second is dropped towards the past, not towards 0.
    assert rules.to_seconds(datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC)) == -1
    with pytest.raises(ValueError, match="aware"):
        rules.to_seconds(datetime(2023, 11, 14))  # naive: no time zone


# Copy limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], {}),
        ([(101, 1)], {101: 1}),
        ([(101, 4), (101, 5)], {101: 9}),
        ([(103, 1), (101, 2), (103, 3)], {103: 4, 101: 2}),
        ([(102, 1), (101, 1), (102, 1), (101, 1)], {102: 2, 101: 2}),
    ],
)
def test_merge_quantities(items: list[tuple[int, int]], expected: dict[int, int]) -> None:
    merged = rules.merge_quantities(items)
    assert merged == expected
    assert list(merged) == list(expected)  # first-seen order


@pytest.mark.parametrize(
    ("requested", "already"),
    [
        ({101: 1}, {}),
        ({101: 8}, {}),
        ({101: 3}, {101: 5}),  # 5 + 3 = 8: the limit exactly
        ({101: 8, 102: 8}, {103: 8}),
        ({101: 1}, {101: 7, 102: 8}),
        ({101: 0}, {101: 8}),
    ],
)
def test_within_copy_limits(requested: dict[int, int], already: dict[int, int]) -> None:
    rules.check_copy_limits(requested, already)


@pytest.mark.parametrize(
    ("requested", "already", "details"),
    [
        ({101: 9}, {}, {"book": 101, "limit": 8, "allowed": 8, "scope": "order"}),
        ({101: 9}, {101: 3}, {"book": 101, "limit": 8, "allowed": 5, "scope": "order"}),
        ({101: 4}, {101: 5}, {"book": 101, "limit": 8, "allowed": 3, "scope": "customer"}),
        ({101: 1}, {101: 8}, {"book": 101, "limit": 8, "allowed": 0, "scope": "customer"}),
        ({101: 2}, {101: 10}, {"book": 101, "limit": 8, "allowed": 0, "scope": "customer"}),
        ({101: 8}, {101: 1}, {"book": 101, "limit": 8, "allowed": 7, "scope": "customer"}),
        # Same book on two lines: merged first, 5 + 4 = 9 breaks the per-order limit.
        (
            rules.merge_quantities([(104, 5), (104, 4)]),
            {},
            {"book": 104, "limit": 8, "allowed": 8, "scope": "order"},
        ),
        # The first book is within every limit: the next one is still checked.
        ({101: 1, 102: 4}, {102: 5}, {"book": 102, "limit": 8, "allowed": 3, "scope": "customer"}),
        ({101: 1, 102: 9}, {}, {"book": 102, "limit": 8, "allowed": 8, "scope": "order"}),
        # Several breaches: the lowest book number is reported, whatever the request order.
        (
            {107: 9, 102: 1, 103: 20},
            {102: 8},
            {"book": 102, "limit": 8, "allowed": 0, "scope": "customer"},
        ),
    ],
)
def test_copy_limits_broken(
    requested: dict[int, int], already: dict[int, int], details: dict[str, object]
) -> None:
    with pytest.raises(DomainError) as caught:
        rules.check_copy_limits(requested, already)
    assert wire_error(caught.value).code == LIMIT_EXCEEDED
    assert caught.value.details == details
    assert str(details["book"]) in caught.value.message


def test_copy_limit_messages_are_whole_sentences() -> None:
    with pytest.raises(DomainError) as caught:
        rules.check_copy_limits({101: 9}, {101: 3})
    assert caught.value.message == (
        "At most 8 copies of book 101 can be bought in one order; you may order 5 copies more."
    )
    with pytest.raises(DomainError) as caught:
        rules.check_copy_limits({101: 4}, {101: 5})
    assert caught.value.message == (
        "You have already ordered 5 copies of book 101 and each customer may have at most 8,"
        " so you may order 3 copies more."
    )
    with pytest.raises(DomainError) as caught:
        rules.check_copy_limits({101: 8}, {101: 1})
    assert caught.value.message.startswith("You have already ordered 1 copy of book 101 ")


@pytest.mark.parametrize(
    ("requested", "already", "phrase"),
    [
        ({101: 9}, {}, "you may order 8 copies more"),
        ({101: 4}, {101: 5}, "you may order 3 copies more"),
        ({101: 2}, {101: 7}, "you may order 1 copy more"),
        ({101: 1}, {101: 8}, "you may order no more"),
    ],
)
def test_copy_limit_messages_say_how_many_are_left(
    requested: dict[int, int], already: dict[int, int], phrase: str
) -> None:
    with pytest.raises(DomainError, match=phrase):
        rules.check_copy_limits(requested, already)


# Fulfilment and restocking ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "in_stock", "expected"),
    [
        (3, 10, (3, 0)),
        (3, 3, (3, 0)),
        (3, 2, (2, 1)),
        (3, 0, (0, 3)),
        (3, -2, (0, 3)),  # a negative stock figure sells nothing
        (0, 5, (0, 0)),
        (8, 1, (1, 7)),
    ],
)
def test_split_fulfilment(quantity: int, in_stock: int, expected: tuple[int, int]) -> None:
    assert rules.split_fulfilment(quantity, in_stock) == expected


def test_split_fulfilment_refuses_a_negative_quantity() -> None:
    with pytest.raises(ValueError, match="cannot order"):
        rules.split_fulfilment(-1, 5)


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=-100, max_value=10**6))
def test_fulfilment_adds_up_and_never_oversells(quantity: int, in_stock: int) -> None:
    fulfilled, backordered = rules.split_fulfilment(quantity, in_stock)
    assert fulfilled + backordered == quantity
    assert fulfilled >= 0
    assert backordered >= 0
    assert max(in_stock, 0) - fulfilled >= 0
    assert backordered == 0 or fulfilled == max(in_stock, 0)  # stock is used up before back orders


@pytest.mark.parametrize(
    ("quantity", "outstanding", "expected"),
    [
        (0, [(1, 3)], ([], 0)),
        (5, [], ([], 5)),
        (5, [(1, 3)], ([(1, 3)], 2)),
        (3, [(1, 3)], ([(1, 3)], 0)),
        (2, [(1, 3), (2, 4)], ([(1, 2)], 0)),
        (5, [(1, 3), (2, 4)], ([(1, 3), (2, 2)], 0)),
        (10, [(1, 3), (2, 4)], ([(1, 3), (2, 4)], 3)),
        (4, [(7, 0), (8, 2), (9, 5)], ([(8, 2), (9, 2)], 0)),  # a line owed nothing is skipped
    ],
)
def test_allocate_restock(
    quantity: int,
    outstanding: list[tuple[int, int]],
    expected: tuple[list[tuple[int, int]], int],
) -> None:
    assert rules.allocate_restock(quantity, outstanding) == expected


def test_allocate_restock_refuses_a_negative_quantity() -> None:
    with pytest.raises(ValueError, match="cannot restock"):
        rules.allocate_restock(-1, [(1, 1)])


@given(
    st.integers(min_value=0, max_value=200),
    st.lists(st.integers(min_value=0, max_value=8), max_size=30),
)
def test_restock_conserves_copies_and_fills_oldest_first(quantity: int, owed: list[int]) -> None:
    outstanding = list(enumerate(owed, start=1))
    supplied, left = rules.allocate_restock(quantity, outstanding)
    given_to = dict(supplied)
    assert sum(given_to.values()) + left == quantity
    assert left >= 0
    assert all(copies > 0 for copies in given_to.values())
    assert [line for line, _ in supplied] == sorted(given_to)  # in the order they were owed
    for line, still_owed in outstanding:
        assert given_to.get(line, 0) <= still_owed
    # Oldest first: a line is short only if every later line got nothing and nothing is left.
    for line, still_owed in outstanding:
        if given_to.get(line, 0) < still_owed:
            assert left == 0
            assert all(later <= line for later in given_to)
    assert left == max(0, quantity - sum(owed))


# Lending ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("borrowed_at", "due_at"),
    [
        (NOW, datetime(2024, 3, 24, 12, 0, tzinfo=UTC)),
        (datetime(2024, 2, 20, 9, 30, tzinfo=UTC), datetime(2024, 3, 5, 9, 30, tzinfo=UTC)),
        (datetime(2023, 12, 25, tzinfo=UTC), datetime(2024, 1, 8, tzinfo=UTC)),
    ],
)
def test_due_date(borrowed_at: datetime, due_at: datetime) -> None:
    assert rules.due_date(borrowed_at) == due_at


@pytest.mark.parametrize(
    ("now", "current_due", "expected"),
    [
        (NOW, NOW + timedelta(days=5), NOW + timedelta(days=19)),  # early: from the due date
        (NOW, NOW, NOW + timedelta(days=14)),
        (NOW, NOW - timedelta(days=3), NOW + timedelta(days=14)),  # late: from now
    ],
)
def test_renewed_due_date(now: datetime, current_due: datetime, expected: datetime) -> None:
    assert rules.renewed_due_date(now, current_due) == expected


def test_lending_dates_refuse_naive_datetimes() -> None:
    naive = datetime(2024, 3, 10, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        rules.due_date(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        rules.renewed_due_date(NOW, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        rules.days_overdue(naive, NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        rules.renewed_due_date(naive, NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        rules.days_overdue(NOW, naive)


class _NoOffset(tzinfo):
    """A time zone that does not know its offset: as good as none."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None


@pytest.mark.parametrize(
    "moment", [datetime(2024, 3, 10, 12, 0), datetime(2024, 3, 10, 12, 0, tzinfo=_NoOffset())]
)
def test_a_datetime_without_an_offset_is_refused_everywhere(moment: datetime) -> None:
    message = "datetimes must be timezone-aware (UTC)"
    with pytest.raises(ValueError) as caught:
        rules.to_seconds(moment)
    assert str(caught.value) == message
    with pytest.raises(ValueError, match="timezone-aware"):
        rules.retry_after_s([], moment, 5, WINDOW)  # the clock itself
    with pytest.raises(ValueError, match="timezone-aware"):
        rules.retry_after_s([NOW, moment], NOW, 5, WINDOW)  # one failure's time


@pytest.mark.parametrize("active_loans", [0, 1, 4])
def test_can_borrow_below_the_cap(active_loans: int) -> None:
    rules.check_can_borrow(active_loans)


@pytest.mark.parametrize("active_loans", [5, 6])
def test_cannot_borrow_at_the_cap(active_loans: int) -> None:
    with pytest.raises(DomainError) as caught:
        rules.check_can_borrow(active_loans)
    assert wire_error(caught.value).code == LIMIT_EXCEEDED
    assert caught.value.details == {"limit": 5, "allowed": 0, "scope": "active_loans"}
    assert caught.value.message == (
        "You already have 5 books on loan, the most a member may have at once; return one to"
        " borrow another."
    )


@pytest.mark.parametrize("renewals", [0, 1])
def test_can_renew(renewals: int) -> None:
    rules.check_can_renew(renewals, held_by_others=False)


@pytest.mark.parametrize(
    ("renewals", "held", "code", "details"),
    [
        (0, True, CONFLICT, {}),
        (1, True, CONFLICT, {}),
        (2, False, LIMIT_EXCEEDED, {"limit": 2, "allowed": 0, "scope": "renewals"}),
        (3, False, LIMIT_EXCEEDED, {"limit": 2, "allowed": 0, "scope": "renewals"}),
        # Both broken: the renewal count is final, so it is the one reported.
        (2, True, LIMIT_EXCEEDED, {"limit": 2, "allowed": 0, "scope": "renewals"}),
    ],
)
def test_cannot_renew(renewals: int, held: bool, code: str, details: dict[str, object]) -> None:
    with pytest.raises(DomainError) as caught:
        rules.check_can_renew(renewals, held)
    assert wire_error(caught.value).code == code
    assert caught.value.details == details


def test_renewals_used_up_says_so() -> None:
    with pytest.raises(DomainError) as caught:
        rules.check_can_renew(2, held_by_others=False)
    assert caught.value.message == "This loan has already been renewed 2 times, the most allowed."


def test_renewal_blocked_by_a_hold_says_why() -> None:
    with pytest.raises(DomainError) as caught:
        rules.check_can_renew(0, held_by_others=True)
    assert caught.value.message == (
        "Another member is waiting for this book, so it cannot be renewed."
    )


@pytest.mark.parametrize(
    ("late_by", "days"),
    [
        (timedelta(days=-3), 0),
        (timedelta(seconds=-1), 0),
        (timedelta(0), 0),
        (timedelta(microseconds=1), 1),
        (timedelta(hours=23, minutes=59), 1),
        (timedelta(days=1), 1),
        (timedelta(days=1, seconds=1), 2),
        (timedelta(days=14), 14),
    ],
)
def test_days_overdue(late_by: timedelta, days: int) -> None:
    assert rules.days_overdue(NOW, NOW + late_by) == days


@pytest.mark.parametrize(
    ("copies", "on_loan", "kept", "free"),
    [
        (3, 0, 0, 3),
        (3, 1, 1, 1),
        (3, 2, 1, 0),
        (3, 3, 0, 0),
        (3, 3, 1, 0),  # never negative, even when the figures overlap
        (0, 0, 0, 0),
    ],
)
def test_free_copies(copies: int, on_loan: int, kept: int, free: int) -> None:
    assert rules.free_copies(copies, on_loan, kept) == free


# Login throttling ---------------------------------------------------------------------------

WINDOW = timedelta(minutes=15)


def _ago(*seconds: float) -> list[datetime]:
    return [NOW - timedelta(seconds=s) for s in seconds]


@pytest.mark.parametrize(
    ("failures", "limit", "expected"),
    [
        ([], 5, None),
        (_ago(1, 2, 3, 4), 5, None),
        (_ago(900, 901, 1000, 10, 20), 5, None),  # three have left the 15-minute window
        (_ago(10, 20, 30, 40, 50), 5, 850),  # oldest at 50 s ago leaves in 850 s
        (_ago(50, 40, 30, 20, 10), 5, 850),  # order of the input does not matter
        (_ago(10, 20, 30, 40, 50, 60, 70), 5, 850),  # the 5th most recent decides
        (_ago(899, 1, 2, 3, 4), 5, 1),
        (_ago(899.5, 1, 2, 3, 4), 5, 1),  # half a second left: rounded up, never 0
        (_ago(0.5), 1, 900),  # 899.5 s: rounded up
        (_ago(900, 1, 2, 3, 4), 5, None),  # exactly a window old: already gone
        (_ago(0), 1, 900),
        ([NOW + timedelta(seconds=30)], 1, 930),  # a clock running ahead still counts
        # A microsecond past a whole second is another second: never too early.
        ([NOW - WINDOW + timedelta(seconds=1, microseconds=1)], 1, 2),
        ([NOW - WINDOW + timedelta(seconds=1)], 1, 1),
    ],
)
def test_retry_after(failures: list[datetime], limit: int, expected: int | None) -> None:
    wait = rules.retry_after_s(failures, NOW, limit, WINDOW)
    assert wait == expected
    assert wait is None or type(wait) is int  # sent as a JSON integer (Retry-After style)


@pytest.mark.parametrize(("limit", "window"), [(0, WINDOW), (5, timedelta(0))])
def test_retry_after_refuses_nonsense_settings(limit: int, window: timedelta) -> None:
    with pytest.raises(ValueError) as caught:
        rules.retry_after_s([], NOW, limit, window)
    assert str(caught.value) == "the limit and the window must be positive"


@given(
    st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
    st.integers(min_value=1, max_value=6),
)
def test_retry_after_is_exactly_when_the_count_drops(ages: list[int], limit: int) -> None:
    failures = _ago(*ages)
    wait = rules.retry_after_s(failures, NOW, limit, WINDOW)
    if wait is None:
        return
    assert wait >= 1
    later = NOW + timedelta(seconds=wait)
    assert rules.retry_after_s(failures, later, limit, WINDOW) is None
    if wait > 1:
        sooner = later - timedelta(seconds=1)
        assert rules.retry_after_s(failures, sooner, limit, WINDOW) is not None


THROTTLE = rules.LoginThrottle(
    failures_per_user_and_address=5, failures_per_user=25, failures_per_address=100
)


@pytest.mark.parametrize(
    ("pair", "user", "address", "waits"),
    [
        (0, 0, 0, False),
        (4, 4, 4, False),
        (5, 5, 5, True),  # five from this address for this name
        (0, 80, 0, False),  # a clean address passes the per-name bar
        (1, 25, 1, True),  # an address that failed for this name does not
        (1, 24, 1, False),
        (0, 0, 100, True),  # the per-address bar holds whatever the name
    ],
)
def test_login_throttle_bars(pair: int, user: int, address: int, waits: bool) -> None:
    def times(count: int) -> list[datetime]:
        return [NOW - timedelta(seconds=60)] * count

    wait = rules.login_retry_after_s(THROTTLE, times(pair), times(user), times(address), NOW)
    assert (wait > 0) == waits
    if waits:
        assert wait == 15 * 60 - 60
