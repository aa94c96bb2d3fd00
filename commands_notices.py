"""The notice command handlers: a member's messages, marking them read, sweeping at once."""

from __future__ import annotations

from typing import Any

import results
from commands_base import Handlers, Session
from sweep import sweep


class NoticeCommands(Handlers):
    """Handlers for the commands this module names."""

    def do_notices(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        found, unread = self.store.notices_for(
            self._member(session)["id"], args.get("unread_only", False), args.get("limit", 50)
        )
        return {"notices": [results.notice(r) for r in found], "unread": unread}

    def do_mark_read(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        unread = self.store.mark_read(
            self._member(session)["id"], args.get("ids"), args.get("all", False), self._now()
        )
        return {"unread": unread}

    def do_sweep_notices(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        return {"created": sweep(self.store, self.sweep_policy, self._now())}
