"""What the client says in sentences: the outcome of each request, the questions before a
purchase or a cancellation, and the protocol's arguments in people's words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import rules
from client_basket import Basket
from client_link import JsonDict
from client_views import clean_text, either, format_local_time, format_money, kept_until, plural

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
    "token": "the saved login", "username": "the username",
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


def _due(loan: JsonDict) -> str:
    return format_local_time(loan["due_at"])
