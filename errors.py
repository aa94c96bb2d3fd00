"""The domain's errors, raised by the rules or the store, knowing nothing of the wire.

Each carries a sentence a person can read and details a program can act on; commands.py maps
each class (or the nearest class it derives from) to one wire code, in one table. engine.py turns
the database drivers' errors into these, so nothing above the store sees a driver's error.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A request the domain refuses; the message is one sentence a person understands."""

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidInputError(DomainError):
    """A value no rule accepts (a malformed username, an unknown difficulty)."""


class NotFoundError(DomainError):
    """No such book, walk, loan, hold or order."""


class ConflictError(DomainError):
    """The request contradicts the current state (a loan already returned)."""


class ForbiddenError(DomainError):
    """Someone else's loan, hold or order."""


class UnavailableError(DomainError):
    """Nothing to lend right now."""


class LimitExceededError(DomainError):
    """A purchase or borrowing limit would be broken; details say which and how many remain."""


class WeakPasswordError(DomainError):
    """A password that breaks the password rules."""


class UsernameTakenError(DomainError):
    """A username that exists already, ignoring case."""


class TryAgainError(DomainError):
    """The work could not be finished just now (contention, a lost database); nothing changed."""


class RaceLostError(TryAgainError):
    """Another request took the same row first (the same idempotency key, a certification
    conflict); nothing changed, and the request may be run again at once."""


class DatabaseUnavailableError(TryAgainError):
    """The database cannot be reached, or the link to it broke before a commit; nothing changed."""

    MESSAGE = (
        "The database is unavailable just now and nothing was changed; please try again shortly."
    )

    def __init__(self) -> None:
        super().__init__(self.MESSAGE, {"retry_after_s": 1, "cause": "database"})


class OutcomeUnknownError(DomainError):
    """The database connection broke during the commit: the change may or may not be saved."""
