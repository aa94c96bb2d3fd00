"""The interactive menus for people: the session's main menu, composed of each area's menus.

Logging in, the admin's choices and the main loop are here; the shop's, the library's, the
member's own account's and the desk's choices live in client_shop.py, client_library.py,
client_account.py and client_desk.py."""

from __future__ import annotations

import contextlib
import getpass
import re
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console

import client_sentences as sentences
import client_views as views
from client_account import AccountMenus
from client_basket import Basket
from client_checks import (
    check_moment,
    check_username,
    is_backwards,
    is_day,
    longest,
    most,
    sentence_refused,
    until_sent,
)
from client_desk import DeskMenus
from client_library import LibraryMenus
from client_link import EXIT_OK, EXIT_SERVER_ERROR, ClientError, Connection, JsonDict, ServerError
from client_prompts import GoBack
from client_shop import BOOK_NUMBER, ShopMenus
from protocol import BAD_REQUEST, FORBIDDEN, UNAUTHORIZED, USERNAME_TAKEN, WEAK_PASSWORD

EMAIL_PROMPT = "Email address for the library's messages (Enter for none): "
USERNAME_HELP = "A username has 3 to 32 letters A-Z, digits, '_', '.' or '-'; q goes back."


@dataclass(frozen=True)
class MenuItem:
    """One line of a menu."""

    label: str
    action: Callable[[], None]


class App(ShopMenus, LibraryMenus, AccountMenus, DeskMenus):
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
        # A login with a temporary password: nothing but a new password until it is chosen.
        self.must_change_password = False

    # The session

    def run(self) -> int:
        """Greet, resume a remembered login, then serve the menu until the person quits."""
        try:
            info = self.connection.call("hello")
        except ClientError as error:
            self.warn(str(error))
            return EXIT_SERVER_ERROR
        self.say(f"Connected to {info.get('server', 'Waymark')} at {self.connection.address}.")
        self.say("At any question, q goes back and help says what is expected.")
        self.perform(self.resume_remembered)
        while True:
            items = self.menu_items()
            self.show_menu(items)
            try:
                choice = self.ask_number(
                    "Choose: ",
                    0,
                    len(items),
                    "Type the number of a line of the menu; 0 or q quits.",
                )
            except GoBack:
                choice = 0
            if choice:
                self.perform(items[choice - 1].action)
                continue
            try:
                if self.may_empty_basket("Quit"):
                    break
            except GoBack:
                break  # Ctrl-D again: stdin has ended, so asking once more would never end
        self.leave()
        return EXIT_OK

    def menu_items(self) -> list[MenuItem]:
        """What this person may do now: more once logged in, more still for an admin."""
        items = [
            MenuItem("Find walks", self.find_walks),
            MenuItem("Which guide book covers my walks?", self.recommend_books),
        ]
        if self.user is None:
            return [
                *items,
                MenuItem("Search books", self.search_books),
                MenuItem("Browse the library's books", self.browse_catalogue),
                MenuItem("Register", self.register),
                MenuItem("Log in", self.log_in),
            ]
        if self.must_change_password:
            return [
                MenuItem("Choose a new password (the library gave you a temporary one)",
                         self.choose_new_password),
                MenuItem("Log out", self.log_out),
            ]  # fmt: skip
        basket = (
            f" (basket: {views.plural(self.basket.copies, 'copy', 'copies')})"
            if self.basket
            else ""
        )
        items += [
            MenuItem(f"Buy guide books{basket}", self.buy_guide_books),
            MenuItem("My orders", self.show_orders),
            MenuItem("Cancel a back order", self.cancel_backorder),
            MenuItem("Search books", self.search_books),
            MenuItem("Borrow or hold a library book", self.browse_catalogue),
            MenuItem("My loans", self.show_loans),
            MenuItem("Return a book", self.return_book),
            MenuItem("Renew a loan", self.renew_loan),
            MenuItem("My holds (borrow a kept copy, or cancel)", self.show_holds),
            MenuItem("Loan history", self.show_history),
            MenuItem("Change my password", self.change_password),
            MenuItem(self.messages_label(), self.show_messages),
            MenuItem("My account: email, my data, delete", self.my_account),
        ]
        if self.user.get("role") == "admin":
            items += [
                MenuItem("Restock guide books (admin)", self.restock),
                MenuItem("Add a lending book (admin)", self.add_book),
                MenuItem("Back orders (admin)", self.show_backorders),
                MenuItem("Overdue loans (admin)", self.show_overdue),
                MenuItem("Sales (admin)", self.show_sales),
                MenuItem("Members: find, lend, check in, reset, block (admin)", self.members_menu),
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
            if error.code == FORBIDDEN and error.details.get("must_change_password"):
                self.must_change_password = True  # the menu now offers nothing else
                self.warn(sentences.CHOOSE_NEW_FIRST)
                return
            self.warn(sentence_refused(error))
            if error.code == UNAUTHORIZED and self.user is not None:
                self.end_session()
                self.warn("Please log in again.")
        except ClientError as error:
            self.warn(str(error))

    def may_empty_basket(self, leaving: str) -> bool:
        """True when nothing is in the basket, or the person agrees to lose it by leaving."""
        if not self.basket:
            return True
        copies = views.plural(self.basket.copies, "copy", "copies")
        return self.confirm(f"Your basket holds {copies}, not yet ordered. {leaving} anyway?")

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
        if self.note_must_change(result):
            self.choose_new_password()

    def register(self) -> None:
        """Create an account, then log in with it. The name's form and the password's rules
        are checked as they are typed; a taken name is asked again, not the password."""
        username = self.ask_username("Choose a username (3-32 letters, digits, _ . -): ")
        password = self.ask_new_password()
        email = self.ask_email(EMAIL_PROMPT, optional=True)
        while True:
            try:
                optional = {"email": email} if email else {}
                self.connection.call("register", username=username, password=password, **optional)
                break
            except ServerError as error:
                sentence = sentence_refused(error)
                if error.code == WEAK_PASSWORD or error.details.get("argument") == "password":
                    self.warn(sentence)
                    password = self.ask_new_password()
                elif error.details.get("argument") == "email":
                    self.warn(sentence)
                    email = self.ask_email(EMAIL_PROMPT, optional=True)
                elif error.code in (USERNAME_TAKEN, BAD_REQUEST):
                    self.warn(sentence)
                    username = self.ask_username("Choose another username: ")
                else:
                    raise
        self.say(f"Registered {username}.")
        self.start_session(username, password)

    def ask_username(self, prompt: str) -> str:
        """A username of the form the server accepts."""
        while True:
            try:
                return check_username(self.ask_text(prompt, USERNAME_HELP))
            except ValueError as error:
                self.warn(str(error))

    def log_in(self) -> None:
        """Ask for a username and password and log in."""
        username = self.ask_text("Username: ", "Type the username you registered; q goes back.")
        self.start_session(username, self.ask_secret("Password: "))

    def start_session(self, username: str, password: str) -> None:
        """Log in (the connection saves the token only when asked to remember it)."""
        result = self.connection.call("login", username=username, password=password)
        self.user = result["user"]
        self.say(f"Welcome, {self.user['username']}!")
        if (remembered_in := self.connection.remembered_in) is not None:
            self.say(f"Your login is remembered in {remembered_in}.")
        if self.note_must_change(result):
            self.choose_new_password(password)

    def log_out(self) -> None:
        """End the session here and on the server, after a warning when the basket is full."""
        if not self.may_empty_basket("Log out"):
            return
        self.connection.call("logout")
        self.end_session()
        self.say("You are logged out.")

    def change_password(self) -> None:
        """The old password, then a new one typed twice and checked by the rules; the
        connection carries on under the new token (and remembers it, when it remembers)."""
        old = self.ask_secret("Old password: ", "Type the password you log in with; q goes back.")
        new = self.ask_new_password("New password (at least 8 characters): ")
        self.connection.call("change_password", old_password=old, new_password=new)
        self.must_change_password = False
        self.say("Your password is changed; any other session of yours has ended.")

    def end_session(self) -> None:
        """Forget the user, their basket and any saved token."""
        self.user = None
        self.must_change_password = False
        self.connection.forget_session()
        self.basket.clear()

    # Admin

    def restock(self) -> None:
        """Add copies of a guide book for sale; back orders are supplied first."""
        books = self.fetch_guide_books()
        self.show(views.guide_books_table(books))
        book = self.pick_numbered(
            books, lambda book: book.number, "a guide book to restock", BOOK_NUMBER
        )
        if book is None:
            return
        quantity = self.ask_number("How many copies arrived? ", 1, most("restock", "quantity"))
        result = self.connection.call("restock", book=book.number, quantity=quantity)
        self.show_all(sentences.sentences_restocked(result))

    def add_book(self) -> None:
        """Add copies of an Open Library work to the lending library."""
        text = self.ask_text(
            "Open Library work key (/works/OL...W), or words to search for: ",
            "Type a work key such as /works/OL45804W, or words to search Open Library for.",
            longest=longest("search_books", "query"),
        )
        key: str | None = text
        if not re.fullmatch(r"(/works/)?OL\d+W", text):
            key = self.pick_work(text)
        if key is None:
            return
        if not key.startswith("/works/"):
            key = f"/works/{key}"
        copies = self.ask_number("How many copies? ", 1, most("add_book", "copies"))
        self.say(
            sentences.sentence_added(
                self.connection.call("add_book", key=key, copies=copies)["book"]
            )
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

    def show_overdue(self) -> None:
        """Loans past their due date, most days overdue first."""
        loans = self.connection.call("overdue")["loans"]
        if loans:
            self.show(views.overdue_table(loans))
        else:
            self.say("No loan is overdue.")

    def show_sales(self) -> None:
        """Guide-book sales from a first to a last date, that day included; Enter leaves either
        end open."""
        since = self.ask_date("From which date (such as 2026-11-01; Enter for the first sale)? ")
        while True:
            until = self.ask_date(
                "To which date, that day included (Enter for up to now)? ", last=True
            )
            if not (since and until and is_backwards(since, until)):
                break
            self.warn(f"The last date cannot be before the first ({since}).")
        window = {"since": since, "until": until_sent(until) if until else ""}
        result = self.connection.call("sales", **{name: day for name, day in window.items() if day})
        title = views.sales_title(since, until, last_day=not until or is_day(until))
        self.show(views.sales_table(result, title))

    def ask_date(self, prompt: str, last: bool = False) -> str:
        """A date or time as ISO 8601 writes it (UTC unless it says otherwise), or ''; the
        last date of a window must have a day after it."""
        help_text = (
            "Type a date such as 2026-11-01, or a time such as 2026-11-01T09:30; "
            "Enter leaves it open, q goes back."
        )
        while text := self.ask(prompt, help_text):
            try:
                if last:
                    until_sent(text)
                return check_moment(text)
            except ValueError as error:
                self.warn(str(error))
        return ""
