"""Waymark's business rules: prices, copy limits, stock, loans, login throttling.

Pure functions over plain values: no I/O, no SQL, no clock reads (callers pass `now`).
db.py applies them inside the transaction that reads the numbers they need. A broken rule
raises a domain error from errors.py; a ValueError means the caller passed values no request
could produce (a programming error).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from errors import ConflictError, InvalidInputError, LimitExceededError, WeakPasswordError

DISCOUNT_THRESHOLD_PENCE = 7500
DISCOUNT_PERCENT = 10
MAX_COPIES_PER_ORDER = 8
MAX_COPIES_PER_CUSTOMER = 8

LOAN_PERIOD = timedelta(days=14)
MAX_ACTIVE_LOANS = 5
MAX_RENEWALS = 2
HOLD_KEPT_FOR = timedelta(days=3)

MIN_PASSWORD_LENGTH = 8
# Bounds the hashing work one request can cause. Passwords past bcrypt's 72-byte input limit
# are still fully supported: the auth layer pre-hashes them rather than truncating.
MAX_PASSWORD_LENGTH = 1024

DIFFICULTIES = ("easy", "medium", "hard")

_USERNAME = re.compile(r"[A-Za-z0-9_.\-]{3,32}")
_ONE_DAY = timedelta(days=1)
_ONE_MICROSECOND = timedelta(microseconds=1)


# Time ---------------------------------------------------------------------------------------


def from_seconds(timestamp: int) -> datetime:
    """UTC seconds since the epoch (as the store keeps times) as an aware datetime."""
    return datetime.fromtimestamp(timestamp, UTC)


def to_seconds(moment: datetime) -> int:
    """An aware datetime as whole UTC seconds since the epoch (any part of a second dropped)."""
    _require_aware(moment)
    return int(moment.timestamp() // 1)


# Text matching ------------------------------------------------------------------------------


def normalise_spaces(text: str) -> str:
    """The text stripped, with every run of whitespace (line breaks included) as one space."""
    return " ".join(text.split())


def book_search_key(title: str, authors: Sequence[str]) -> str:
    """What a lending-catalogue query is matched against: title and authors, as match keys."""
    return match_key(" | ".join([title, *authors]))


def match_key(text: str) -> str:
    """The form two names are compared in: spaces normalised and case folded."""
    return normalise_spaces(text).casefold()


# Accounts ------------------------------------------------------------------------------------


def validate_username(username: str) -> str:
    """The username as given when 3-32 ASCII letters, digits, '_', '.', '-'; else InvalidInputError."""
    if _USERNAME.fullmatch(username):
        return username
    if not 3 <= len(username) <= 32:
        message = "The username must be 3 to 32 characters long."
    else:
        message = "The username may use only the letters A-Z, digits, '_', '.' and '-'."
    raise InvalidInputError(message, {"argument": "username"})


def username_key(username: str) -> str:
    """The form usernames are unique in: names differing only in case are the same name."""
    return username.casefold()


def validate_password(password: str) -> None:
    """Return if the password may be used; else WeakPasswordError saying which rule it breaks."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(
            f"The password must be at least {MIN_PASSWORD_LENGTH} characters long.",
            {"min_length": MIN_PASSWORD_LENGTH},
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPasswordError(
            f"The password must be at most {MAX_PASSWORD_LENGTH} characters long.",
            {"max_length": MAX_PASSWORD_LENGTH},
        )
    if not password.strip():
        raise WeakPasswordError("The password must not be only spaces.")


def validate_email(email: str) -> str:
    """The address as given when PROTOCOL.md 1.2 accepts it; else InvalidInputError."""
    local, at, domain = email.partition("@")
    # isprintable() is false for every space and line break as well as for control characters,
    # so no address can carry a second header line into a mail.
    if (
        3 <= len(email) <= 254
        and at
        and local
        and "@" not in domain
        and "." in domain
        and email.isprintable()
        and " " not in email
    ):
        return email
    raise InvalidInputError(
        "The email address must be like name@example.org: one @, a name before it, a domain"
        " with a dot after it, no spaces, and at most 254 characters.",
        {"argument": "email"},
    )


# Walks ---------------------------------------------------------------------------------------


def normalise_difficulty(value: str) -> str:
    """One of DIFFICULTIES, whatever the case of value; else InvalidInputError listing them."""
    difficulty = match_key(value)
    if difficulty in DIFFICULTIES:
        return difficulty
    raise InvalidInputError(
        "The difficulty must be easy, medium or hard.",
        {"argument": "difficulty", "allowed": list(DIFFICULTIES)},
    )


# Shop ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pricing:
    """What an order costs, in pence."""

    subtotal_pence: int
    discount_pence: int
    total_pence: int


def discount_pence(subtotal_pence: int) -> int:
    """10% of a subtotal over £75.00, rounded half-up to a whole penny; 0 up to £75.00 exactly."""
    if subtotal_pence <= DISCOUNT_THRESHOLD_PENCE:
        return 0
    # Integer arithmetic only: a float would round 7505 * 0.1 the wrong way.
    pence, remainder = divmod(subtotal_pence * DISCOUNT_PERCENT, 100)
    return pence + (1 if 2 * remainder >= 100 else 0)


def price_order(lines: Iterable[tuple[int, int]]) -> Pricing:
    """The pricing of (quantity, unit_price_pence) lines, back-ordered copies included."""
    subtotal = 0
    for quantity, unit_price_pence in lines:
        if quantity < 0 or unit_price_pence < 0:
            raise ValueError(f"cannot price {quantity} copies at {unit_price_pence} pence")
        subtotal += quantity * unit_price_pence
    discount = discount_pence(subtotal)
    return Pricing(subtotal, discount, subtotal - discount)


def reprice_cancelled(
    total_before_pence: int, lines: Iterable[tuple[int, int, int]]
) -> tuple[Pricing, int]:
    """The pricing of (quantity, copies cancelled, unit_price_pence) lines over the copies not
    cancelled, and the refund: total_before_pence minus the new total.

    The refund is negative when the order falls to £75.00 or less and the discount it loses is
    worth more than the copies cancelled: the customer then owes the difference.
    """
    kept = []
    for quantity, cancelled, unit_price_pence in lines:
        if not 0 <= cancelled <= quantity:
            raise ValueError(f"cannot cancel {cancelled} of {quantity} copies")
        kept.append((quantity - cancelled, unit_price_pence))
    pricing = price_order(kept)
    return pricing, total_before_pence - pricing.total_pence


def merge_quantities(items: Iterable[tuple[int, int]]) -> dict[int, int]:
    """(book number, quantity) items added up per book, in the order books first appear."""
    merged: dict[int, int] = {}
    for book, quantity in items:
        merged[book] = merged.get(book, 0) + quantity
    return merged


def check_copy_limits(requested: Mapping[int, int], already_ordered: Mapping[int, int]) -> None:
    """Return if every book is within the per-order and per-customer limits; else LimitExceededError.

    Books are checked in number order, so the same request always reports the same breach.
    """
    for book in sorted(requested):
        quantity = requested[book]
        already = already_ordered.get(book, 0)
        allowed = max(0, min(MAX_COPIES_PER_CUSTOMER - already, MAX_COPIES_PER_ORDER))
        more = f"{_copies(allowed)} more" if allowed else "no more"
        if quantity > MAX_COPIES_PER_ORDER:
            message = (
                f"At most {MAX_COPIES_PER_ORDER} copies of book {book} can be bought in one "
                f"order; you may order {more}."
            )
            details = {"book": book, "limit": MAX_COPIES_PER_ORDER, "scope": "order"}
        elif already + quantity > MAX_COPIES_PER_CUSTOMER:
            message = (
                f"You have already ordered {_copies(already)} of book {book} and each customer "
                f"may have at most {MAX_COPIES_PER_CUSTOMER}, so you may order {more}."
            )
            details = {"book": book, "limit": MAX_COPIES_PER_CUSTOMER, "scope": "customer"}
        else:
            continue
        raise LimitExceededError(message, {**details, "allowed": allowed})


def split_fulfilment(quantity: int, in_stock: int) -> tuple[int, int]:
    """(fulfilled, backordered) for a line: copies in stock are sold, the rest back-ordered."""
    if quantity < 0:
        raise ValueError(f"cannot order {quantity} copies")
    fulfilled = min(quantity, max(in_stock, 0))
    return fulfilled, quantity - fulfilled


def allocate_restock(
    quantity: int, outstanding: Sequence[tuple[int, int]]
) -> tuple[list[tuple[int, int]], int]:
    """Share new copies among back orders, oldest first.

    outstanding is [(order_line_id, copies_outstanding)], oldest first. Returns the
    [(order_line_id, copies_supplied)] of lines that get any copies, and the copies left
    over for stock.
    """
    if quantity < 0:
        raise ValueError(f"cannot restock {quantity} copies")
    supplied: list[tuple[int, int]] = []
    left = quantity
    for line_id, owed in outstanding:
        if left == 0:
            break
        copies = min(left, max(owed, 0))
        if copies:
            supplied.append((line_id, copies))
            left -= copies
    return supplied, left


def rank_guide_books(matching_walks: Mapping[int, int], prices: Mapping[int, int]) -> list[int]:
    """Book numbers, best recommendation first: the most matching walks, then the cheaper
    book, then the lower number. matching_walks and prices are keyed by book number."""
    return sorted(
        matching_walks, key=lambda number: (-matching_walks[number], prices[number], number)
    )


# Lending -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LendingPolicy:
    """The library's lending terms; the defaults are the house rules."""

    loan_period: timedelta = LOAN_PERIOD
    max_active_loans: int = MAX_ACTIVE_LOANS
    max_renewals: int = MAX_RENEWALS
    hold_kept_for: timedelta = HOLD_KEPT_FOR


HOUSE_RULES = LendingPolicy()


def due_date(borrowed_at: datetime, policy: LendingPolicy = HOUSE_RULES) -> datetime:
    """When a loan made at borrowed_at must come back."""
    _require_aware(borrowed_at)
    return borrowed_at + policy.loan_period


def renewed_due_date(
    now: datetime, current_due: datetime, policy: LendingPolicy = HOUSE_RULES
) -> datetime:
    """The new due date of a renewed loan: a loan period from the later of now and its due date."""
    _require_aware(now, current_due)
    return max(now, current_due) + policy.loan_period


def check_can_borrow(active_loans: int, policy: LendingPolicy = HOUSE_RULES) -> None:
    """Return if a member with this many books out may borrow another; else LimitExceededError."""
    limit = policy.max_active_loans
    if active_loans >= limit:
        raise LimitExceededError(
            f"You already have {limit} books on loan, the most a member may have "
            "at once; return one to borrow another.",
            {"limit": limit, "allowed": 0, "scope": "active_loans"},
        )


def check_can_renew(
    renewals_so_far: int, held_by_others: bool, policy: LendingPolicy = HOUSE_RULES
) -> None:
    """Return if a loan may be renewed; else LimitExceededError (renewals used up) or ConflictError (held).

    The renewal count is checked first: it is final, whereas a hold may be cancelled, so
    reporting the hold would suggest that waiting could help when it cannot.
    """
    limit = policy.max_renewals
    if renewals_so_far >= limit:
        raise LimitExceededError(
            f"This loan has already been renewed {limit} times, the most allowed.",
            {"limit": limit, "allowed": 0, "scope": "renewals"},
        )
    if held_by_others:
        raise ConflictError("Another member is waiting for this book, so it cannot be renewed.")


def days_overdue(due_at: datetime, now: datetime) -> int:
    """Whole days late, counting any part of a day as a day; 0 until now passes due_at."""
    _require_aware(due_at, now)
    if now <= due_at:
        return 0
    days, part = divmod(now - due_at, _ONE_DAY)
    return days + (1 if part else 0)


def free_copies(copies: int, on_loan: int, kept_for_holds: int) -> int:
    """Copies anyone may borrow now: not on loan and not kept for a member's hold."""
    return max(0, copies - on_loan - kept_for_holds)


# Login throttling ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginThrottle:
    """Failed logins allowed in a window before the next try must wait.

    Per username from one address is the tight bar, so a stranger elsewhere cannot lock a
    member out. Per username from every address is a higher bar that slows a distributed
    guess: past it, only an address with no recent failure for that name may try. Per
    address is the highest (one office, one NAT)."""

    failures_per_user_and_address: int = 5
    failures_per_user: int = 25
    failures_per_address: int = 100
    failure_window_s: int = 15 * 60


HOUSE_THROTTLE = LoginThrottle()


def retry_after_s(
    failure_times: Sequence[datetime], now: datetime, limit: int, window: timedelta
) -> int | None:
    """Seconds until another login may be tried, or None while under `limit` recent failures.

    A failure counts while it is less than `window` old. Failures stamped after `now` (another
    server's clock running ahead) still count, so clock skew cannot lift the limit early.
    """
    if limit < 1 or window <= timedelta(0):
        raise ValueError("the limit and the window must be positive")
    _require_aware(now, *failure_times)
    recent = sorted(t for t in failure_times if t > now - window)
    if len(recent) < limit:
        return None
    # Once the limit-th most recent failure leaves the window, fewer than `limit` remain.
    wait = recent[-limit] + window - now
    microseconds = wait // _ONE_MICROSECOND
    return max(1, -(-microseconds // 1_000_000))


def login_retry_after_s(
    throttle: LoginThrottle,
    by_user_and_address: Sequence[datetime],
    by_user: Sequence[datetime],
    by_address: Sequence[datetime],
    now: datetime,
) -> int:
    """Seconds before this address may try this username again; 0 when it may try now.

    Each list holds the times of earlier failures in the window: this username from this
    address, this username from anywhere, and anything from this address.
    """
    window = timedelta(seconds=throttle.failure_window_s)
    bars = [
        (by_user_and_address, throttle.failures_per_user_and_address),
        (by_address, throttle.failures_per_address),
    ]
    # An address that has not failed for this name lately is let through the per-username
    # bar, so a member logging in from home is not locked out by guesses from elsewhere.
    if by_user_and_address:
        bars.append((by_user, throttle.failures_per_user))
    return max(retry_after_s(times, now, limit, window) or 0 for times, limit in bars)


# Helpers -------------------------------------------------------------------------------------


def _copies(count: int) -> str:
    return f"{count} {'copy' if count == 1 else 'copies'}"


def _require_aware(*moments: datetime) -> None:
    # Naive datetimes would be silently misread as local time, or fail to compare with aware ones.
    for moment in moments:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("datetimes must be timezone-aware (UTC)")
