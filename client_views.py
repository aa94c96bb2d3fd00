"""How the client shows things to people: safe text, money, times, miles, tables."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from rich import box
from rich.console import Console
from rich.segment import Segment, Segments
from rich.table import Column, Table
from rich.text import Text

import rules
from client_basket import Basket, GuideBook
from client_link import JsonDict

Shown = Sequence[Table | str]  # what to print for a person: tables, and sentences as they are


# Text ----------------------------------------------------------------------------------------

# C0 and C1 controls (terminal escape sequences) and bidirectional overrides, which could
# disguise text: titles come from Open Library and must not drive the person's terminal.
_UNSAFE_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean_text(value: object) -> str:
    """Text from the server made safe to show: whitespace controls as spaces, others as '�'."""
    return _UNSAFE_CHARACTERS.sub(
        lambda match: " " if match.group().isspace() else "\ufffd", str(value)
    )


def format_money(pence: int) -> str:
    """Pence as pounds for people: 1299 -> '£12.99', 123456 -> '£1,234.56', -50 -> '-£0.50'."""
    pounds, rest = divmod(abs(pence), 100)
    return f"{'-' if pence < 0 else ''}£{pounds:,}.{rest:02d}"


def parse_time(text: str) -> datetime:
    """An ISO-8601 time from the server as an aware datetime (UTC when no offset is given)."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def format_local_time(text: str | None, zone: tzinfo | None = None) -> str:
    """A server time in local time (or zone), like 'Sat 17 Jan 2026 14:05'; '' for None."""
    if not text:
        return ""
    try:
        moment = parse_time(text)
    except ValueError:
        return clean_text(text)
    return moment.astimezone(zone).strftime("%a %d %b %Y %H:%M")


def format_miles(miles: object) -> str:
    """A distance as people write it: 7 -> '7', 4.5 -> '4.5'."""
    return f"{miles:g}" if isinstance(miles, (int, float)) else clean_text(miles)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 copy', '3 copies'."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def quoted(text: str, longest: int = 40) -> str:
    """What a person typed, quoted safely for a sentence and cut short when long."""
    text = clean_text(text)
    return repr(text if len(text) <= longest else text[: longest - 1] + "…")


def either(words: Sequence[str]) -> str:
    """Words to choose from as people write them: 'easy, medium or hard'."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def listed(words: Sequence[str]) -> str:
    """Words that all count, as people write them: '1 loan, 2 holds and 3 orders'."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def choices(numbers: Sequence[int]) -> str:
    """Numbers to choose from as people write them: '101 to 107', '4, 9 or 12', '4, 9, … or 30'."""
    ordered = sorted(numbers)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]} to {ordered[-1]}"
    shown = [str(number) for number in ordered]
    if len(shown) > 6:
        shown = [*shown[:4], "…", shown[-1]]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def loan_status(loan: Mapping[str, Any], now: datetime) -> str:
    """'on loan', 'OVERDUE by 3 days' or 'returned <local time>'."""
    if loan.get("returned_at"):
        return f"returned {format_local_time(loan['returned_at'])}"
    days = loan.get("days_overdue")
    overdue = loan.get("overdue")
    if overdue is None:
        due = parse_time(loan["due_at"])
        overdue = now > due
        days = (now - due).days + 1 if overdue else 0
    if not overdue:
        return "on loan"
    return f"OVERDUE by {plural(days, 'day')}" if days else "OVERDUE"


def active_loans(loans: Iterable[JsonDict]) -> list[JsonDict]:
    """The loans not yet returned (the protocol has no separate 'my loans' command)."""
    return [loan for loan in loans if loan.get("returned_at") is None]


# Tables, shared by the menus and the subcommands ----------------------------------------------


# SIMPLE_HEAD with a rule above a section (the totals), for a table printed by show_table.
_BOX = box.Box("    \n    \n ── \n    \n ── \n    \n    \n    \n")


def _table(*columns: str | Column, title: str | None = None) -> Table:
    # No edge and no edge padding: no blank first and last line, nothing before the first column.
    return Table(
        *columns, title=title, title_justify="left", box=_BOX, show_edge=False, pad_edge=False
    )


def _right(header: str) -> Column:
    return Column(header, justify="right")


def _add_row(table: Table, *cells: object) -> None:
    # Text, not markup: a '[' in a title must not be read as a style.
    table.add_row(*(Text(clean_text(cell)) for cell in cells))


def _lead(numbered: bool, index: int, ident: object) -> object:
    return index + 1 if numbered else ident


def _authors(item: Mapping[str, Any]) -> str:
    return ", ".join(item.get("authors") or [])


def _with_unit(value: object, unit: str) -> str:
    return f"{value:g} {unit}" if isinstance(value, (int, float)) else clean_text(value)


WALK_EXTRAS = (  # optional Walk fields: key, header, unit
    ("ascent_m", "Ascent", "m"),
    ("time_hours", "Time", "h"),
    ("route_type", "Route", ""),
    ("start_grid_ref", "Start", ""),
)


def areas_table(areas: list[JsonDict], numbered: bool) -> Table:
    """Walking areas with how many walks each has."""
    table = _table(*([_right("#")] if numbered else []), "Area", _right("Walks"))
    for index, area in enumerate(areas):
        _add_row(table, *([index + 1] if numbered else []), area["area"], area["walks"])
    return table


def walks_table(walks: list[JsonDict], numbered: bool, title: str | None = None) -> Table:
    """Walks with their guide book (when they carry one: recommend_books' walks do not);
    optional fields get a column when any walk has them."""
    extras = [extra for extra in WALK_EXTRAS if any(w.get(extra[0]) is not None for w in walks)]
    with_book = all("book" in walk for walk in walks)
    table = _table(
        *([_right("#")] if numbered else []),
        "Walk", "Area", _right("Miles"), "Difficulty",
        *(header for _, header, _ in extras),
        *(["Guide book"] if with_book else []), _right("Page"),
        *([_right("Price")] if with_book else []),
        title=title,
    )  # fmt: skip
    for index, walk in enumerate(walks):
        book = walk.get("book") or {}
        extra_cells = [
            "" if walk.get(key) is None else _with_unit(walk[key], unit).strip()
            for key, _, unit in extras
        ]
        _add_row(
            table,
            *([index + 1] if numbered else []),
            walk["name"], walk["area"], format_miles(walk["distance_miles"]),
            walk["difficulty"], *extra_cells,
            *([f"{book['number']} {book['title']}"] if with_book else []), walk["page"],
            *([format_money(book["price_pence"])] if with_book else []),
        )  # fmt: skip
    return table


def recommended_books_table(entries: list[JsonDict]) -> Table:
    """recommend_books' answer: the guide books covering the most matching walks first."""
    table = _table(
        _right("Book"), "Title", _right("Price"), _right("In stock"), _right("Matching walks")
    )
    for entry in entries:
        book = entry["book"]
        _add_row(
            table, book["number"], book["title"], format_money(book["price_pence"]),
            book["in_stock"], entry["matching_walks"],
        )  # fmt: skip
    return table


def recommended_books_shown(entries: list[JsonDict]) -> list[Table | str]:
    """The recommended books, then the matching walks of each."""
    if not entries:
        return ["No guide book covers walks like that; try fewer filters."]
    return [
        recommended_books_table(entries),
        *(
            walks_table(
                entry["walks"], numbered=False,
                title=f"Walks in {entry['book']['number']} {entry['book']['title']}",
            )
            for entry in entries
        ),
    ]  # fmt: skip


def guide_books_table(books: list[GuideBook]) -> Table:
    """Guide books for sale by their number, the one a person types to choose one."""
    table = _table(_right("Book"), "Title", _right("Price"), _right("In stock"))
    for book in books:
        _add_row(table, book.number, book.title, format_money(book.price_pence), book.in_stock)
    return table


def basket_table(basket: Basket) -> Table:
    """The basket by book number, with what it costs after any discount and the stock last seen."""
    table = _table(
        _right("Book"), "Title", _right("Copies"), _right("Price"), _right("Line total"),
        _right("In stock"), title="Your basket",
    )  # fmt: skip
    for line in basket.lines:
        _add_row(
            table, line.book.number, line.book.title, line.quantity,
            format_money(line.book.price_pence), format_money(line.total_pence), line.book.in_stock,
        )  # fmt: skip
    table.add_section()
    pricing = basket.pricing
    _add_row(table, "", "Subtotal", basket.copies, "", format_money(pricing.subtotal_pence), "")
    if pricing.discount_pence:
        _add_row(table, "", "Discount", "", "", format_money(-pricing.discount_pence), "")
        _add_row(table, "", "Total", "", "", format_money(pricing.total_pence), "")
    return table


def copies_of(line: Mapping[str, Any]) -> tuple[int, int, int]:
    """An order line's copies (sent, awaited, cancelled), which add up to its quantity: sent
    counts the copies a restock supplied later too, as the sales report does."""
    cancelled = line.get("backorder_cancelled", 0)
    awaited = line.get("backorder_outstanding", line["backordered"] - cancelled)
    return line["quantity"] - awaited - cancelled, awaited, cancelled


def order_table(order: JsonDict) -> Table:
    """One order: its lines with the copies sent, awaited and cancelled (Copies is their sum),
    the discount and the total."""
    back_ordered = any(line["backordered"] for line in order["lines"])
    cancelled = any(line.get("backorder_cancelled") for line in order["lines"])
    table = _table(
        "Guide book", _right("Copies"), _right("Sent"),
        *([_right("Awaited")] if back_ordered else []),
        *([_right("Cancelled")] if cancelled else []),
        _right("Price"), _right("Line total"),
        title=f"Order {order['id']}, placed {format_local_time(order.get('created_at'))}",
    )  # fmt: skip
    blanks = [""] * (2 + back_ordered + cancelled)
    for line in order["lines"]:
        book = line["book"]
        sent, awaited, gone = copies_of(line)
        _add_row(
            table, f"{book['number']} {book['title']}", line["quantity"], sent,
            *([awaited] if back_ordered else []), *([gone] if cancelled else []),
            format_money(line["unit_price_pence"]), format_money(line["line_total_pence"]),
        )  # fmt: skip
    table.add_section()
    _add_row(table, "Subtotal", *blanks, "", format_money(order["subtotal_pence"]))
    if order["discount_pence"]:
        _add_row(table, "Discount", *blanks, "", format_money(-order["discount_pence"]))
    _add_row(table, "Total", *blanks, "", format_money(order["total_pence"]))
    return table


def awaited_table(awaited: list[tuple[JsonDict, JsonDict]]) -> Table:
    """Order lines with back-ordered copies still awaited: (order, line) pairs."""
    table = _table(_right("Order"), "Placed", _right("Book"), "Title", _right("Awaited"))
    for order, line in awaited:
        _add_row(
            table, order["id"], format_local_time(order.get("created_at")), line["book"]["number"],
            line["book"]["title"], line["backorder_outstanding"],
        )  # fmt: skip
    return table


def book_hits_table(hits: list[JsonDict], numbered: bool) -> Table:
    """Open Library hits, marking the ones this library holds and their free copies."""
    table = _table(
        _right("#" if numbered else "Book ID"), "Title", "Authors", _right("Year"), "Held here",
        _right("Free copies"), *([] if numbered else ["Key"]),
    )  # fmt: skip
    for index, hit in enumerate(hits):
        free = hit.get("copies_available")
        _add_row(
            table, _lead(numbered, index, hit.get("book_id") or ""), hit["title"], _authors(hit),
            hit.get("first_publish_year") or "", "yes" if hit.get("held") else "no",
            "" if free is None else free, *([] if numbered else [hit.get("key") or ""]),
        )  # fmt: skip
    return table


def catalogue_table(books: list[JsonDict], numbered: bool) -> Table:
    """The library's lending books with their free copies."""
    table = _table(
        _right("#" if numbered else "Book ID"), "Title", "Authors", _right("Year"),
        _right("Copies"), _right("Free"),
    )  # fmt: skip
    for index, book in enumerate(books):
        _add_row(
            table, _lead(numbered, index, book["id"]), book["title"], _authors(book),
            book.get("first_publish_year") or "", book["copies"], book["copies_available"],
        )  # fmt: skip
    return table


def loans_table(loans: list[JsonDict], title: str) -> Table:
    """Loans by their number (the one return and renew take), with local due dates and the
    renewals used of the house's limit (the wire does not carry a server's own setting)."""
    now = datetime.now(UTC)
    renewals = any("renewals" in loan for loan in loans)
    table = _table(
        _right("Loan"), "Title", "Borrowed", "Due back", "Status",
        *([_right("Renewals")] if renewals else []), title=title,
    )  # fmt: skip
    for loan in loans:
        used = loan.get("renewals")
        _add_row(
            table, loan["id"], loan["book"]["title"], format_local_time(loan["borrowed_at"]),
            format_local_time(loan["due_at"]), loan_status(loan, now),
            *([f"{used} of {rules.MAX_RENEWALS}" if used is not None else ""] if renewals else []),
        )  # fmt: skip
    return table


def holds_table(holds: list[JsonDict], numbered: bool, whose: str = "you") -> Table:
    """Holds with their place in the queue (a copy kept for whose: you, or them at the desk)."""
    table = _table(
        _right("#" if numbered else "Hold"), "Title", _right("Queue position"), "Status", "Placed"
    )
    for index, hold in enumerate(holds):
        status = f"a copy is kept for {whose}{kept_until(hold)}" if hold.get("ready") else "waiting"
        _add_row(
            table, _lead(numbered, index, hold["id"]), hold["book"]["title"], hold["position"],
            status, format_local_time(hold.get("created_at")),
        )  # fmt: skip
    return table


def kept_until(hold: Mapping[str, Any]) -> str:
    """' until <local time>' for a hold whose copy is kept until then, else ''."""
    until = hold.get("ready_until")
    return f" until {format_local_time(until)}" if until else ""


def backorders_table(backorders: list[JsonDict]) -> Table:
    """Copies sold but not yet supplied, oldest order first."""
    table = _table(_right("Order"), "Placed", "Member", "Guide book", _right("Copies awaited"))
    for entry in backorders:
        book = entry["book"]
        _add_row(
            table, entry["order_id"], format_local_time(entry.get("created_at")),
            entry.get("username", ""), f"{book['number']} {book['title']}", entry["outstanding"],
        )  # fmt: skip
    return table


def overdue_table(loans: list[JsonDict]) -> Table:
    """The loans past their due date, most days overdue first, with who has them."""
    table = _table(
        _right("Loan"), "Member", "Title", "Due back", _right("Days overdue"), title="Overdue loans"
    )
    for loan in loans:
        _add_row(
            table, loan["id"], loan["member"]["username"], loan["book"]["title"],
            format_local_time(loan["due_at"]), loan.get("days_overdue", ""),
        )  # fmt: skip
    return table


def sales_table(sales: JsonDict, title: str | None = "Sales") -> Table:
    """The copies ordered of each guide book in a window, and the orders' totals."""
    books = sales["books"]
    table = _table(
        _right("Book"), "Title", _right("Copies ordered"), _right("Sent"), _right("Outstanding"),
        _right("Line total"), title=title,
    )  # fmt: skip
    for book in books:
        _add_row(
            table, book["number"], book["title"], book["copies_ordered"], book["copies_sent"],
            book["backorder_outstanding"], format_money(book["line_total_pence"]),
        )  # fmt: skip
    table.add_section()
    copies = [sum(book[key] for book in books) for key in _SOLD]
    orders = plural(sales["orders"], "order")
    _add_row(table, "", f"Subtotal ({orders})", *copies, format_money(sales["subtotal_pence"]))
    _add_row(table, "", "Discount", "", "", "", format_money(-sales["discount_pence"]))
    _add_row(table, "", "Total", "", "", "", format_money(sales["total_pence"]))
    return table


_SOLD = ("copies_ordered", "copies_sent", "backorder_outstanding")


def sales_title(since: str | None, until: str | None, last_day: bool = True) -> str:
    """What window a sales table covers, as the admin gave it: until is the last day (included)
    or, when not last_day, the moment the window ends before."""
    start, end = clean_text(since or ""), clean_text(until or "")
    if not end:
        return f"Sales since {start}" if start else "All sales"
    if not last_day:
        return f"Sales from {start} to just before {end}" if start else f"Sales before {end}"
    if start == end:
        return f"Sales on {end}"
    return f"Sales from {start} to {end} inclusive" if start else f"Sales up to {end} inclusive"


def notices_shown(notices: Sequence[JsonDict]) -> list[str]:
    """Messages as people read them: when, NEW when unread, the subject, then the body."""
    shown = []
    for notice in notices:
        new = "NEW  " if not notice.get("read") else ""
        shown += [
            f"{format_local_time(notice.get('created_at'))}  {new}{clean_text(notice['subject'])}",
            f"    {clean_text(notice['body'])}",
        ]
    return shown


def members_table(members: list[JsonDict], numbered: bool) -> Table:
    """Members as the desk sees them: their email, loans, and whether they are blocked."""
    table = _table(
        *([_right("#")] if numbered else []), "Username", "Role", "Email", _right("On loan"),
        _right("Overdue"), "Blocked",
    )  # fmt: skip
    for index, member in enumerate(members):
        _add_row(
            table, *([index + 1] if numbered else []), member["username"], member["role"],
            member.get("email") or "", member["active_loans"], member["overdue_loans"],
            blocked_text(member),
        )  # fmt: skip
    return table


def blocked_text(member: Mapping[str, Any]) -> str:
    """'' for a member who is not blocked, else 'yes' with the reason when it is known."""
    if not member.get("blocked"):
        return ""
    reason = member.get("blocked_reason")
    return f"yes: {clean_text(reason)}" if reason else "yes"


def orders_summary_table(orders: list[JsonDict]) -> Table:
    """Orders one line each: when, how many copies, how many still awaited, and the total."""
    table = _table(
        _right("Order"), "Placed", _right("Copies"), _right("Awaited"), _right("Total"),
        title="Orders",
    )  # fmt: skip
    for order in orders:
        counts = [copies_of(line) for line in order["lines"]]
        _add_row(
            table, order["id"], format_local_time(order.get("created_at")),
            sum(sent + awaited for sent, awaited, _ in counts),
            sum(awaited for _, awaited, _ in counts), format_money(order["total_pence"]),
        )  # fmt: skip
    return table


def member_shown(found: JsonDict) -> list[Table | str]:
    """One member's file at the desk: who they are, then their loans, holds and orders."""
    user = found["user"]
    email = clean_text(user.get("email") or "no email")
    shown: list[Table | str] = [
        f"{clean_text(user['username'])} ({user['role']}, {email}): "
        f"{plural(user['active_loans'], 'book')} on loan, {user['overdue_loans']} overdue."
    ]
    if user.get("blocked"):
        reason = user.get("blocked_reason")
        shown.append(f"BLOCKED: {clean_text(reason)}" if reason else "BLOCKED")
    loans, holds, orders = found["loans"], found["holds"], found["orders"]
    on_loan = active_loans(loans)
    shown.append(loans_table(on_loan, title="On loan") if on_loan else "No books on loan.")
    if returned := len(loans) - len(on_loan):
        shown.append(f"({plural(returned, 'loan')} returned earlier.)")
    shown.append(holds_table(holds, numbered=False, whose="them") if holds else "No holds.")
    shown.append(orders_summary_table(orders) if orders else "No orders.")
    return shown


# Printing ------------------------------------------------------------------------------------


def say(console: Console, text: str, style: str | None = None) -> None:
    """Print a sentence as it is (no markup: server text may contain brackets)."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def show(console: Console, shown: Shown, spaced: bool = False) -> None:
    """Print tables, and sentences as they are; spaced puts a blank line before each table."""
    for item in shown:
        if isinstance(item, Table):
            if spaced:
                say(console, "")
            show_table(console, item)
        else:
            say(console, item)


def show_table(console: Console, table: Table) -> None:
    """Print a table with no trailing spaces: rich pads every cell and title to its width."""
    segments: list[Segment] = []
    for line in console.render_lines(table, pad=False):
        segments += [*_rstrip(line), Segment.line()]
    console.print(Segments(segments), soft_wrap=True)


def _rstrip(line: list[Segment]) -> list[Segment]:
    line = list(line)
    while line and not line[-1].control and not line[-1].text.rstrip(" "):
        line.pop()
    if line and not line[-1].control:
        text, style, control = line[-1]
        line[-1] = Segment(text.rstrip(" "), style, control)
    return line
