"""The librarians' desk in the menus: members found, helped, blocked or lent to; notices sent now."""

from __future__ import annotations

from collections.abc import Callable

import client_sentences as sentences
import client_views as views
from client_checks import check_username, longest, most, sentence_refused
from client_library import LOAN_NUMBER
from client_link import Connection, JsonDict, ServerError
from client_prompts import GoBack, Prompts
from client_shop import PAGE_SIZE
from protocol import UNAUTHORIZED


class DeskMenus(Prompts):
    """The admin's Members menu; App supplies the connection."""

    connection: Connection

    def members_menu(self) -> None:
        """Find a member (by part of a name, or by the whole name) and open their file; check a
        loan in by its number; send the notices that are due now."""
        help_text = (
            "Type 1 to search members, 2 to open a member by username, 3 to check a loan in, "
            "4 to send the notices due now; 0 or q goes back."
        )
        actions: dict[int, Callable[[], None]] = {
            1: self.find_members, 2: self.member_by_name, 3: self.check_in_by_number,
            4: self.send_notices,
        }  # fmt: skip
        while True:
            self.say("\nMembers (admin)")
            self.say("  1  Find members\n  2  A member's loans, holds and orders, by username")
            self.say("  3  Check a loan in, by its loan number\n  4  Send notices now\n  0  Back")
            choice = self.ask_number("Choose: ", 0, 4, help_text)
            if choice == 0:
                return
            try:
                actions[choice]()
            except GoBack:
                continue
            except ServerError as error:
                self.refused(error)

    def find_members(self) -> None:
        """Members whose username holds the words typed; choosing one opens their file."""
        query = self.ask_text(
            "Part of a username (Enter for every member): ",
            "Type part of a member's username, or Enter for everyone; q goes back.",
            longest=longest("members", "query"),
            optional=True,
        )
        args: JsonDict = {"limit": most("members", "limit")}
        if query:
            args["query"] = query
        result = self.connection.call("members", **args)
        members = result["members"]
        if not members:
            self.say(
                f"No member's username holds {views.quoted(query)}." if query else "No members."
            )
            return
        self.show(views.members_table(members, numbered=True))
        if result["total"] > len(members):
            self.say(
                f"Showing the first {len(members)} of {result['total']} members; type more of "
                "the name to find the others."
            )
        if (member := self.pick_row(members, "a member")) is not None:
            self.member_file(member["username"])

    def member_by_name(self) -> None:
        """A member's file, by their whole username."""
        while True:
            text = self.ask_text("Username: ", "Type the member's whole username; q goes back.")
            try:
                username = check_username(text)
            except ValueError as error:
                self.warn(str(error))
                continue
            break
        self.member_file(username)

    def member_file(self, username: str) -> None:
        """One member's details, loans, holds and orders, and what the desk may do for them;
        shown again after each step, as it now stands."""
        help_text = (
            "Type 1 to lend a book, 2 to check a loan in, 3 to reset the password, 4 to block or "
            "unblock; 0 or q goes back."
        )
        while True:
            found = self.connection.call("member", username=username)
            self.say("")
            self.show_all(views.member_shown(found))
            user = found["user"]
            name = views.clean_text(user["username"])
            block = f"Unblock {name}" if user.get("blocked") else f"Block {name}"
            self.say(f"\n  1  Lend a book to {name}\n  2  Check in one of {name}'s loans")
            self.say(f"  3  Reset {name}'s password\n  4  {block}\n  0  Back")
            choice = self.ask_number("Choose: ", 0, 4, help_text)
            try:
                if choice == 0:
                    return
                if choice == 1:
                    self.lend_to(user["username"])
                elif choice == 2:
                    self.check_in_for(found)
                elif choice == 3:
                    self.reset_password(user["username"])
                elif user.get("blocked"):
                    self.unblock(user["username"])
                else:
                    self.block(user["username"])
            except GoBack:
                continue
            except ServerError as error:
                self.refused(error)

    def refused(self, error: ServerError) -> None:
        """Say why the server refused a step and stay on this screen; a lost session still
        ends it (the menus log the person out)."""
        if error.code == UNAUTHORIZED:
            raise error
        self.warn(sentence_refused(error))

    def lend_to(self, username: str) -> None:
        """Choose a book from the catalogue and lend it at the desk, under borrow's rules."""
        query = self.ask_text(
            "Title or author of the book (Enter for all): ",
            "Type words from the book's title or its author's name, or Enter for every book; "
            "q goes back.",
            longest=longest("catalogue", "query"),
            optional=True,
        )
        books = self.connection.call(
            "catalogue", limit=PAGE_SIZE, **({"query": query} if query else {})
        )["books"]
        if not books:
            self.say("The library has no books like that.")
            return
        self.show(views.catalogue_table(books, numbered=True))
        book = self.pick_row(books, "the book to lend")
        if book is None:
            return
        title, name = views.clean_text(book["title"]), views.clean_text(username)
        if self.confirm(f"Lend {title} to {name}?"):
            loan = self.connection.call("lend", username=username, book_id=book["id"])["loan"]
            self.say(sentences.sentence_lent(loan, username))

    def check_in_for(self, found: JsonDict) -> None:
        """Check in one of this member's loans, chosen by its number."""
        loans = views.active_loans(found["loans"])
        if not loans:
            self.say(f"{views.clean_text(found['user']['username'])} has no books on loan.")
            return
        loan = self.pick_numbered(
            loans, lambda loan: int(loan["id"]), "a loan to check in", LOAN_NUMBER
        )
        if loan is not None:
            self.check_in(int(loan["id"]))

    def check_in_by_number(self) -> None:
        """Check a loan in by the number on the loan, whoever has it."""
        loan_id = self.ask_number(
            "Loan number: ",
            1,
            most("checkin", "loan_id"),
            "Type the loan's number, as the member's loans show it; q goes back.",
        )
        self.check_in(loan_id)

    def check_in(self, loan_id: int) -> None:
        """Take a loan back at the desk."""
        self.say(
            sentences.sentence_checked_in(self.connection.call("checkin", loan_id=loan_id)["loan"])
        )

    def reset_password(self, username: str) -> None:
        """Give the member a temporary password, shown here once and kept nowhere."""
        name = views.clean_text(username)
        if not self.confirm(
            f"Reset {name}'s password? Every session of theirs ends and their password stops "
            "working.",
            default=False,
        ):
            return
        temporary = self.connection.call("reset_password", username=username)["temporary_password"]
        self.say(sentences.sentence_password_reset(username))
        shown, handover = sentences.sentences_temporary_password(temporary)
        views.say(self.console, shown, style="bold")  # the one time it is shown: plainly seen
        self.say(handover)
        # Wait, so that the member's file shown next does not push it out of sight.
        self.ask(f"Press Enter once {name} has it: ", "Press Enter to go on.")

    def block(self, username: str) -> None:
        """Block a member from borrowing, renewing, holding and buying, with a reason they see."""
        reason = self.ask_text(
            f"Why is {views.clean_text(username)} blocked? (they will see this): ",
            "Type the reason the member will be shown, such as 'Three books overdue'; q goes back.",
            longest=longest("block_member", "reason"),
        )
        user = self.connection.call("block_member", username=username, reason=reason)["user"]
        self.say(sentences.sentence_blocked_now(user))

    def unblock(self, username: str) -> None:
        """Let a blocked member borrow, renew, hold and buy again."""
        if self.confirm(f"Unblock {views.clean_text(username)}?"):
            user = self.connection.call("unblock_member", username=username)["user"]
            self.say(sentences.sentence_blocked_now(user))

    def send_notices(self) -> None:
        """Run the notices' sweep now rather than at its next turn, and say what it made."""
        self.say(sentences.sentence_sweep(self.connection.call("sweep_notices")["created"]))
