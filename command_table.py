"""The command table: every command's arguments, who may run it, what it answers.

One row per command (PROTOCOL.md's commands and Waymark's additions) holds its whole contract:
its arguments with their kinds and bounds, whether it needs a login or an admin, whether it is
safe to send again (else it takes an idempotency key), whether it changes the catalogue, whether
its answer carries a token, the name of its answer's shape in results.py, and whether it waits
on bcrypt or Open Library (and so runs in the server's pool for slow requests). protocol.py
validates requests against it; commands.py finds each handler by its name; the client reads it
for what it may send again and which answers carry a token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Argument types. bool is a subclass of int in Python, so it is excluded explicitly:
# {"quantity": true} must be a bad_request, not one copy.
STR, INT, NUMBER, LIST, BOOL = "text", "whole number", "number", "list", "true or false"
BOOK_REF = "book"


@dataclass(frozen=True)
class Arg:
    """One argument of a command: its name, type, whether required, and bounds.

    A LIST argument with `items` holds objects, each checked against those Args.
    """

    name: str
    kind: str
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    items: tuple[Arg, ...] = ()
    min_length: int = 0
    # A LIST of plain values (not objects): each is checked as this Arg.
    each: Arg | None = None


@dataclass(frozen=True)
class Command:
    """Everything about one command: its arguments, who may run it, and whether a client may
    send it again after a broken connection (it changes nothing, or repeating it is harmless)."""

    args: tuple[Arg, ...] = ()
    needs_login: bool = True
    admin_only: bool = False
    safe_to_repeat: bool = False
    # Changes what the catalogue shows (stock, copies available): the server's in-memory
    # snapshot of the catalogue is dropped after it.
    changes_catalogue: bool = False
    # Its result carries a session token ("token"), which a client keeps to resume with.
    returns_token: bool = False
    # The name of its answer's shape in results.py (a TypedDict).
    result: str = "Empty"
    # Waits on bcrypt or on Open Library: answered in a pool of threads of its own, so that a
    # login storm or a slow upstream cannot hold the threads every other request needs.
    slow: bool = False

    @property
    def takes_idempotency_key(self) -> bool:
        """A write that needs a login and is not safe to repeat: a retry needs a key."""
        return self.needs_login and not self.safe_to_repeat


_ID = 2**53  # ids beyond JSON's safe integers cannot name a row
# PROTOCOL.md 1.2: a client's name for one write, so that sending it again does it once. ASCII
# only: \w would also take other scripts' letters and digits.
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{8,64}")
# An offset past 2**63 overflows SQLite's INTEGER and MySQL's LIMIT: bound it like an id.
_PAGING = (Arg("limit", INT, minimum=1, maximum=200), Arg("offset", INT, minimum=0, maximum=_ID))
_CREDENTIALS = (
    Arg("username", STR, True, max_length=64),
    Arg("password", STR, True, max_length=4096),
)
_WALK_FILTERS = (
    Arg("area", STR, max_length=200),
    Arg("min_distance", NUMBER, minimum=0, maximum=10_000),
    Arg("max_distance", NUMBER, minimum=0, maximum=10_000),
    Arg("difficulty", STR, max_length=50),
)
_USERNAME = Arg("username", STR, True, max_length=64)
_EMAIL = Arg("email", STR, max_length=254)  # rules.validate_email says what else it must be
MAX_ORDER_ITEMS = 50
# A book number is looked up, so any id-sized one is a fair question (0 and -5 are not_found).
_BOOK = Arg("book", BOOK_REF, True, minimum=-_ID, maximum=_ID)
_ORDER_ITEM = (_BOOK, Arg("quantity", INT, True, minimum=1, maximum=1000))


def _read(result: str, *args: Arg, **options: bool) -> Command:
    """A command that changes nothing a client could double: safe to send again."""
    return _command(result, args, safe=True, **{"needs_login": False, **options})


def _write(result: str, *args: Arg, **options: bool) -> Command:
    """A write: not safe to send again without an idempotency key (when it needs a login)."""
    return _command(result, args, safe=False, **{"needs_login": True, **options})


def _command(
    result: str,
    args: tuple[Arg, ...],
    *,
    safe: bool,
    needs_login: bool,
    admin_only: bool = False,
    catalogue: bool = False,
    token: bool = False,
    slow: bool = False,
) -> Command:
    # An admin-only command needs a login whatever the caller said.
    return Command(
        args, needs_login or admin_only, admin_only, safe, catalogue, token, result, slow
    )


COMMANDS: dict[str, Command] = {
    "hello": _read(
        "Hello",
    ),
    # For load balancers: answers without waiting on the database (see stats.DatabaseProbe).
    "health": _read(
        "Health",
    ),
    "stats": _read("Stats", admin_only=True),
    "register": _write("UserAnswer", *_CREDENTIALS, _EMAIL, needs_login=False, slow=True),
    # Logging in again, resuming or logging out again leaves the same state: safe to repeat.
    "login": _read("LoggedIn", *_CREDENTIALS, token=True, slow=True),
    "resume": _read("LoggedIn", Arg("token", STR, True, max_length=256), token=True),
    "logout": _read("Empty", needs_login=True),
    "whoami": _read("UserAnswer", needs_login=True),
    # Not safe to repeat: a second try would present the old password, which is no longer right.
    "change_password": _write(
        "NewToken",
        Arg("old_password", STR, True, max_length=4096),
        Arg("new_password", STR, True, max_length=4096),
        token=True,
        slow=True,
    ),
    "list_areas": _read(
        "Areas",
    ),
    "search_walks": _read("WalkPage", *_WALK_FILTERS, *_PAGING),
    # The filters mean what they mean for search_walks (PROTOCOL.md 1.1).
    "recommend_books": _read(
        "Recommendations", *_WALK_FILTERS, Arg("limit", INT, minimum=1, maximum=50)
    ),
    "guide_books": _read(
        "GuideBooks",
    ),
    "buy": _write(
        "OrderAnswer",
        Arg("items", LIST, True, minimum=1, maximum=MAX_ORDER_ITEMS, items=_ORDER_ITEM),
        catalogue=True,
    ),
    "orders": _read("Orders", needs_login=True),
    "cancel_backorder": _write(
        "Refund",
        Arg("order_id", INT, True, minimum=1, maximum=_ID),
        Arg("book", INT, True, minimum=1, maximum=_ID),
    ),
    "sales": _read(
        "Sales", Arg("since", STR, max_length=64), Arg("until", STR, max_length=64), admin_only=True
    ),
    "restock": _write(
        "Restocked",
        _BOOK,
        Arg("quantity", INT, True, minimum=1, maximum=100_000),
        admin_only=True,
        catalogue=True,
    ),
    "backorders": _read("Backorders", admin_only=True),
    "search_books": _read(
        "BookSearch",
        Arg("query", STR, True, max_length=200),
        Arg("limit", INT, minimum=1, maximum=100),
        slow=True,
    ),
    "catalogue": _read("CataloguePage", Arg("query", STR, max_length=200), *_PAGING),
    "add_book": _write(
        "BookAnswer",
        Arg("key", STR, True, max_length=64),
        Arg("copies", INT, True, minimum=1, maximum=1000),
        admin_only=True,
        catalogue=True,
        slow=True,
    ),
    "borrow": _write(
        "LoanAnswer", Arg("book_id", INT, True, minimum=1, maximum=_ID), catalogue=True
    ),
    "return": _write(
        "LoanAnswer", Arg("loan_id", INT, True, minimum=1, maximum=_ID), catalogue=True
    ),
    "renew": _write(
        "LoanAnswer", Arg("loan_id", INT, True, minimum=1, maximum=_ID), catalogue=True
    ),
    "history": _read("Loans", needs_login=True),
    "overdue": _read("Loans", admin_only=True),
    "hold": _write("HoldAnswer", Arg("book_id", INT, True, minimum=1, maximum=_ID), catalogue=True),
    # Listing holds settles lapsed reservations, which frees copies.
    "holds": Command(needs_login=True, safe_to_repeat=True, changes_catalogue=True, result="Holds"),
    "cancel_hold": _write(
        "Empty", Arg("hold_id", INT, True, minimum=1, maximum=_ID), catalogue=True
    ),
    # -- 1.2: notices --
    "set_email": _write("UserAnswer", _EMAIL),
    "notices": _read(
        "NoticeList",
        Arg("unread_only", BOOL),
        Arg("limit", INT, minimum=1, maximum=200),
        needs_login=True,
    ),
    "mark_read": _write(
        "Unread",
        Arg("ids", LIST, maximum=1000, each=Arg("ids", INT, minimum=1, maximum=_ID)),
        Arg("all", BOOL),
    ),
    # Making the same notices again finds nothing new, whoever asks: safe to repeat.
    "sweep_notices": _read("SweepCounts", admin_only=True),
    # -- 1.2: the desk --
    "members": _read("MemberPage", Arg("query", STR, max_length=64), *_PAGING, admin_only=True),
    "member": _read("MemberFile", _USERNAME, admin_only=True),
    # Safe to repeat, and so never stored for a retry: each call makes a new temporary
    # password and voids the last, which must never be kept in clear for a replay.
    "reset_password": Command(
        (_USERNAME,), True, True, safe_to_repeat=True, result="TemporaryPassword", slow=True
    ),
    "block_member": _write(
        "UserAnswer",
        _USERNAME,
        Arg("reason", STR, True, max_length=200, min_length=1),
        admin_only=True,
    ),
    "unblock_member": _write("UserAnswer", _USERNAME, admin_only=True),
    "lend": _write(
        "LoanAnswer",
        _USERNAME,
        Arg("book_id", INT, True, minimum=1, maximum=_ID),
        admin_only=True,
        catalogue=True,
    ),
    "checkin": _write(
        "LoanAnswer",
        Arg("loan_id", INT, True, minimum=1, maximum=_ID),
        admin_only=True,
        catalogue=True,
    ),
    # -- 1.2: members' own data --
    "my_data": _read("MyData", needs_login=True),
    "delete_account": _write(
        "Empty", Arg("password", STR, True, max_length=4096), catalogue=True, slow=True
    ),
}
