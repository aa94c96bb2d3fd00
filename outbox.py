"""The mail sender: claims notices due for email, hands each to the relay, records what happened.

Claim, then send, then mark (the outbox pattern): with N servers each notice is claimed by one
of them for a lease, so it leaves once. A sender killed after the relay's 250 and before the
mark leaves the claim to lapse; another sender then sends that one notice again, with the same
Message-ID, so a mail client shows it once. A relay that fails is tried again with growing
pauses for 24 hours, then the notice is marked failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import mailer
import rules
from db import Store

log = logging.getLogger("waymark.mail")

GIVE_UP_AFTER_S = 24 * 3600
FIRST_PAUSE_S = 60
LONGEST_PAUSE_S = 3600
LEASE_S = 300  # longer than one batch can take: a claim outlives only a sender that died
BATCH = 20


def next_attempt_at(
    created_at: int, attempts: int, now: int, first_pause_s: float = FIRST_PAUSE_S
) -> int | None:
    """When to try a notice again after its attempts-th failure; None once 24 hours are over."""
    pause = min(first_pause_s * 2 ** min(attempts, 16), LONGEST_PAUSE_S)
    later = now + max(int(pause), 1)
    return later if later < created_at + GIVE_UP_AFTER_S else None


class MailSender:
    """Sends what is due, one batch per call of send_due()."""

    def __init__(
        self,
        store: Store,
        relay: mailer.MailRelay,
        sender: str,
        clock: Callable[[], float] = time.time,
        first_pause_s: float = FIRST_PAUSE_S,
        lease_s: float = LEASE_S,
    ):
        self.store = store
        self.relay = relay
        self.sender = sender
        self.clock = clock
        self.first_pause_s = first_pause_s
        self.lease_s = lease_s

    def send_due(self) -> int:
        """Claim and send up to one batch; the number the relay accepted."""
        now = int(self.clock())
        accepted = 0
        claimed = self.store.claim_mail(now, max(int(self.lease_s), 1), BATCH)
        for position, notice in enumerate(claimed):
            try:
                message = mailer.compose(
                    notice["id"],
                    self.sender,
                    notice["email"],
                    notice["subject"],
                    notice["body"],
                    rules.from_seconds(notice["created_at"]),
                )
                mailer.send(self.relay, message)
            except (mailer.PermanentMailError, ValueError) as error:
                # Refused for good, or no message can be made of it: it alone fails.
                log.warning("notice %d could not be emailed: %s", notice["id"], error)
                self.store.mail_not_sent(notice["id"], None)
                continue
            except mailer.MessageDeferredError as error:
                log.info("the relay put off notice %d (%s); trying it later", notice["id"], error)
                self._later([notice], now)
                continue
            except mailer.TemporaryMailError as error:
                # The relay is down or refuses us: the rest of the batch would fare the same,
                # so all of it waits for the next try rather than for the relay's timeout each.
                log.info("the relay did not take notice %d (%s); trying later", notice["id"], error)
                self._later(claimed[position:], now)
                break
            self.store.mail_sent(notice["id"], int(self.clock()))
            accepted += 1
        return accepted

    def _later(self, notices: list[dict[str, Any]], now: int) -> None:
        """Put these notices off until their next try, or fail them past 24 hours."""
        for notice in notices:
            retry = next_attempt_at(
                notice["created_at"], notice["mail_attempts"], now, self.first_pause_s
            )
            if retry is None:
                log.warning("notice %s was not emailed in 24 hours", notice["id"])
            self.store.mail_not_sent(notice["id"], retry)
