"""The sweep: time-driven notices, lapsed holds, old loans unlinked, every few minutes.

Every server runs it; the notices' unique causes make two sweeps at once harmless, so no
server needs to be the one that sweeps. An admin runs it at once with sweep_notices.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from db import Store

log = logging.getLogger("waymark.sweep")

DAY_S = 86_400


@dataclass(frozen=True)
class SweepPolicy:
    """How far ahead to warn of a due date, and when to unlink returned loans (0: never)."""

    due_soon_days: int = 2
    anonymise_after_days: int = 0


def sweep(store: Store, policy: SweepPolicy, now: int) -> dict[str, int]:
    """Run every part of the sweep once; the count of notices made, by kind."""
    created = {
        "due_soon": store.notify_due_soon(now, policy.due_soon_days * DAY_S),
        "overdue": store.notify_overdue(now),
        "hold_ready": store.settle_lapsed_holds(now),
    }
    store.expire_keys(now)
    if policy.anonymise_after_days:
        unlinked = store.anonymise_loans(now - policy.anonymise_after_days * DAY_S, now)
        if unlinked:
            log.info("unlinked %d returned loans from their members", unlinked)
    return created


class Periodic:
    """Runs a job (the sweep, the mail sender) every interval_s seconds in a thread of its
    own, until stop()."""

    def __init__(self, run: Callable[[], object], interval_s: float, name: str):
        self._run = run
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the loop to end and wait for the pass under way, if any."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self._run()
            except Exception:  # noqa: BLE001 - a failed pass is logged; the next one tries again
                log.exception("a background pass failed")
