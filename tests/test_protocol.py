"""The sans-I/O protocol: framing at any chunk boundary, decoding, validation, encoding."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
