"""The interactive menus for people: what each choice asks, sends to the server and shows."""

from __future__ import annotations

import contextlib
import getpass
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console

import client_views as views
from client_basket import MAX_COPIES_PER_ORDER, Basket, GuideBook, guide_books_in
from client_link import (
    EXIT_OK,
    EXIT_SERVER_ERROR,
    ClientError,
    Connection,
    JsonDict,
    ServerError,
)
from client_prompts import GoBack, Prompts
from protocol import BAD_REQUEST, UNAUTHORIZED, UNAVAILABLE, USERNAME_TAKEN, WEAK_PASSWORD

PAGE_SIZE = 200  # the largest page search_walks and catalogue serve


@dataclass(frozen=True)
class MenuItem:
    """One line of a menu."""

    label: str
    action: Callable[[], None]


class App(Prompts):
    """The menu-driven session. Input, output and the password prompt are passed in so that
    tests can script a whole session; every failure is shown as a sentence, never a traceback.
    Whether a login is remembered is the connection's to know (it owns the token).
    """

    def __init__(
        self,
        connection: Connection,
        console: Console,
        input_fn: Callable[[str], str] = input,
        getpass_fn: Callable[[str], str] = getpass.getpass,
    ):
        super().__init__(console, input_fn, getpass_fn)
        self.connection = connection
        self.user: JsonDict | None = None
        self.basket = Basket()

    # The session

    def run(self) -> int:
        """Greet, resume a remembered login, then serve the menu until the person quits."""
        try:
            info = self.connection.call("hello")
        except ClientError as error:
            self.warn(str(error))
            return EXIT_SERVER_ERROR
        self.say(f"Connected to {info.get('server', 'Waymark')} at {self.connection.address}.")
        self.perform(self.resume_remembered)
        while True:
            items = self.menu_items()
            self.show_menu(items)
            try:
                choice = self.ask_number("Choose: ", 0, len(items))
            except GoBack:
                break
            if choice == 0:
                break
            self.perform(items[choice - 1].action)
        self.leave()
        return EXIT_OK

    def menu_items(self) -> list[MenuItem]:
        """What this person may do now: more once logged in, more still for an admin."""
        items = [MenuItem("Find walks", self.find_walks)]
        if self.user is None:
            return [
                *items,
                MenuItem("Search books", self.search_books),
                MenuItem("Browse the library's books", self.browse_catalogue),
                MenuItem("Register", self.register),
                MenuItem("Log in", self.log_in),
            ]
        basket = (
            f" (basket: {views.plural(self.basket.copies, 'copy', 'copies')})"
            if self.basket
            else ""
        )
        items += [
            MenuItem(f"Buy guide books{basket}", self.buy_guide_books),
            MenuItem("My orders", self.show_orders),
            MenuItem("Search books", self.search_books),
            MenuItem("Borrow or hold a library book", self.browse_catalogue),
            MenuItem("My loans", self.show_loans),
            MenuItem("Return a book", self.return_book),
            MenuItem("Renew a loan", self.renew_loan),
            MenuItem("My holds (cancel one)", self.show_holds),
            MenuItem("Loan history", self.show_history),
        ]
        if self.user.get("role") == "admin":
            items += [
                MenuItem("Restock guide books (admin)", self.restock),
                MenuItem("Add a lending book (admin)", self.add_book),
                MenuItem("Back orders (admin)", self.show_backorders),
            ]
        return [*items, MenuItem("Log out", self.log_out)]

    def show_menu(self, items: list[MenuItem]) -> None:
        """Print the numbered menu."""
        who = "not logged in" if self.user is None else f"logged in as {self.user['username']}"
        self.say(f"\nWaymark ({who})")
        for number, item in enumerate(items, start=1):
            self.say(f"  {number:>2}  {item.label}")
        self.say("   0  Quit")

    def perform(self, action: Callable[[], None]) -> None:
        """Run one menu action; report its failure as a sentence and come back to the menu."""
        try:
            action()
        except GoBack:
            return
        except KeyboardInterrupt:
            # Interrupted while waiting for the server: its late reply would be read as the
            # answer to the next request, so this connection is dropped (it resumes later).
            self.connection.close()
            self.warn("\nCancelled.")
        except ServerError as error:
            self.warn(error.message)
            if error.code == UNAUTHORIZED and self.user is not None:
                self.end_session()
                self.warn("Please log in again.")
        except ClientError as error:
            self.warn(str(error))

    def leave(self) -> None:
        """End the session on the server (unless remembered) and close the connection."""
        if self.user is not None and not self.connection.remember:
            with contextlib.suppress(ClientError, KeyboardInterrupt):
                self.connection.call("logout")
        self.connection.close()
        self.say("Goodbye.")

    # Accounts

    def resume_remembered(self) -> None:
        """Resume the session saved by an earlier --remember, if there is one."""
        try:
            result = self.connection.resume_remembered()
        except ServerError as error:
            if error.code != UNAUTHORIZED:
                raise
            self.warn("Your remembered login has expired; please log in again.")
            return
        if result is None:
            return
        self.user = result["user"]
        self.say(f"Welcome back, {self.user['username']}.")

    def register(self) -> None:
        """Create an account (password asked twice), then log in with it."""
        username = self.ask_text("Choose a username (3-32 letters, digits, _ . -): ")
        password = self.ask_new_password()
        while True:
            try:
                self.connection.call("register", username=username, password=password)
                break
            except ServerError as error:
                if error.code == WEAK_PASSWORD or error.details.get("argument") == "password":
                    self.warn(error.message)
                    password = self.ask_new_password()
                elif error.code in (USERNAME_TAKEN, BAD_REQUEST):
                    self.warn(error.message)
                    username = self.ask_text("Choose another username: ")
                else:
                    raise
        self.say(f"Registered {username}.")
        self.start_session(username, password)

    def log_in(self) -> None:
        """Ask for a username and password and log in."""
        username = self.ask_text("Username: ")
        self.start_session(username, self.ask_secret("Password: "))

    def start_session(self, username: str, password: str) -> None:
        """Log in (the connection saves the token only when asked to remember it)."""
        result = self.connection.call("login", username=username, password=password)
        self.user = result["user"]
        self.say(f"Welcome, {self.user['username']}!")
        if (remembered_in := self.connection.remembered_in) is not None:
            self.say(f"Your login is remembered in {remembered_in}.")

    def log_out(self) -> None:
        """End the session here and on the server."""
        self.connection.call("logout")
        self.end_session()
        self.say("You are logged out.")

    def end_session(self) -> None:
        """Forget the user, their basket and any saved token."""
        self.user = None
        self.connection.forget_session()
        self.basket.clear()

    # Walks and guide books

    def find_walks(self) -> None:
        """List the areas, filter the walks, and offer a walk's guide book for the basket."""
        areas = self.connection.call("list_areas")["areas"]
        self.show(views.areas_table(areas, numbered=True))
        area = self.ask_area(areas)
        difficulty = self.ask_difficulty()
        shortest = self.ask_miles("Shortest walk in miles")
        longest = self.ask_miles("Longest walk in miles", at_least=shortest)
        filters = {
            "area": area, "difficulty": difficulty, "min_distance": shortest, "max_distance": longest
        }  # fmt: skip
        chosen = {name: value for name, value in filters.items() if value is not None}
        result = self.connection.call("search_walks", limit=PAGE_SIZE, **chosen)
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

    def buy_guide_books(self) -> None:
        """The basket: add and remove lines, then place the order."""
        while True:
            if self.basket:
                self.show(views.basket_table(self.basket))
            else:
                self.say("Your basket is empty.")
            self.say("  1  Add a guide book\n  2  Remove a line\n  3  Place the order")
            self.say("  0  Back (the basket is kept)")
            choice = self.ask_number("Choose: ", 0, 3)
            try:
                if choice == 0:
                    return
                if choice == 1:
                    self.choose_guide_book()
                elif choice == 2:
                    self.remove_basket_line()
                elif self.place_order():
                    return
            except GoBack:
                continue

    def choose_guide_book(self) -> None:
        """Pick a guide book from the list and add copies of it."""
        books = self.fetch_guide_books()
        self.show(views.guide_books_table(books))
        if (book := self.pick_row(books, "a guide book")) is not None:
            self.add_to_basket(book)

    def fetch_guide_books(self) -> list[GuideBook]:
        """Every guide book for sale, with its price and stock."""
        return [GuideBook.from_json(book) for book in self.connection.call("guide_books")["books"]]

    def add_to_basket(self, book: GuideBook) -> None:
        """Ask how many copies of book and add them."""
        room = self.basket.room_for(book)
        if room == 0:
            self.warn(f"Your basket already holds {MAX_COPIES_PER_ORDER} copies of {book.title}.")
            return
        title = views.clean_text(book.title)
        quantity = self.ask_number(f"How many copies of {title} (1-{room})? ", 1, room)
        line = self.basket.add(book, quantity)
        self.say(
            f"Your basket now has {views.plural(line.quantity, 'copy', 'copies')} of {book.title} "
            f"({views.format_money(line.total_pence)}); subtotal {views.format_money(self.basket.subtotal_pence)}."
        )

    def remove_basket_line(self) -> None:
        """Take a line out of the basket."""
        index = self.pick(len(self.basket), "a line to remove")
        if index is not None:
            line = self.basket.remove(index)
            self.say(f"Removed {line.book.title}.")

    def place_order(self) -> bool:
        """Buy what is in the basket; True once ordered. A refused order keeps the basket."""
        if not self.basket:
            self.warn("Your basket is empty; add a guide book first.")
            return False
        question = (
            f"Order {views.plural(self.basket.copies, 'copy', 'copies')} for "
            f"{views.format_money(self.basket.subtotal_pence)} before any discount?"
        )
        if not self.confirm(question):
            return False
        try:
            order = self.connection.call("buy", items=self.basket.items())["order"]
        except ServerError as error:
            if error.code == UNAUTHORIZED:
                raise
            self.warn(error.message)
            return False
        self.basket.clear()
        self.show_all([views.order_table(order), *views.sentences_back_ordered(order)])
        return True

    def show_orders(self) -> None:
        """This member's orders, newest first."""
        orders = self.connection.call("orders")["orders"]
        if not orders:
            self.say("You have no orders yet.")
        for order in orders:
            self.show(views.order_table(order))

    # Library books

    def search_books(self) -> None:
        """Search Open Library, mark the held books, and offer to borrow or hold one."""
        query = self.ask_text("Title or author to search for: ")
        result = self.connection.call("search_books", query=query)
        if result.get("warning"):
            self.warn(result["warning"])
        hits = result["results"]
        if not hits:
            self.say("No books found.")
            return
        self.show(views.book_hits_table(hits, numbered=True))
        if not any(hit.get("held") for hit in hits):
            self.say("The library holds none of these.")
        elif self.user is None:
            self.say("Log in to borrow the books the library holds.")
        elif (hit := self.pick_row(hits, "a held book to borrow or hold")) is not None:
            if hit.get("held") and hit.get("book_id"):
                self.offer_book(hit["book_id"], hit["title"], hit.get("copies_available") or 0)
            else:
                self.warn("The library does not hold that one; choose one marked 'yes'.")

    def browse_catalogue(self) -> None:
        """List the library's books (optionally filtered) and offer to borrow or hold one."""
        query = self.ask("Title or author to look for (Enter for all): ")
        result = self.connection.call(
            "catalogue", limit=PAGE_SIZE, **({"query": query} if query else {})
        )
        books = result["books"]
        if not books:
            self.say("The library has no books like that.")
            return
        self.show(views.catalogue_table(books, numbered=True))
        if self.user is None:
            self.say("Log in to borrow these books.")
            return
        if (book := self.pick_row(books, "a book to borrow or hold")) is not None:
            self.offer_book(book["id"], book["title"], book["copies_available"])

    def offer_book(self, book_id: int, title: str, free: int) -> None:
        """Borrow the book when a copy is free, else offer a place in its queue."""
        if free > 0:
            if self.confirm(f"Borrow {views.clean_text(title)}?"):
                self.borrow(book_id, title)
        elif self.confirm(f"No copy of {views.clean_text(title)} is free. Join the queue for it?"):
            self.place_hold(book_id)

    def borrow(self, book_id: int, title: str) -> None:
        """Borrow a book; when every copy has just gone, offer the queue instead."""
        try:
            loan = self.connection.call("borrow", book_id=book_id)["loan"]
        except ServerError as error:
            if error.code != UNAVAILABLE:
                raise
            self.warn(error.message)
            if self.confirm(f"Join the queue for {views.clean_text(title)}?"):
                self.place_hold(book_id)
            return
        self.say(views.sentence_borrowed(loan))

    def place_hold(self, book_id: int) -> None:
        """Join a book's queue and say where in it."""
        self.say(views.sentence_held(self.connection.call("hold", book_id=book_id)["hold"]))

    def show_loans(self) -> None:
        """The books on loan now, with due dates and overdue marks."""
        loans = self.fetch_active_loans()
        if loans:
            self.show(views.loans_table(loans, numbered=False, title="On loan"))

    def fetch_active_loans(self) -> list[JsonDict]:
        """The loans not yet returned; says so when there are none."""
        loans = views.active_loans(self.connection.call("history")["loans"])
        if not loans:
            self.say("You have no books on loan.")
        return loans

    def return_book(self) -> None:
        """Pick a loan and return it."""
        loan = self.pick_loan("a book to return")
        if loan is not None:
            result = self.connection.call("return", loan_id=loan["id"])
            self.say(views.sentence_returned(result["loan"]))

    def renew_loan(self) -> None:
        """Pick a loan and renew it."""
        loan = self.pick_loan("a loan to renew")
        if loan is not None:
            self.say(
                views.sentence_renewed(self.connection.call("renew", loan_id=loan["id"])["loan"])
            )

    def pick_loan(self, what: str) -> JsonDict | None:
        """Show the active loans, numbered, and let the person choose one."""
        loans = self.fetch_active_loans()
        if not loans:
            return None
        self.show(views.loans_table(loans, numbered=True, title="On loan"))
        return self.pick_row(loans, what)

    def show_holds(self) -> None:
        """This member's holds with their queue positions; offer to cancel one."""
        holds = self.connection.call("holds")["holds"]
        if not holds:
            self.say("You have no holds. Choose a book with no free copy to join its queue.")
            return
        self.show(views.holds_table(holds, numbered=True))
        if (hold := self.pick_row(holds, "a hold to cancel")) is None:
            return
        title = hold["book"]["title"]
        if self.confirm(f"Cancel your hold on {views.clean_text(title)}?"):
            self.connection.call("cancel_hold", hold_id=hold["id"])
            self.say(f"Your hold on {title} is cancelled.")

    def show_history(self) -> None:
        """Every loan, current and returned."""
        loans = self.connection.call("history")["loans"]
        if loans:
            self.show(views.loans_table(loans, numbered=False, title="Loan history"))
        else:
            self.say("You have not borrowed any books yet.")

    # Admin

    def restock(self) -> None:
        """Add copies of a guide book for sale; back orders are supplied first."""
        books = self.fetch_guide_books()
        self.show(views.guide_books_table(books))
        if (book := self.pick_row(books, "a guide book to restock")) is None:
            return
        quantity = self.ask_number("How many copies arrived? ", 1, 100_000)
        result = self.connection.call("restock", book=book.number, quantity=quantity)
        self.show_all(views.sentences_restocked(result))

    def add_book(self) -> None:
        """Add copies of an Open Library work to the lending library."""
        text = self.ask_text("Open Library work key (/works/OL...W), or words to search for: ")
        key: str | None = text
        if not re.fullmatch(r"(/works/)?OL\d+W", text):
            key = self.pick_work(text)
        if key is None:
            return
        if not key.startswith("/works/"):
            key = f"/works/{key}"
        copies = self.ask_number("How many copies? ", 1, 1000)
        self.say(
            views.sentence_added(self.connection.call("add_book", key=key, copies=copies)["book"])
        )

    def pick_work(self, query: str) -> str | None:
        """Search Open Library and let the admin choose a work; its key."""
        hits = self.connection.call("search_books", query=query)["results"]
        if not hits:
            self.say("No books found.")
            return None
        self.show(views.book_hits_table(hits, numbered=True))
        hit = self.pick_row(hits, "a book to add")
        return None if hit is None else str(hit["key"])

    def show_backorders(self) -> None:
        """Copies sold but not yet supplied."""
        backorders = self.connection.call("backorders")["backorders"]
        if backorders:
            self.show(views.backorders_table(backorders))
        else:
            self.say("There are no outstanding back orders.")

    # Questions about walks

    def ask_area(self, areas: list[JsonDict]) -> str | None:
        """An area by its number or part of its name; None for every area."""
        while True:
            text = self.ask("Area number or name (Enter for all areas): ")
            if not text:
                return None
            if not text.isdigit():
                return text
            if 1 <= int(text) <= len(areas):
                return str(areas[int(text) - 1]["area"])
            self.warn(f"There is no area {text}; enter a number from 1 to {len(areas)}.")

    def ask_difficulty(self) -> str | None:
        """easy, medium or hard, in any case or by its first letters; None for any."""
        while True:
            text = self.ask("Difficulty: easy, medium or hard (Enter for any): ").lower()
            if not text:
                return None
            matches = [level for level in views.DIFFICULTIES if level.startswith(text)]
            if len(matches) == 1:
                return matches[0]
            self.warn(views.sentence_not_a_difficulty(views.clean_text(text)))

    def ask_miles(self, what: str, at_least: float | None = None) -> float | None:
        """A distance in miles, at least at_least when given; None for no bound."""
        while True:
            text = self.ask(f"{what} (Enter for any): ")
            if not text:
                return None
            try:
                miles = float(text)
            except ValueError:
                self.warn(f"{views.clean_text(text)!r} is not a number of miles.")
                continue
            if not math.isfinite(miles) or miles < 0:
                self.warn("The distance must be zero or more miles.")
            elif at_least is not None and miles < at_least:
                self.warn(f"The longest walk cannot be shorter than the shortest ({at_least:g}).")
            else:
                return miles
