"""The commands' front door: each request's handler found by name, authorised, its errors mapped.

Handlers (commands_accounts, commands_shop, commands_lending: one short do_<cmd> method per
command) take (session, args) with args already type-checked against protocol.COMMANDS, and
return a result dict or raise ProtocolError. They know nothing of sockets or SQL. The domain
errors that rules and the store raise become wire codes here, in one table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

from commands_accounts import TOKEN_BYTES, AccountCommands, session_user
from commands_base import Session
from commands_desk import DeskCommands
from commands_lending import LendingCommands
from commands_notices import NoticeCommands
from commands_shop import ShopCommands
from errors import (
    ConflictError,
    DatabaseUnavailableError,
    DomainError,
    ForbiddenError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    OutcomeUnknownError,
    RaceLostError,
    TryAgainError,
    UnavailableError,
    UsernameTakenError,
    WeakPasswordError,
)
from passwords import hash_token
from protocol import (
    BAD_REQUEST,
    COMMANDS,
    CONFLICT,
    FORBIDDEN,
    LIMIT_EXCEEDED,
    NOT_FOUND,
    UNAUTHORIZED,
    UNAVAILABLE,
    USERNAME_TAKEN,
    WEAK_PASSWORD,
    ProtocolError,
    Replayed,
    Request,
    validate_args,
)

log = logging.getLogger(__name__)


# The one place a domain error becomes a wire code. An error's nearest class in this table
# decides, so a new subclass is mapped as its parent is (tests/test_commands.py checks that
# every domain error finds one).
WIRE_CODES: dict[type[DomainError], str] = {
    InvalidInputError: BAD_REQUEST,
    NotFoundError: NOT_FOUND,
    ConflictError: CONFLICT,
    ForbiddenError: FORBIDDEN,
    UnavailableError: UNAVAILABLE,
    LimitExceededError: LIMIT_EXCEEDED,
    WeakPasswordError: WEAK_PASSWORD,
    UsernameTakenError: USERNAME_TAKEN,
    # The client may act on it: nothing changed, and details.retry_after_s says when to retry.
    TryAgainError: UNAVAILABLE,
    OutcomeUnknownError: UNAVAILABLE,  # no retry_after_s: check first, then decide
}


def wire_code(kind: type[DomainError]) -> str | None:
    """The wire code of a domain error's class: its own, or that of the nearest class above it."""
    return next((WIRE_CODES[k] for k in kind.__mro__ if k in WIRE_CODES), None)


def wire_error(error: DomainError) -> ProtocolError:
    """The wire's error for a domain error, with the same sentence and details."""
    code = wire_code(type(error))
    if code is None:
        raise TypeError(f"{type(error).__name__} has no wire code in WIRE_CODES") from error
    return ProtocolError(code, error.message, error.details)


# What a member with a temporary password may still do (PROTOCOL.md 1.2, reset_password).
PASSWORD_CHANGE_ALLOWS = frozenset({"hello", "health", "whoami", "logout", "change_password"})


class Commands(AccountCommands, ShopCommands, LendingCommands, NoticeCommands, DeskCommands):
    """The protocol's commands, each found by its name in protocol.COMMANDS."""

    def handler(self, cmd: str) -> Callable[[Session, dict[str, Any]], dict[str, Any]]:
        """The method that runs cmd: do_<cmd>, one for each row of protocol.COMMANDS."""
        # Named as cmd.Cmd and http.server name theirs; `return` cannot be a method's name.
        found: Callable[[Session, dict[str, Any]], dict[str, Any]] = getattr(self, f"do_{cmd}")
        return found

    def handle(self, session: Session, request: Request) -> dict[str, Any]:
        """Authorise, validate and run one request; raises ProtocolError for the client."""
        command = COMMANDS[request.cmd]
        try:
            if command.needs_login:
                user = self._require_login(session)
                if user["must_change_password"] and request.cmd not in PASSWORD_CHANGE_ALLOWS:
                    raise ProtocolError(
                        FORBIDDEN,
                        "Please choose a new password first: the library gave you a temporary one.",
                        {"must_change_password": True},
                    )
                if command.admin_only and user["role"] != "admin":
                    raise ProtocolError(FORBIDDEN, "Only an administrator may do that.")
            args = validate_args(request.cmd, request.args)
            if request.idempotency_key is not None:
                return self._keyed(session, request, args)
            return self.handler(request.cmd)(session, args)
        except DomainError as error:
            wire = wire_error(error)
            if isinstance(error, DatabaseUnavailableError):
                # An outage is the operator's to see: logged once per kind of fault, and the
                # client's answer carries a reference to that log.
                cause = error.__cause__ or error
                wire.details["request_id"] = self.faults.report(cause, request.cmd, wire.code)
            raise wire from None
        finally:
            if command.changes_catalogue:
                self.snapshot.drop()

    def _require_login(self, session: Session) -> dict[str, Any]:
        if session.user is None or session.token_hash is None:
            raise ProtocolError(UNAUTHORIZED, "Please log in first.")
        # Asked of the database each time, so a logout on any connection or server process
        # ends the session everywhere, and a changed role applies at once.
        user = self.store.session_user(session.token_hash, self._now())
        if user is None:
            session.user, session.token_hash = None, None
            raise ProtocolError(
                UNAUTHORIZED, "Your session has expired or ended; please log in again."
            )
        session.user = session_user(user)
        return session.user

    def _keyed(self, session: Session, request: Request, args: dict[str, Any]) -> dict[str, Any]:
        """Run a write once per idempotency key: its answer is stored with it, and a request
        sent again with the key gets that answer (replayed) instead of the work done twice."""
        key = request.idempotency_key
        assert key is not None and session.user is not None
        user_id = session.user["id"]
        # The arguments as validated (unknown keys dropped): what "the same args" means.
        fingerprint = hashlib.sha256(
            json.dumps([request.cmd, args], sort_keys=True).encode()
        ).hexdigest()
        for attempt in range(KEYED_TRIES):
            stored = self.store.stored_answer(user_id, key)
            if stored is not None and not stored["result"]:
                # Claimed, not yet answered: only a transaction still under way can show that.
                raise ProtocolError(
                    CONFLICT,
                    "A request with that idempotency key is still being done; ask again shortly.",
                    {"idempotency_key": key, "in_progress": True},
                )
            if stored is not None:
                if (stored["cmd"], stored["fingerprint"]) != (request.cmd, fingerprint):
                    raise ProtocolError(
                        CONFLICT,
                        "That idempotency key was already used for another request; use a new"
                        " key for each new request.",
                        {"idempotency_key": key},
                    )
                return Replayed(self._replayed(session, request.cmd, json.loads(stored["result"])))
            try:
                with self.store.keyed(user_id, key, request.cmd, fingerprint, self._now()) as keep:
                    answer = self.handler(request.cmd)(session, args)
                    keep(_storable(request.cmd, answer))
                return answer
            except RaceLostError:
                # Another request with this key went first, or the transaction lost a race:
                # nothing was changed; look for the stored answer again.
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))
        raise TryAgainError(
            "The server is very busy and could not finish that just now; nothing was changed."
            " Please send it again with the same key.",
            {"retry_after_s": 1, "cause": "contention"},
        )

    def _replayed(self, session: Session, cmd: str, answer: dict[str, Any]) -> dict[str, Any]:
        if COMMANDS[cmd].returns_token:
            # Tokens are never stored in clear, so the stored answer has none: this connection
            # gets a session of its own, as it would have from the first answer.
            assert session.user is not None
            token = secrets.token_urlsafe(TOKEN_BYTES)
            self.store.create_session(session.user["id"], hash_token(token), self._now())
            session.token_hash = hash_token(token)
            answer = {**answer, "token": token}
        return answer


KEYED_TRIES = 20  # each a fresh look for the stored answer, then the work if there is none


def _storable(cmd: str, answer: dict[str, Any]) -> dict[str, Any]:
    """The answer as it is stored for a replay: a session token is left out."""
    if COMMANDS[cmd].returns_token:
        return {k: v for k, v in answer.items() if k != "token"}
    return answer
