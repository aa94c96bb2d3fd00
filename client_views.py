"""How the client shows things to people: safe text, money, times, miles, tables and sentences."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from rich import box
from rich.console import Console
from rich.segment import Segment, Segments
from rich.table import Column, Table
from rich.text import Text

from client_basket import Basket, GuideBook
from client_link import JsonDict

DIFFICULTIES = ("easy", "medium", "hard")
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


# Tables and sentences, shared by the menus and the subcommands -------------------------------


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


def order_table(order: JsonDict) -> Table:
    """One order: its lines, what was sent and back-ordered (and cancelled), the discount and
    the total."""
    outstanding = any("backorder_outstanding" in line for line in order["lines"])
    cancelled = any(line.get("backorder_cancelled") for line in order["lines"])
    table = _table(
        "Guide book", _right("Copies"), _right("Sent"), _right("Back-ordered"),
        *([_right("Awaited")] if outstanding else []),
        *([_right("Cancelled")] if cancelled else []),
        _right("Price"), _right("Line total"),
        title=f"Order {order['id']}, placed {format_local_time(order.get('created_at'))}",
    )  # fmt: skip
    blanks = [""] * (3 + outstanding + cancelled)
    for line in order["lines"]:
        book = line["book"]
        _add_row(
            table, f"{book['number']} {book['title']}", line["quantity"], line["fulfilled"],
            line["backordered"], *([line.get("backorder_outstanding", 0)] if outstanding else []),
            *([line.get("backorder_cancelled", 0)] if cancelled else []),
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
    """Loans by their number (the one return and renew take), with local due dates."""
    now = datetime.now(UTC)
    table = _table(_right("Loan"), "Title", "Borrowed", "Due back", "Status", title=title)
    for loan in loans:
        _add_row(
            table, loan["id"], loan["book"]["title"], format_local_time(loan["borrowed_at"]),
            format_local_time(loan["due_at"]), loan_status(loan, now),
        )  # fmt: skip
    return table


def holds_table(holds: list[JsonDict], numbered: bool) -> Table:
    """Holds with their place in the queue."""
    table = _table(
        _right("#" if numbered else "Hold"), "Title", _right("Queue position"), "Status", "Placed"
    )
    for index, hold in enumerate(holds):
        status = "a copy is kept for you" if hold.get("ready") else "waiting"
        _add_row(
            table, _lead(numbered, index, hold["id"]), hold["book"]["title"], hold["position"],
            status, format_local_time(hold.get("created_at")),
        )  # fmt: skip
    return table


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


def sales_table(sales: JsonDict, title: str = "Sales") -> Table:
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


def sales_title(since: str | None, until: str | None) -> str:
    """What window a sales table covers, as the admin gave it."""
    if since and until:
        return f"Sales from {clean_text(since)} until {clean_text(until)}"
    if since:
        return f"Sales since {clean_text(since)}"
    return f"Sales until {clean_text(until)}" if until else "All sales"


# The arguments of the protocol, as people call them (for the server's bad_request sentences).
ARGUMENT_NAMES = {
    "area": "the area", "book": "the guide book", "book_id": "the book",
    "copies": "the number of copies", "difficulty": "the difficulty", "hold_id": "the hold",
    "items": "the order", "key": "the Open Library key", "limit": "the number of results",
    "loan_id": "the loan", "max_distance": "the longest distance",
    "min_distance": "the shortest distance", "new_password": "the new password",
    "offset": "the first result", "old_password": "the old password", "order_id": "the order",
    "since": "the first date", "until": "the last date",
    "password": "the password", "quantity": "the number of copies", "query": "the search",
    "token": "the saved login", "username": "the username",
}  # fmt: skip
_ARGUMENT_WORDING = re.compile(r"(?:In item (\d+) of '(\w+)': )?The argument '(\w+)' (.*)", re.S)


def plain_argument_message(message: str, name_of: Callable[[str], str] | None = None) -> str:
    """A bad_request sentence in the words of the person: "The argument 'query' is longer than
    200 characters." becomes "The search is longer than 200 characters."; others stay as they are.

    name_of names an argument (ARGUMENT_NAMES by default; the command line names its options).
    """
    match = _ARGUMENT_WORDING.fullmatch(message)
    if match is None:
        return message
    name_of = name_of or (lambda name: ARGUMENT_NAMES.get(name, "that answer"))
    position, listed, name, rest = match.groups()
    rest = re.sub(r"'(\w+)'", lambda quoted_name: name_of(quoted_name.group(1)), rest)
    sentence = f"{name_of(name)} {rest}"
    if position:
        sentence = f"{sentence.rstrip('.')} (in item {position} of {name_of(listed)})."
    return sentence[:1].upper() + sentence[1:]


def question_order(basket: Basket) -> str:
    """The question before buying: the copies and what they cost after the discount."""
    pricing = basket.pricing
    cost = format_money(pricing.total_pence)
    if pricing.discount_pence:
        cost += (
            f" ({format_money(pricing.subtotal_pence)} less the "
            f"{format_money(pricing.discount_pence)} discount)"
        )
    return f"Order {plural(basket.copies, 'copy', 'copies')} for {cost}?"


def sentences_short_stock(basket: Basket) -> list[str]:
    """What would be back-ordered at the stock last fetched, said before the person commits."""
    sentences = []
    for line, backordered in basket.shortfalls():
        stock = line.book.in_stock
        has = f"only {plural(stock, 'copy', 'copies')} of" if stock else "no copies of"
        sentences.append(
            f"There {'is' if stock == 1 else 'are'} {has} {line.book.title} in stock; "
            f"{backordered} will be back-ordered and sent when more arrive."
        )
    if sentences:
        sentences.append("(Stock is as last shown here; others may be buying too.)")
    return sentences


def sentence_copy_limit(details: Mapping[str, Any], title: str) -> str:
    """A limit_exceeded answer about a guide book, naming it by its title."""
    allowed = details.get("allowed", 0)
    more = f"only {plural(allowed, 'more copy', 'more copies')}" if allowed else "no more copies"
    limit = details.get("limit", "8")
    if details.get("scope") == "order":
        return f"One order may hold at most {limit} copies of {title}; you may order {more}."
    return (
        f"Each member may have at most {limit} copies of {title}, back orders included; "
        f"you may order {more}."
    )


def sentence_not_a_difficulty(text: str) -> str:
    """What to say of a difficulty that is none of DIFFICULTIES."""
    return f"{text!r} is not a difficulty; choose easy, medium or hard."


def sentence_borrowed(loan: JsonDict) -> str:
    """What borrowing gave."""
    return f"You have borrowed {loan['book']['title']}; it is due back {_due(loan)}."


def sentence_returned(loan: JsonDict) -> str:
    """What returning did."""
    return f"Returned {loan['book']['title']}. Thank you!"


def sentence_renewed(loan: JsonDict) -> str:
    """What renewing did."""
    return f"Renewed {loan['book']['title']}; it is now due back {_due(loan)}."


def sentence_held(hold: JsonDict) -> str:
    """Where a new hold stands."""
    return f"You are number {hold['position']} in the queue for {hold['book']['title']}."


def sentences_back_ordered(order: JsonDict) -> list[str]:
    """One sentence for each line with copies back-ordered, and one for a discount."""
    sentences = [
        f"{plural(line['backordered'], 'copy', 'copies')} of {line['book']['title']} "
        f"{'is' if line['backordered'] == 1 else 'are'} back-ordered and will be sent when "
        "stock arrives."
        for line in order["lines"]
        if line["backordered"]
    ]
    if order["discount_pence"]:
        sentences.append(f"You saved {format_money(order['discount_pence'])} with the discount.")
    return sentences


def sentence_refund(refund_pence: int) -> str:
    """What cancelling back-ordered copies does to what the customer paid."""
    if refund_pence > 0:
        return f"You will be refunded {format_money(refund_pence)}."
    if refund_pence == 0:
        return "The order's total stays the same, so nothing is refunded."
    return (
        f"This is not a refund: the order's total goes up by {format_money(-refund_pence)}, "
        "because the order no longer gets the discount."
    )


def sentences_backorder_cancelled(result: JsonDict) -> list[str]:
    """What cancel_backorder did to the order: its new total, and the refund."""
    return [
        f"Order {result['order']['id']}'s total is now "
        f"{format_money(result['order']['total_pence'])}.",
        sentence_refund(result["refund_pence"]),
    ]


def sentences_restocked(result: JsonDict) -> list[str]:
    """What a restock did."""
    book = result["book"]
    sentences = [
        f"Sent {plural(filled['quantity'], 'back-ordered copy', 'back-ordered copies')} "
        f"for order {filled['order_id']}."
        for filled in result.get("backorders_filled", [])
    ]
    return [*sentences, f"{book['title']} now has {book['in_stock']} in stock."]


def sentence_added(book: JsonDict) -> str:
    """What add_book did."""
    return (
        f"The library now holds {plural(book['copies'], 'copy', 'copies')} of {book['title']} "
        f"({book['copies_available']} free)."
    )


def _due(loan: JsonDict) -> str:
    return format_local_time(loan["due_at"])


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
