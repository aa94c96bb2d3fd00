"""The account command handlers: greetings, health, logins, sessions, passwords."""

from __future__ import annotations

import os
import secrets
from typing import Any

import results
import rules
from commands_base import Handlers, Session
from db import LoginStart
from passwords import hash_token
from protocol import (
    INVALID_CREDENTIALS,
    PROTOCOL_VERSION,
    RATE_LIMITED,
    UNAUTHORIZED,
    ProtocolError,
)

SERVER_NAME = "waymark"
SERVER_VERSION = "1.0.0"
TOKEN_BYTES = 32  # 256 bits from secrets
NOTICES_KEPT = 2**31 - 1  # my_data lists every notice, not a page


class AccountCommands(Handlers):
    """Handlers for the commands this module names."""

    def do_hello(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        return {"server": SERVER_NAME, "version": SERVER_VERSION, "protocol": PROTOCOL_VERSION}

    def do_health(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        database = self.database_probe.healthy()
        return {
            "status": "ok" if database else "degraded",
            "database": database,
            "uptime_s": self.stats.uptime_s(),
            "version": SERVER_VERSION,
            "pid": os.getpid(),  # PROTOCOL.md 1.2: which process answered (see --workers)
        }

    def do_stats(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        return {**self.stats.snapshot(), "notices": self.store.mail_counts()}

    def do_register(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        username = rules.validate_username(args["username"])
        rules.validate_password(args["password"])
        email = rules.validate_email(args["email"]) if "email" in args else None
        password_hash = self.hasher.hash(args["password"])
        user = self.store.create_user(username, password_hash, self._now(), email=email)
        # The 1.0 answer as it was: the email shows in login, whoami and my_data.
        return {"user": {"id": user["id"], "username": user["username"]}}

    def do_login(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        # Case folding can lengthen a name ("ß" is "ss"); no real name is near the column's 64.
        key = rules.username_key(args["username"])[:64]
        now = self._now()
        attempt = self._attempt(session, key, now)
        user = attempt.user
        # Without a user, verify against a dummy hash: same time, same answer.
        if not self.hasher.verify(args["password"], user["password_hash"] if user else None):
            raise ProtocolError(INVALID_CREDENTIALS, "The username or password is not right.")
        assert user is not None
        upgraded = (
            self.hasher.hash(args["password"])
            if self.hasher.needs_rehash(user["password_hash"])
            else None
        )
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if self.store.finish_login(attempt, key, hash_token(token), now, upgraded) is None:
            # The password was changed while this login checked it: it is no longer right.
            raise ProtocolError(INVALID_CREDENTIALS, "The username or password is not right.")
        return self._logged_in(session, user, token)

    def _attempt(self, session: Session, key: str, now: int) -> LoginStart:
        """A recorded try at a member's password (login, change_password); rate_limited if
        this name or address has failed too often lately."""
        attempt = self.store.start_login(key, session.address, now, self.auth.failure_window_s)
        wait = rules.login_retry_after_s(
            self.auth,
            [rules.from_seconds(t) for t in attempt.failures_by_user_and_address],
            [rules.from_seconds(t) for t in attempt.failures_by_user],
            [rules.from_seconds(t) for t in attempt.failures_by_address],
            rules.from_seconds(now),
        )
        if wait:
            self.store.finish_login(attempt, key, None, now)  # a refused try does not prolong it
            raise ProtocolError(
                RATE_LIMITED,
                f"Too many failed logins; try again in {wait} seconds.",
                {"retry_after_s": wait},
            )
        return attempt

    def do_resume(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        token_hash = hash_token(args["token"])
        now = self._now()
        user = self.store.session_user(token_hash, now, causal=True)
        if user is None:
            raise ProtocolError(UNAUTHORIZED, "That session has expired or ended; please log in.")
        return self._logged_in(session, user, args["token"])

    def _logged_in(self, session: Session, user: dict[str, Any], token: str) -> dict[str, Any]:
        session.user = session_user(user)
        session.token_hash = hash_token(token)
        result: dict[str, Any] = {"token": token, "user": wire_user(session.user)}
        if session.user["must_change_password"]:
            result["must_change_password"] = True
        return result

    def do_logout(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        if session.token_hash:
            self.store.end_session(session.token_hash)
        session.user, session.token_hash = None, None
        return {}

    def do_whoami(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        return {"user": wire_user(self._member(session))}

    def do_set_email(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        email = rules.validate_email(args["email"]) if "email" in args else None
        user = self.store.set_email(self._member(session)["id"], email)
        return {"user": wire_user(user)}

    def do_change_password(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        rules.validate_password(args["new_password"])
        key = rules.username_key(user["username"])[:64]
        now = self._now()
        # The old password is tried as a login is, so that the same throttle applies to it.
        attempt = self._attempt(session, key, now)
        known = self._own_account(attempt, user)
        wrong = ProtocolError(INVALID_CREDENTIALS, "The old password is not right.")
        if not self.hasher.verify(args["old_password"], known["password_hash"]):
            raise wrong
        token = secrets.token_urlsafe(TOKEN_BYTES)
        new_hash = self.hasher.hash(args["new_password"])
        if self.store.finish_login(attempt, key, hash_token(token), now, new_hash, True) is None:
            raise wrong  # changed meanwhile (another session's change_password won)
        session.token_hash = hash_token(token)
        return {"token": token}

    def do_my_data(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user_id, now = self._member(session)["id"], self._now()
        account = self.store.account(user_id)
        notices, _ = self.store.notices_for(user_id, limit=NOTICES_KEPT)
        return {
            "user": {**wire_user(account), "created_at": results.iso(account["created_at"])},
            "loans": [results.loan(r, now) for r in self.store.loans_for(user_id)],
            "holds": [results.waiting_hold(r, now) for r in self.store.holds_for(user_id, now)],
            "orders": [results.order(r) for r in self.store.orders_for(user_id)],
            "notices": [results.notice(r) for r in notices],
        }

    def do_delete_account(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        user = self._member(session)
        key = rules.username_key(user["username"])[:64]
        now = self._now()
        # The password is tried as a login is: a wrong one counts toward the throttle.
        attempt = self._attempt(session, key, now)
        known = self._own_account(attempt, user)
        if not self.hasher.verify(args["password"], known["password_hash"]):
            raise ProtocolError(INVALID_CREDENTIALS, "The password is not right.")
        self.store.finish_login(attempt, key, None, now)  # forget this try: it succeeded
        self.store.delete_account(user["id"], key, now)
        session.user, session.token_hash = None, None
        return {}

    @staticmethod
    def _own_account(attempt: LoginStart, user: dict[str, Any]) -> dict[str, Any]:
        known = attempt.user
        if known is None or known["id"] != user["id"]:
            raise ProtocolError(UNAUTHORIZED, "Your account was not found; please log in again.")
        return known


def session_user(user: dict[str, Any]) -> dict[str, Any]:
    """What a connection keeps of its member: the wire's user and the must-change flag."""
    return {
        **wire_user(user),
        "must_change_password": bool(user.get("must_change_password")),
    }


def wire_user(user: dict[str, Any]) -> dict[str, Any]:
    """The user as login, resume, whoami and set_email answer it."""
    return {
        "id": user["id"],
        "username": user["username"],
        "role": user["role"],
        "email": user.get("email"),
    }
