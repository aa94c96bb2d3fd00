"""Tests for shop_import.py: the shop's real CSV exports, extra columns, and every kind of bad row."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shop_import import ImportReport, ShopBook, WalkRow, read_book_prices, read_walks
from tests.test_client import run_json
from tests.wire import ServerProcess

DATA = Path(__file__).resolve().parent.parent / "data"
HEADER = "Area,Book,WalkName,Distance,Difficult,Page"


def _sample(name: str) -> str:
    # Decoded as bytes, not read_text(), so the file's own CRLF line endings reach the parser.
    return (DATA / name).read_bytes().decode("utf-8")


def _walks(*rows: str, header: str = HEADER, known: list[str] | None = None) -> ImportReport:
    return read_walks("\r\n".join((header, *rows)) + "\r\n", known)


def _only_walk(*rows: str, header: str = HEADER) -> WalkRow:
    report = _walks(*rows, header=header)
    assert report.rejected == []
    assert len(report.walks) == 1
    return report.walks[0]


def _only_rejection(row: str, header: str = HEADER, known: list[str] | None = None) -> str:
    report = _walks(row, header=header, known=known)
    assert report.walks == []
    assert len(report.rejected) == 1
    line, reason = report.rejected[0]
    assert line == 2
    return reason


# The shop's real files ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_books() -> list[ShopBook]:
    return read_book_prices(_sample("books_cost.csv"))


@pytest.fixture(scope="module")
def sample_walks(sample_books: list[ShopBook]) -> ImportReport:
    return read_walks(_sample("circular_walks.csv"), [book.title for book in sample_books])


def test_sample_books(sample_books: list[ShopBook]) -> None:
    assert [(b.number, b.title, b.price_pence) for b in sample_books] == [
        (101, "More Peak District", 1299),
        (102, "Lincolnshire Wolds", 1099),
        (103, "Vale of York", 1199),
        (104, "Peak District", 1299),
        (105, "Snowdonia", 1399),
        (106, "Malvern and Warwickshire", 1099),
        (107, "Cheshire", 1299),
    ]
    assert all(10 <= book.in_stock <= 40 for book in sample_books)


def test_sample_stock_is_the_same_every_time(sample_books: list[ShopBook]) -> None:
    assert read_book_prices(_sample("books_cost.csv")) == sample_books


def test_sample_walks_all_import(sample_walks: ImportReport) -> None:
    assert sample_walks.rejected == []
    assert len(sample_walks.walks) == 16


@pytest.mark.parametrize(
    ("name", "book", "area", "distance", "difficulty", "page"),
    [
        ("Hathasage", "More Peak District", "Peak District", 7.0, "easy", 67),
        ("Hope and Win Hill", "More Peak District", "Peak District", 4.5, "medium", 18),
        ("Tennyson County", "Lincolnshire Wolds", "Lincolnshire", 5.0, "hard", 28),
        ("Cowlam and Cotham", "Vale of York", "York", 8.0, "hard", 64),
        ("Fridaythorpe", "Vale of York", "York", 7.0, "easy", 42),
        ("Lord\u2019s Seat", "Peak District", "Peak District", 5.5, "easy", 28),
        ("Edge Hill", "Malvern and Warwickshire", "Warwickshire", 4.0, "easy", 28),
        ("Bidford-Upon-Avon", "Malvern and Warwickshire", "Warwickshire", 8.5, "medium", 78),
        ("Delamere Forest", "Cheshire", "Cheshire", 5.5, "easy", 30),
    ],
)
def test_sample_walks_are_cleaned(
    sample_walks: ImportReport,
    name: str,
    book: str,
    area: str,
    distance: float,
    difficulty: str,
    page: int,
) -> None:
    assert WalkRow(name, area, book, distance, difficulty, page) in sample_walks.walks


def test_sample_walk_text_has_no_line_breaks_or_double_spaces(sample_walks: ImportReport) -> None:
    for walk in sample_walks.walks:
        for text in (walk.name, walk.area, walk.book_title):
            assert "\n" not in text
            assert "\r" not in text
            assert "  " not in text
            assert text == text.strip()


def test_sample_walks_use_the_price_list_titles(
    sample_walks: ImportReport, sample_books: list[ShopBook]
) -> None:
    assert {walk.book_title for walk in sample_walks.walks} == {b.title for b in sample_books}


def test_without_known_titles_one_book_keeps_its_first_spelling() -> None:
    report = read_walks(_sample("circular_walks.csv"))
    york = {walk.book_title for walk in report.walks if walk.area == "York"}
    assert york == {"Vale Of York"}
    assert len({walk.book_title for walk in report.walks}) == 7


# Prices -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "pence"),
    [
        ("12.99", 1299),
        ("0.29", 29),
        ("0.01", 1),
        ("8", 800),
        ("8.5", 850),
        ("8.50", 850),
        ("£7.50", 750),
        (" 10.99 ", 1099),
        ("10000", 1_000_000),
    ],
)
def test_prices_become_exact_pence(price: str, pence: int) -> None:
    (book,) = read_book_prices(f'Books,Book Number,Price\n"Cheshire",107,"{price}"\n')
    assert book.price_pence == pence


@given(st.integers(min_value=1, max_value=1_000_000))
def test_every_pounds_and_pence_amount_round_trips(pence: int) -> None:
    pounds = f"{pence // 100}.{pence % 100:02d}"
    (book,) = read_book_prices(f"Books,Book Number,Price\nCheshire,107,{pounds}\n")
    assert book.price_pence == pence


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("Cheshire,107,12.999", "price '12.999' is not an amount in pounds"),
        ("Cheshire,107,12,99", "4 values but the header has 3 columns"),
        ("Cheshire,107,abc", "price 'abc' is not an amount"),
        ("Cheshire,107,-1.00", "price '-1.00' is not an amount"),
        ("Cheshire,107,0.00", "not between £0.01 and £10000"),
        ("Cheshire,107,10000.01", "not between £0.01 and £10000"),
        ("Cheshire,107,", "price is missing"),
        ("Cheshire,0,12.99", "book number '0' is not a whole number"),
        ("Cheshire,10x,12.99", "book number '10x' is not a whole number"),
        ("Cheshire,,12.99", "book number is missing"),
        (",107,12.99", "title is missing"),
    ],
)
def test_a_bad_price_list_row_stops_the_import(row: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        read_book_prices(f"Books,Book Number,Price\nSnowdonia,105,13.99\n{row}\n")
    assert str(caught.value).startswith("Line 3 of the price list: The ")
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("row", "repeated"),
    [("Cheshire,105,12.99", "book number 105"), ("SNOWDONIA ,108,12.99", "title 'SNOWDONIA'")],
)
def test_a_repeated_book_stops_the_import(row: str, repeated: str) -> None:
    with pytest.raises(ValueError, match=f"Line 3 of the price list repeats (the )?{repeated}"):
        read_book_prices(f"Books,Book Number,Price\nSnowdonia,105,13.99\n{row}\n")


def test_a_stock_column_sets_the_starting_stock() -> None:
    books = read_book_prices(
        "Books,Book Number,Price,In Stock\nA,1,1.00,0\nB,2,1.00,\nC,3,1.00,7\n"
    )
    assert [book.in_stock for book in books] == [0, 10 + 2 * 7 % 31, 7]


def test_price_list_headers_match_ignoring_case_and_spacing() -> None:
    (book,) = read_book_prices("\ufeffBOOKS, book_number ,price\nCheshire,107,12.99\n")
    assert book == ShopBook(107, "Cheshire", 1299, book.in_stock)


def test_price_list_missing_a_column() -> None:
    with pytest.raises(ValueError, match="missing the column Price"):
        read_book_prices("Books,Book Number\nCheshire,107\n")


# Extra walk columns -------------------------------------------------------------------------

ROW = "Peak District,Peak District,Magpie Mine,4.5,Medium,20"


@pytest.mark.parametrize(
    ("header", "value", "field", "expected"),
    [
        ("Ascent", "350", "ascent_m", 350),
        ("AscentM", " 0 ", "ascent_m", 0),
        ("ascent_m", "1200", "ascent_m", 1200),
        ("Time", "2.5", "time_hours", 2.5),
        ("TimeHours", "3", "time_hours", 3.0),
        ("time_hours", "2:30", "time_hours", 2.5),
        ("Time", "0:45", "time_hours", 0.75),
        ("RouteType", "Circular", "route_type", "circular"),
        ("route_type", "LINEAR", "route_type", "linear"),
        ("Route Type", "out and back", "route_type", "out-and-back"),
        ("RouteType", "Out-And-Back", "route_type", "out-and-back"),
        ("RouteType", "out_and_back", "route_type", "out-and-back"),
        ("StartGridRef", "SK 123 456", "start_grid_ref", "SK 123 456"),
        ("start_grid_ref", "sk123456", "start_grid_ref", "SK 123 456"),
        ("StartGridRef", "  sk  12\n45 ", "start_grid_ref", "SK 12 45"),
        ("StartGridRef", "NY2150072500", "start_grid_ref", "NY 21500 72500"),
    ],
)
def test_extra_columns(header: str, value: str, field: str, expected: object) -> None:
    walk = _only_walk(f'{ROW},"{value}"', header=f"{HEADER},{header}")
    assert getattr(walk, field) == expected


def test_extra_columns_left_empty_are_none() -> None:
    walk = _only_walk(f"{ROW},,,,", header=f"{HEADER},Ascent,Time,RouteType,StartGridRef")
    assert (walk.ascent_m, walk.time_hours, walk.route_type, walk.start_grid_ref) == (
        None,
        None,
        None,
        None,
    )


def test_extra_columns_in_any_order_and_unknown_columns_ignored() -> None:
    header = "start_grid_ref,Notes,Page,Difficult,Distance,WalkName,Book,Area,AscentM"
    walk = _only_walk(
        "SK 123 456,anything,20,Medium,4.5,Magpie Mine,Peak District,Peak District,300",
        header=header,
    )
    assert walk == WalkRow(
        "Magpie Mine", "Peak District", "Peak District", 4.5, "medium", 20, 300, None, None,
        "SK 123 456",
    )  # fmt: skip


def test_a_short_row_reads_missing_optional_values_as_none() -> None:
    walk = _only_walk(ROW, header=f"{HEADER},Ascent,Time")
    assert walk.ascent_m is None
    assert walk.time_hours is None


def test_two_columns_for_one_field_are_refused() -> None:
    with pytest.raises(ValueError, match="two Ascent columns: 'Ascent' and 'ascent_m'"):
        _walks(f"{ROW},1,2", header=f"{HEADER},Ascent,ascent_m")


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("Ascent", "-5", "The ascent '-5' is not a whole number from 0 to 10000."),
        ("Ascent", "350m", "The ascent '350m' is not a whole number"),
        ("Ascent", "10001", "The ascent '10001' is not a whole number"),
        ("Time", "0", "The time '0' is not between 0 and 100 hours."),
        ("Time", "soon", "The time 'soon' is not a number."),
        ("Time", "2:75", "The time '2:75' is not a number."),
        ("RouteType", "loop", "The route type 'loop' is not circular, linear or out-and-back."),
        ("StartGridRef", "SK 123 45", "The start grid reference 'SK 123 45' is not an OS grid"),
        ("StartGridRef", "IK 123 456", "The start grid reference 'IK 123 456' is not an OS grid"),
        ("StartGridRef", "SK", "The start grid reference 'SK' is not an OS grid"),
        ("StartGridRef", "12 345", "The start grid reference '12 345' is not an OS grid"),
    ],
)
def test_bad_extra_values_reject_the_row(header: str, value: str, reason: str) -> None:
    assert _only_rejection(f'{ROW},"{value}"', header=f"{HEADER},{header}").startswith(reason)


# Bad rows -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("York,Vale of York,Walk,0,Easy,1", "The distance '0' is not between 0 and 1000 miles."),
        ("York,Vale of York,Walk,-1,Easy,1", "The distance '-1' is not between 0 and 1000"),
        ("York,Vale of York,Walk,four,Easy,1", "The distance 'four' is not a number."),
        ("York,Vale of York,Walk,nan,Easy,1", "The distance 'nan' is not a number."),
        ("York,Vale of York,Walk,inf,Easy,1", "The distance 'inf' is not a number."),
        ("York,Vale of York,Walk,1e3,Easy,1", "The distance '1e3' is not a number."),
        ("York,Vale of York,Walk,1_0,Easy,1", "The distance '1_0' is not a number."),
        ("York,Vale of York,Walk,,Easy,1", "The distance is missing."),
        ("York,Vale of York,Walk,5000,Easy,1", "The distance '5000' is not between 0 and 1000"),
        ("York,Vale of York,Walk,4,Extreme,1", "The difficulty 'Extreme' is not easy, medium"),
        ("York,Vale of York,Walk,4,,1", "The difficulty '' is not easy, medium or hard."),
        ("York,Vale of York,Walk,4,Easy,0", "The page '0' is not a whole number from 1 to"),
        ("York,Vale of York,Walk,4,Easy,-3", "The page '-3' is not a whole number"),
        ("York,Vale of York,Walk,4,Easy,1.5", "The page '1.5' is not a whole number"),
        ("York,Vale of York,Walk,4,Easy,", "The page is missing."),
        ("York,Vale of York,Walk,4,Easy," + "9" * 40, "The page '99999"),
        ("York,Vale of York,  ,4,Easy,1", "The walk name is missing."),
        ("York,Vale of York,Walk\x00,4,Easy,1", "The walk name contains a control character."),
        (",Vale of York,Walk,4,Easy,1", "The area is missing."),
        ("York,,Walk,4,Easy,1", "The book is missing."),
        ("York,Vale of York,Walk,4,Easy,1,extra", "The row has 7 values but the header has 6"),
        ("York,Vale of York,Walk,4,Easy", "The page is missing."),
    ],
)
def test_bad_rows_are_rejected_with_a_reason(row: str, reason: str) -> None:
    assert _only_rejection(row).startswith(reason)


def test_trailing_empty_values_are_not_extra_values() -> None:
    assert _only_walk("York,Vale of York,Walk,4,Easy,1,,").name == "Walk"


def test_a_long_value_is_shortened_in_the_reason() -> None:
    reason = _only_rejection("York,Vale of York,Walk,4," + "x" * 5000 + ",1")
    assert len(reason) < 120
    assert "…" in reason


def test_unknown_book_is_rejected_when_titles_are_known() -> None:
    reason = _only_rejection("York,Vale of Yorkshire,Walk,4,Easy,1", known=["Vale of York"])
    assert reason == "The book 'Vale of Yorkshire' is not one of the shop's books."


def test_known_titles_give_the_canonical_spelling() -> None:
    report = _walks(
        'York," VALE  OF\nyork ",Walk One,4,Easy,1',
        "York,vale of york,Walk Two,4,Easy,2",
        known=["Vale of York", "Cheshire"],
    )
    assert [walk.book_title for walk in report.walks] == ["Vale of York", "Vale of York"]


def test_one_area_spelled_two_ways_keeps_its_first_spelling() -> None:
    report = _walks(
        "Peak District,Peak District,Walk One,4,Easy,1",
        "PEAK  district,Peak District,Walk Two,4,Easy,2",
    )
    assert [walk.area for walk in report.walks] == ["Peak District", "Peak District"]


def test_a_rejected_row_does_not_set_a_spelling() -> None:
    report = _walks("York,VALE OF YORK,Bad,4,Extreme,1", "York,Vale of York,Good,4,Easy,2")
    assert [walk.book_title for walk in report.walks] == ["Vale of York"]


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_rejections_give_the_line_each_record_starts_on(newline: str) -> None:
    text = newline.join(
        [
            HEADER,  # 1
            'Peak District,Peak District,"Two',  # 2
            'Lines",4,Easy,10',  # 3
            "Peak District,Peak District,Bad Difficulty,4,Extreme,11",  # 4
            'York,"Vale',  # 5
            "Of",  # 6
            'York",Three Lines,4,Easy,12',  # 7
            'York,Vale of York,"Bad',  # 8
            'Distance",-1,Easy,13',  # 9
            "",  # 10: blank lines are skipped, not rejected
            "York,Vale of York,Zero Page,3,Easy,0",  # 11
            "York,Vale of York,three lines,5,Hard,14",  # 12: same walk as line 5
            'Cheshire,Cheshire,"Delamere',  # 13
            "",  # 14: a blank line inside a quoted name
            'Forest",5.5,Easy,30',  # 15
            "Cheshire,Cheshire,Farndon,6,Hardest,48",  # 16
        ]
    )
    report = read_walks(text + newline)
    assert [walk.name for walk in report.walks] == ["Two Lines", "Three Lines", "Delamere Forest"]
    assert [line for line, _ in report.rejected] == [4, 8, 11, 12, 16]
    reasons = dict(report.rejected)
    assert reasons[4].startswith("The difficulty 'Extreme'")
    assert reasons[8].startswith("The distance '-1'")
    assert reasons[11].startswith("The page '0'")
    assert reasons[12] == "Duplicate of the walk on line 5: three lines."
    assert reasons[16].startswith("The difficulty 'Hardest'")


# Duplicates ---------------------------------------------------------------------------------


def test_duplicate_walks_keep_the_first() -> None:
    report = _walks(
        "Cheshire,Cheshire,Malpas,8.5,Medium,80",
        "Cheshire,CHESHIRE,  malpas ,9,Hard,81",
        "Cheshire,Cheshire,Farndon,6,Hard,48",
        "Cheshire,Cheshire,Malpas,8.5,Medium,80",
    )
    assert [(walk.name, walk.page) for walk in report.walks] == [("Malpas", 80), ("Farndon", 48)]
    assert report.rejected == [
        (3, "Duplicate of the walk on line 2: malpas."),
        (5, "Duplicate of the walk on line 2: Malpas."),
    ]


def test_the_same_walk_name_in_two_books_is_not_a_duplicate() -> None:
    report = _walks(
        "Cheshire,Cheshire,Castle Walk,4,Easy,1", "Snowdonia,Snowdonia,Castle Walk,4,Easy,1"
    )
    assert len(report.walks) == 2
    assert report.rejected == []


def test_a_rejected_row_is_not_the_first_of_a_duplicate() -> None:
    report = _walks("Cheshire,Cheshire,Malpas,x,Medium,80", "Cheshire,Cheshire,Malpas,8,Medium,80")
    assert [walk.distance_miles for walk in report.walks] == [8.0]
    assert [line for line, _ in report.rejected] == [2]


# Whole-file problems ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ("Area,Book,WalkName,Difficult", "the columns Distance, Page;"),
        ("Area,Book,Walk Name,Distance,Difficulty", "the column Page;"),
        ("Region,Book,WalkName,Distance,Difficult,Page", "the column Area;"),
    ],
)
def test_missing_columns_are_named(header: str, missing: str) -> None:
    with pytest.raises(ValueError, match=f"The walks file is missing {missing}"):
        read_walks(header + "\n")


def test_headers_match_ignoring_case_spacing_and_a_byte_order_mark() -> None:
    walk = _only_walk(ROW, header="\ufeffAREA, book ,walk_name,DISTANCE,difficulty,Page")
    assert walk.name == "Magpie Mine"


@pytest.mark.parametrize("text", ["", "\n\n", " , \r\n"])
def test_an_empty_file_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        read_walks(text)


def test_broken_quoting_names_the_line() -> None:
    text = f'{HEADER}\n{ROW}\nCheshire,Cheshire,"Malpas,8.5,Medium,80\nCheshire,Cheshire,Farndon\n'
    with pytest.raises(ValueError, match="Line 3 is not valid CSV"):
        read_walks(text)


# server.py import-walks: a new book without a stock column has none -------------------------


def test_import_walks_gives_a_new_book_no_stock_when_the_price_list_has_none(
    server: ServerProcess, tmp_path: Path
) -> None:
    walks = tmp_path / "walks.csv"
    walks.write_text(f"{HEADER}\nYorkshire Dales,Dales Walks,Malham Cove,7.5,Medium,14\n")
    books = tmp_path / "books.csv"
    books.write_text("Books,Book Number,Price\nDales Walks,108,9.99\n")
    done = subprocess.run(
        server.command("import-walks", str(walks), "--books", str(books)),
        capture_output=True, text=True, env=server.environment(), cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stock = {
        book["number"]: book["in_stock"]
        for book in run_json(server, tmp_path, "guide-books")["books"]
    }
    assert stock[108] == 0
    assert stock[101] == 10 + 101 * 7 % 31  # the sample catalogue keeps its starting stock
