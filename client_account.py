"""The member's own account in the menus: messages, the email address, a copy of their data,
deleting the account, and the new password a temporary one must give way to."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import client_datafile as datafile
import client_sentences as sentences
import client_views as views
from client_basket import Basket
from client_checks import check_email, longest, most, sentence_refused
from client_link import ClientError, Connection, JsonDict, ServerError, UsageError
from client_prompts import GoBack, Prompts
from protocol import CONFLICT, INVALID_CREDENTIALS, WEAK_PASSWORD

EMAIL_HELP = "Type an address such as name@example.org; q goes back."


class AccountMenus(Prompts):
    """The account choices of the menu; App supplies the connection, the user and the session."""

    connection: Connection
    user: JsonDict | None
    basket: Basket
    must_change_password: bool
    end_session: Callable[[], None]

    # Messages

    def messages_label(self) -> str:
        """'Messages (3 new)', or 'Messages' when none is new or the count cannot be had."""
        try:
            unread = self.connection.call("notices", unread_only=True, limit=1)["unread"]
        except ClientError:
            return "Messages"  # the choice itself will say what is wrong
        except KeyboardInterrupt:
            self.connection.close()  # its late answer must not be read as the next one's
            return "Messages"
        return f"Messages ({unread} new)" if unread else "Messages"

    def show_messages(self) -> None:
        """This member's messages, newest first, a page at a time; those shown are marked read."""
        notices = self.connection.call("notices", limit=most("notices", "limit"))["notices"]
        if not notices:
            self.say(
                "You have no messages. The library writes here about your orders, loans and holds."
            )
            return
        seen: list[JsonDict] = []
        try:
            self.show_pages(notices, views.notices_shown, "messages", seen.extend)
        finally:
            # What was on the screen has been read, even when the person left half-way.
            if unread := only_new(seen):
                left = self.connection.call("mark_read", ids=unread)["unread"]
                marked = views.plural(len(unread), "new message is", "new messages are")
                still = f" {views.plural(left, 'message')} still new." if left else ""
                self.say(f"({marked} now marked read.{still})")

    # My account

    def my_account(self) -> None:
        """Who this member is and their email; set or remove it, download their data, or
        delete the account."""
        help_text = (
            "Type 1 to set your email, 2 to remove it, 3 to save a copy of your data, "
            "4 to delete your account; 0 or q goes back."
        )
        actions: dict[int, Callable[[], None]] = {
            1: self.set_email, 2: self.remove_email, 3: self.download_data,
            4: self.delete_account,
        }  # fmt: skip
        while self.user is not None:
            user = self.connection.call("whoami")["user"]
            self.user = {**self.user, **user}
            self.say(f"\nMy account: {user['username']} ({user.get('role', 'member')})")
            self.say(sentences.sentence_email(user))
            change = "Change my email" if user.get("email") else "Set my email"
            self.say(f"  1  {change}\n  2  Remove my email\n  3  Download my data")
            self.say("  4  Delete my account\n  0  Back")
            choice = self.ask_number("Choose: ", 0, 4, help_text)
            if choice == 0:
                return
            try:
                actions[choice]()
            except GoBack:
                continue

    def set_email(self) -> None:
        """An address for the library's emails, checked by the server's rule as it is typed."""
        email = self.ask_email("Email address: ")
        user = self.connection.call("set_email", email=email)["user"]
        self.say(sentences.sentence_email(user))

    def ask_email(self, prompt: str, optional: bool = False) -> str:
        """An address the server's rule accepts, or '' for none when optional."""
        help_text = EMAIL_HELP.replace("; q", "; Enter for none, q") if optional else EMAIL_HELP
        while True:
            text = self.ask_text(
                prompt, help_text, longest=longest("set_email", "email"), optional=optional
            )
            if not text:
                return ""
            try:
                return check_email(text)
            except ValueError as error:
                self.warn(str(error))

    def remove_email(self) -> None:
        """Take the email address off the account, after asking."""
        email = (self.user or {}).get("email")
        if not email:
            self.say("You have no email address to remove.")
            return
        if self.confirm(f"Remove {views.clean_text(email)} from your account?"):
            user = self.connection.call("set_email", email=None)["user"]
            self.say(f"Your email is removed. {sentences.sentence_email(user)}")

    def download_data(self) -> None:
        """Everything the library holds about this member, saved as a JSON file that is never
        written over another."""
        data = self.connection.call("my_data")
        suggested = datafile.default_name(data["user"]["username"])
        help_text = (
            f"Type a file name or path, or Enter for {suggested} in {Path.cwd()}; q goes back."
        )
        while True:
            text = self.ask(f"Save to which file? (Enter for {suggested}): ", help_text)
            path = Path(text or suggested)
            try:
                path = datafile.check_writable(path)
            except UsageError as error:
                self.warn(str(error))
                continue
            try:
                written = datafile.write_data(path, data)
            except UsageError as error:
                self.warn(str(error))
                continue
            self.say(sentences.sentence_data_saved(str(written), datafile.counts(data)))
            return

    def delete_account(self) -> None:
        """Delete this member's account for good, once they give the password and say yes."""
        self.say(sentences.DELETION_WARNING)
        password = self.ask_secret(
            "Your password, to delete the account: ", "Type the password you log in with."
        )
        username = (self.user or {}).get("username", "")
        if not self.confirm(f"Delete the account {username} for ever?", default=False):
            self.say("Nothing was deleted.")
            return
        try:
            self.connection.call("delete_account", password=password)
        except ServerError as error:
            if error.code == INVALID_CREDENTIALS:
                self.warn("That password is not right, so your account is kept.")
                return
            if error.code == CONFLICT:
                self.warn(sentence_refused(error))
                return
            raise
        self.end_session()
        self.say(sentences.ACCOUNT_DELETED)

    # A temporary password must be replaced before anything else

    def choose_new_password(self, temporary: str | None = None) -> None:
        """Replace the temporary password the library gave (asked for when not known)."""
        self.warn(sentences.CHOOSE_NEW_FIRST)
        old = temporary or self.ask_secret(
            "The temporary password the library gave you: ",
            "Type the temporary password the library gave you; q goes back.",
        )
        while True:
            new = self.ask_new_password("New password (at least 8 characters): ")
            try:
                self.connection.call("change_password", old_password=old, new_password=new)
                break
            except ServerError as error:
                if error.code != WEAK_PASSWORD:
                    raise
                self.warn(sentence_refused(error))
        self.must_change_password = False
        self.say("Your new password is set. Thank you: everything is open to you again.")

    def note_must_change(self, result: JsonDict) -> bool:
        """Whether a login's or resume's result says the password must be changed first."""
        self.must_change_password = bool(result.get("must_change_password"))
        return self.must_change_password


def only_new(notices: Sequence[JsonDict]) -> list[int]:
    """The ids of the notices not yet read."""
    return [notice["id"] for notice in notices if not notice.get("read")]
