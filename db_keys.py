"""The idempotency keys' part of the Store: a write's answer kept by its key, in its transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from db_base import StoreBase
from engine import RetryJoinedError, Row, Tx
from errors import RaceLostError

KEY_LIFETIME_S = 24 * 3600  # PROTOCOL.md 1.2: a key is remembered for at least 24 hours


class KeyStore(StoreBase):
    """Answers stored by (member, key), so that a write sent again is not done again."""

    def stored_answer(self, user_id: int, key: str) -> Row | None:
        """The command, fingerprint of its arguments and answer (JSON) stored for this key."""
        return self.database.read(
            lambda tx: tx.row(
                f"{tx.causal}SELECT cmd, fingerprint, result FROM idempotency_keys"
                " WHERE user_id = ? AND idem_key = ?",
                (user_id, key),
            )
        )

    @contextmanager
    def keyed(
        self, user_id: int, key: str, cmd: str, fingerprint: str, now: int
    ) -> Iterator[Callable[[dict[str, Any]], None]]:
        """Run the block's writes in one transaction that also claims the key; call the
        function yielded with the answer, which is stored in that same transaction.

        Raises errors.RaceLostError when another request took the key first (or the
        transaction lost a race): the caller looks for the stored answer again.
        """

        def claim(tx: Tx) -> None:
            # The row that serialises two requests with one key: the second waits here for the
            # first to end (or, on another cluster node, fails certification), then finds it.
            tx.run(
                "INSERT INTO idempotency_keys (user_id, idem_key, cmd, fingerprint, result,"
                " created_at) VALUES (?, ?, ?, ?, '', ?)",
                (user_id, key, cmd, fingerprint, now),
            )

        try:
            with self.database.joined(claim) as joined:

                def keep(answer: dict[str, Any]) -> None:
                    joined.closing = lambda tx: tx.run(
                        "UPDATE idempotency_keys SET result = ? WHERE user_id = ? AND idem_key = ?",
                        (json.dumps(answer, ensure_ascii=False), user_id, key),
                    )

                yield keep
        except RetryJoinedError as error:
            raise RaceLostError(
                "Another request with the same key or rows went first; nothing was changed.",
                {"retry_after_s": 1, "cause": "contention"},
            ) from error

    def expire_keys(self, now: int) -> int:
        """Forget keys older than their lifetime; the count forgotten."""
        changed, _ = self.database.write(
            lambda tx: tx.run(
                "DELETE FROM idempotency_keys WHERE created_at < ?", (now - KEY_LIFETIME_S,)
            )
        )
        return max(changed, 0)
