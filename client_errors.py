"""What the client tells a person went wrong: one sentence each, and the exit code it means."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ClientError(Exception):
    """A failure to report to a person; str(error) is one sentence."""


class UsageError(ClientError):
    """The command line or the environment asks for something impossible (exit code 2)."""


class ServerError(ClientError):
    """The server answered ok:false to cmd: its code, its sentence and its details (a
    bad_request about an argument names it in details["argument"])."""

    def __init__(
        self, code: str, message: str, details: Mapping[str, Any] | None = None, cmd: str = ""
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.cmd = cmd


class ConnectionFailedError(ClientError):
    """The server cannot be reached, is not the pinned one, or stopped answering."""


class AnswerLostError(ConnectionFailedError):
    """A write went out but the link broke before its answer came, and sending it again could
    not settle whether the server did it (no key, the server out of reach for retry_s, or the
    session ended). (Not errors.OutcomeUnknownError, the server's own doubt about a database
    commit, which reaches a client as unavailable.)"""
