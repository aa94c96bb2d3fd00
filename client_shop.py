"""The shop's menus: finding walks, the basket of guide books, placing orders, listing them."""

from __future__ import annotations

import client_sentences as sentences
import client_views as views
from client_basket import Basket, GuideBook, copies_ordered, guide_books_in
from client_checks import (
    areas_matching,
    closest_area,
    longest,
    most,
    parse_miles,
    sentence_refused,
)
from client_link import Connection, JsonDict, ServerError
from client_prompts import GoBack, Prompts
from protocol import LIMIT_EXCEEDED, UNAUTHORIZED
from rules import DIFFICULTIES, MAX_COPIES_PER_CUSTOMER, MAX_COPIES_PER_ORDER, reprice_cancelled

PAGE_SIZE = 200  # the largest page search_walks and catalogue serve
AREA_LONGEST = longest("search_walks", "area")
BOOK_NUMBER = "book number"


class ShopMenus(Prompts):
    """The walks and guide-book choices of the menu; App supplies the connection and the user."""

    connection: Connection
    user: JsonDict | None
    basket: Basket

    # Walks

    def find_walks(self) -> None:
        """List the areas, filter the walks, and offer a walk's guide book for the basket."""
        result = self.connection.call("search_walks", limit=PAGE_SIZE, **self.ask_walk_filters())
        walks = result["walks"]
        if not walks:
            self.say("No walks match; try fewer filters.")
            return
        self.show(views.walks_table(walks, numbered=True))
        if result["total"] > len(walks):
            self.say(f"Showing the first {len(walks)} of {result['total']} walks.")
        if self.user is None:
            self.say("Log in to buy the guide books.")
            return
        if (walk := self.pick_row(walks, "a walk to buy its guide book")) is not None:
            self.add_to_basket(guide_books_in([walk])[0])

    def ask_walk_filters(self) -> JsonDict:
        """The area, difficulty and distances of the walks wanted; those left out are absent."""
        areas = self.connection.call("list_areas")["areas"]
        self.show(views.areas_table(areas, numbered=True))
        area = self.ask_area([str(area["area"]) for area in areas])
        difficulty = self.ask_difficulty()
        shortest = self.ask_miles("Shortest walk in miles", "min_distance")
        longest_walk = self.ask_miles("Longest walk in miles", "max_distance", at_least=shortest)
        filters = {
            "area": area, "difficulty": difficulty, "min_distance": shortest,
            "max_distance": longest_walk,
        }  # fmt: skip
        return {name: value for name, value in filters.items() if value is not None}

    def recommend_books(self) -> None:
        """The guide books covering the most walks like the ones wanted, with those walks;
        offers one for the basket."""
        filters = self.ask_walk_filters()
        entries = self.connection.call(
            "recommend_books", limit=most("recommend_books", "limit"), **filters
        )["books"]
        self.show_all(views.recommended_books_shown(entries))
        if not entries:
            return
        if self.user is None:
            self.say("Log in to buy the guide books.")
            return
        books = [GuideBook.from_json(entry["book"]) for entry in entries]
        book = self.pick_numbered(
            books, lambda book: book.number, "a guide book for your basket", BOOK_NUMBER
        )
        if book is not None:
            self.add_to_basket(book)

    def ask_area(self, areas: list[str]) -> str | None:
        """An area by its number or part of its name, a typo offered its likely area; None for all."""
        help_text = (
            "Type an area's number from the table, or part of its name (such as peak); "
            "Enter for every area, q goes back."
        )
        while True:
            text = self.ask("Area number or name (Enter for all areas): ", help_text)
            if not text:
                return None
            if text.isdigit():
                if 1 <= int(text) <= len(areas):
                    return areas[int(text) - 1]
                self.warn(f"There is no area {text}; enter a number from 1 to {len(areas)}.")
            elif AREA_LONGEST is not None and len(text) > AREA_LONGEST:
                self.warn("No area has so long a name; type part of one from the table.")
            elif areas_matching(text, areas):
                return text
            elif (guess := closest_area(text, areas)) is None:
                self.warn(f"No area matches {views.quoted(text)}; choose one from the table.")
            elif self.confirm(f"No area matches {views.quoted(text)}. Did you mean {guess}?"):
                return guess

    def ask_difficulty(self) -> str | None:
        """easy, medium or hard, in any case or by its first letters; None for any."""
        help_text = "Type easy, medium or hard (e, m or h will do); Enter for any, q goes back."
        while True:
            text = self.ask("Difficulty: easy, medium or hard (Enter for any): ", help_text)
            if not (text := text.lower()):
                return None
            matches = [level for level in DIFFICULTIES if level.startswith(text)]
            if len(matches) == 1:
                return matches[0]
            self.warn(sentences.sentence_not_a_difficulty(views.clean_text(text)))

    def ask_miles(self, what: str, name: str, at_least: float | None = None) -> float | None:
        """A distance in miles for the search's argument name, at least at_least; None for any."""
        help_text = "Type a number of miles, such as 4 or 6.5; Enter for no limit, q goes back."
        while True:
            text = self.ask(f"{what} (Enter for any): ", help_text)
            if not text:
                return None
            try:
                miles = parse_miles(text, name)
            except ValueError as error:
                self.warn(str(error))
                continue
            if at_least is not None and miles < at_least:
                self.warn(f"The longest walk cannot be shorter than the shortest ({at_least:g}).")
            else:
                return miles

    # The basket

    def buy_guide_books(self) -> None:
        """The basket: add, change and remove lines, then place the order."""
        help_text = (
            "Type 1 to add a guide book, 2 to change how many copies of one (or take it out), "
            "3 to order what is in the basket; 0 or q goes back and keeps the basket."
        )
        while True:
            if self.basket:
                self.show(views.basket_table(self.basket))
            else:
                self.say("Your basket is empty.")
            self.say("  1  Add a guide book\n  2  Change or remove a line\n  3  Place the order")
            self.say("  0  Back (the basket is kept)")
            choice = self.ask_number("Choose: ", 0, 3, help_text)
            try:
                if choice == 0:
                    return
                if choice == 1:
                    self.choose_guide_book()
                elif choice == 2:
                    self.change_basket_line()
                elif self.place_order():
                    return
            except GoBack:
                continue

    def choose_guide_book(self) -> None:
        """Pick a guide book from the list by its number and add copies of it."""
        books = self.fetch_guide_books()
        self.show(views.guide_books_table(books))
        book = self.pick_numbered(books, lambda book: book.number, "a guide book", BOOK_NUMBER)
        if book is not None:
            self.add_to_basket(book)

    def fetch_guide_books(self) -> list[GuideBook]:
        """Every guide book for sale, with its price and stock (the basket takes them too)."""
        books = [GuideBook.from_json(book) for book in self.connection.call("guide_books")["books"]]
        self.basket.refresh(books)
        return books

    def already_ordered(self, book: GuideBook) -> int:
        """Copies of book this member has ordered before, which count toward their limit."""
        return copies_ordered(self.connection.call("orders")["orders"]).get(book.number, 0)

    def add_to_basket(self, book: GuideBook) -> None:
        """Ask how many copies of book, up to what this member may still order, and add them."""
        title = views.clean_text(book.title)
        ordered = self.already_ordered(book)
        room = self.basket.room_for(book, ordered)
        line = self.basket.line_for(book.number)
        if room == 0 and ordered == 0:
            self.warn(f"Your basket already holds {MAX_COPIES_PER_ORDER} copies of {title}.")
            return
        if ordered:
            basket_too = f", your basket holds {line.quantity}" if line else ""
            self.say(
                f"You have ordered {views.plural(ordered, 'copy', 'copies')} of {title} "
                f"before{basket_too}, and each member may have {MAX_COPIES_PER_CUSTOMER}."
            )
            if room == 0:
                self.warn(f"You cannot order more copies of {title}.")
                return
        quantity = self.ask_number(f"How many copies of {title} (1-{room})? ", 1, room)
        line = self.basket.add(book, quantity)
        self.say_line(line.book, line.quantity)

    def change_basket_line(self) -> None:
        """Change how many copies of a book the basket holds; 0 takes it out."""
        if not self.basket:
            self.warn("Your basket is empty; add a guide book first.")
            return
        line = self.pick_numbered(
            self.basket.lines, lambda line: line.book.number, "a line to change", BOOK_NUMBER
        )
        if line is None:
            return
        title = views.clean_text(line.book.title)
        most = line.quantity + self.basket.room_for(line.book, self.already_ordered(line.book))
        quantity = self.ask_number(
            f"How many copies of {title} (0 takes it out, at most {most})? ", 0, most
        )
        if self.basket.set_quantity(line.book.number, quantity) is None:
            self.say(f"Removed {title}.")
        else:
            self.say_line(line.book, quantity)

    def say_line(self, book: GuideBook, quantity: int) -> None:
        """What the basket holds of book now, and the basket's subtotal."""
        self.say(
            f"Your basket now has {views.plural(quantity, 'copy', 'copies')} of {book.title} "
            f"({views.format_money(quantity * book.price_pence)}); "
            f"subtotal {views.format_money(self.basket.subtotal_pence)}."
        )

    def place_order(self) -> bool:
        """Buy what is in the basket; True once ordered. A refused order keeps the basket."""
        if not self.basket:
            self.warn("Your basket is empty; add a guide book first.")
            return False
        for sentence in sentences.sentences_short_stock(self.basket):
            self.say(sentence)
        if not self.confirm(sentences.question_order(self.basket)):
            return False
        try:
            order = self.connection.call("buy", items=self.basket.items())["order"]
        except ServerError as error:
            if error.code == UNAUTHORIZED:
                raise
            self.warn(self.sentence_refused(error))
            return False
        self.basket.clear()
        self.show_all([views.order_table(order), *sentences.sentences_back_ordered(order)])
        return True

    def sentence_refused(self, error: ServerError) -> str:
        """Why the server refused the order, naming the book by its title."""
        number = error.details.get("book")
        line = self.basket.line_for(number) if isinstance(number, int) else None
        if error.code == LIMIT_EXCEEDED and line is not None:
            return sentences.sentence_copy_limit(error.details, views.clean_text(line.book.title))
        return sentence_refused(error)

    def show_orders(self) -> None:
        """This member's orders, newest first, a page at a time."""
        orders = self.connection.call("orders")["orders"]
        if not orders:
            self.say("You have no orders yet.")
        self.show_pages(orders, lambda page: [views.order_table(order) for order in page], "orders")

    def cancel_backorder(self) -> None:
        """Choose an order's line with copies still awaited, see the refund, and cancel them."""
        orders = self.connection.call("orders")["orders"]
        awaited = [
            (order, line)
            for order in orders
            for line in order["lines"]
            if line.get("backorder_outstanding", 0) > 0
        ]
        if not awaited:
            self.say("None of your orders has copies still awaited.")
            return
        self.show(views.awaited_table(awaited))
        order_id = self.pick_numbered(
            sorted({order["id"] for order, _ in awaited}), int, "an order", "order number"
        )
        if order_id is None:
            return
        lines = [(order, line) for order, line in awaited if order["id"] == order_id]
        picked = self.pick_numbered(
            lines, lambda pair: int(pair[1]["book"]["number"]), "the guide book", BOOK_NUMBER
        )
        if picked is None:
            return
        order, line = picked
        title = views.clean_text(line["book"]["title"])
        copies = views.plural(line["backorder_outstanding"], "awaited copy", "awaited copies")
        pricing, refund = reprice_cancelled(
            order["total_pence"],
            [
                (
                    other["quantity"],
                    other.get("backorder_cancelled", 0)
                    + (other["backorder_outstanding"] if other is line else 0),
                    other["unit_price_pence"],
                )
                for other in order["lines"]
            ],
        )
        # The discount the order loses, said on this screen: the refund alone would hide it.
        lost = 0 if pricing.discount_pence else order["discount_pence"]
        if not self.confirm(
            f"Cancel the {copies} of {title} on order {order['id']}? "
            f"{sentences.sentence_refund(refund, lost)}"
        ):
            return
        result = self.connection.call(
            "cancel_backorder", order_id=order["id"], book=line["book"]["number"]
        )
        self.say(f"The awaited copies of {title} on order {order['id']} are cancelled.")
        self.show_all([views.order_table(result["order"])])
        self.show_all(sentences.sentences_backorder_cancelled(result, lost))
