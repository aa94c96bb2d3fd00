"""What people may type, checked where they type it, by the server's own table and rules.

The bounds come from protocol.COMMANDS and the name and password rules from rules.py, so the
client refuses just what the server would, with a sentence and without a round trip. Each
check returns the value or raises ValueError whose message is one sentence.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import client_views as views
import rules
from errors import DomainError
from protocol import COMMANDS, LIST, Arg, ProtocolError, validate_fields


def argument(cmd: str, name: str) -> Arg:
    """The table's Arg called name of cmd, or of the objects cmd's list argument holds."""
    for arg in COMMANDS[cmd].args:
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
        raise ValueError(views.plain_argument_message(error.message, name_of)) from None
    return value


def check_request(cmd: str, args: Mapping[str, Any], name_of: Callable[[str], str]) -> None:
    """Return if the table accepts these arguments of cmd (those absent are not checked)."""
    present = tuple(arg for arg in COMMANDS[cmd].args if arg.name in args)
    try:
        validate_fields(present, dict(args))
    except ProtocolError as error:
        raise ValueError(views.plain_argument_message(error.message, name_of)) from None


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


def check_username(text: str) -> str:
    """A username the server's rule accepts (taken or not, only the server knows)."""
    try:
        return rules.validate_username(text)
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
