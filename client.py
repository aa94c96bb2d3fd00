"""Waymark's script command line: subcommands with --json, and main(), which starts the menus."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console

import client_checks as checks
import client_views as views
from client_basket import GuideBook
from client_link import (
    DEFAULT_CAFILE,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_TOKEN_FILE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER_ERROR,
    EXIT_USAGE,
    ClientError,
    Connection,
    JsonDict,
    OutcomeUnknownError,
    ServerError,
    TokenFile,
    UsageError,
)
from client_menus import App
from client_prompts import ask_password
from protocol import COMMANDS, UNAUTHORIZED

# Settings: options, then the environment, then defaults --------------------------------------


@dataclass(frozen=True)
class Settings:
    """Where the server is and how to trust it, from options, then environment, then defaults."""

    host: str
    port: int
    cafile: Path
    remember: bool
    token_file: TokenFile


def resolve_settings(options: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The settings; UsageError for a bad port or a missing pinned certificate."""
    host = options.host or environ.get("WAYMARK_HOST") or DEFAULT_HOST
    port = options.port
    if port is None:
        try:
            port = _port(environ.get("WAYMARK_PORT") or str(DEFAULT_PORT))
        except ValueError as error:
            raise UsageError(f"WAYMARK_PORT={error}") from None
    cafile = Path(options.cafile or environ.get("WAYMARK_CAFILE") or DEFAULT_CAFILE).expanduser()
    if not cafile.is_file():
        raise UsageError(
            f"The pinned server certificate {cafile} does not exist; start the server once to "
            "create it, or give its path with --cafile or WAYMARK_CAFILE."
        )
    token_path = Path(environ.get("WAYMARK_TOKEN_FILE") or DEFAULT_TOKEN_FILE).expanduser()
    server = f"{host}:{port}"
    return Settings(host, port, cafile, options.remember, TokenFile(token_path, server))


def connect(settings: Settings, on_reconnect: Callable[[str], None] | None = None) -> Connection:
    """A connection to the configured server that remembers logins when asked to."""
    return Connection(
        settings.host,
        settings.port,
        settings.cafile,
        on_reconnect=on_reconnect,
        token_file=settings.token_file,
        remember=settings.remember,
    )


# What the arguments accept -------------------------------------------------------------------


def parse_order_item(text: str) -> JsonDict:
    """'101:2' -> {'book': 101, 'quantity': 2}; a title may stand for the number; no ':N' is 1."""
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
    return {"book": book_reference(book), "quantity": copies}


def book_reference(text: str) -> int | str:
    """A guide book's number, or else its title."""
    return int(text) if text.isdigit() else text


def _argument_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
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


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{text!r} is not a port number from 1 to 65535.")
    return int(text)


def _miles(name: str) -> Callable[[str], float]:
    return _argument_type(lambda text: checks.parse_miles(text, name))


def _difficulty(text: str) -> str:
    if text.strip().lower() not in views.DIFFICULTIES:
        raise ValueError(views.sentence_not_a_difficulty(text))
    return text.strip().lower()


def _add_common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    # Given twice: on the main parser with real defaults, and on every subcommand with
    # SUPPRESS, so that options may come before or after the subcommand's name.
    add = parser.add_argument
    add("--host", default=default, help=f"server host [WAYMARK_HOST, default {DEFAULT_HOST}]")
    add("--port", type=_argument_type(_port), default=default,
        help=f"server port [WAYMARK_PORT, default {DEFAULT_PORT}]")  # fmt: skip
    add("--cafile", default=default,
        help="the server's pinned certificate [WAYMARK_CAFILE, default certs/server.crt]")  # fmt: skip
    add("--user", default=default, help="log in as USER (password from WAYMARK_PASSWORD or stdin)")
    flag = False if default is None else default
    add("--remember", action="store_true", default=flag,
        help="keep the session token in a 0600 file [WAYMARK_TOKEN_FILE, default ~/.waymark-token]")  # fmt: skip
    add("--json", action="store_true", default=flag, help="print results as JSON")


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


def _walk_filters(options: argparse.Namespace) -> JsonDict:
    # The server refuses a shortest walk longer than the longest; so does the command line.
    args = _given("area", "difficulty", "min_distance", "max_distance", "limit", "offset")(options)
    low, high = args.get("min_distance"), args.get("max_distance")
    if low is not None and high is not None and low > high:
        raise UsageError(
            f"--min-distance ({low:g}) must not be more than --max-distance ({high:g})."
        )
    return args


def _query(options: argparse.Namespace) -> JsonDict:
    # The words are one query; catalogue may have none, and then lists every book.
    return ({"query": " ".join(options.query)} if options.query else {}) | _given("limit")(options)


def _logged_in(result: JsonDict) -> views.Shown:
    user = result["user"]
    return [f"Logged in as {user['username']} ({user.get('role', 'member')})."]


@dataclass(frozen=True)
class Subcommand:
    """One subcommand: its help, its arguments, the request it sends and how it shows the result.

    keep picks what is printed of the result, as JSON too; show turns that into tables and
    sentences for a person.
    """

    name: str
    help: str
    cmd: str
    show: Callable[[JsonDict], views.Shown]
    arguments: tuple[Argument, ...] = ()
    args: Callable[[argparse.Namespace], JsonDict] = _given()
    keep: Callable[[JsonDict], JsonDict] = lambda result: result


def _by_id(
    name: str, help_text: str, cmd: str, id_name: str, show: Callable[[JsonDict], views.Shown]
) -> Subcommand:
    # A subcommand that sends one row's id, such as borrow BOOK_ID.
    arguments = (_arg(id_name, type=_NUMBER, metavar=id_name.upper()),)
    return Subcommand(name, help_text, cmd, show, arguments, _given(id_name))


_NUMBER = _argument_type(_whole_number)
_LIMIT = _arg("--limit", type=_NUMBER)

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
        ),
        Subcommand(
            "login", "Log in as --user (with --json, prints the token).", "login", _logged_in
        ),
        Subcommand("logout", "End the remembered session.", "logout", lambda r: ["Logged out."]),
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
            arguments=(
                _arg("--area", help="part of an area's name"),
                _arg("--difficulty", type=_argument_type(_difficulty), help="easy, medium or hard"),
                _arg("--min-distance", type=_miles("min_distance"), metavar="MILES"),
                _arg("--max-distance", type=_miles("max_distance"), metavar="MILES"),
                _LIMIT,
                _arg("--offset", type=_argument_type(_offset)),
            ),
            args=_walk_filters,
        ),
        Subcommand(
            "guide-books", "List the guide books for sale: number, title, price and stock.",
            "guide_books",
            lambda r: [views.guide_books_table([GuideBook.from_json(b) for b in r["books"]])],
        ),
        Subcommand(
            "buy", "Buy guide books, for example: buy 101:2 105 'Peak District:3'", "buy",
            lambda r: [views.order_table(r["order"]), *views.sentences_back_ordered(r["order"])],
            arguments=(
                _arg("items", nargs="+", type=_argument_type(parse_order_item),
                     metavar="BOOK:COPIES",
                     help="a guide book's number or title (guide-books lists them), and "
                          ":COPIES for how many; copies default to 1"),
            ),
            args=_given("items"),
        ),
        Subcommand(
            "search-books", "Search Open Library and see which books are held here.",
            "search_books",
            lambda r: [
                *([r["warning"]] if r.get("warning") else []),
                views.book_hits_table(r["results"], numbered=False),
            ],
            arguments=(_arg("query", nargs="+"), _LIMIT),
            args=_query,
        ),
        Subcommand(
            "catalogue", "List the library's lending books.", "catalogue",
            lambda r: [views.catalogue_table(r["books"], numbered=False)],
            arguments=(_arg("query", nargs="*"), _LIMIT),
            args=_query,
        ),
        _by_id("borrow", "Borrow a library book.", "borrow", "book_id",
               lambda r: [views.sentence_borrowed(r["loan"])]),
        _by_id("return", "Return a loan.", "return", "loan_id",
               lambda r: [views.sentence_returned(r["loan"])]),
        _by_id("renew", "Renew a loan.", "renew", "loan_id",
               lambda r: [views.sentence_renewed(r["loan"])]),
        _by_id("hold", "Join the queue for a book.", "hold", "book_id",
               lambda r: [views.sentence_held(r["hold"])]),
        _by_id("cancel-hold", "Cancel a hold.", "cancel_hold", "hold_id",
               lambda r: ["The hold is cancelled."]),
        Subcommand(
            "restock", "Add copies of a guide book for sale (admin).", "restock",
            views.sentences_restocked,
            arguments=(
                _arg("book", type=book_reference, help="number or title"),
                _arg("quantity", type=_NUMBER),
            ),
            args=_given("book", "quantity"),
        ),
        Subcommand(
            "add-book", "Add copies of an Open Library work to the library (admin).", "add_book",
            lambda r: [views.sentence_added(r["book"])],
            arguments=(
                _arg("key", help="an Open Library work key, /works/OL...W"),
                _arg("copies", type=_NUMBER),
            ),
            args=_given("key", "copies"),
        ),
    )
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command line: no subcommand starts the menu; each subcommand is one request."""
    parser = argparse.ArgumentParser(
        prog="client.py",
        description="Waymark: find walks, buy guide books and borrow library books.",
        epilog="Without a subcommand, an interactive menu starts. Exit codes: 0 ok, "
        "1 the server refused or could not be reached, 2 usage error.",
    )
    _add_common_options(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for subcommand in SUBCOMMANDS.values():
        sub = commands.add_parser(
            subcommand.name, help=subcommand.help, description=subcommand.help, parents=[common]
        )
        for flags, options in subcommand.arguments:
            sub.add_argument(*flags, **_checked_by_table(subcommand.cmd, flags, options))
    return parser


def _dest(flags: tuple[str, ...], options: Mapping[str, Any]) -> str:
    return str(options.get("dest") or flags[0].lstrip("-").replace("-", "_"))


def _label(flags: tuple[str, ...], options: Mapping[str, Any]) -> str:
    # How a usage error names an argument: by its option (--limit), else its metavar (QUERY).
    return flags[0] if flags[0].startswith("-") else str(options.get("metavar", flags[0].upper()))


def _checked_by_table(cmd: str, flags: tuple[str, ...], options: dict[str, Any]) -> dict[str, Any]:
    # An argument that protocol.COMMANDS bounds is checked against the table as it is parsed,
    # so that what the server would refuse is a usage error with a sentence, not a round trip.
    dest = _dest(flags, options)
    if not checks.has_argument(cmd, dest):
        return options
    convert = options.get("type", str)

    def converted(text: str) -> Any:
        value = convert(text)

        def name_of(name: str) -> str:
            if name == dest:
                return views.quoted(text)
            return f"{views.ARGUMENT_NAMES.get(name, name)} in {views.quoted(text)}"

        try:
            return checks.check_argument(cmd, dest, value, name_of)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return {**options, "type": converted}


def request_for(options: argparse.Namespace) -> tuple[str, JsonDict]:
    """The protocol command and arguments a subcommand sends (credentials are added later);
    UsageError when the table refuses them together (too many items, too long a query)."""
    subcommand = SUBCOMMANDS[options.command]
    args = subcommand.args(options)
    names = {
        _dest(flags, argument): _label(flags, argument) for flags, argument in subcommand.arguments
    }
    try:
        checks.check_request(subcommand.cmd, args, lambda name: names.get(name, name))
    except ValueError as error:
        raise UsageError(str(error)) from None
    return subcommand.cmd, args


# Running a subcommand, or the menus ----------------------------------------------------------


@dataclass
class Streams:
    """Where a script run reads a password and writes its output."""

    stdin: IO[str]
    stdout: IO[str]
    stderr: IO[str]
    getpass_fn: Callable[[str], str] = getpass.getpass


def read_password(environ: Mapping[str, str], streams: Streams, twice: bool) -> str:
    """WAYMARK_PASSWORD, else one line of a non-terminal stdin, else a getpass prompt."""
    if "WAYMARK_PASSWORD" in environ:
        return environ["WAYMARK_PASSWORD"]
    if not streams.stdin.isatty():
        password = streams.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("No password: set WAYMARK_PASSWORD or give it on standard input.")
        return password
    return ask_password(streams.getpass_fn, "Password: ", twice)


def authenticate(
    connection: Connection,
    options: argparse.Namespace,
    environ: Mapping[str, str],
    streams: Streams,
) -> None:
    """Log in with --user and a password, or resume the remembered session."""
    if options.user:
        password = read_password(environ, streams, twice=False)
        connection.call("login", username=options.user, password=password)
        return
    try:
        resumed = connection.resume_remembered()
    except ServerError as error:
        if error.code == UNAUTHORIZED:
            raise ServerError(
                error.code, "The remembered login has expired; log in again with --user NAME."
            ) from None
        raise
    if resumed is None:
        raise UsageError(
            f"'{options.command}' needs a login: pass --user NAME (the password comes from "
            "WAYMARK_PASSWORD or standard input), or log in once with --remember."
        )


def run_subcommand(
    options: argparse.Namespace, settings: Settings, environ: Mapping[str, str], streams: Streams
) -> int:
    """Send one subcommand's request and print its result; the exit code."""
    subcommand = SUBCOMMANDS[options.command]
    cmd, args = request_for(options)
    with connect(settings) as connection:
        try:
            if cmd in ("register", "login"):
                if not options.user:
                    raise UsageError(f"'{cmd}' needs --user NAME.")
                args = {"username": options.user}
                args["password"] = read_password(environ, streams, twice=cmd == "register")
            elif COMMANDS[cmd].needs_login:
                authenticate(connection, options, environ, streams)
            result = connection.call(cmd, **args)
        except UsageError:
            raise  # main() reports it with the usage line
        except ClientError as error:
            report_failure(error, options.json, streams)
            return EXIT_SERVER_ERROR
        if cmd == "logout":
            connection.forget_session()
        result = subcommand.keep(result)
        if options.json:
            print(json.dumps(result, ensure_ascii=False), file=streams.stdout)
        else:
            # Piped output is not cut to 80 columns: tables are only as wide as their content.
            width = None if streams.stdout.isatty() else 160
            views.show(Console(file=streams.stdout, width=width), subcommand.show(result))
    return EXIT_OK


def report_failure(error: ClientError, as_json: bool, streams: Streams) -> None:
    """A server's or the connection's failure: a sentence on stderr, or JSON on stdout."""
    if not as_json:
        print(views.plain_argument_message(str(error)), file=streams.stderr)
        return
    if isinstance(error, ServerError):
        body = {"code": error.code, "message": error.message, "details": error.details}
    else:
        code = "outcome_unknown" if isinstance(error, OutcomeUnknownError) else "connection_failed"
        body = {"code": code, "message": str(error), "details": {}}
    print(json.dumps({"error": body}, ensure_ascii=False), file=streams.stdout)


def run_menu(settings: Settings) -> int:
    """The interactive session on this terminal."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    console = Console()

    def note(message: str) -> None:
        console.print(message, style="yellow", markup=False, highlight=False)

    with connect(settings, on_reconnect=note) as connection:
        return App(connection, console).run()


def main(argv: list[str] | None = None) -> int:
    """Run the client; the exit code (0 ok, 1 server or connection failure, 2 usage)."""
    environ = os.environ
    parser = build_parser()
    options = parser.parse_args(argv)
    try:
        if options.command is None and (options.json or options.user):
            flag = "--json" if options.json else "--user"
            raise UsageError(
                f"{flag} goes with a subcommand, such as orders; without a subcommand the menus "
                "start, and they ask for what they need."
            )
        settings = resolve_settings(options, environ)
        if options.command is None:
            return run_menu(settings)
        return run_subcommand(
            options, settings, environ, Streams(sys.stdin, sys.stdout, sys.stderr)
        )
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"client.py: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
