"""The script command line's subcommands: one table, from each one's arguments to the request
it sends and how its result is shown, and the types that check what the arguments accept."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import client_checks as checks
import client_datafile as datafile
import client_sentences as sentences
import client_views as views
import rules
from client_basket import GuideBook
from client_link import Connection, JsonDict, UsageError

# What the arguments accept -------------------------------------------------------------------


def parse_order_item(text: str) -> JsonDict:
    """'101:2' -> {'book': 101, 'quantity': 2}; a title may stand for the number; no ':N' is 1.
    More copies than one order may hold of a book (rules.py) is refused here, as the server would."""
    book, colon, quantity = text.rpartition(":")
    if not colon:
        book, quantity = text, "1"
    book = book.strip()
    if not book:
        raise ValueError(f"{text!r} names no book; write BOOK:COPIES, for example 101:2.")
    try:
        copies = int(quantity)
    except ValueError:
        raise ValueError(f"{quantity!r} in {text!r} is not a whole number of copies.") from None
    if copies < 1:
        raise ValueError(f"{text!r} must order at least one copy.")
    if copies > rules.MAX_COPIES_PER_ORDER:
        raise ValueError(_too_many(f"{views.quoted(text)} asks for {copies}"))
    return {"book": book_reference(book), "quantity": copies}


def _too_many(asked: str) -> str:
    return (
        f"One order may hold at most {rules.MAX_COPIES_PER_ORDER} copies of a guide book; {asked}."
    )


def book_reference(text: str) -> int | str:
    """A guide book's number, or else its title."""
    return int(text) if text.isdigit() else text


def argument_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    # argparse prints an ArgumentTypeError's message; a plain ValueError gets a generic one.
    def converted(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return converted


def _whole_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a whole number of 1 or more.")
    return int(text)


def _offset(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number of 0 or more.")
    return int(text)


def port_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{text!r} is not a port number from 1 to 65535.")
    return int(text)


def _miles(name: str) -> Callable[[str], float]:
    return argument_type(lambda text: checks.parse_miles(text, name))


def _difficulty(text: str) -> str:
    if text.strip().lower() not in rules.DIFFICULTIES:
        raise ValueError(sentences.sentence_not_a_difficulty(text))
    return text.strip().lower()


# The subcommands: one table, from each one's arguments to how its result is shown ------------

Argument = tuple[tuple[str, ...], dict[str, Any]]  # what argparse's add_argument is given


def _arg(*flags: str, **options: Any) -> Argument:
    return flags, options


def _given(*names: str) -> Callable[[argparse.Namespace], JsonDict]:
    # The request's arguments are these options as given; one left out is not sent.
    def args(options: argparse.Namespace) -> JsonDict:
        chosen = {name: getattr(options, name) for name in names}
        return {name: value for name, value in chosen.items() if value is not None}

    return args


def _walk_filters(*paging: str) -> Callable[[argparse.Namespace], JsonDict]:
    # The server refuses a shortest walk longer than the longest; so does the command line.
    def args(options: argparse.Namespace) -> JsonDict:
        names = ("area", "difficulty", "min_distance", "max_distance", *paging)
        chosen = _given(*names)(options)
        low, high = chosen.get("min_distance"), chosen.get("max_distance")
        if low is not None and high is not None and low > high:
            raise UsageError(
                f"--min-distance ({low:g}) must not be more than --max-distance ({high:g})."
            )
        return chosen

    return args


def _query(required: bool) -> Callable[[argparse.Namespace], JsonDict]:
    # The words are one query; catalogue may have none (or only spaces), and then lists every
    # book; search_books needs some, and the server refuses only spaces as it refuses none.
    def args(options: argparse.Namespace) -> JsonDict:
        query = rules.normalise_spaces(" ".join(options.query or ()))
        if required and not query:
            raise UsageError("QUERY must not be empty: give words to search for.")
        return ({"query": query} if query else {}) | _given("limit")(options)

    return args


def _order(options: argparse.Namespace) -> JsonDict:
    # Items naming the same book add up, and one order may hold at most 8 copies of a book. A
    # title is matched as the server matches it (a title and its number are not known to agree).
    asked: dict[int | str, int] = {}
    for item in options.items:
        book = item["book"]
        key = book if isinstance(book, int) else rules.match_key(book)
        asked[key] = asked.get(key, 0) + item["quantity"]
        if asked[key] > rules.MAX_COPIES_PER_ORDER:
            named = f"book {book}" if isinstance(book, int) else views.quoted(book)
            raise UsageError(_too_many(f"these items ask for {asked[key]} copies of {named}"))
    return {"items": options.items}


def _sales_window(options: argparse.Namespace) -> JsonDict:
    # --until is the last day, included: the wire's until is exclusive, so a day is sent as the
    # day after it (a time is sent as it is, the moment the window ends before).
    window = _given("since", "until")(options)
    since, until = window.get("since"), window.get("until")
    if until:
        try:
            window["until"] = checks.until_sent(until)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if since and until and checks.is_backwards(since, until):
        raise UsageError(f"--since ({since}) must not be later than --until ({until}).")
    return window


def _sales_heading(options: argparse.Namespace) -> str:
    until = options.until
    return views.sales_title(options.since, until, last_day=not until or checks.is_day(until))


def _area_advice(connection: Connection, args: JsonDict, result: JsonDict) -> list[str]:
    # As the menus do: when nothing matches an area no walk is in, say what was likely meant.
    area = args.get("area")
    if not area or result.get("walks") or result.get("books"):
        return []
    areas = [str(entry["area"]) for entry in connection.call("list_areas")["areas"]]
    if checks.areas_matching(area, areas):
        return []
    if (guess := checks.closest_area(area, areas)) is None:
        return [f"No area matches {views.quoted(area)}; the areas subcommand lists them."]
    return [
        f"No area matches {views.quoted(area)}. Did you mean {guess}? "
        f"Try --area {shlex.quote(guess)}."
    ]


def _logged_in(result: JsonDict) -> views.Shown:
    user = result["user"]
    email = f", {views.clean_text(user['email'])}" if user.get("email") else ""
    shown = [f"Logged in as {user['username']} ({user.get('role', 'member')}{email})."]
    if result.get("must_change_password"):
        shown.append(sentences.CHOOSE_NEW_FIRST_SCRIPT)
    return shown


# The 1.2 subcommands: messages, the member's own account, and the desk ------------------------


def _email(options: argparse.Namespace) -> JsonDict:
    # One of ADDRESS and --remove: an address to set, or null to take it off.
    if options.remove == (options.email is not None):
        raise UsageError("Give an email ADDRESS to set, or --remove to take yours off; not both.")
    return {"email": None if options.remove else options.email}


def _messages(options: argparse.Namespace) -> JsonDict:
    return {"unread_only": True} if options.unread else {}


def _mark_shown_read(
    connection: Connection, options: argparse.Namespace, result: JsonDict
) -> JsonDict:
    # --mark-read: the messages listed that were new are marked read, and counted.
    if not options.mark_read:
        return result
    new = [notice["id"] for notice in result["notices"] if not notice.get("read")]
    unread = connection.call("mark_read", ids=new)["unread"] if new else result["unread"]
    return {**result, "unread": unread, "marked_read": len(new)}


def _messages_shown(result: JsonDict) -> views.Shown:
    notices = result["notices"]
    shown: list[str] = views.notices_shown(notices) or ["No messages."]
    if "marked_read" in result:
        shown.append(f"({views.plural(result['marked_read'], 'message')} marked read.)")
    elif unread := result["unread"]:
        shown.append(f"({views.plural(unread, 'new message')}; --mark-read marks them read.)")
    return shown


def _data_file(options: argparse.Namespace) -> JsonDict:
    # The file is checked before anything is asked of the server, and never replaced.
    if options.out is not None:
        datafile.check_writable(Path(options.out))
    return {}


def _save_data(connection: Connection, options: argparse.Namespace, result: JsonDict) -> JsonDict:
    path = Path(options.out or datafile.default_name(result["user"]["username"]))
    written = datafile.write_data(path, result)
    return {"file": str(written), **datafile.counts(result)}


def _forget_login(
    connection: Connection, options: argparse.Namespace, result: JsonDict
) -> JsonDict:
    connection.forget_session()  # the account and its sessions are gone
    return result


def _member_page(options: argparse.Namespace) -> JsonDict:
    return _query(required=False)(options) | _given("offset")(options)


def _members_shown(result: JsonDict) -> views.Shown:
    members = result["members"]
    if not members:
        return ["No members match."]
    return [
        views.members_table(members, numbered=False),
        f"{len(members)} of {views.plural(result['total'], 'member')}.",
    ]


@dataclass(frozen=True)
class Subcommand:
    """One subcommand: its help, its arguments, the request it sends and how it shows the result.

    then finishes the work with the result (more requests, or a file written); what it returns
    is the result from then on. keep picks what is printed of the result, as JSON too; show
    turns that into tables and sentences for a person, after any heading naming what was asked.
    advise may ask the server more (with the request's args) to add advice, such as the area a
    typo meant.
    """

    name: str
    help: str
    cmd: str
    show: Callable[[JsonDict], views.Shown]
    arguments: tuple[Argument, ...] = ()
    args: Callable[[argparse.Namespace], JsonDict] = _given()
    keep: Callable[[JsonDict], JsonDict] = lambda result: result
    heading: Callable[[argparse.Namespace], str] | None = None
    advise: Callable[[Connection, JsonDict, JsonDict], list[str]] | None = None
    then: Callable[[Connection, argparse.Namespace, JsonDict], JsonDict] | None = None


def _by_id(
    name: str, help_text: str, cmd: str, id_name: str, show: Callable[[JsonDict], views.Shown]
) -> Subcommand:
    # A subcommand that sends one row's id, such as borrow BOOK_ID.
    arguments = (_arg(id_name, type=_NUMBER, metavar=id_name.upper()),)
    return Subcommand(name, help_text, cmd, show, arguments, _given(id_name))


_NUMBER = argument_type(_whole_number)
_EMAIL = argument_type(checks.check_email)
_NAME = _arg("username", metavar="NAME", help="the member's username")
_MOMENT = argument_type(checks.check_moment)
_LIMIT = _arg("--limit", type=_NUMBER)
_WALK_FILTERS = (
    _arg("--area", help="part of an area's name"),
    _arg("--difficulty", type=argument_type(_difficulty), help="easy, medium or hard"),
    _arg("--min-distance", type=_miles("min_distance"), metavar="MILES"),
    _arg("--max-distance", type=_miles("max_distance"), metavar="MILES"),
)

SUBCOMMANDS: dict[str, Subcommand] = {
    subcommand.name: subcommand
    for subcommand in (
        Subcommand(
            "hello", "Show which server answers.", "hello",
            lambda r: [f"{r.get('server')} {r.get('version')} (protocol {r.get('protocol')})"],
        ),
        Subcommand(
            "register", "Create an account for --user.", "register",
            lambda r: [f"Registered {r['user']['username']}."],
            arguments=(_arg("--email", type=_EMAIL, metavar="ADDRESS",
                            help="where the library may email your messages"),),
            args=_given("email"),
        ),
        Subcommand(
            "login", "Log in as --user (with --json, prints the token).", "login", _logged_in
        ),
        Subcommand("logout", "End the remembered session.", "logout", lambda r: ["Logged out."]),
        Subcommand(
            "change-password",
            "Change my password (old, then new, from stdin or prompts); other sessions end.",
            "change_password",
            lambda r: ["Your password is changed; every other session of yours has ended."],
        ),
        Subcommand("whoami", "Show who is logged in.", "whoami", _logged_in),
        Subcommand(
            "areas", "List the walking areas.", "list_areas",
            lambda r: [views.areas_table(r["areas"], numbered=False)],
        ),
        Subcommand(
            "orders", "List my orders.", "orders",
            lambda r: [views.order_table(order) for order in r["orders"] or []]
            or ["No orders yet."],
        ),
        Subcommand(
            "loans", "List the books I have on loan.", "history",
            lambda r: [views.loans_table(r["loans"], title="On loan")],
            keep=lambda r: {"loans": views.active_loans(r["loans"])},
        ),
        Subcommand(
            "history", "List all my loans, current and returned.", "history",
            lambda r: [views.loans_table(r["loans"], title="Loan history")],
        ),
        Subcommand(
            "holds", "List my holds.", "holds",
            lambda r: [views.holds_table(r["holds"], numbered=False)],
        ),
        Subcommand(
            "backorders", "List outstanding back orders (admin).", "backorders",
            lambda r: [views.backorders_table(r["backorders"])],
        ),
        Subcommand(
            "search-walks", "Search the walks.", "search_walks",
            lambda r: [
                views.walks_table(r["walks"], numbered=False),
                f"{len(r['walks'])} of {views.plural(r['total'], 'walk')}.",
            ],
            arguments=(*_WALK_FILTERS, _LIMIT, _arg("--offset", type=argument_type(_offset))),
            args=_walk_filters("limit", "offset"),
            advise=_area_advice,
        ),
        Subcommand(
            "recommend", "Which guide books cover the walks I want, most walks first.",
            "recommend_books",
            lambda r: views.recommended_books_shown(r["books"]),
            arguments=(*_WALK_FILTERS, _LIMIT),
            args=_walk_filters("limit"),
            advise=_area_advice,
        ),
        Subcommand(
            "guide-books", "List the guide books for sale: number, title, price and stock.",
            "guide_books",
            lambda r: [views.guide_books_table([GuideBook.from_json(b) for b in r["books"]])],
        ),
        Subcommand(
            "buy", "Buy guide books, for example: buy 101:2 105 'Peak District:3'", "buy",
            lambda r: [views.order_table(r["order"]), *sentences.sentences_back_ordered(r["order"])],
            arguments=(
                _arg("items", nargs="+", type=argument_type(parse_order_item),
                     metavar="BOOK:COPIES",
                     help="a guide book's number or title (guide-books lists them), and "
                          ":COPIES for how many; copies default to 1"),
            ),
            args=_order,
        ),
        Subcommand(
            "cancel-backorder", "Cancel the copies of a guide book still awaited on an order.",
            "cancel_backorder",
            lambda r: [views.order_table(r["order"]), *sentences.sentences_backorder_cancelled(r)],
            arguments=(
                _arg("order_id", type=_NUMBER, metavar="ORDER", help="the order's number"),
                _arg("book", type=_NUMBER, metavar="BOOK", help="the guide book's number"),
            ),
            args=_given("order_id", "book"),
        ),
        Subcommand(
            "search-books", "Search Open Library and see which books are held here.",
            "search_books",
            lambda r: [
                *([r["warning"]] if r.get("warning") else []),
                views.book_hits_table(r["results"], numbered=False),
            ],
            arguments=(_arg("query", nargs="+"), _LIMIT),
            args=_query(required=True),
        ),
        Subcommand(
            "catalogue", "List the library's lending books.", "catalogue",
            lambda r: [views.catalogue_table(r["books"], numbered=False)],
            arguments=(_arg("query", nargs="*"), _LIMIT),
            args=_query(required=False),
        ),
        _by_id("borrow", "Borrow a library book.", "borrow", "book_id",
               lambda r: [sentences.sentence_borrowed(r["loan"])]),
        _by_id("return", "Return a loan.", "return", "loan_id",
               lambda r: [sentences.sentence_returned(r["loan"])]),
        _by_id("renew", "Renew a loan.", "renew", "loan_id",
               lambda r: [sentences.sentence_renewed(r["loan"])]),
        _by_id("hold", "Join the queue for a book.", "hold", "book_id",
               lambda r: [sentences.sentence_held(r["hold"])]),
        _by_id("cancel-hold", "Cancel a hold.", "cancel_hold", "hold_id",
               lambda r: ["The hold is cancelled."]),
        Subcommand(
            "restock", "Add copies of a guide book for sale (admin).", "restock",
            sentences.sentences_restocked,
            arguments=(
                _arg("book", type=book_reference, help="number or title"),
                _arg("quantity", type=_NUMBER),
            ),
            args=_given("book", "quantity"),
        ),
        Subcommand(
            "overdue", "List the loans past their due date (admin).", "overdue",
            lambda r: [views.overdue_table(r["loans"])] if r["loans"] else ["No loan is overdue."],
        ),
        Subcommand(
            "sales", "Sales of guide books in a window of dates (admin).", "sales",
            lambda r: [views.sales_table(r, title=None)],
            arguments=(
                _arg("--since", type=_MOMENT,
                     help="from this date or time (ISO 8601, UTC), such as 2026-11-01"),
                _arg("--until", type=_MOMENT,
                     help="to this date, that day included, or before this time (ISO 8601, UTC)"),
            ),
            args=_sales_window,
            heading=_sales_heading,
        ),
        Subcommand(
            "add-book", "Add copies of an Open Library work to the library (admin).", "add_book",
            lambda r: [sentences.sentence_added(r["book"])],
            arguments=(
                _arg("key", help="an Open Library work key, /works/OL...W"),
                _arg("copies", type=_NUMBER),
            ),
            args=_given("key", "copies"),
        ),
        Subcommand(
            "messages", "List my messages from the library, newest first.", "notices",
            _messages_shown,
            arguments=(
                _arg("--unread", action="store_true", help="only the messages not yet read"),
                _arg("--mark-read", action="store_true", help="mark the new ones listed as read"),
                _LIMIT,
            ),
            args=lambda o: _messages(o) | _given("limit")(o),
            then=_mark_shown_read,
        ),
        Subcommand(
            "set-email", "Set the address my messages are emailed to, or --remove it.",
            "set_email", lambda r: [sentences.sentence_email(r["user"])],
            arguments=(
                _arg("email", nargs="?", type=_EMAIL, metavar="ADDRESS"),
                _arg("--remove", action="store_true", help="take my email address off"),
            ),
            args=_email,
        ),
        Subcommand(
            "my-data", "Save everything the library holds about me as a JSON file.", "my_data",
            lambda r: [sentences.sentence_data_saved(r["file"], r)],
            arguments=(
                _arg("--out", metavar="FILE",
                     help="the file to write (never replaced); default "
                          "waymark-data-USERNAME-DATE.json here"),
            ),
            args=_data_file,
            then=_save_data,
        ),
        Subcommand(
            "delete-account",
            "Delete my account (password from WAYMARK_PASSWORD, stdin or a prompt).",
            "delete_account", lambda r: [sentences.ACCOUNT_DELETED],
            arguments=(_arg("--yes", action="store_true", help="do not ask to confirm"),),
            then=_forget_login,
        ),
        Subcommand(
            "members", "Find members by part of their username (admin).", "members",
            _members_shown,
            arguments=(_arg("query", nargs="*"), _LIMIT,
                       _arg("--offset", type=argument_type(_offset))),
            args=_member_page,
        ),
        Subcommand(
            "member", "One member's loans, holds and orders (admin).", "member",
            views.member_shown,
            arguments=(_NAME,),
            args=_given("username"),
        ),
        Subcommand(
            "reset-password",
            "Give a member a temporary password, printed once (admin).", "reset_password",
            lambda r: sentences.sentences_temporary_password(r["temporary_password"]),
            arguments=(_NAME,),
            args=_given("username"),
            heading=lambda o: sentences.sentence_password_reset(o.username),
        ),
        Subcommand(
            "block", "Block a member from borrowing, renewing, holding and buying (admin).",
            "block_member", lambda r: [sentences.sentence_blocked_now(r["user"])],
            arguments=(_NAME, _arg("--reason", required=True, metavar="TEXT",
                                   help="why: the member is shown it")),
            args=_given("username", "reason"),
        ),
        Subcommand(
            "unblock", "Let a blocked member borrow and buy again (admin).", "unblock_member",
            lambda r: [sentences.sentence_blocked_now(r["user"])],
            arguments=(_NAME,),
            args=_given("username"),
        ),
        Subcommand(
            "lend", "Lend a library book to a member at the desk (admin).", "lend",
            lambda r: [sentences.sentence_lent(r["loan"])],
            arguments=(_NAME, _arg("book_id", type=_NUMBER, metavar="BOOK_ID")),
            args=_given("username", "book_id"),
        ),
        _by_id("checkin", "Check a loan in at the desk, whoever has it (admin).", "checkin",
               "loan_id", lambda r: [sentences.sentence_checked_in(r["loan"])]),
        Subcommand(
            "sweep-notices", "Send the notices due now: reminders, overdue, kept copies (admin).",
            "sweep_notices", lambda r: [sentences.sentence_sweep(r["created"])],
        ),
    )
}  # fmt: skip
