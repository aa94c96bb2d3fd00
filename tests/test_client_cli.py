"""The script command line as a newcomer meets it: tables without a blank first line or
trailing spaces."""

from __future__ import annotations

import io
from pathlib import Path

import client_views as views
from tests.test_client import plain_console, run_client
from tests.wire import ServerProcess

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
    for argv in (["areas"], ["search-walks", "--area", "peak"], ["catalogue"]):
        shown = run_client(server, tmp_path, *argv).stdout
        assert shown.splitlines()[0].strip(), argv  # no blank first line
        assert all(line == line.rstrip() for line in shown.splitlines()), argv
