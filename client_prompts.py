"""Questions for a person at the terminal that forgive mistakes, and what is printed back."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Sequence
from typing import TypeVar

from rich.console import Console
from rich.table import Table

import client_views as views
from client_checks import check_new_password
from client_link import UsageError

Row = TypeVar("Row")


class GoBack(Exception):
    """Ctrl-C or Ctrl-D at a prompt: leave the current step."""


class PasswordsDifferError(UsageError):
    """A new password was typed differently the second time."""


def ask_password(getpass_fn: Callable[[str], str], prompt: str, twice: bool) -> str:
    """A password typed at a hidden prompt (twice for a new one); PasswordsDifferError."""
    password = getpass_fn(prompt)
    if twice and password != getpass_fn("The same password again: "):
        raise PasswordsDifferError("The two passwords differ.")
    return password


class Prompts:
    """Asks through input_fn and getpass_fn and prints to console, all passed in so that tests
    can script a person; a mistyped answer is asked again with the reason.
    """

    def __init__(
        self,
        console: Console,
        input_fn: Callable[[str], str] = input,
        getpass_fn: Callable[[str], str] = getpass.getpass,
    ):
        self.console = console
        self.input_fn = input_fn
        self.getpass_fn = getpass_fn

    def ask(self, prompt: str) -> str:
        """One line of input, stripped; GoBack on Ctrl-C or Ctrl-D."""
        return self.read(self.input_fn, prompt).strip()

    def ask_secret(self, prompt: str) -> str:
        """A password, not echoed; GoBack on Ctrl-C or Ctrl-D."""
        return self.read(self.getpass_fn, prompt)

    def read(self, read_fn: Callable[[str], str], prompt: str) -> str:
        """What read_fn returns for prompt; GoBack on Ctrl-C or Ctrl-D."""
        try:
            return read_fn(prompt)
        except (EOFError, KeyboardInterrupt):
            self.say("")  # the cursor is still on the prompt's line
            raise GoBack from None

    def ask_text(self, prompt: str) -> str:
        """A non-empty line."""
        while not (text := self.ask(prompt)):
            self.warn("Please type something, or press Ctrl-C to go back.")
        return text

    def ask_new_password(self) -> str:
        """A new password that the server's rules accept, typed twice until both agree."""
        while True:
            try:
                password = ask_password(
                    self.ask_secret, "Password (at least 8 characters): ", twice=True
                )
                return check_new_password(password)
            except PasswordsDifferError:
                self.warn("The two passwords differ; please type them again.")
            except ValueError as error:
                self.warn(str(error))

    def ask_number(self, prompt: str, low: int, high: int) -> int:
        """A whole number from low to high; re-asks with the reason."""
        while (number := self.read_number(prompt, low, high)) is None:
            self.warn(f"Please enter a number from {low} to {high}.")
        return number

    def pick(self, count: int, what: str) -> int | None:
        """The 0-based index of a numbered row, or None when the person presses Enter."""
        number = self.read_number(f"Choose {what} by number (Enter to go back): ", 1, count)
        return None if number is None else number - 1

    def pick_row(self, rows: Sequence[Row], what: str) -> Row | None:
        """The row the person chooses by its number, or None when they press Enter."""
        index = self.pick(len(rows), what)
        return None if index is None else rows[index]

    def pick_numbered(
        self, rows: Sequence[Row], number_of: Callable[[Row], int], what: str, noun: str
    ) -> Row | None:
        """The row the person chooses by its own number, the one every screen shows for it
        (a loan's, a guide book's), or None for Enter."""
        by_number = {number_of(row): row for row in rows}
        listed = views.choices(list(by_number))
        while text := self.ask(f"Choose {what} by its {noun} (Enter to go back): "):
            if text.isdigit() and int(text) in by_number:
                return by_number[int(text)]
            self.warn(f"{views.quoted(text)} is not a {noun} shown; choose {listed}.")
        return None

    def read_number(self, prompt: str, low: int, high: int) -> int | None:
        """A whole number from low to high, or None for Enter; re-asks with the reason."""
        while text := self.ask(prompt):
            try:
                number = int(text)
            except ValueError:
                self.warn(
                    f"{views.clean_text(text)!r} is not a whole number; enter {low} to {high}."
                )
                continue
            if low <= number <= high:
                return number
            self.warn(f"{number} is out of range; enter a number from {low} to {high}.")
        return None

    def confirm(self, question: str) -> bool:
        """Yes or no; Enter means yes."""
        while True:
            answer = self.ask(f"{question} [Y/n] ").lower()
            if answer in ("", "y", "yes"):
                return True
            if answer in ("n", "no"):
                return False
            self.warn("Please answer y or n.")

    def say(self, text: str) -> None:
        """Print a sentence as it is (no markup: server text may contain brackets)."""
        views.say(self.console, text)

    def warn(self, text: str) -> None:
        """Print a problem, so it stands out."""
        views.say(self.console, text, style="bold red")

    def show(self, table: Table) -> None:
        """Print a table, set apart from the question before it by a blank line."""
        self.show_all([table])

    def show_all(self, shown: views.Shown) -> None:
        """Print tables and sentences, each table after a blank line."""
        views.show(self.console, shown, spaced=True)
