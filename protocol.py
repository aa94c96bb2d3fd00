"""Waymark wire protocol, version 1: framing, validation, error codes, with no I/O.

Feed bytes to a LineDecoder and get lines back; decode each line into a Request; encode
responses with encode(). Every layer raises ProtocolError, which the server turns into an
error line. See docs/PROTOCOL.md for the contract this implements.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any

from command_table import (
    BOOK_REF,
    BOOL,
    COMMANDS,
    IDEMPOTENCY_KEY,
    INT,
    LIST,
    MAX_ORDER_ITEMS,
    NUMBER,
    STR,
    Arg,
    Command,
)
from encoded import PreEncoded, dumps

# The table's names are the protocol's too: a client or test may read them from here.
__all__ = [
    "BOOK_REF", "BOOL", "COMMANDS", "IDEMPOTENCY_KEY", "INT", "LIST", "MAX_ORDER_ITEMS",
    "NUMBER", "STR", "Arg", "Command", "PreEncoded", "dumps",
]  # fmt: skip

PROTOCOL_VERSION = 1
DEFAULT_MAX_LINE_BYTES = 65_536

BAD_REQUEST = "bad_request"
UNKNOWN_COMMAND = "unknown_command"
LINE_TOO_LONG = "line_too_long"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
INVALID_CREDENTIALS = "invalid_credentials"
RATE_LIMITED = "rate_limited"
USERNAME_TAKEN = "username_taken"
WEAK_PASSWORD = "weak_password"  # noqa: S105 (an error code, not a password)
NOT_FOUND = "not_found"
LIMIT_EXCEEDED = "limit_exceeded"
UNAVAILABLE = "unavailable"
CONFLICT = "conflict"
UPSTREAM_UNAVAILABLE = "upstream_unavailable"
SERVER_BUSY = "server_busy"
INTERNAL = "internal"

ERROR_CODES = frozenset(
    {
        BAD_REQUEST, UNKNOWN_COMMAND, LINE_TOO_LONG, UNAUTHORIZED, FORBIDDEN,
        INVALID_CREDENTIALS, RATE_LIMITED, USERNAME_TAKEN, WEAK_PASSWORD, NOT_FOUND,
        LIMIT_EXCEEDED, UNAVAILABLE, CONFLICT, UPSTREAM_UNAVAILABLE, SERVER_BUSY, INTERNAL,
    }
)  # fmt: skip


class ProtocolError(Exception):
    """A failure every layer may raise; the server sends it as one error line."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass(frozen=True)
class Request:
    """A decoded, validated request line."""

    id: str | int | float | None
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)
    # Only for a command that takes one (Command.takes_idempotency_key); None otherwise.
    idempotency_key: str | None = None


class LineDecoder:
    """Splits a byte stream into lines, whatever the chunk boundaries, enforcing a size cap.

    feed() returns complete lines (without the newline). Once a line exceeds the cap it
    returns a ProtocolError(line_too_long) as its last item; the caller must then close.
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES):
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self.failed = False

    @property
    def has_partial_line(self) -> bool:
        """True while the decoder holds the start of a line whose newline has not come yet."""
        return bool(self._buffer) and not self.failed

    def feed(self, data: bytes) -> list[bytes | ProtocolError]:
        """Add received bytes; return the lines they complete."""
        if self.failed:
            return []
        self._buffer += data
        items: list[bytes | ProtocolError] = []
        start = 0
        while (end := self._buffer.find(b"\n", start)) != -1:
            line = bytes(self._buffer[start:end])
            if len(line) > self.max_line_bytes:
                return self._fail(items)
            items.append(line.rstrip(b"\r"))
            start = end + 1
        del self._buffer[:start]
        if len(self._buffer) > self.max_line_bytes:
            return self._fail(items)
        return items

    def _fail(self, items: list[bytes | ProtocolError]) -> list[bytes | ProtocolError]:
        self.failed = True
        self._buffer.clear()
        message = f"The request line is longer than the limit of {self.max_line_bytes} bytes."
        items.append(ProtocolError(LINE_TOO_LONG, message, {"max_line_bytes": self.max_line_bytes}))
        return items


def encode(message: dict[str, Any]) -> bytes:
    """One message as a compact JSON line ending in a newline."""
    result = message.get("result")
    if isinstance(result, PreEncoded):
        # The same bytes json.dumps would write for {"id", "ok", "result"}, in that order.
        return f'{{"id":{dumps(message["id"])},"ok":true,"result":{result.json}}}\n'.encode()
    return (dumps(message) + "\n").encode()


class Replayed(dict[str, Any]):
    """A result stored for an idempotency key and answered again: sent with "replayed": true."""


def ok_response(request_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    """A success response; a Replayed result says so at the top level."""
    if isinstance(result, Replayed):
        return {"id": request_id, "ok": True, "result": dict(result), "replayed": True}
    return {"id": request_id, "ok": True, "result": result}


def error_response(request_id: Any, error: ProtocolError) -> dict[str, Any]:
    """An error response."""
    return {
        "id": request_id,
        "ok": False,
        "error": {"code": error.code, "message": error.message, "details": error.details},
    }


@dataclass(frozen=True)
class Reply:
    """One decoded response line: a result, or an error's code, message and details."""

    id: Any
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    code: str = ""
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def decode_reply(line: bytes) -> Reply:
    """Parse one response line; raises ValueError when it is not a response of this protocol."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        raise ValueError("The reply is not valid JSON.") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise ValueError("The reply is not a response object with an 'ok' field.")
    if obj["ok"]:
        result = obj.get("result")
        return Reply(obj.get("id"), True, result=result if isinstance(result, dict) else {})
    error = obj.get("error")
    error = error if isinstance(error, dict) else {}
    details = error.get("details")
    return Reply(
        obj.get("id"),
        False,
        code=str(error.get("code") or INTERNAL),
        message=str(error.get("message") or "The server reported an error."),
        details=details if isinstance(details, dict) else {},
    )


def request_id_of(line: bytes) -> Any:
    """The id of a request line if one can be read from it, else None (for error replies).

    A line refused for something elsewhere in it (an unpaired surrogate in an argument) still
    gets its id back.
    """
    try:
        obj = _parse_json_object(line)
    except ProtocolError:
        return None
    request_id = obj.get("id")
    return request_id if _is_valid_id(request_id) else None


def decode_request(line: bytes) -> Request:
    """Parse one line into a Request whose cmd is known and whose args are valid.

    Raises ProtocolError (bad_request or unknown_command). The arguments are checked
    against COMMANDS; unknown keys are dropped.
    """
    obj = _parse_object(line)
    request_id = obj.get("id")
    if not _is_valid_id(request_id):
        raise ProtocolError(BAD_REQUEST, "The request id must be a string or a number.")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise ProtocolError(BAD_REQUEST, "The request needs a 'cmd' naming a command.")
    if cmd not in COMMANDS:
        raise ProtocolError(
            UNKNOWN_COMMAND, f"This server has no command called {_quote(cmd)}.", {"cmd": cmd[:64]}
        )
    args = obj.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError(BAD_REQUEST, "The request's 'args' must be an object.")
    key = obj.get("idempotency_key")
    if key is not None and COMMANDS[cmd].takes_idempotency_key:
        if not isinstance(key, str) or not IDEMPOTENCY_KEY.fullmatch(key):
            raise ProtocolError(
                BAD_REQUEST,
                "The 'idempotency_key' must be 8 to 64 letters, digits, '-' or '_'.",
                {"argument": "idempotency_key"},
            )
        return Request(request_id, cmd, args, key)
    return Request(request_id, cmd, args)


def validate_args(cmd: str, args: dict[str, Any]) -> dict[str, Any]:
    """The known arguments of a command, type-checked; raises bad_request naming the argument."""
    return validate_fields(COMMANDS[cmd].args, args)


def validate_fields(spec: tuple[Arg, ...], values: dict[str, Any]) -> dict[str, Any]:
    """Check each Arg of spec in values; return only the known ones (absent optional = missing)."""
    clean: dict[str, Any] = {}
    for arg in spec:
        value = values.get(arg.name)
        if value is None:
            if arg.required:
                raise _refused(arg, "is required")
            continue
        clean[arg.name] = _check(arg, value)
    return clean


def _refused(arg: Arg, what: str) -> ProtocolError:
    """The bad_request that names an argument: "The argument 'x' <what>."."""
    return ProtocolError(BAD_REQUEST, f"The argument '{arg.name}' {what}.", {"argument": arg.name})


def _check(arg: Arg, value: Any) -> Any:
    if arg.kind == BOOK_REF:
        kind_ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        wanted = "a book number or a title"
    elif arg.kind == STR:
        kind_ok, wanted = isinstance(value, str), "text"
    elif arg.kind == INT:
        kind_ok, wanted = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif arg.kind == BOOL:
        kind_ok, wanted = isinstance(value, bool), "true or false"
    elif arg.kind == NUMBER:
        # An int is always finite; math.isfinite() would overflow on one past a double (10**309),
        # and the bounds below compare ints and floats exactly.
        kind_ok = _is_number(value) and (isinstance(value, int) or math.isfinite(value))
        wanted = "a number"
    else:
        kind_ok, wanted = isinstance(value, list), "a list"
    if not kind_ok:
        raise _refused(arg, f"must be {wanted}")
    if isinstance(value, str):
        if len(value) < arg.min_length:
            raise _refused(
                arg,
                "must not be empty"
                if arg.min_length == 1
                else f"must be at least {arg.min_length} characters",
            )
        if arg.max_length is not None and len(value) > arg.max_length:
            raise _refused(arg, f"is longer than {arg.max_length} characters")
        if "\x00" in value:
            raise _refused(arg, "contains a NUL character")
    if _is_number(value):
        if arg.minimum is not None and value < arg.minimum:
            raise _refused(arg, f"must be at least {_number(arg.minimum)}")
        if arg.maximum is not None and value > arg.maximum:
            raise _refused(arg, f"must be at most {_number(arg.maximum)}")
    if isinstance(value, list):
        return _check_list(arg, value)
    return value


def _check_list(arg: Arg, values: list[Any]) -> list[Any]:
    if arg.minimum is not None and len(values) < arg.minimum:
        raise _refused(
            arg,
            f"must list at least {_number(arg.minimum)} entries"
            if arg.minimum > 1
            else "must not be empty",
        )
    if arg.maximum is not None and len(values) > arg.maximum:
        raise _refused(arg, f"may list at most {_number(arg.maximum)} entries")
    if arg.each is not None:
        return [_check(arg.each, value) for value in values]
    if not arg.items:
        return values
    fields = " and ".join(f"'{item.name}'" for item in arg.items)
    clean = []
    for position, item in enumerate(values, start=1):
        if not isinstance(item, dict):
            raise ProtocolError(
                BAD_REQUEST,
                f"Item {position} of '{arg.name}' must be an object with {fields}.",
                {"argument": arg.name},
            )
        try:
            clean.append(validate_fields(arg.items, item))
        except ProtocolError as error:
            error.message = f"In item {position} of '{arg.name}': {error.message}"
            raise
    return clean


def _parse_object(line: bytes) -> dict[str, Any]:
    obj = _parse_json_object(line)
    # Valid UTF-8 holds no surrogate; only a \u escape can spell one, so most lines need no
    # second pass over their values.
    if b"\\u" in line and not _is_text(obj):
        raise ProtocolError(
            BAD_REQUEST, "The request contains an unpaired surrogate, which is not valid text."
        )
    return obj


def _parse_json_object(line: bytes) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(BAD_REQUEST, "The request line is not valid UTF-8.") from None
    try:
        obj = _DECODER.decode(text)
    except (ValueError, RecursionError):
        raise ProtocolError(BAD_REQUEST, "The request line is not valid JSON.") from None
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_REQUEST, "The request must be a JSON object.")
    return obj


def _is_text(value: Any) -> bool:
    # JSON may spell an unpaired surrogate (\ud800) that no UTF-8 text can hold: refuse it
    # once, on arrival, rather than fail later when echoing it, hashing it or storing it.
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject_constant(name: str) -> None:
    # NaN and Infinity are not JSON; Python's parser accepts them unless told not to.
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.loads(text, parse_constant=...) builds a new decoder for every line.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _is_valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return _is_text(value)
    if isinstance(value, float):
        return math.isfinite(value)  # 1e400 parses as infinity, which JSON cannot echo
    # An integer id must be one a double can hold, as every JSON reader can; 10**309 is not
    # (and math.isfinite() would raise OverflowError on it). The comparison is exact.
    return _is_number(value) and -sys.float_info.max <= value <= sys.float_info.max


def _is_number(value: Any) -> bool:
    # bool is a subclass of int in Python; true is not a number on the wire.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _quote(text: str) -> str:
    return json.dumps(text[:64], ensure_ascii=False)
