"""What people may type, checked where they type it, by the server's own table of rules.

The bounds come from protocol.COMMANDS and the name and password rules from rules.py, so the
client refuses just what the server would, with a sentence and without a round trip. Each
check returns the value or raises ValueError whose message is one sentence. What an argument
must be is said from the table and the details of a refusal, never from the server's wording.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import client_sentences as sentences
import client_views as views
import rules
from client_link import ServerError
from errors import DomainError
from protocol import (
    BAD_REQUEST,
    BOOK_REF,
    COMMANDS,
    CONFLICT,
    FORBIDDEN,
    INT,
    LIST,
    STR,
    Arg,
    ProtocolError,
    validate_fields,
)


def argument(cmd: str, name: str) -> Arg:
    """The table's Arg called name of cmd, or of the objects cmd's list argument holds."""
    command = COMMANDS.get(cmd)
    for arg in command.args if command is not None else ():
        if arg.name == name:
            return arg
        for item in arg.items:
            if item.name == name:
                return item
    raise KeyError(f"{cmd} has no argument {name!r}")


def has_argument(cmd: str, name: str) -> bool:
    """Whether the table lists an argument called name for cmd."""
    return any(arg.name == name for arg in COMMANDS[cmd].args)


def check_argument(cmd: str, name: str, value: Any, name_of: Callable[[str], str]) -> Any:
    """value when the table accepts it as cmd's argument name (one object of a list argument
    is checked against its fields); else ValueError, naming arguments with name_of."""
    arg = argument(cmd, name)
    try:
        if arg.kind == LIST and isinstance(value, dict):
            validate_fields(arg.items, value)
        else:
            validate_fields((arg,), {name: value})
    except ProtocolError as error:
        raise ValueError(sentence_must_be(cmd, error.details.get("argument"), name_of)) from None
    return value


def check_request(cmd: str, args: Mapping[str, Any], name_of: Callable[[str], str]) -> None:
    """Return if the table accepts these arguments of cmd (those absent are not checked)."""
    present = tuple(arg for arg in COMMANDS[cmd].args if arg.name in args)
    try:
        validate_fields(present, dict(args))
    except ProtocolError as error:
        raise ValueError(sentence_must_be(cmd, error.details.get("argument"), name_of)) from None


# What an argument must be, where the table's bounds do not say it all: a date's form and the
# order of two dates, the username's characters, the difficulties, a work key.
_MUST_BE = {
    "since": "must be a date such as 2026-11-01 (or a time such as 2026-11-01T09:30), "
    "no later than the last date",
    "until": "must be a date such as 2026-11-30 (or a time such as 2026-11-30T17:00)",
    "difficulty": f"must be {views.either(rules.DIFFICULTIES)}",
    "username": "must be 3 to 32 letters A-Z, digits, '_', '.' or '-'",
    "key": "must be an Open Library work key such as /works/OL45804W",
    "min_distance": "must be a number of miles, no more than the longest distance",
    "query": "must be words to search for",
    "email": "must be an address like name@example.org (one @, a domain with a dot, no spaces)",
}
_IDS = 2**31  # an upper bound this large only keeps a number an id: not worth saying


def sentence_refused(error: ServerError) -> str:
    """The server's refusal as the person should read it: a bad_request about an argument is
    said from details["argument"] and the command's row of the table; a blocked member, a
    temporary password and an account that cannot be deleted yet from their details; others
    as they come."""
    details = error.details
    if error.code == FORBIDDEN and details.get("blocked"):
        return sentences.sentence_blocked(error.cmd, details.get("reason"))
    if error.code == FORBIDDEN and details.get("must_change_password"):
        return sentences.CHOOSE_NEW_FIRST_SCRIPT
    if error.code == CONFLICT and "active_loans" in details:
        return sentences.sentence_cannot_delete(details)
    name = details.get("argument")
    if error.code != BAD_REQUEST or not isinstance(name, str):
        return error.message
    return sentence_must_be(error.cmd, name, sentences.argument_name)


def sentence_must_be(cmd: str, name: object, name_of: Callable[[str], str]) -> str:
    """What cmd's argument name must be, as one sentence naming it with name_of."""
    if not isinstance(name, str):
        return "The server's rules do not allow that; check what you typed."
    try:
        arg: Arg | None = argument(cmd, name)
    except KeyError:
        arg = None
    must = _MUST_BE.get(name) or (_must_be(arg) if arg is not None else "was not accepted")
    if name == "query" and arg is not None and arg.max_length is not None:
        must += f", at most {arg.max_length} characters long"
    sentence = f"{name_of(name)} {must}."
    return sentence[:1].upper() + sentence[1:]


def _must_be(arg: Arg) -> str:
    low, high = arg.minimum, arg.maximum
    if arg.kind == STR:
        if not arg.max_length:
            return "must be text"
        if arg.min_length:
            return f"must be {arg.min_length} to {arg.max_length} characters long"
        return f"must be at most {arg.max_length} characters long"
    if arg.kind == BOOK_REF:
        return "must be a guide book's number or its title"
    if arg.kind == LIST:
        return f"must hold {low or 0:,g} to {high or 0:,g} entries"
    what = "a whole number" if arg.kind == INT else "a number"
    if low is None:
        return f"must be {what}"
    if high is None or high >= _IDS:
        return f"must be {what} of {low:,g} or more"
    return f"must be {what} from {low:,g} to {high:,g}"


def most(cmd: str, name: str) -> int:
    """The largest whole number the table lets cmd's argument name be."""
    maximum = argument(cmd, name).maximum
    assert maximum is not None, f"{cmd}'s {name} has no maximum"
    return int(maximum)


def longest(cmd: str, name: str) -> int | None:
    """How many characters the table lets cmd's text argument name have."""
    return argument(cmd, name).max_length


def parse_miles(text: str, name: str = "min_distance") -> float:
    """A distance in miles that the walks search accepts as its argument name."""
    try:
        miles = float(text)
    except ValueError:
        miles = math.nan
    if math.isnan(miles):
        raise ValueError(
            f"{views.quoted(text)} is not a number of miles; type one such as 4 or 6.5."
        )
    arg = argument("search_walks", name)
    if arg.minimum is not None and miles < arg.minimum:
        raise ValueError(
            "The distance must be zero or more miles."
            if arg.minimum == 0
            else f"The distance must be at least {arg.minimum:g} miles."
        )
    if arg.maximum is not None and miles > arg.maximum:
        raise ValueError(f"{views.quoted(text)} is too many miles; enter at most {arg.maximum:,g}.")
    return miles


def check_moment(text: str) -> str:
    """A date or time that sales' window accepts, as the server reads it (ISO 8601)."""
    try:
        moment_of(text)
    except (ValueError, OverflowError):
        raise ValueError(
            f"{views.quoted(text)} is not a date; give one such as 2026-11-01."
        ) from None
    return text.strip()


def moment_of(text: str) -> datetime:
    """An ISO-8601 date or time in UTC (one without an offset is UTC), as the server reads it."""
    moment = datetime.fromisoformat(text.strip())
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)


def is_day(text: str) -> bool:
    """Whether text names a whole day (2026-11-30) rather than a moment (2026-11-30T09:30)."""
    try:
        date.fromisoformat(text.strip())
    except ValueError:
        return False
    return True


def until_sent(until: str) -> str:
    """sales' until for the last day or moment a person gives: the wire's until is exclusive,
    so a whole day is sent as the day after it, and the day itself is included."""
    if not is_day(until):
        return until.strip()
    try:
        return (date.fromisoformat(until.strip()) + timedelta(days=1)).isoformat()
    except OverflowError:
        raise ValueError(f"{views.quoted(until)} is later than any sale can be.") from None


def is_backwards(since: str, until: str) -> bool:
    """Whether a window from since to until (a day included, a moment not) holds no time."""
    start, end = moment_of(since), moment_of(until_sent(until))
    return start >= end if is_day(until) else start > end


def check_username(text: str) -> str:
    """A username the server's rule accepts (taken or not, only the server knows)."""
    try:
        return rules.validate_username(text)
    except DomainError as error:
        raise ValueError(error.message) from None


def check_email(text: str) -> str:
    """An email address the server's rule accepts."""
    try:
        return rules.validate_email(text.strip())
    except DomainError as error:
        raise ValueError(error.message) from None


def check_new_password(password: str) -> str:
    """A password the server's rules accept."""
    try:
        rules.validate_password(password)
    except DomainError as error:
        raise ValueError(error.message) from None
    return password


def areas_matching(text: str, areas: Iterable[str]) -> list[str]:
    """The areas the walks search would match: part of the name, ignoring case and spaces."""
    key = rules.match_key(text)
    return [area for area in areas if key in rules.match_key(area)]


def closest_area(text: str, areas: Iterable[str]) -> str | None:
    """The area a typo most likely meant ('peak distrct' or 'peek' -> 'Peak District')."""
    candidates: dict[str, str] = {}
    for area in areas:
        key = rules.match_key(area)
        for candidate in (key, *key.split()):
            candidates.setdefault(candidate, area)
    close = difflib.get_close_matches(rules.match_key(text), list(candidates), n=1, cutoff=0.6)
    return candidates[close[0]] if close else None
