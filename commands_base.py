"""What every command handler shares: the connection's Session, the handlers' common state."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rules
from db import Store
from logs import FaultLog
from openlibrary import OpenLibrary
from passwords import PasswordHasher
from snapshot import CatalogueSnapshot
from stats import DatabaseProbe, ServerStats
from sweep import SweepPolicy


@dataclass
class Session:
    """One connection's login state; lives on the connection, never in a global."""

    address: str
    user: dict[str, Any] | None = None
    token_hash: str | None = None


class Handlers:
    """The state the command handlers of every domain use; commands.Commands composes them."""

    def __init__(
        self,
        store: Store,
        openlibrary: OpenLibrary,
        hasher: PasswordHasher,
        auth: rules.LoginThrottle = rules.HOUSE_THROTTLE,
        clock: Callable[[], float] = time.time,
        snapshot: CatalogueSnapshot | None = None,
        stats: ServerStats | None = None,
        faults: FaultLog | None = None,
        sweep_policy: SweepPolicy | None = None,
    ):
        self.store = store
        self.snapshot = snapshot or CatalogueSnapshot(store)
        self.stats = stats or ServerStats()
        self.faults = faults or FaultLog()
        self.database_probe = DatabaseProbe(store.ping)
        self.openlibrary = openlibrary
        self.hasher = hasher
        self.auth = auth
        self.clock = clock
        self.sweep_policy = sweep_policy or SweepPolicy()

    def _now(self) -> int:
        return int(self.clock())

    @staticmethod
    def _member(session: Session) -> dict[str, Any]:
        """The logged-in user; handle() has already checked the session for this request."""
        assert session.user is not None
        return session.user
