"""Questions for a person at the terminal that forgive mistakes, with what is printed back."""

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


PAGE_ROWS = 10  # rows of a long list shown at once; "n" shows the next ones
BACK_WORDS = ("q",)  # at any question: leave the current step
HELP_WORDS = ("help", "?")  # at any question: say what is expected, then ask again
HELP = "Type your answer and press Enter; q (or Ctrl-C) goes back."


class GoBack(Exception):
    """q, Ctrl-C or Ctrl-D at a prompt: leave the current step."""


class PasswordsDifferError(UsageError):
    """A new password was typed differently the second time."""


def ask_password(
    getpass_fn: Callable[[str], str],
    prompt: str,
    twice: bool,
    check: Callable[[str], str] | None = None,
) -> str:
    """A password typed at a hidden prompt (twice for a new one), checked by check as soon as it
    is first typed; PasswordsDifferError, or whatever check raises."""
    password = getpass_fn(prompt)
    if check is not None:
        password = check(password)
    if twice and password != getpass_fn("The same password again: "):
        raise PasswordsDifferError("The two passwords differ.")
    return password


class Prompts:
    """Asks through input_fn and getpass_fn and prints to console, all passed in so that tests
    can script a person; a mistyped answer is asked again with the reason. At every question
    q goes back and help says what is expected.
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

    def ask(self, prompt: str, help_text: str = HELP) -> str:
        """One line of input, stripped; GoBack on q, Ctrl-C or Ctrl-D."""
        return self.answer(self.input_fn, prompt, help_text).strip()

    def ask_secret(self, prompt: str, help_text: str = HELP) -> str:
        """A password, not echoed; GoBack on q, Ctrl-C or Ctrl-D."""
        return self.answer(self.getpass_fn, prompt, help_text)

    def answer(self, read_fn: Callable[[str], str], prompt: str, help_text: str) -> str:
        """What read_fn returns for prompt, once it is neither q (GoBack) nor help (explained)."""
        while True:
            text = self.read(read_fn, prompt)
            word = text.strip().lower()
            if word in BACK_WORDS:
                raise GoBack
            if word not in HELP_WORDS:
                return text
            self.say(help_text)

    def read(self, read_fn: Callable[[str], str], prompt: str) -> str:
        """What read_fn returns for prompt; GoBack on Ctrl-C or Ctrl-D."""
        try:
            return read_fn(prompt)
        except (EOFError, KeyboardInterrupt):
            self.say("")  # the cursor is still on the prompt's line
            raise GoBack from None

    def ask_text(
        self,
        prompt: str,
        help_text: str = HELP,
        longest: int | None = None,
        optional: bool = False,
    ) -> str:
        """A line of at most longest characters, not empty unless optional."""
        while True:
            text = self.ask(prompt, help_text)
            if not text and not optional:
                self.warn("Please type something, or q to go back.")
            elif longest is not None and len(text) > longest:
                self.warn(f"That is {len(text)} characters; please keep it to {longest}.")
            else:
                return text

    def ask_new_password(self, prompt: str = "Password (at least 8 characters): ") -> str:
        """A new password that the server's rules accept (checked as soon as it is typed), typed
        twice until both agree."""
        help_text = "Choose a password of at least 8 characters; it is not shown as you type."
        while True:
            try:
                return ask_password(
                    lambda prompt: self.ask_secret(prompt, help_text),
                    prompt,
                    twice=True,
                    check=check_new_password,
                )
            except PasswordsDifferError:
                self.warn("The two passwords differ; please type them again.")
            except ValueError as error:
                self.warn(str(error))

    def ask_number(self, prompt: str, low: int, high: int, help_text: str | None = None) -> int:
        """A whole number from low to high; re-asks with the reason."""
        help_text = help_text or f"Type a whole number from {low} to {high}; q goes back."
        while (number := self.read_number(prompt, low, high, help_text)) is None:
            self.warn(f"Please enter a number from {low} to {high}.")
        return number

    def pick(self, count: int, what: str) -> int | None:
        """The 0-based index of a row numbered in the # column, or None for Enter."""
        help_text = "Type a number from the # column of the table; Enter or q goes back."
        number = self.read_number(
            f"Choose {what} by number (Enter to go back): ", 1, count, help_text
        )
        return None if number is None else number - 1

    def pick_row(self, rows: Sequence[Row], what: str) -> Row | None:
        """The row the person chooses by its number in the # column, or None for Enter."""
        index = self.pick(len(rows), what)
        return None if index is None else rows[index]

    def pick_numbered(
        self, rows: Sequence[Row], number_of: Callable[[Row], int], what: str, noun: str
    ) -> Row | None:
        """The row the person chooses by its own number, the one every screen shows for it
        (a loan's, a guide book's), or None for Enter."""
        by_number = {number_of(row): row for row in rows}
        listed = views.choices(list(by_number))
        help_text = f"Type the {noun} as the table shows it ({listed}); Enter or q goes back."
        while text := self.ask(f"Choose {what} by its {noun} (Enter to go back): ", help_text):
            if text.isdigit() and int(text) in by_number:
                return by_number[int(text)]
            article = "an" if noun[:1] in "aeiou" else "a"
            self.warn(f"{views.quoted(text)} is not {article} {noun} shown; choose {listed}.")
        return None

    def read_number(self, prompt: str, low: int, high: int, help_text: str) -> int | None:
        """A whole number from low to high, or None for Enter; re-asks with the reason."""
        while text := self.ask(prompt, help_text):
            try:
                number = int(text)
            except ValueError:
                self.warn(f"{views.quoted(text)} is not a whole number; enter {low} to {high}.")
                continue
            if low <= number <= high:
                return number
            self.warn(f"{number} is out of range; enter a number from {low} to {high}.")
        return None

    def confirm(self, question: str, default: bool = True) -> bool:
        """Yes or no; Enter means default (yes, unless the step cannot be undone)."""
        enter = "yes" if default else "no"
        help_text = f"Type y for yes or n for no (Enter means {enter}); q goes back."
        while True:
            answer = self.ask(f"{question} {'[Y/n]' if default else '[y/N]'} ", help_text).lower()
            if answer in ("y", "yes") or (default and not answer):
                return True
            if answer in ("n", "no") or not answer:
                return False
            self.warn("Please answer y or n.")

    def show_pages(
        self,
        rows: Sequence[Row],
        shown_for: Callable[[Sequence[Row]], views.Shown],
        noun: str,
        seen: Callable[[Sequence[Row]], None] | None = None,
    ) -> None:
        """Show a long list PAGE_ROWS rows at a time; n shows the next page, Enter stops. seen
        is told of each page once it is on the screen."""
        for start in range(0, len(rows), PAGE_ROWS):
            page = rows[start : start + PAGE_ROWS]
            self.show_all(shown_for(page))
            if seen is not None:
                seen(page)
            left = len(rows) - start - PAGE_ROWS
            if left <= 0:
                return
            help_text = f"Type n to see the next {noun}; Enter stops here, q goes back."
            more = self.ask(
                f"{left} more {noun}: n for the next {min(left, PAGE_ROWS)}, Enter to stop: ",
                help_text,
            )
            if more.lower() not in ("n", "next", "more"):
                return

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
