"""The production defaults, through a server started with no lending or throttle options.

Every other lending test sets its terms explicitly; this one proves what a user gets from a
plain `python server.py`: 14-day loans, 5 books out at once, 2 renewals, holds kept 3 days,
and 5 failed logins per name and address.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from settings import ServerConfig
from tests.wire import ServerProcess, WireClient, register_and_login


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _book_ids(client: WireClient) -> dict[str, int]:
    books = client.call("catalogue", limit=200)["books"]
    return {book["title"]: book["id"] for book in books}


def test_a_server_with_no_options_lends_on_the_house_terms(tmp_path: Path) -> None:
    config = ServerConfig()
    assert (config.loan_days, config.max_active_loans, config.max_renewals, config.hold_days) == (
        14, 5, 2, 3,
    )  # fmt: skip
    with ServerProcess(tmp_path, db_url=f"sqlite:///{tmp_path / 'plain.db'}") as server:
        with server.client() as reader, server.client() as waiter:
            register_and_login(reader, "reader")
            register_and_login(waiter, "waiter")
            ids = _book_ids(reader)
            others = sorted(title for title in ids if title != "The Road")
            # The Road has one copy: with it out, another member can only queue for it.
            chosen = [*others[:4], "The Road"]
            loans = [reader.call("borrow", book_id=ids[title])["loan"] for title in chosen]
            for loan in loans:
                lent = _moment(loan["due_at"]) - _moment(loan["borrowed_at"])
                assert lent == timedelta(days=14)
            sixth = reader.error("borrow", book_id=ids[others[4]])
            assert sixth["code"] == "limit_exceeded" and sixth["details"]["limit"] == 5

            first = loans[0]
            for _ in range(2):
                first = reader.call("renew", loan_id=first["id"])["loan"]
            third = reader.error("renew", loan_id=first["id"])
            assert third["code"] == "limit_exceeded" and third["details"]["limit"] == 2

            one_copy = loans[-1]
            waiter.call("hold", book_id=one_copy["book"]["id"])
            returned = reader.call("return", loan_id=one_copy["id"])["loan"]
            (hold,) = waiter.call("holds")["holds"]
            assert hold["ready"] is True
            kept = _moment(hold["ready_until"]) - _moment(returned["returned_at"])
            assert timedelta(days=3) - timedelta(seconds=5) <= kept <= timedelta(days=3)


def test_a_server_with_no_options_throttles_after_five_failures(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, db_url=f"sqlite:///{tmp_path / 'plain.db'}") as server:
        with server.client() as client:
            client.call("register", username="guarded", password="correct horse")
            codes = [
                client.error("login", username="guarded", password="guess")["code"]
                for _ in range(6)
            ]
    assert codes == ["invalid_credentials"] * 5 + ["rate_limited"]
