"""Reading the shop's CSV exports: guide-book prices, walks, each row cleaned or refused.

Pure functions from CSV text to dataclasses; the caller reads the files and stores the
results. A file that cannot be used at all (a required column missing, broken quoting)
raises ValueError; read_walks rejects individual bad rows and says why, with the line
each starts on, so one typo does not stop a whole import.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from rules import DIFFICULTIES, match_key, normalise_spaces

# Generous bounds that no real guide book reaches: a larger value is a typo, and an
# unbounded one could overflow a database INT column.
_MAX_DISTANCE_MILES = Decimal(1000)
_MAX_PAGE = 10_000
_MAX_ASCENT_M = 10_000
_MAX_TIME_HOURS = Decimal(100)
_MAX_STOCK = 100_000
_MAX_PRICE_PENCE = 1_000_000
_MAX_BOOK_NUMBER = 2**31 - 1
# Column widths in schema.sql: MySQL refuses a longer value (and SQLite would keep it), so
# such a row is rejected here, the same on both backends.
_MAX_TITLE_LENGTH = 200
_MAX_NAME_LENGTH = 200
_MAX_AREA_LENGTH = 100

# Number patterns are ASCII-only: Decimal and int would also accept other scripts' digits
# and underscores ("1_000"), which no spreadsheet export means.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
_WHOLE = re.compile(r"[+-]?\d+", re.ASCII)
_HOURS_MINUTES = re.compile(r"(\d+):([0-5]\d)", re.ASCII)
_POUNDS = re.compile(r"£?(\d+(?:\.\d{1,2})?)", re.ASCII)
# Two letters of the 100 km square (the National Grid never uses I), then an even number of
# digits, half easting and half northing. Checked loosely: the square need not exist.
_GRID_REF = re.compile(r"([A-HJ-Z]{2})((?:\d\d){1,5})", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_ROUTE_TYPES = {"circular": "circular", "linear": "linear", "out and back": "out-and-back"}


@dataclass(frozen=True)
class ShopBook:
    """A walking guide the shop sells."""

    number: int
    title: str
    price_pence: int
    in_stock: int


@dataclass(frozen=True)
class WalkRow:
    """One cleaned walk from a guide book."""

    name: str
    area: str
    book_title: str
    distance_miles: float
    difficulty: str
    page: int
    ascent_m: int | None = None
    time_hours: float | None = None
    route_type: str | None = None
    start_grid_ref: str | None = None


@dataclass
class ImportReport:
    """The walks read from a file, and the rows rejected as (line number, reason)."""

    walks: list[WalkRow] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Column:
    """A field read from a CSV file: the name used in messages and the headers that give it."""

    label: str
    headers: tuple[str, ...]
    required: bool = True


_BOOK_COLUMNS = {
    "title": _Column("Books", ("books", "book", "title", "booktitle")),
    "number": _Column("Book Number", ("booknumber", "number", "bookno")),
    "price": _Column("Price", ("price", "priceinpounds", "pricepounds", "pricegbp")),
    "stock": _Column("Stock", ("stock", "instock"), required=False),
}

_WALK_COLUMNS = {
    "area": _Column("Area", ("area",)),
    "book": _Column("Book", ("book", "booktitle")),
    "name": _Column("WalkName", ("walkname", "walk", "name")),
    "distance": _Column("Distance", ("distance", "distancemiles", "miles")),
    "difficulty": _Column("Difficult", ("difficult", "difficulty")),
    "page": _Column("Page", ("page",)),
    "ascent": _Column("Ascent", ("ascent", "ascentm", "ascentmetres"), required=False),
    "time": _Column("Time", ("time", "timehours", "hours"), required=False),
    "route_type": _Column("RouteType", ("routetype", "route"), required=False),
    "grid_ref": _Column(
        "StartGridRef", ("startgridref", "gridref", "startgridreference"), required=False
    ),
}


class _RowError(ValueError):
    """A row that cannot be used; its message is the reason given in the import report."""


@dataclass(frozen=True)
class _Layout:
    """Where each field is in a file's rows, as its header row says."""

    positions: dict[str, int]
    fields: tuple[str, ...]
    width: int

    def values(self, row: list[str]) -> dict[str, str]:
        """The row's text for each field; a field whose column the file lacks reads as ''."""
        if len(row) > self.width and not _is_blank(row[self.width :]):
            raise _RowError(
                f"The row has {len(row)} values but the header has {self.width} columns."
            )
        values = dict.fromkeys(self.fields, "")
        for name, index in self.positions.items():
            if index < len(row):
                values[name] = row[index]
        return values


# Guide-book prices -------------------------------------------------------------------------


def sample_stock(number: int) -> int:
    """Stock for a sample book whose export gives none: the same on every fresh database, 10..40."""
    # The sample export has no stock column. A fixed rule on the book number spreads the sample
    # books over 10..40 (101 -> 35, 102 -> 11), so some run short and back orders get exercised.
    return 10 + number * 7 % 31


def no_stock(number: int) -> int:
    """Stock for a shop's own book whose export gives none: none, until it is restocked."""
    return 0


def read_book_prices(
    text: str, stock_if_missing: Callable[[int], int] = sample_stock
) -> list[ShopBook]:
    """The books of a price export (Books, Book Number, Price in pounds; optional Stock). A book
    with no stock given gets stock_if_missing(its number): the sample catalogue's spread unless
    told otherwise (server.py import-walks gives none, no_stock).

    Raises ValueError naming the line of any unusable row: every walk refers to a book, so a
    partial price list is not worth importing.
    """
    records = _read_records(text)
    layout = _map_columns(_read_header(records, "price list"), _BOOK_COLUMNS, "price list")
    books: list[ShopBook] = []
    line_of_number: dict[int, int] = {}
    line_of_title: dict[str, int] = {}
    for line, row in records:
        if _is_blank(row):
            continue
        try:
            book = _parse_book(layout.values(row), stock_if_missing)
        except _RowError as error:
            raise ValueError(f"Line {line} of the price list: {error}") from None
        title_key = match_key(book.title)
        if book.number in line_of_number:
            raise ValueError(
                f"Line {line} of the price list repeats book number {book.number} from line "
                f"{line_of_number[book.number]}."
            )
        if title_key in line_of_title:
            raise ValueError(
                f"Line {line} of the price list repeats the title {book.title!r} from line "
                f"{line_of_title[title_key]}."
            )
        line_of_number[book.number] = line_of_title[title_key] = line
        books.append(book)
    return books


def _parse_book(values: Mapping[str, str], stock_if_missing: Callable[[int], int]) -> ShopBook:
    number = _parse_whole(values["number"], "book number", minimum=1, maximum=_MAX_BOOK_NUMBER)
    stock = values["stock"]
    return ShopBook(
        number=number,
        title=_parse_text(values["title"], "title", _MAX_TITLE_LENGTH),
        price_pence=_parse_price(values["price"]),
        in_stock=(
            stock_if_missing(number)
            if _is_empty(stock)
            else _parse_whole(stock, "stock", minimum=0, maximum=_MAX_STOCK)
        ),
    )


def _parse_price(value: str) -> int:
    if _is_empty(value):
        raise _RowError("The price is missing.")
    match = _POUNDS.fullmatch(value.strip())
    if match is None:
        raise _RowError(f"The price {_shown(value)} is not an amount in pounds like 12.99.")
    # Decimal, never float: 12.99 * 100 as a float is 1298.9999999999998.
    pence = int(Decimal(match.group(1)) * 100)
    if not 0 < pence <= _MAX_PRICE_PENCE:
        raise _RowError(
            f"The price {_shown(value)} is not between £0.01 and £{_MAX_PRICE_PENCE // 100}."
        )
    return pence


# Walks -------------------------------------------------------------------------------------


def read_walks(text: str, known_book_titles: Iterable[str] | None = None) -> ImportReport:
    """The cleaned walks of a walks export, with every rejected row and why.

    When known_book_titles is given, a walk's book must be one of them (ignoring case and
    spaces) and takes its spelling; otherwise the first spelling of each book and area in
    the file is used for all its walks. Raises ValueError if a required column is missing
    or the file's quoting is broken.
    """
    records = _read_records(text)
    layout = _map_columns(_read_header(records, "walks file"), _WALK_COLUMNS, "walks file")
    known_titles = (
        None
        if known_book_titles is None
        else {match_key(title): _clean(title) for title in known_book_titles}
    )
    # match key -> the spelling used for every walk, so one book or area spelled two ways
    # ("Vale Of York", "Vale of York") is stored, listed and searched as one.
    book_spellings: dict[str, str] = {}
    area_spellings: dict[str, str] = {}
    first_line_of: dict[tuple[str, str], int] = {}
    report = ImportReport()
    for line, row in records:
        if _is_blank(row):
            continue
        try:
            walk = _parse_walk(layout.values(row), known_titles)
        except _RowError as error:
            report.rejected.append((line, str(error)))
            continue
        key = (match_key(walk.book_title), match_key(walk.name))
        if key in first_line_of:
            report.rejected.append(
                (line, f"Duplicate of the walk on line {first_line_of[key]}: {walk.name}.")
            )
            continue
        first_line_of[key] = line
        report.walks.append(
            replace(
                walk,
                book_title=book_spellings.setdefault(key[0], walk.book_title),
                area=area_spellings.setdefault(match_key(walk.area), walk.area),
            )
        )
    return report


def _parse_walk(values: Mapping[str, str], known_titles: Mapping[str, str] | None) -> WalkRow:
    name = _parse_text(values["name"], "walk name", _MAX_NAME_LENGTH)
    area = _parse_text(values["area"], "area", _MAX_AREA_LENGTH)
    book = _parse_text(values["book"], "book", _MAX_TITLE_LENGTH)
    if known_titles is not None:
        if match_key(book) not in known_titles:
            raise _RowError(f"The book {_shown(book)} is not one of the shop's books.")
        book = known_titles[match_key(book)]
    ascent = values["ascent"]
    return WalkRow(
        name=name,
        area=area,
        book_title=book,
        distance_miles=_parse_distance(values["distance"]),
        difficulty=_parse_difficulty(values["difficulty"]),
        page=_parse_whole(values["page"], "page", minimum=1, maximum=_MAX_PAGE),
        ascent_m=(
            None
            if _is_empty(ascent)
            else _parse_whole(ascent, "ascent", minimum=0, maximum=_MAX_ASCENT_M)
        ),
        time_hours=_parse_time(values["time"]),
        route_type=_parse_route_type(values["route_type"]),
        start_grid_ref=_parse_grid_ref(values["grid_ref"]),
    )


def _parse_distance(value: str) -> float:
    miles = _parse_decimal(value, "distance")
    if not 0 < miles <= _MAX_DISTANCE_MILES:
        raise _RowError(
            f"The distance {_shown(value)} is not between 0 and {_MAX_DISTANCE_MILES} miles."
        )
    return float(miles)


def _parse_difficulty(value: str) -> str:
    difficulty = match_key(value)
    if difficulty not in DIFFICULTIES:
        raise _RowError(f"The difficulty {_shown(value)} is not easy, medium or hard.")
    return difficulty


def _parse_time(value: str) -> float | None:
    if _is_empty(value):
        return None
    # Walking times are often written as hours and minutes: "2:30" is two and a half hours.
    if match := _HOURS_MINUTES.fullmatch(value.strip()):
        hours = Decimal(match.group(1)) + Decimal(match.group(2)) / 60
    else:
        hours = _parse_decimal(value, "time")
    if not 0 < hours <= _MAX_TIME_HOURS:
        raise _RowError(f"The time {_shown(value)} is not between 0 and {_MAX_TIME_HOURS} hours.")
    return float(hours)


def _parse_route_type(value: str) -> str | None:
    if _is_empty(value):
        return None
    words = " ".join(re.split(r"[\s_-]+", value.strip().casefold()))
    if words not in _ROUTE_TYPES:
        raise _RowError(f"The route type {_shown(value)} is not circular, linear or out-and-back.")
    return _ROUTE_TYPES[words]


def _parse_grid_ref(value: str) -> str | None:
    compact = "".join(value.split()).upper()
    if not compact:
        return None
    match = _GRID_REF.fullmatch(compact)
    if match is None:
        raise _RowError(
            f"The start grid reference {_shown(value)} is not an OS grid reference like SK 123 456."
        )
    letters, digits = match.groups()
    half = len(digits) // 2
    return f"{letters} {digits[:half]} {digits[half:]}"


# CSV reading shared by both files ----------------------------------------------------------


def _read_records(text: str) -> Iterator[tuple[int, list[str]]]:
    """Each CSV record with the physical line it starts on (quoted line breaks span lines)."""
    # Excel puts a byte-order mark before the header when it saves as UTF-8.
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ValueError(f"Line {start} is not valid CSV: {error}.") from None
        yield start, row
        # line_num is the line the record ended on, so the next one starts just after it.
        start = reader.line_num + 1


def _read_header(records: Iterator[tuple[int, list[str]]], what: str) -> list[str]:
    for _, row in records:
        if not _is_blank(row):
            return row
    raise ValueError(f"The {what} is empty: it has no header row.")


def _map_columns(header: list[str], columns: Mapping[str, _Column], what: str) -> _Layout:
    """Where each known field is in the header; raises ValueError if a required one is missing."""
    positions: dict[str, int] = {}
    for position, name in enumerate(header):
        key = re.sub(r"[^0-9a-z]", "", name.casefold())
        for field_name, column in columns.items():
            if key in column.headers:
                if field_name in positions:
                    raise ValueError(
                        f"The {what} has two {column.label} columns: "
                        f"{header[positions[field_name]]!r} and {name!r}."
                    )
                positions[field_name] = position
                break
    missing = [c.label for f, c in columns.items() if c.required and f not in positions]
    if missing:
        raise ValueError(
            f"The {what} is missing the column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}; its header row is {', '.join(header)}."
        )
    return _Layout(positions, tuple(columns), len(header))


def _is_blank(row: list[str]) -> bool:
    return all(_is_empty(cell) for cell in row)


# Cell values -------------------------------------------------------------------------------


def _clean(text: str) -> str:
    """Text with spaces normalised (line breaks too) and accents in one Unicode form."""
    return unicodedata.normalize("NFC", normalise_spaces(text))


def _parse_text(value: str, label: str, max_length: int) -> str:
    text = _clean(value)
    if not text:
        raise _RowError(f"The {label} is missing.")
    if _CONTROL.search(text):
        raise _RowError(f"The {label} contains a control character.")
    # The match key is stored too, and case folding can lengthen text ("ß" becomes "ss").
    if max(len(text), len(match_key(text))) > max_length:
        raise _RowError(f"The {label} {_shown(value)} is longer than {max_length} characters.")
    return text


def _is_empty(value: str) -> bool:
    return not value.strip()


def _parse_decimal(value: str, label: str) -> Decimal:
    text = value.strip()
    if not text:
        raise _RowError(f"The {label} is missing.")
    if not _DECIMAL.fullmatch(text):
        raise _RowError(f"The {label} {_shown(value)} is not a number.")
    return Decimal(text)


def _parse_whole(value: str, label: str, *, minimum: int, maximum: int) -> int:
    text = value.strip()
    if not text:
        raise _RowError(f"The {label} is missing.")
    # Length first: int() of a very long digit string is slow, and it is out of range anyway.
    if not _WHOLE.fullmatch(text) or len(text) > 12 or not minimum <= int(text) <= maximum:
        raise _RowError(
            f"The {label} {_shown(value)} is not a whole number from {minimum} to {maximum}."
        )
    return int(text)


def _shown(value: str) -> str:
    """A cell value quoted for a message, shortened so a runaway cell cannot flood a report."""
    text = normalise_spaces(value)
    return repr(text if len(text) <= 40 else text[:39] + "…")
