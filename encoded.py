"""Answers encoded once: the wire's compact JSON, with a result that carries its own encoding.

Below both protocol.py (which writes answers) and snapshot.py (which keeps answers made from
one snapshot), so neither imports upward to share it.
"""

from __future__ import annotations

import json
from typing import Any


def dumps(value: Any) -> str:
    """The wire's JSON for value: compact, UTF-8 as it is, and no NaN or Infinity."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class PreEncoded(dict[str, Any]):
    """A result that also carries its compact JSON, so an answer sent many times (a catalogue
    page) is encoded once. It must not be changed after it is made."""

    def __init__(self, value: dict[str, Any]):
        super().__init__(value)
        self.json = dumps(value)
