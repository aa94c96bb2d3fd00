"""The desk's command handlers: librarians find, help, block, lend to members."""

from __future__ import annotations

import secrets
from typing import Any

import results
import rules
from commands_base import Handlers, Session
from protocol import NOT_FOUND, ProtocolError

TEMPORARY_PASSWORD_BYTES = 12  # 16 characters of token_urlsafe: over the 12 the contract asks


class DeskCommands(Handlers):
    """Handlers for the commands this module names."""

    def do_members(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        query = args.get("query")
        found, total = self.store.members(
            rules.username_key(query.strip()) if query else None,
            args.get("limit", 50),
            args.get("offset", 0),
            self._now(),
        )
        return {"members": [results.member(r) for r in found], "total": total}

    def do_member(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        now = self._now()
        user = self._find(args["username"], now)
        return {
            "user": results.member(user),
            "loans": [results.loan(r, now) for r in self.store.loans_for(user["id"])],
            "holds": [results.waiting_hold(r, now) for r in self.store.holds_for(user["id"], now)],
            "orders": [results.order(r) for r in self.store.orders_for(user["id"])],
        }

    def do_reset_password(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        # From secrets, shown once to the librarian and never stored or logged in clear.
        temporary = secrets.token_urlsafe(TEMPORARY_PASSWORD_BYTES)
        key = rules.username_key(args["username"])
        if self.store.reset_password(key, self.hasher.hash(temporary), self._now()) is None:
            raise _no_member(args["username"])
        return {"temporary_password": temporary}

    def do_block_member(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        return self._set_blocked(args["username"], args["reason"])

    def do_unblock_member(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        return self._set_blocked(args["username"], None)

    def do_lend(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        now = self._now()
        user = self._find(args["username"], now)
        return {"loan": results.loan(self.store.lend_copy(user["id"], args["book_id"], now), now)}

    def do_checkin(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        now = self._now()
        # With the member, as overdue names them: a loan checked in by its number says whose.
        return {"loan": results.overdue_loan(self.store.checkin(args["loan_id"], now), now)}

    def _set_blocked(self, username: str, reason: str | None) -> dict[str, Any]:
        user = self.store.set_blocked(rules.username_key(username), reason, self._now())
        if user is None:
            raise _no_member(username)
        return {"user": results.member(user)}

    def _find(self, username: str, now: int) -> dict[str, Any]:
        user = self.store.member(rules.username_key(username), now)
        if user is None:
            raise _no_member(username)
        return user


def _no_member(username: str) -> ProtocolError:
    return ProtocolError(
        NOT_FOUND, f"No member is called {username[:64]!r}.", {"username": username[:64]}
    )
