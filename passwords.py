"""Hashing: passwords with bcrypt (bounded, so logins cannot starve other clients), tokens with SHA-256."""

from __future__ import annotations

import base64
import hashlib
import os
import threading

import bcrypt

PRODUCTION_COST = 12


def default_concurrency() -> int:
    """At most one hash per core but one, leaving a core for everything else."""
    return max((os.cpu_count() or 2) - 1, 1)


class PasswordHasher:
    """bcrypt at a fixed cost, with at most `concurrency` hashes running at once.

    bcrypt releases the GIL, so without the bound a burst of logins would take every core.
    """

    def __init__(self, cost: int = PRODUCTION_COST, concurrency: int | None = None):
        if not 4 <= cost <= 31:
            raise ValueError("The bcrypt cost must be between 4 and 31.")
        self.cost = cost
        self._slots = threading.BoundedSemaphore(concurrency or default_concurrency())
        # Compared against when a username does not exist, so both cases do the same work.
        self._dummy_hash = self.hash("not a real password, only spends the same time")

    def hash(self, password: str) -> str:
        """A bcrypt hash of the password (any length: it is pre-hashed, never truncated)."""
        with self._slots:
            return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(self.cost)).decode("ascii")

    def verify(self, password: str, password_hash: str | None) -> bool:
        """True if the password matches.

        A refusal costs at least the configured cost's work whatever the stored hash's cost,
        or with no hash at all, so its timing says nothing about the account.
        """
        with self._slots:
            if password_hash is None:
                bcrypt.checkpw(_prehash(password), self._dummy_hash.encode("ascii"))
                return False
            matches = bcrypt.checkpw(_prehash(password), password_hash.encode("ascii"))
            if not matches and cost_of(password_hash) < self.cost:
                # A hash made at a lower cost (before the cost was raised) fails fast: pad it.
                bcrypt.checkpw(_prehash(password), self._dummy_hash.encode("ascii"))
            return matches

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made at another cost than the configured one."""
        return cost_of(password_hash) != self.cost


def cost_of(password_hash: str) -> int:
    """The work factor recorded in a bcrypt hash such as $2b$12$..."""
    return int(password_hash.split("$")[2])


def _prehash(password: str) -> bytes:
    # bcrypt reads only 72 bytes (bcrypt 5 raises beyond that). SHA-256 then base64 gives
    # 44 bytes with no NUL, so every byte of a long password counts.
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


def hash_token(token: str) -> str:
    """Tokens are stored only as their SHA-256, so a copy of the database logs nobody in."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
