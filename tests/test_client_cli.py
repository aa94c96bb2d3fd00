"""The script command line as a newcomer meets it: usage errors found by the client (exit 2)
with sentences and the protocol table's own bounds, the guide-books subcommand, and tables."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import client
import client_views as views
from client_checks import argument
from tests.test_client import plain_console, run_client, run_json
from tests.wire import ServerProcess


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What argparse says of a command line it refuses, which must exit with 2."""
    with pytest.raises(SystemExit) as exit_info:
        client.build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# 12: usage errors are the client's to find -----------------------------------------------


def test_a_distance_that_is_not_a_number_gets_a_sentence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    said = usage_error(["search-walks", "--min-distance", "abc"], capsys)
    assert "argument --min-distance: 'abc' is not a number of miles" in said
    assert "could not convert" not in said
    said = usage_error(["search-walks", "--max-distance", "1e400"], capsys)
    assert "'1e400' is too many miles; enter at most 10,000." in said


@pytest.mark.parametrize(
    ("argv", "cmd", "name"),
    [
        (["search-walks", "--limit", "100000"], "search_walks", "limit"),
        (["search-books", "dune", "--limit", "101"], "search_books", "limit"),
        (["catalogue", "--limit", "201"], "catalogue", "limit"),
        (["restock", "101", "100001"], "restock", "quantity"),
        (["add-book", "/works/OL1W", "1001"], "add_book", "copies"),
    ],
)
def test_bounds_come_from_the_protocol_table(
    argv: list[str], cmd: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # (buy's copies are bounded by the stricter rule of 8 a book: test_client_newcomer.py)
    least, most = argument(cmd, name).minimum, argument(cmd, name).maximum
    assert least is not None and most is not None and int(argv[-1]) > most
    assert f"must be a whole number from {least:,g} to {most:,g}." in usage_error(argv, capsys)
    assert "argument '" not in capsys.readouterr().err  # no protocol wording


def test_usage_errors_exit_2_with_a_sentence(server: ServerProcess, tmp_path: Path) -> None:
    refused = {
        "--limit": ["search-walks", "--limit", "100000"],
        "min > max": ["search-walks", "--min-distance", "8", "--max-distance", "3"],
        "--json alone": ["--json"],
        "--user alone": ["--user", "ann"],
        "too long": ["search-books", *["word"] * 50],
        "abc": ["search-walks", "--min-distance", "abc"],
    }
    said = {}
    for what, argv in refused.items():
        result = run_client(server, tmp_path, *argv)
        assert result.returncode == 2, (what, result)
        said[what] = result.stderr
    assert "--min-distance (8) must not be more than --max-distance (3)." in said["min > max"]
    assert "--json goes with a subcommand" in said["--json alone"]
    assert "--user goes with a subcommand" in said["--user alone"]
    assert "QUERY must be words to search for, at most 200 characters long." in said["too long"]
    assert all("Traceback" not in text and "argument '" not in text for text in said.values())
    assert "Connected" not in run_client(server, tmp_path, "--json").stdout  # no menus


# 13: guide-books, and buy's copies ---------------------------------------------------------


def test_guide_books_lists_the_books_for_sale(server: ServerProcess, tmp_path: Path) -> None:
    books = run_json(server, tmp_path, "guide-books")["books"]
    assert [book["number"] for book in books] == list(range(101, 108))
    assert set(books[0]) >= {"number", "title", "price_pence", "in_stock"}
    shown = run_client(server, tmp_path, "guide-books")
    assert shown.returncode == 0
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["Book", "Title", "Price", "In", "stock"]
    assert lines[2].split()[:4] == ["101", "More", "Peak", "District"]
    assert "£12.99" in lines[2]


def test_buy_help_says_copies_default_to_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        client.build_parser().parse_args(["buy", "--help"])
    assert "copies default to 1" in " ".join(capsys.readouterr().out.split())
    assert client.request_for(client.build_parser().parse_args(["buy", "Snowdonia"])) == (
        "buy",
        {"items": [{"book": "Snowdonia", "quantity": 1}]},
    )


# 14: tables without a blank first line or trailing spaces ----------------------------------


def test_tables_are_printed_without_blank_edges_or_trailing_spaces() -> None:
    out = io.StringIO()
    areas = [{"area": "Cheshire", "walks": 4}, {"area": "Peak District", "walks": 12}]
    views.show(plain_console(out), [views.areas_table(areas, numbered=False), "Two areas."])
    assert out.getvalue() == (
        "Area            Walks\n"
        "─────────────────────\n"
        "Cheshire            4\n"
        "Peak District      12\n"
        "Two areas.\n"
    )


def test_a_titled_table_with_totals_has_no_trailing_spaces() -> None:
    out = io.StringIO()
    order = {
        "id": 3, "created_at": "2026-01-17T13:05:00Z",
        "lines": [{"book": {"number": 105, "title": "Snowdonia"}, "quantity": 1, "fulfilled": 1,
                   "backordered": 0, "unit_price_pence": 1399, "line_total_pence": 1399}],
        "subtotal_pence": 1399, "discount_pence": 0, "total_pence": 1399,
    }  # fmt: skip
    views.show(plain_console(out), [views.order_table(order)])
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Order 3, placed ")
    assert all(line == line.rstrip() for line in lines)
    assert lines[1].startswith("Guide book") and lines[-1].split() == ["Total", "£13.99"]
    assert lines[-3].startswith("─")  # a rule above the totals


def test_subcommand_tables_have_no_trailing_spaces(server: ServerProcess, tmp_path: Path) -> None:
    for argv in (["guide-books"], ["areas"], ["search-walks", "--area", "peak"], ["catalogue"]):
        shown = run_client(server, tmp_path, *argv).stdout
        assert shown.splitlines()[0].strip(), argv  # no blank first line
        assert all(line == line.rstrip() for line in shown.splitlines()), argv
