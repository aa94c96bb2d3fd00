"""The operator commands create-admin, import-walks, export, import: python server.py SUBCOMMAND."""

from __future__ import annotations

import getpass
import sys
import time
from collections.abc import Callable
from pathlib import Path

import db_dump as dump
import passwords
import rules
import shop_import
from engine import Database, PoolConfig, backend_from_url
from settings import ServerConfig, StartupError, check_database, open_store


def read_new_password(prompt_twice: bool) -> str:
    """A password from stdin when piped, else typed twice at a hidden prompt."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if prompt_twice and getpass.getpass("Password again: ") != password:
        raise ValueError("The two passwords differ.")
    return password


def create_admin(config: ServerConfig, username: str) -> int:
    """Create or promote an admin; the password comes from stdin or a prompt."""
    rules.validate_username(username)
    password = read_new_password(prompt_twice=True)
    rules.validate_password(password)
    store = open_store(config)
    try:
        hasher = passwords.PasswordHasher(config.bcrypt_cost, 1)
        user, created = store.make_admin(username, hasher.hash(password), int(time.time()))
    finally:
        store.close()
    print(f"{'Created' if created else 'Promoted'} admin {user['username']!r}.")
    return 0


def import_walks(config: ServerConfig, walks_file: Path, books_file: Path | None) -> int:
    """Load a shop's walks (and optionally its book prices); 1 if any row was rejected."""
    store = open_store(config)
    try:
        # A new book with no stock in the price list has none: stock is only what arrived.
        books = (
            shop_import.read_book_prices(books_file.read_text("utf-8"), shop_import.no_stock)
            if books_file
            else []
        )
        titles = [b.title for b in books] + [b["title"] for b in store.shop_books()]
        report = shop_import.read_walks(walks_file.read_text("utf-8"), known_book_titles=titles)
        counts = store.import_walks(books, report.walks)
    finally:
        store.close()
    print(
        f"Imported {walks_file}: {counts['walks_added']} walks added,"
        f" {counts['walks_updated']} updated, {counts['books']} books added or updated,"
        f" {len(report.rejected)} rows rejected."
    )
    for line, reason in report.rejected:
        print(f"  line {line}: {reason}")
    return 1 if report.rejected else 0


def export_database(config: ServerConfig, path: Path) -> int:
    """Write the whole database (--db) to path as one SQL file in MySQL's dialect; 1 with one
    sentence on standard error when it cannot."""
    return _dump_step(config, dump.export, path, "Exported {amount} from the {db} to {path}")


def import_database(config: ServerConfig, path: Path) -> int:
    """Load a dump made by export into the empty database (--db); 1 with one sentence on
    standard error when the file or the database will not do, and then nothing is loaded."""
    return _dump_step(config, dump.load, path, "Imported {amount} from {path} into the {db}")


def _dump_step(
    config: ServerConfig,
    step: Callable[..., dump.Summary],
    path: Path,
    done: str,
) -> int:
    try:
        database = _open_database(config)
        try:
            summary = step(database, path, show_progress=sys.stderr.isatty())
        finally:
            database.close()
    except (dump.DumpError, StartupError) as error:
        print(f"server.py: {error}", file=sys.stderr)
        return 1
    amount, db = _amount(summary), database.backend.describe()
    print(done.format(amount=amount, db=db, path=path) + _took(summary))
    return 0


def _open_database(config: ServerConfig) -> Database:
    # Not open_store(): that loads the sample catalogue into an empty database, and an import
    # needs it empty. Two connections: a dump uses one at a time.
    check_database(config.db)
    return Database(backend_from_url(config.db), PoolConfig(pool_size=2))


def _amount(summary: dump.Summary) -> str:
    return f"{summary.tables} tables, {summary.rows:,} rows"


def _took(summary: dump.Summary) -> str:
    return f" in {summary.seconds:.1f} s."
