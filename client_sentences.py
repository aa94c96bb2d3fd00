"""What the client says in sentences: the outcome of each request, the questions before a
purchase or a cancellation, and the protocol's arguments in people's words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import rules
from client_basket import Basket
from client_link import JsonDict
from client_views import (
    clean_text,
    either,
    format_local_time,
    format_money,
    kept_until,
    listed,
    plural,
)

# The arguments of the protocol, as people call them (for the server's bad_request sentences).
ARGUMENT_NAMES = {
    "area": "the area", "book": "the guide book", "book_id": "the book",
    "copies": "the number of copies", "difficulty": "the difficulty", "hold_id": "the hold",
    "items": "the order", "key": "the Open Library key", "limit": "the number of results",
    "loan_id": "the loan", "max_distance": "the longest distance",
    "min_distance": "the shortest distance", "new_password": "the new password",
    "offset": "the first result", "old_password": "the old password", "order_id": "the order",
    "since": "the first date", "until": "the last date",
    "password": "the password", "quantity": "the number of copies", "query": "the search",
    "token": "the saved login", "username": "the username", "email": "the email address",
    "reason": "the reason", "ids": "the messages", "unread_only": "new messages only",
}  # fmt: skip


def argument_name(name: str) -> str:
    """A protocol argument as people call it: 'query' is 'the search'."""
    return ARGUMENT_NAMES.get(name, "that answer")


def question_order(basket: Basket) -> str:
    """The question before buying: the copies and what they cost after the discount."""
    pricing = basket.pricing
    cost = format_money(pricing.total_pence)
    if pricing.discount_pence:
        cost += (
            f" ({format_money(pricing.subtotal_pence)} less the "
            f"{format_money(pricing.discount_pence)} discount)"
        )
    return f"Order {plural(basket.copies, 'copy', 'copies')} for {cost}?"


def sentences_short_stock(basket: Basket) -> list[str]:
    """What would be back-ordered at the stock last fetched, said before the person commits."""
    sentences = []
    for line, backordered in basket.shortfalls():
        stock = line.book.in_stock
        has = f"only {plural(stock, 'copy', 'copies')} of" if stock else "no copies of"
        sentences.append(
            f"There {'is' if stock == 1 else 'are'} {has} {line.book.title} in stock; "
            f"{backordered} will be back-ordered and sent when more arrive."
        )
    if sentences:
        sentences.append("(Stock is as last shown here; others may be buying too.)")
    return sentences


def sentence_copy_limit(details: Mapping[str, Any], title: str) -> str:
    """A limit_exceeded answer about a guide book, naming it by its title."""
    allowed = details.get("allowed", 0)
    more = f"only {plural(allowed, 'more copy', 'more copies')}" if allowed else "no more copies"
    limit = details.get("limit", "8")
    if details.get("scope") == "order":
        return f"One order may hold at most {limit} copies of {title}; you may order {more}."
    return (
        f"Each member may have at most {limit} copies of {title}, back orders included; "
        f"you may order {more}."
    )


def sentence_not_a_difficulty(text: str) -> str:
    """What to say of a difficulty that is none of rules.DIFFICULTIES."""
    return f"{text!r} is not a difficulty; choose {either(rules.DIFFICULTIES)}."


def sentence_borrowed(loan: JsonDict) -> str:
    """What borrowing gave."""
    return f"You have borrowed {loan['book']['title']}; it is due back {_due(loan)}."


def sentence_returned(loan: JsonDict) -> str:
    """What returning did."""
    return f"Returned {loan['book']['title']}. Thank you!"


def sentence_renewed(loan: JsonDict) -> str:
    """What renewing did."""
    return f"Renewed {loan['book']['title']}; it is now due back {_due(loan)}."


def sentence_kept(hold: JsonDict) -> str:
    """A copy kept for this member's hold, and until when."""
    return f"A copy of {clean_text(hold['book']['title'])} is kept for you{kept_until(hold)}."


def sentence_held(hold: JsonDict) -> str:
    """Where a new hold stands."""
    return f"You are number {hold['position']} in the queue for {hold['book']['title']}."


def sentences_back_ordered(order: JsonDict) -> list[str]:
    """One sentence for each line with copies back-ordered, and one for a discount."""
    sentences = [
        f"{plural(line['backordered'], 'copy', 'copies')} of {line['book']['title']} "
        f"{'is' if line['backordered'] == 1 else 'are'} back-ordered and will be sent when "
        "stock arrives."
        for line in order["lines"]
        if line["backordered"]
    ]
    if order["discount_pence"]:
        sentences.append(f"You saved {format_money(order['discount_pence'])} with the discount.")
    return sentences


def sentence_refund(refund_pence: int, lost_discount_pence: int = 0) -> str:
    """What cancelling back-ordered copies does to what the customer paid, and to the discount
    when the order loses it (lost_discount_pence, what it was)."""
    if refund_pence < 0:
        return (
            f"This is not a refund: the order's total goes up by {format_money(-refund_pence)}, "
            "because the order no longer gets the discount."
        )
    if refund_pence > 0:
        sentence = f"You will be refunded {format_money(refund_pence)}."
    else:
        sentence = "The order's total stays the same, so nothing is refunded."
    if lost_discount_pence > 0:
        sentence += (
            f" The order loses its {format_money(lost_discount_pence)} discount, because it no "
            f"longer comes to more than {format_money(rules.DISCOUNT_THRESHOLD_PENCE)}."
        )
    return sentence


def sentences_backorder_cancelled(result: JsonDict, lost_discount_pence: int = 0) -> list[str]:
    """What cancel_backorder did to the order: its new total, and the refund."""
    return [
        f"Order {result['order']['id']}'s total is now "
        f"{format_money(result['order']['total_pence'])}.",
        sentence_refund(result["refund_pence"], lost_discount_pence),
    ]


def sentences_restocked(result: JsonDict) -> list[str]:
    """What a restock did."""
    book = result["book"]
    sentences = [
        f"Sent {plural(filled['quantity'], 'back-ordered copy', 'back-ordered copies')} "
        f"for order {filled['order_id']}."
        for filled in result.get("backorders_filled", [])
    ]
    return [*sentences, f"{book['title']} now has {book['in_stock']} in stock."]


def sentence_added(book: JsonDict) -> str:
    """What add_book did."""
    return (
        f"The library now holds {plural(book['copies'], 'copy', 'copies')} of {book['title']} "
        f"({book['copies_available']} free)."
    )


# The 1.2 commands: messages, the member's account, and the desk ------------------------------

CHOOSE_NEW_FIRST = (
    "The library gave you a temporary password, so please choose a new one now: nothing else "
    "can be done until you have."
)
CHOOSE_NEW_FIRST_SCRIPT = (
    "The library gave you a temporary password: choose a new one first with the "
    "change-password subcommand (the temporary password is the old one)."
)
ACCOUNT_DELETED = (
    "Your account is deleted: your login, holds, messages and email are gone. Your past loans "
    "and orders stay in the library's records without your name."
)
DELETION_WARNING = (
    "Deleting your account removes your login, your holds, your messages and your email "
    "address, and cannot be undone. Your past loans and orders stay in the library's records "
    "without your name."
)
# What the sweep's counts are, by the kind of notice it made.
SWEEP_KINDS = {
    "due_soon": ("due-soon reminder", "due-soon reminders"),
    "overdue": ("overdue notice", "overdue notices"),
    "hold_ready": ("kept-copy notice", "kept-copy notices"),
}


def sentence_blocked(cmd: str, reason: object) -> str:
    """A refusal because the member is blocked, with the reason the library gave."""
    because = f": {clean_text(reason)}" if reason else ""
    if cmd == "lend":
        return f"That member is blocked{because}. Unblock them before lending them a book."
    return (
        f"Your account is blocked by the library{because}. You can still return books and "
        "cancel holds; please speak to the library's desk to borrow, renew, hold or buy again."
    )


def sentence_cannot_delete(details: Mapping[str, Any]) -> str:
    """Why delete_account was refused: the books still on loan and the copies still owed."""
    loans, owed = (
        int(details.get("active_loans") or 0),
        int(details.get("backorder_outstanding") or 0),
    )
    still = []
    if loans:
        still.append(f"{plural(loans, 'book')} on loan")
    if owed:
        still.append(f"{plural(owed, 'back-ordered guide book')} still to be sent to you")
    if not still:
        return "Your account cannot be deleted yet: loans or back orders are still open."
    steps = []
    if loans:
        steps.append("return the book" if loans == 1 else "return the books")
    if owed:
        steps.append("wait for the back-ordered copies or cancel them")
    return (
        f"Your account cannot be deleted while you have {listed(still)}. First "
        f"{listed(steps)}. Nothing was deleted."
    )


def sentence_email(user: JsonDict) -> str:
    """Where the member's messages are emailed, if anywhere."""
    email = user.get("email")
    if not email:
        return "You have no email address: your messages are only here, under Messages."
    return (
        f"Your email is {clean_text(email)}: when the library sends email, your messages go "
        "there too."
    )


def sentence_sweep(created: Mapping[str, int]) -> str:
    """What sweep_notices made, by kind."""
    if not any(created.values()):
        return "Nothing was due: the sweep made no new notices."
    counts = [
        plural(count, *SWEEP_KINDS.get(kind, (f"{kind} notice".replace("_", " "),)))
        for kind, count in created.items()
        if count
    ]
    total = sum(created.values())
    return f"The sweep made {plural(total, 'notice')} now: {listed(counts)}."


def sentence_password_reset(username: str) -> str:
    """What reset_password did to the member's sessions."""
    return f"{clean_text(username)}'s password is reset, and every session of theirs has ended."


def sentences_temporary_password(temporary: str) -> list[str]:
    """The temporary password, said once, and what the librarian must do with it."""
    return [
        f"Temporary password:   {clean_text(temporary)}",
        "Hand it to the member now: it is shown only this once and kept nowhere. When they log "
        "in with it, they must choose a new password before anything else.",
    ]


def sentence_blocked_now(member: JsonDict) -> str:
    """What block_member or unblock_member did."""
    name = clean_text(member["username"])
    if not member.get("blocked"):
        return f"{name} is unblocked: they may borrow, renew, hold and buy again."
    reason = member.get("blocked_reason")
    because = f" ({clean_text(reason)})" if reason else ""
    return (
        f"{name} is blocked{because}. They can still log in, return books and cancel holds, "
        "but cannot borrow, renew, hold or buy."
    )


def sentence_lent(loan: JsonDict, username: str | None = None) -> str:
    """What lend did at the desk (to username, when given)."""
    to = f" to {clean_text(username)}" if username else ""
    return (
        f"Lent {clean_text(loan['book']['title'])}{to} as loan {loan['id']}; it is due back "
        f"{_due(loan)}."
    )


def sentence_checked_in(loan: JsonDict) -> str:
    """What checkin did at the desk."""
    return f"Checked in loan {loan['id']}: {clean_text(loan['book']['title'])} is back."


def sentence_data_saved(path: str, counts: Mapping[str, int]) -> str:
    """Where my_data was written, and how many of each thing it holds."""
    held = [
        plural(counts.get("loans", 0), "loan"),
        plural(counts.get("holds", 0), "hold"),
        plural(counts.get("orders", 0), "order"),
        plural(counts.get("notices", 0), "message"),
    ]
    return (
        f"Saved everything the library holds about you ({listed(held)}) to {clean_text(path)}. "
        "It is readable by you alone; keep it safe."
    )


def _due(loan: JsonDict) -> str:
    return format_local_time(loan["due_at"])
