"""A session token kept across runs (--remember): a file only its owner may read."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from client_errors import UsageError


@dataclass(frozen=True)
class TokenFile:
    """A session token kept across runs (only with --remember): a 0600 file naming its server."""

    path: Path
    server: str

    def load(self) -> str | None:
        """The token saved for this server, or None; UsageError if others may read the file."""
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return None
        if mode & 0o077:
            raise UsageError(
                f"{self.path} may be read by other users, so it is not used; delete it and "
                "log in again with --remember."
            )
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(saved, dict) or saved.get("server") != self.server:
            return None
        token = saved.get("token")
        return token if isinstance(token, str) else None

    def save(self, token: str) -> None:
        """Write the token readable by its owner alone."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        descriptor = os.open(self.path, flags, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)  # an existing file keeps its old mode otherwise
            json.dump({"server": self.server, "token": token}, file)

    def forget(self) -> None:
        """Delete the saved token, if any."""
        self.path.unlink(missing_ok=True)
