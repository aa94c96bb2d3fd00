"""Waymark's script command line: settings, running one subcommand (client_subcommands.py holds
the table of them) with --json, and main(), which starts the menus."""

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

import client_checks as checks
import client_sentences as sentences
import client_views as views
from client_link import (
    DEFAULT_CAFILE,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_RETRY_S,
    DEFAULT_TOKEN_FILE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER_ERROR,
    EXIT_USAGE,
    AnswerLostError,
    ClientError,
    Connection,
    JsonDict,
    ServerError,
    TokenFile,
    UsageError,
)
from client_menus import App
from client_prompts import ask_password
from client_subcommands import SUBCOMMANDS, argument_type, port_number
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
    # How long a request whose connection broke is tried again (Connection.retry_s).
    retry_s: float = DEFAULT_RETRY_S


def resolve_settings(options: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The settings; UsageError for a bad port or retry time, or a missing pinned certificate."""
    host = options.host or environ.get("WAYMARK_HOST") or DEFAULT_HOST
    port = options.port
    if port is None:
        try:
            port = port_number(environ.get("WAYMARK_PORT") or str(DEFAULT_PORT))
        except ValueError as error:
            raise UsageError(f"WAYMARK_PORT={error}") from None
    retry_s = options.retry_s
    if retry_s is None:
        try:
            retry_s = seconds(environ.get("WAYMARK_RETRY_S") or f"{DEFAULT_RETRY_S:g}")
        except ValueError as error:
            raise UsageError(f"WAYMARK_RETRY_S={error}") from None
    cafile = Path(options.cafile or environ.get("WAYMARK_CAFILE") or DEFAULT_CAFILE).expanduser()
    if not cafile.is_file():
        raise UsageError(
            f"The pinned server certificate {cafile} does not exist; start the server once to "
            "create it, or give its path with --cafile or WAYMARK_CAFILE."
        )
    token_path = Path(environ.get("WAYMARK_TOKEN_FILE") or DEFAULT_TOKEN_FILE).expanduser()
    server = f"{host}:{port}"
    token_file = TokenFile(token_path, server)
    return Settings(host, port, cafile, options.remember, token_file, retry_s)


def seconds(text: str) -> float:
    """A number of seconds, 0 or more (0: never try again after a broken connection)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r} is not a number of seconds, 0 or more.")
    return value


def connect(settings: Settings, on_reconnect: Callable[[str], None] | None = None) -> Connection:
    """A connection to the configured server that remembers logins when asked to."""
    return Connection(
        settings.host,
        settings.port,
        settings.cafile,
        on_reconnect=on_reconnect,
        token_file=settings.token_file,
        remember=settings.remember,
        retry_s=settings.retry_s,
    )


def _add_common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    # Given twice: on the main parser with real defaults, and on every subcommand with
    # SUPPRESS, so that options may come before or after the subcommand's name.
    add = parser.add_argument
    add("--host", default=default, help=f"server host [WAYMARK_HOST, default {DEFAULT_HOST}]")
    add("--port", type=argument_type(port_number), default=default,
        help=f"server port [WAYMARK_PORT, default {DEFAULT_PORT}]")  # fmt: skip
    add("--cafile", default=default,
        help="the server's pinned certificate [WAYMARK_CAFILE, default certs/server.crt]")  # fmt: skip
    add("--retry-s", type=argument_type(seconds), default=default, metavar="SECONDS",
        help="when the connection breaks, keep trying to reconnect and send the request again "
        f"for this long [WAYMARK_RETRY_S, default {DEFAULT_RETRY_S:g}]")  # fmt: skip
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
            return f"{sentences.ARGUMENT_NAMES.get(name, name)} in {views.quoted(text)}"

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


def read_password(
    environ: Mapping[str, str], streams: Streams, twice: bool, prompt: str = "Password: "
) -> str:
    """WAYMARK_PASSWORD, else one line of a non-terminal stdin, else a getpass prompt."""
    if "WAYMARK_PASSWORD" in environ:
        return environ["WAYMARK_PASSWORD"]
    if not streams.stdin.isatty():
        password = streams.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("No password: set WAYMARK_PASSWORD or give it on standard input.")
        return password
    return ask_password(streams.getpass_fn, prompt, twice, _new_password if twice else None)


def read_new_password(streams: Streams) -> str:
    """The next line of a non-terminal stdin, else typed twice at a prompt; checked by the
    server's rules (UsageError). WAYMARK_PASSWORD is the old password, never the new one."""
    if not streams.stdin.isatty():
        password = streams.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("No new password: give it on standard input after the old one.")
        return _new_password(password)
    # Checked as soon as it is typed, not after it has been typed twice.
    return ask_password(streams.getpass_fn, "New password: ", True, _new_password)


def _new_password(password: str) -> str:
    try:
        return checks.check_new_password(password)
    except ValueError as error:
        raise UsageError(str(error)) from None


def change_password_args(
    connection: Connection,
    options: argparse.Namespace,
    environ: Mapping[str, str],
    streams: Streams,
) -> JsonDict:
    """Log in (with --user, by the old password) or resume, and read the old and new passwords."""
    if not options.user:
        authenticate(connection, options, environ, streams)
    old = read_password(environ, streams, twice=False, prompt="Old password: ")
    new = read_new_password(streams)
    if options.user:
        connection.call("login", username=options.user, password=old)
    return {"old_password": old, "new_password": new}


class DeclinedError(ClientError):
    """The person said no when asked to confirm: nothing was done (exit code 1)."""


def delete_account_args(
    connection: Connection,
    options: argparse.Namespace,
    environ: Mapping[str, str],
    streams: Streams,
) -> JsonDict:
    """Log in (with --user, by the password) or resume, read the password, and have the
    deletion confirmed: by --yes, or by typing yes at a terminal."""
    if options.user:
        password = read_password(environ, streams, twice=False)
        user = connection.call("login", username=options.user, password=password)["user"]
    else:
        authenticate(connection, options, environ, streams)
        user = connection.call("whoami")["user"]
        password = read_password(environ, streams, twice=False)
    if options.yes:
        return {"password": password}
    if not streams.stdin.isatty():
        raise UsageError("delete-account asks to confirm at a terminal; add --yes in a script.")
    print(sentences.DELETION_WARNING, file=streams.stderr)
    print(
        f"Delete the account {user['username']} for ever? Type yes: ", end="", file=streams.stderr
    )
    streams.stderr.flush()
    if streams.stdin.readline().strip().lower() not in ("y", "yes"):
        raise DeclinedError("Nothing was deleted.")
    return {"password": password}


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
                args = {**args, "username": options.user}
                args["password"] = read_password(environ, streams, twice=cmd == "register")
            elif cmd == "change_password":
                args = change_password_args(connection, options, environ, streams)
            elif cmd == "delete_account":
                args = delete_account_args(connection, options, environ, streams)
            elif COMMANDS[cmd].needs_login:
                authenticate(connection, options, environ, streams)
            result = connection.call(cmd, **args)
            if subcommand.then is not None:
                result = subcommand.then(connection, options, result)
        except DeclinedError as declined:
            print(declined, file=streams.stderr)
            return EXIT_SERVER_ERROR
        except UsageError:
            raise  # main() reports it with the usage line
        except ClientError as error:
            report_failure(error, options.json, streams)
            return EXIT_SERVER_ERROR
        advice: list[str] = []
        if subcommand.advise is not None:
            with contextlib.suppress(ClientError):  # advice only: the request itself succeeded
                advice = subcommand.advise(connection, args, result)
    result = subcommand.keep(result)
    if options.json:
        print(json.dumps(result, ensure_ascii=False), file=streams.stdout)
        for sentence in advice:
            print(sentence, file=streams.stderr)
        return EXIT_OK
    heading = [] if subcommand.heading is None else [subcommand.heading(options)]
    # Piped output is not cut to 80 columns: tables are only as wide as their content.
    width = None if streams.stdout.isatty() else 160
    views.show(
        Console(file=streams.stdout, width=width), [*heading, *subcommand.show(result), *advice]
    )
    return EXIT_OK


def report_failure(error: ClientError, as_json: bool, streams: Streams) -> None:
    """A server's or the connection's failure: a sentence on stderr, or JSON on stdout."""
    if not as_json:
        sentence = checks.sentence_refused(error) if isinstance(error, ServerError) else str(error)
        print(sentence, file=streams.stderr)
        return
    if isinstance(error, ServerError):
        body = {"code": error.code, "message": error.message, "details": error.details}
    else:
        code = "outcome_unknown" if isinstance(error, AnswerLostError) else "connection_failed"
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
