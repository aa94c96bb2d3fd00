"""Waymark's script command line: subcommands with --json, and main(), which starts the menus."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console

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
    OutcomeUnknownError,
    ServerError,
    TokenFile,
    UsageError,
)
from client_menus import App
from client_views import (
    DIFFICULTIES,
    active_loans,
    areas_table,
    backorders_table,
    book_hits_table,
    catalogue_table,
    holds_table,
    loans_table,
    order_table,
    plural,
    sentence_added,
    sentence_borrowed,
    sentence_held,
    sentence_renewed,
    sentence_returned,
    sentences_back_ordered,
    sentences_restocked,
    walks_table,
)
from protocol import (
    COMMANDS,
    UNAUTHORIZED,
)

JsonDict = dict[str, Any]


# Subcommands for scripts ---------------------------------------------------------------------


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
        text = environ.get("WAYMARK_PORT") or str(DEFAULT_PORT)
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise UsageError(f"WAYMARK_PORT={text!r} is not a port number from 1 to 65535.")
        port = int(text)
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


def _miles(text: str) -> float:
    miles = float(text)
    if not math.isfinite(miles) or miles < 0:
        raise ValueError(f"{text!r} is not a distance of zero or more miles.")
    return miles


def _difficulty(text: str) -> str:
    if text.strip().lower() not in DIFFICULTIES:
        raise ValueError(f"{text!r} is not a difficulty; choose easy, medium or hard.")
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

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common])

    number = _argument_type(_whole_number)
    for name, help_text in [
        ("hello", "Show which server answers."),
        ("register", "Create an account for --user."),
        ("login", "Log in as --user (with --json, prints the token)."),
        ("logout", "End the remembered session."),
        ("whoami", "Show who is logged in."),
        ("areas", "List the walking areas."),
        ("orders", "List my orders."),
        ("loans", "List the books I have on loan."),
        ("history", "List all my loans, current and returned."),
        ("holds", "List my holds."),
        ("backorders", "List outstanding back orders (admin)."),
    ]:
        command(name, help_text)
    walks = command("search-walks", "Search the walks.")
    walks.add_argument("--area", help="part of an area's name")
    walks.add_argument(
        "--difficulty", type=_argument_type(_difficulty), help="easy, medium or hard"
    )
    walks.add_argument("--min-distance", type=_argument_type(_miles), metavar="MILES")
    walks.add_argument("--max-distance", type=_argument_type(_miles), metavar="MILES")
    walks.add_argument("--limit", type=number)
    walks.add_argument("--offset", type=_argument_type(_offset))
    buy = command("buy", "Buy guide books, for example: buy 101:2 105:1")
    buy.add_argument(
        "items", nargs="+", type=_argument_type(parse_order_item), metavar="BOOK:COPIES"
    )
    books = command("search-books", "Search Open Library and see which books are held here.")
    books.add_argument("query", nargs="+")
    books.add_argument("--limit", type=number)
    catalogue = command("catalogue", "List the library's lending books.")
    catalogue.add_argument("query", nargs="*")
    catalogue.add_argument("--limit", type=number)
    for name, argument, help_text in [
        ("borrow", "book_id", "Borrow a library book."),
        ("return", "loan_id", "Return a loan."),
        ("renew", "loan_id", "Renew a loan."),
        ("hold", "book_id", "Join the queue for a book."),
        ("cancel-hold", "hold_id", "Cancel a hold."),
    ]:
        command(name, help_text).add_argument(argument, type=number, metavar=argument.upper())
    restock = command("restock", "Add copies of a guide book for sale (admin).")
    restock.add_argument("book", type=book_reference, help="number or title")
    restock.add_argument("quantity", type=number)
    add_book = command("add-book", "Add copies of an Open Library work to the library (admin).")
    add_book.add_argument("key", help="an Open Library work key, /works/OL...W")
    add_book.add_argument("copies", type=number)
    return parser


def request_for(options: argparse.Namespace) -> tuple[str, JsonDict]:
    """The protocol command and arguments a subcommand sends (credentials are added later)."""
    name = options.command
    match name:
        case "areas":
            return "list_areas", {}
        case "loans":
            return "history", {}
        case "search-walks":
            chosen = {
                "area": options.area, "difficulty": options.difficulty,
                "min_distance": options.min_distance, "max_distance": options.max_distance,
                "limit": options.limit, "offset": options.offset,
            }  # fmt: skip
            return "search_walks", {
                key: value for key, value in chosen.items() if value is not None
            }
        case "buy":
            return "buy", {"items": options.items}
        case "search-books":
            query = {"query": " ".join(options.query)}
            return "search_books", query | ({"limit": options.limit} if options.limit else {})
        case "catalogue":
            args = {"query": " ".join(options.query)} if options.query else {}
            return "catalogue", args | ({"limit": options.limit} if options.limit else {})
        case "borrow" | "hold":
            return name, {"book_id": options.book_id}
        case "return" | "renew":
            return name, {"loan_id": options.loan_id}
        case "cancel-hold":
            return "cancel_hold", {"hold_id": options.hold_id}
        case "restock":
            return "restock", {"book": options.book, "quantity": options.quantity}
        case "add-book":
            return "add_book", {"key": options.key, "copies": options.copies}
        case _:
            return name, {}


def show_result(console: Console, command: str, result: JsonDict) -> None:
    """Print a subcommand's result for a person."""

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    match command:
        case "hello":
            say(
                f"{result.get('server')} {result.get('version')} (protocol {result.get('protocol')})"
            )
        case "register":
            say(f"Registered {result['user']['username']}.")
        case "login" | "whoami":
            user = result["user"]
            say(f"Logged in as {user['username']} ({user.get('role', 'member')}).")
        case "logout":
            say("Logged out.")
        case "areas":
            console.print(areas_table(result["areas"], numbered=False))
        case "search-walks":
            console.print(walks_table(result["walks"], numbered=False))
            say(f"{len(result['walks'])} of {plural(result['total'], 'walk')}.")
        case "buy":
            console.print(order_table(result["order"]))
            for sentence in sentences_back_ordered(result["order"]):
                say(sentence)
        case "orders":
            for order in result["orders"] or []:
                console.print(order_table(order))
            if not result["orders"]:
                say("No orders yet.")
        case "search-books":
            if result.get("warning"):
                say(result["warning"])
            console.print(book_hits_table(result["results"], numbered=False))
        case "catalogue":
            console.print(catalogue_table(result["books"], numbered=False))
        case "loans" | "history":
            title = "On loan" if command == "loans" else "Loan history"
            console.print(loans_table(result["loans"], numbered=False, title=title))
        case "borrow":
            say(sentence_borrowed(result["loan"]))
        case "return":
            say(sentence_returned(result["loan"]))
        case "renew":
            say(sentence_renewed(result["loan"]))
        case "hold":
            say(sentence_held(result["hold"]))
        case "holds":
            console.print(holds_table(result["holds"], numbered=False))
        case "cancel-hold":
            say("The hold is cancelled.")
        case "restock":
            for sentence in sentences_restocked(result):
                say(sentence)
        case "add-book":
            say(sentence_added(result["book"]))
        case "backorders":
            console.print(backorders_table(result["backorders"]))


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
    password = streams.getpass_fn("Password: ")
    if twice and password != streams.getpass_fn("The same password again: "):
        raise UsageError("The two passwords differ.")
    return password


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
        if options.command == "loans":
            result = {"loans": active_loans(result["loans"])}
        if options.json:
            print(json.dumps(result, ensure_ascii=False), file=streams.stdout)
        else:
            # Piped output is not cut to 80 columns: tables are only as wide as their content.
            width = None if streams.stdout.isatty() else 160
            show_result(Console(file=streams.stdout, width=width), options.command, result)
    return EXIT_OK


def report_failure(error: ClientError, as_json: bool, streams: Streams) -> None:
    """A server's or the connection's failure: a sentence on stderr, or JSON on stdout."""
    if not as_json:
        print(str(error), file=streams.stderr)
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
