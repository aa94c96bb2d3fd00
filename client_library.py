"""The library's menus: searching, browsing, borrowing, holds, loans, returns."""

from __future__ import annotations

import client_sentences as sentences
import client_views as views
from client_checks import longest
from client_link import Connection, JsonDict, ServerError
from client_prompts import Prompts
from client_shop import PAGE_SIZE
from protocol import UNAVAILABLE

LOAN_NUMBER = "loan number"


class LibraryMenus(Prompts):
    """The lending choices of the menu; App supplies the connection and the user."""

    connection: Connection
    user: JsonDict | None

    # Finding books

    def search_books(self) -> None:
        """Search Open Library, mark the held books, and offer to borrow or hold one."""
        query = self.ask_text(
            "Title or author to search for: ",
            "Type words from a book's title or its author's name; q goes back.",
            longest=longest("search_books", "query"),
        )
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
        query = self.ask_text(
            "Title or author to look for (Enter for all): ",
            "Type words from a title or an author's name, or Enter for every book; q goes back.",
            longest=longest("catalogue", "query"),
            optional=True,
        )
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

    # Borrowing and holds

    def offer_book(self, book_id: int, title: str, free: int) -> None:
        """Borrow the book when a copy is free or kept for this member's hold (a kept copy is
        not counted free), else offer a place in its queue."""
        if free > 0:
            if self.confirm(f"Borrow {views.clean_text(title)}?"):
                self.borrow(book_id, title)
        elif (kept := self.kept_hold(book_id)) is not None:
            if self.confirm(f"{sentences.sentence_kept(kept)} Borrow it?"):
                self.borrow(book_id, title)
        elif self.confirm(f"No copy of {views.clean_text(title)} is free. Join the queue for it?"):
            self.place_hold(book_id)

    def kept_hold(self, book_id: int) -> JsonDict | None:
        """This member's hold on the book when a copy is kept for them, else None."""
        holds = self.connection.call("holds")["holds"]
        return next((h for h in holds if h.get("ready") and h["book"]["id"] == book_id), None)

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
        self.say(sentences.sentence_borrowed(loan))

    def place_hold(self, book_id: int) -> None:
        """Join a book's queue and say where in it."""
        self.say(sentences.sentence_held(self.connection.call("hold", book_id=book_id)["hold"]))

    def show_holds(self) -> None:
        """This member's holds with their queue positions; offer to borrow a copy kept for one,
        or to cancel one."""
        holds = self.connection.call("holds")["holds"]
        if not holds:
            self.say("You have no holds. Choose a book with no free copy to join its queue.")
            return
        self.show(views.holds_table(holds, numbered=True))
        ready = any(hold.get("ready") for hold in holds)
        what = "a hold to borrow or cancel" if ready else "a hold to cancel"
        if (hold := self.pick_row(holds, what)) is None:
            return
        title = hold["book"]["title"]
        if hold.get("ready") and self.confirm(
            f"Borrow the copy of {views.clean_text(title)} kept for you?"
        ):
            self.borrow(hold["book"]["id"], title)
        elif self.confirm(f"Cancel your hold on {views.clean_text(title)}?"):
            self.connection.call("cancel_hold", hold_id=hold["id"])
            self.say(f"Your hold on {title} is cancelled.")

    # Loans: every screen shows a loan's own number, and return and renew take that number

    def show_loans(self) -> None:
        """The books on loan now, with due dates and overdue marks."""
        self.show_loan_pages(self.fetch_active_loans(), "On loan")

    def show_history(self) -> None:
        """Every loan, current and returned."""
        loans = self.connection.call("history")["loans"]
        if not loans:
            self.say("You have not borrowed any books yet.")
        self.show_loan_pages(loans, "Loan history")

    def show_loan_pages(self, loans: list[JsonDict], title: str) -> None:
        """Loans by their numbers, a page at a time."""
        self.show_pages(loans, lambda page: [views.loans_table(list(page), title)], "loans")

    def fetch_active_loans(self) -> list[JsonDict]:
        """The loans not yet returned; says so when there are none."""
        loans = views.active_loans(self.connection.call("history")["loans"])
        if not loans:
            self.say("You have no books on loan.")
        return loans

    def return_book(self) -> None:
        """Pick a loan by its number, confirm, and return it."""
        loan = self.pick_loan("a book to return")
        if loan is not None and self.confirm(f"Return {views.clean_text(loan['book']['title'])}?"):
            result = self.connection.call("return", loan_id=loan["id"])
            self.say(sentences.sentence_returned(result["loan"]))

    def renew_loan(self) -> None:
        """Pick a loan by its number and renew it."""
        loan = self.pick_loan("a loan to renew")
        if loan is not None:
            self.say(
                sentences.sentence_renewed(
                    self.connection.call("renew", loan_id=loan["id"])["loan"]
                )
            )

    def pick_loan(self, what: str) -> JsonDict | None:
        """Show the active loans by their numbers and let the person choose one."""
        loans = self.fetch_active_loans()
        if not loans:
            return None
        self.show_loan_pages(loans, "On loan")
        return self.pick_numbered(loans, lambda loan: int(loan["id"]), what, LOAN_NUMBER)
