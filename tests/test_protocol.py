"""The sans-I/O protocol: framing at any chunk boundary, decoding, validation, encoding."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import command_table
import protocol
from protocol import LineDecoder, ProtocolError, decode_request, validate_args


def feed_in_chunks(data: bytes, cuts: list[int], limit: int = 100) -> list[bytes | str]:
    decoder = LineDecoder(limit)
    out: list[bytes | str] = []
    points = sorted({c % (len(data) + 1) for c in cuts})
    for start, end in zip([0, *points], [*points, len(data)], strict=True):
        for item in decoder.feed(data[start:end]):
            out.append(item.code if isinstance(item, ProtocolError) else item)
    return out


lines = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8)


@given(lines, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_split_of_the_input_gives_the_same_lines(
    messages: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(m + b"\n" for m in messages)
    assert (
        feed_in_chunks(data, cuts)
        == feed_in_chunks(data, [])
        == [m.rstrip(b"\r") for m in messages]
    )


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_any_split_gives_the_same_result_even_for_overlong_lines(
    data: bytes, cuts: list[int]
) -> None:
    assert feed_in_chunks(data, cuts, limit=30) == feed_in_chunks(data, [], limit=30)


def test_a_line_at_the_limit_passes_and_one_byte_more_fails() -> None:
    assert LineDecoder(10).feed(b"x" * 10 + b"\n") == [b"x" * 10]
    items = LineDecoder(10).feed(b"ok\n" + b"x" * 11 + b"\n")
    assert items[0] == b"ok"
    assert isinstance(items[1], ProtocolError) and items[1].code == protocol.LINE_TOO_LONG


def test_an_overlong_line_is_caught_before_its_newline_arrives() -> None:
    decoder = LineDecoder(10)
    assert decoder.feed(b"x" * 10) == []
    [error] = decoder.feed(b"y")
    assert isinstance(error, ProtocolError) and error.code == protocol.LINE_TOO_LONG
    assert decoder.feed(b"\n{}\n") == []  # the connection is finished


def test_a_request_decodes_with_its_id_and_args() -> None:
    request = decode_request(b'{"id": "a", "cmd": "search_walks", "args": {"area": "peak"}}')
    assert (request.id, request.cmd, request.args) == ("a", "search_walks", {"area": "peak"})
    assert decode_request(b'{"cmd": "hello"}').id is None


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"\xff\xfe", protocol.BAD_REQUEST),
        (b"{not json", protocol.BAD_REQUEST),
        (b"[1, 2]", protocol.BAD_REQUEST),
        (b'"hello"', protocol.BAD_REQUEST),
        (b"{}", protocol.BAD_REQUEST),
        (b'{"cmd": 5}', protocol.BAD_REQUEST),
        (b'{"cmd": "hello", "args": []}', protocol.BAD_REQUEST),
        (b'{"cmd": "hello", "id": {"x": 1}}', protocol.BAD_REQUEST),
        (b'{"cmd": "hello", "id": NaN}', protocol.BAD_REQUEST),
        (b'{"cmd": "fly"}', protocol.UNKNOWN_COMMAND),
        (b"[" * 100_000, protocol.BAD_REQUEST),
    ],
)
def test_bad_lines_get_clear_codes(line: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(line)
    assert caught.value.code == code
    assert caught.value.message.endswith(".")


def test_the_id_is_recovered_for_error_replies_when_possible() -> None:
    assert protocol.request_id_of(b'{"id": 9, "cmd": "fly"}') == 9
    assert protocol.request_id_of(b"{broken") is None


@pytest.mark.parametrize(
    ("cmd", "args", "argument"),
    [
        ("borrow", {"book_id": "3"}, "book_id"),
        ("borrow", {"book_id": True}, "book_id"),
        ("borrow", {"book_id": 1.5}, "book_id"),
        ("borrow", {}, "book_id"),
        ("search_walks", {"min_distance": "far"}, "min_distance"),
        ("search_walks", {"min_distance": -1}, "min_distance"),
        ("search_walks", {"limit": 201}, "limit"),
        ("search_walks", {"area": ["peak"]}, "area"),
        ("login", {"username": "ann", "password": 12345678}, "password"),
        ("buy", {"items": {"book": 101}}, "items"),
    ],
)
def test_a_wrong_type_names_the_argument(cmd: str, args: dict, argument: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        validate_args(cmd, args)
    assert caught.value.code == protocol.BAD_REQUEST
    assert f"'{argument}'" in caught.value.message


def test_unknown_arguments_are_ignored() -> None:
    assert validate_args("borrow", {"book_id": 3, "colour": "red"}) == {"book_id": 3}


@pytest.mark.parametrize(
    "items",
    [[], [{"book": 101, "quantity": 0}], [{"book": 101, "quantity": -1}],
     [{"book": 101, "quantity": 1.5}], [{"book": 101, "quantity": "2"}],
     [{"book": 101, "quantity": None}], [{"book": None, "quantity": 1}], ["101"]],
)  # fmt: skip
def test_bad_order_items_are_bad_requests(items: list) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.validate_args("buy", {"items": items})
    assert caught.value.code == protocol.BAD_REQUEST
    assert "items" in caught.value.message


def test_encode_is_one_compact_utf8_line() -> None:
    data = protocol.encode({"id": 1, "ok": True, "result": {"name": "Lord’s Seat"}})
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data) == {"id": 1, "ok": True, "result": {"name": "Lord’s Seat"}}


def test_error_responses_have_the_documented_shape() -> None:
    error = ProtocolError(protocol.NOT_FOUND, "No book numbered 999.")
    assert protocol.error_response(7, error) == {
        "id": 7,
        "ok": False,
        "error": {"code": "not_found", "message": "No book numbered 999.", "details": {}},
    }


@pytest.mark.parametrize(
    "line",
    [
        b'{"id": "\\ud800", "cmd": "hello"}',
        b'{"cmd": "\\udfff"}',
        b'{"cmd": "login", "args": {"username": "ann", "password": "\\ud83d"}}',
    ],
)
def test_unpaired_surrogates_are_bad_requests(line: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(line)
    assert caught.value.code == protocol.BAD_REQUEST
    assert protocol.request_id_of(line) is None


def test_an_infinite_id_is_refused_and_never_echoed() -> None:
    with pytest.raises(ProtocolError):
        decode_request(b'{"id": 1e400, "cmd": "hello"}')
    assert protocol.request_id_of(b'{"id": -1e400, "cmd": "hello"}') is None


def test_deep_nesting_is_a_bad_request_even_for_the_id_lookup() -> None:
    assert protocol.request_id_of(b"[" * 5000) is None


HUGE = 10**309  # past the largest double: math.isfinite() overflows on it


@pytest.mark.parametrize("request_id", [HUGE, -HUGE, 2**1024])
def test_an_integer_id_past_any_double_is_a_bad_request_not_a_crash(request_id: int) -> None:
    line = json.dumps({"id": request_id, "cmd": "hello"}).encode()
    with pytest.raises(ProtocolError) as caught:
        decode_request(line)
    assert caught.value.code == protocol.BAD_REQUEST
    assert protocol.request_id_of(line) is None


def test_large_integer_ids_a_double_can_hold_are_echoed() -> None:
    assert decode_request(json.dumps({"id": 2**64, "cmd": "hello"}).encode()).id == 2**64


@pytest.mark.parametrize(
    "line",
    [
        b'{"id": 7, "cmd": "login", "args": {"username": "ann", "password": "\\ud83d"}}',
        b'{"cmd": "\\udfff", "id": 7}',
        b'{"id": 7, "cmd": "hello", "\\ud800": 1}',
    ],
)
def test_an_unpaired_surrogate_elsewhere_keeps_the_id(line: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(line)
    assert caught.value.code == protocol.BAD_REQUEST
    assert protocol.request_id_of(line) == 7


def numeric_args() -> list[tuple[str, tuple[str, ...], protocol.Arg]]:
    """Every argument that may be a number, as (command, path to it, Arg), nested ones too."""
    found = []
    for name, command in protocol.COMMANDS.items():
        for arg in command.args:
            if arg.kind in (protocol.INT, protocol.NUMBER, protocol.BOOK_REF):
                found.append((name, (arg.name,), arg))
            for item in arg.items:
                if item.kind in (protocol.INT, protocol.NUMBER, protocol.BOOK_REF):
                    found.append((name, (arg.name, item.name), item))
    return found


NUMERIC_ARGS = numeric_args()


VALID_TEXT = {"key": "/works/OL45804W"}  # text arguments that the handlers check further


def valid_args(spec: tuple[protocol.Arg, ...]) -> dict:
    """A valid value for every required argument of spec."""
    args: dict = {}
    for arg in spec:
        if arg.required:
            if arg.kind == protocol.LIST:
                args[arg.name] = [valid_args(arg.items)]
            elif arg.kind == protocol.STR:
                args[arg.name] = VALID_TEXT.get(arg.name, "x")
            else:
                args[arg.name] = max(arg.minimum or 1, 1)
    return args


def args_with(cmd: str, path: tuple[str, ...], value: object) -> dict:
    """Valid arguments for cmd, but with value at path (nested ones in a one-item list)."""
    args = valid_args(protocol.COMMANDS[cmd].args)
    if len(path) == 1:
        args[path[0]] = value
    else:
        args[path[0]][0][path[1]] = value
    return args


def test_every_numeric_argument_is_bounded_on_both_sides() -> None:
    # An unbounded number reaches SQLite or MySQL, whose integers stop at 2**63.
    assert NUMERIC_ARGS
    for cmd, path, arg in NUMERIC_ARGS:
        assert arg.minimum is not None and arg.maximum is not None, (cmd, path)
        assert -(2**63) < arg.minimum <= arg.maximum < 2**63, (cmd, path)


extreme_numbers = st.one_of(
    st.integers(),
    st.sampled_from([HUGE, -HUGE, 2**1024, 2**64, 2**63, 2**63 - 1, 2**53 + 1, -(2**63), 0, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 5e-324, -0.0, 0.5]),
)


@given(st.sampled_from(NUMERIC_ARGS), extreme_numbers)
def test_any_number_in_any_numeric_argument_is_accepted_or_a_bad_request_naming_it(
    where: tuple[str, tuple[str, ...], protocol.Arg], value: float
) -> None:
    cmd, path, arg = where
    # The number arrives as a client would send it: JSON text, parsed by decode_request.
    line = json.dumps({"id": 1, "cmd": cmd, "args": args_with(cmd, path, value)}).encode()
    request = decode_request(line)
    try:
        clean = validate_args(cmd, request.args)
    except ProtocolError as error:
        assert error.code == protocol.BAD_REQUEST
        assert f"'{path[-1]}'" in error.message
        return
    accepted = clean[path[0]] if len(path) == 1 else clean[path[0]][0][path[1]]
    assert arg.minimum is not None and arg.maximum is not None
    assert arg.minimum <= accepted <= arg.maximum


def test_the_decoder_says_when_it_holds_part_of_a_line() -> None:
    decoder = LineDecoder(10)
    assert not decoder.has_partial_line
    assert decoder.feed(b'{"a"') == [] and decoder.has_partial_line
    assert decoder.feed(b":1}\n") == [b'{"a":1}'] and not decoder.has_partial_line
    decoder.feed(b"x" * 11)
    assert not decoder.has_partial_line  # failed: the connection is closing anyway


def test_a_pre_encoded_result_is_sent_as_the_same_bytes() -> None:
    result = {"walks": [{"name": "Lord’s Seat", "distance_miles": 5.5}], "total": 1}
    for request_id in (7, "abc", None, 2.5):
        plain = protocol.encode(protocol.ok_response(request_id, result))
        fast = protocol.encode(protocol.ok_response(request_id, protocol.PreEncoded(result)))
        assert fast == plain


def test_a_surrogate_spelled_with_an_upper_case_escape_is_still_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(b'{"id":1,"cmd":"hello","args":{"x":"\\uD800"}}')
    assert caught.value.code == protocol.BAD_REQUEST


# Exact answers: a client shows these sentences as they are and acts on the details -----------

ITEM = {"book": 101, "quantity": 1}

# Each row: (command, arguments, the argument named, the whole message).
REFUSALS = [
    ("borrow", {}, "book_id", "The argument 'book_id' is required."),
    ("borrow", {"book_id": None}, "book_id", "The argument 'book_id' is required."),
    ("borrow", {"book_id": "3"}, "book_id", "The argument 'book_id' must be a whole number."),
    ("borrow", {"book_id": True}, "book_id", "The argument 'book_id' must be a whole number."),
    ("borrow", {"book_id": 0}, "book_id", "The argument 'book_id' must be at least 1."),
    ("borrow", {"book_id": 2**53 + 1}, "book_id",
     "The argument 'book_id' must be at most 9007199254740992."),
    ("search_walks", {"area": 5}, "area", "The argument 'area' must be text."),
    ("search_walks", {"area": "x" * 201}, "area",
     "The argument 'area' is longer than 200 characters."),
    ("search_walks", {"area": "peak\x00"}, "area", "The argument 'area' contains a NUL character."),
    ("search_walks", {"min_distance": "far"}, "min_distance",
     "The argument 'min_distance' must be a number."),
    ("search_walks", {"min_distance": False}, "min_distance",
     "The argument 'min_distance' must be a number."),
    ("search_walks", {"min_distance": -0.5}, "min_distance",
     "The argument 'min_distance' must be at least 0."),
    ("search_walks", {"max_distance": 10_000.5}, "max_distance",
     "The argument 'max_distance' must be at most 10000."),
    ("search_walks", {"limit": 201}, "limit", "The argument 'limit' must be at most 200."),
    ("search_walks", {"limit": 0}, "limit", "The argument 'limit' must be at least 1."),
    ("login", {"username": "u" * 65, "password": "secret12"}, "username",
     "The argument 'username' is longer than 64 characters."),
    ("buy", {"items": "101"}, "items", "The argument 'items' must be a list."),
    ("buy", {"items": []}, "items", "The argument 'items' must not be empty."),
    ("buy", {"items": [ITEM] * (protocol.MAX_ORDER_ITEMS + 1)}, "items",
     "The argument 'items' may list at most 50 entries."),
    ("buy", {"items": ["101"]}, "items",
     "Item 1 of 'items' must be an object with 'book' and 'quantity'."),
    ("buy", {"items": [ITEM, 101]}, "items",
     "Item 2 of 'items' must be an object with 'book' and 'quantity'."),
    ("buy", {"items": [ITEM, {"book": 1.5, "quantity": 1}]}, "book",
     "In item 2 of 'items': The argument 'book' must be a book number or a title."),
    ("buy", {"items": [{"book": True, "quantity": 1}]}, "book",
     "In item 1 of 'items': The argument 'book' must be a book number or a title."),
    ("buy", {"items": [{"book": [101], "quantity": 1}]}, "book",
     "In item 1 of 'items': The argument 'book' must be a book number or a title."),
    ("buy", {"items": [{"book": None, "quantity": 1}]}, "book",
     "In item 1 of 'items': The argument 'book' is required."),
    ("buy", {"items": [{"book": 101, "quantity": 1001}]}, "quantity",
     "In item 1 of 'items': The argument 'quantity' must be at most 1000."),
    ("notices", {"unread_only": 1}, "unread_only",
     "The argument 'unread_only' must be true or false."),
    ("block_member", {"username": "ann", "reason": ""}, "reason",
     "The argument 'reason' must not be empty."),
    ("mark_read", {"ids": [1, 0]}, "ids", "The argument 'ids' must be at least 1."),
    ("mark_read", {"ids": [1, "2"]}, "ids", "The argument 'ids' must be a whole number."),
]  # fmt: skip


@pytest.mark.parametrize(("cmd", "args", "argument", "message"), REFUSALS)
def test_each_refusal_has_its_sentence_and_names_the_argument(
    cmd: str, args: dict, argument: str, message: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        validate_args(cmd, args)
    error = caught.value
    assert (error.code, error.message, error.details) == (
        protocol.BAD_REQUEST,
        message,
        {"argument": argument},
    )


# Each row: a command and arguments at the very edge of what it accepts.
AT_THE_LIMIT = [
    ("search_walks", {"area": "x" * 200, "difficulty": "d" * 50}),
    ("search_walks", {"limit": 200, "offset": 0}),
    ("search_walks", {"limit": 1, "offset": 2**53}),
    ("search_walks", {"min_distance": 2.5, "max_distance": 10_000}),
    ("search_walks", {"min_distance": 0, "max_distance": 10_000.0}),
    ("login", {"username": "u" * 64, "password": "p" * 4096}),
    ("borrow", {"book_id": 2**53}),
    ("buy", {"items": [{"book": 101, "quantity": 1000}] * protocol.MAX_ORDER_ITEMS}),
    ("buy", {"items": [{"book": "Peak District", "quantity": 1}]}),
    ("buy", {"items": [{"book": -(2**53), "quantity": 1}]}),
    ("block_member", {"username": "ann", "reason": "x"}),
    ("notices", {"unread_only": False, "limit": 200}),
    ("mark_read", {"ids": [1, 2**53], "all": True}),
    ("mark_read", {"ids": []}),
]


@pytest.mark.parametrize(("cmd", "args"), AT_THE_LIMIT)
def test_values_at_the_limit_are_accepted_as_they_are(cmd: str, args: dict) -> None:
    assert validate_args(cmd, args) == args


def test_a_spec_of_its_own_writes_its_bounds_as_people_write_numbers() -> None:
    spec = (
        protocol.Arg("x", protocol.NUMBER, minimum=0.5, maximum=2.0),
        protocol.Arg("xs", protocol.LIST, minimum=2.0, maximum=3),
        protocol.Arg("name", protocol.STR, min_length=3),
    )
    for values, message in [
        ({"x": 0.25}, "The argument 'x' must be at least 0.5."),
        ({"x": 3}, "The argument 'x' must be at most 2."),
        ({"xs": [1]}, "The argument 'xs' must list at least 2 entries."),
        ({"xs": [1, 2, 3, 4]}, "The argument 'xs' may list at most 3 entries."),
        ({"name": "ab"}, "The argument 'name' must be at least 3 characters."),
    ]:
        with pytest.raises(ProtocolError) as caught:
            protocol.validate_fields(spec, values)
        assert caught.value.message == message
    good = {"x": 0.5, "xs": [1, "two"], "name": "abc"}
    assert protocol.validate_fields(spec, good) == good


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"\xff\xfe", "The request line is not valid UTF-8."),
        (b"{not json", "The request line is not valid JSON."),
        (b'{"cmd": "hello", "args": {"x": NaN}}', "The request line is not valid JSON."),
        (b'{"cmd": "hello", "args": {"x": -Infinity}}', "The request line is not valid JSON."),
        (b"[1, 2]", "The request must be a JSON object."),
        (b'{"cmd": "hello", "id": true}', "The request id must be a string or a number."),
        (b'{"cmd": "hello", "id": [1]}', "The request id must be a string or a number."),
        (b'{"cmd": ""}', "The request needs a 'cmd' naming a command."),
        (b'{"cmd": "hello", "args": [1]}', "The request's 'args' must be an object."),
        (b'{"cmd": "hello", "args": "x"}', "The request's 'args' must be an object."),
        (
            b'{"cmd": "hello", "args": {"x": "\\ud800"}}',
            "The request contains an unpaired surrogate, which is not valid text.",
        ),
    ],
)
def test_a_bad_line_gets_its_sentence(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(line)
    assert (caught.value.code, caught.value.message, caught.value.details) == (
        protocol.BAD_REQUEST,
        message,
        {},
    )


def test_an_unknown_command_is_quoted_and_cut_to_64_characters() -> None:
    name = "fly" + "y" * 97
    with pytest.raises(ProtocolError) as caught:
        decode_request(json.dumps({"cmd": name}).encode())
    assert caught.value.code == protocol.UNKNOWN_COMMAND
    assert caught.value.message == f'This server has no command called "{name[:64]}".'
    assert caught.value.details == {"cmd": name[:64]}
    with pytest.raises(ProtocolError) as caught:
        decode_request('{"cmd": "volé"}'.encode())
    assert caught.value.message == 'This server has no command called "volé".'


@pytest.mark.parametrize("args", [b"", b', "args": null', b', "args": {}'])
def test_absent_or_null_args_are_no_arguments(args: bytes) -> None:
    request = decode_request(b'{"id": 3, "cmd": "hello"' + args + b"}")
    assert request == protocol.Request(3, "hello", {})


def test_ids_up_to_the_largest_double_are_echoed() -> None:
    for request_id in (int(sys.float_info.max), -int(sys.float_info.max), -1.5, "", True):
        line = json.dumps({"id": request_id, "cmd": "hello"}).encode()
        expected = None if request_id is True else request_id
        assert protocol.request_id_of(line) == expected
        if request_id is not True:
            assert decode_request(line).id == request_id


KEY = "k" * 8


@pytest.mark.parametrize("key", [KEY, "A-z_0-9" + "x" * 57, "x" * 64])
def test_a_write_keeps_its_idempotency_key(key: str) -> None:
    line = json.dumps({"id": 4, "cmd": "borrow", "args": {"book_id": 1}, "idempotency_key": key})
    assert decode_request(line.encode()) == protocol.Request(4, "borrow", {"book_id": 1}, key)


@pytest.mark.parametrize("key", ["k" * 7, "x" * 65, "key with spaces", "clé-unique", 12345678])
def test_a_malformed_idempotency_key_is_a_bad_request(key: object) -> None:
    line = json.dumps({"cmd": "borrow", "args": {"book_id": 1}, "idempotency_key": key})
    with pytest.raises(ProtocolError) as caught:
        decode_request(line.encode())
    assert (caught.value.code, caught.value.message, caught.value.details) == (
        protocol.BAD_REQUEST,
        "The 'idempotency_key' must be 8 to 64 letters, digits, '-' or '_'.",
        {"argument": "idempotency_key"},
    )


@pytest.mark.parametrize(("cmd", "key"), [("hello", KEY), ("hello", 5), ("register", KEY)])
def test_an_idempotency_key_is_ignored_where_none_is_taken(cmd: str, key: object) -> None:
    line = json.dumps({"cmd": cmd, "idempotency_key": key}).encode()
    assert decode_request(line).idempotency_key is None


@pytest.mark.parametrize(
    ("needs_login", "safe_to_repeat", "takes_key"),
    [(True, False, True), (True, True, False), (False, False, False), (False, True, False)],
)
def test_only_a_logged_in_write_takes_an_idempotency_key(
    needs_login: bool, safe_to_repeat: bool, takes_key: bool
) -> None:
    command = protocol.Command(needs_login=needs_login, safe_to_repeat=safe_to_repeat)
    assert command.takes_idempotency_key is takes_key


ARG = protocol.Arg("x", protocol.STR)


# The table is built once, at import, so its builders are tested by calling them here.
@pytest.mark.parametrize(
    ("build", "options", "expected"),
    [
        ("read", {}, {}),
        ("read", {"needs_login": True}, {"needs_login": True}),
        ("read", {"admin_only": True}, {"needs_login": True, "admin_only": True}),
        ("read", {"token": True}, {"returns_token": True}),
        ("write", {}, {"needs_login": True, "safe_to_repeat": False}),
        ("write", {"needs_login": False}, {"safe_to_repeat": False}),
        (
            "write",
            {"needs_login": False, "admin_only": True},
            {"needs_login": True, "admin_only": True, "safe_to_repeat": False},
        ),
        (
            "write",
            {"catalogue": True, "token": True},
            {"needs_login": True, "safe_to_repeat": False, "changes_catalogue": True,
             "returns_token": True},
        ),
    ],
)  # fmt: skip
def test_reads_are_safe_to_repeat_writes_are_not_and_an_admin_is_logged_in(
    build: str, options: dict, expected: dict
) -> None:
    builder = command_table._read if build == "read" else command_table._write
    built = builder("Shape", ARG, **options)
    fields = {
        "needs_login": False,
        "admin_only": False,
        "safe_to_repeat": True,
        "changes_catalogue": False,
        "returns_token": False,
        **expected,
    }
    assert built == protocol.Command((ARG,), result="Shape", **fields)
    assert builder("Shape").args == ()


def test_the_decoder_strips_only_the_carriage_return_of_a_crlf_line_end() -> None:
    decoder = LineDecoder(20)
    assert decoder.failed is False
    assert decoder.feed(b'{"cmd":"hello"}\r\nMAX\r\r\nX\n') == [b'{"cmd":"hello"}', b"MAX", b"X"]


def test_an_overlong_line_says_the_limit_in_words_and_details() -> None:
    [error] = LineDecoder(10).feed(b"x" * 11)
    assert isinstance(error, ProtocolError)
    assert (error.code, error.message, error.details) == (
        protocol.LINE_TOO_LONG,
        "The request line is longer than the limit of 10 bytes.",
        {"max_line_bytes": 10},
    )


def test_a_protocol_error_reads_as_its_message() -> None:
    error = ProtocolError(protocol.CONFLICT, "Already returned.")
    assert (str(error), error.details) == ("Already returned.", {})


def test_encode_writes_the_exact_compact_bytes() -> None:
    message = protocol.ok_response(1, {"name": "Lord’s Seat", "miles": 2.5})
    assert message == {"id": 1, "ok": True, "result": {"name": "Lord’s Seat", "miles": 2.5}}
    expected = '{"id":1,"ok":true,"result":{"name":"Lord’s Seat","miles":2.5}}\n'
    assert protocol.encode(message) == expected.encode()
    with pytest.raises(ValueError):
        protocol.encode(protocol.ok_response(1, {"miles": float("nan")}))


def test_a_pre_encoded_result_is_not_encoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    result = protocol.PreEncoded({"walks": [{"name": "Lord’s Seat"}], "total": 1})
    encoded = []
    real_dumps = protocol.dumps

    def counting_dumps(value: object) -> str:
        encoded.append(value)
        return real_dumps(value)

    monkeypatch.setattr(protocol, "dumps", counting_dumps)
    line = protocol.encode(protocol.ok_response(7, result))
    assert encoded == [7]  # only the id: the result's JSON is the one made with it
    assert json.loads(line) == {"id": 7, "ok": True, "result": dict(result)}


def test_a_replayed_result_is_sent_as_it_was_and_says_so() -> None:
    result = protocol.Replayed({"loan": {"id": 5}})
    response = protocol.ok_response(9, result)
    assert response == {"id": 9, "ok": True, "result": {"loan": {"id": 5}}, "replayed": True}
    assert type(response["result"]) is dict  # the marker stays out of the answer
    assert protocol.encode(response) == (
        b'{"id":9,"ok":true,"result":{"loan":{"id":5}},"replayed":true}\n'
    )
    assert "replayed" not in protocol.ok_response(9, {"loan": {"id": 5}})
