"""Managing the outbox from outside a turn: list, retry, cancel, and announcements.

The same operations serve two callers: `cabin-agent outbox ...` working directly on the store file when no
daemon runs, and the daemon's control socket (`register_control`) when it does, so the CLI never writes
behind the back of a running dispatcher.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from agent.outbox.entries import STATES, Entry
from agent.outbox.errors import OutboxError
from agent.outbox.store import OutboxStore

if TYPE_CHECKING:
    from agent.outbox.dispatcher import Dispatcher

CONTROL_COMMANDS = ("outbox.list", "outbox.retry", "outbox.cancel", "outbox.announcements")


def entry_view(entry: Entry, now: float | None = None) -> dict[str, Any]:
    """An entry as the CLI and the control socket show it (no request body: it may hold addresses)."""
    now = time.time() if now is None else now
    return {
        "id": entry.id,
        "state": entry.state,
        "service": entry.service,
        "action": entry.action,
        "summary": entry.summary,
        "attempts": entry.attempts,
        "age_seconds": round(now - entry.created_at),
        "expires_in_seconds": round(entry.expires_at - now),
        "last_error": entry.last_error,
        "key": entry.key,
    }


class OutboxAdmin:
    """Operations on a store; `dispatcher` (in the daemon) is woken so a retry goes out at once."""

    def __init__(
        self, store: OutboxStore, dispatcher: Dispatcher | None = None, *, expiry_seconds: float = 1800.0
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.expiry_seconds = expiry_seconds

    def list(self, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        if state is not None and state not in STATES:
            raise OutboxError(
                f"unknown state {state!r} (one of: {', '.join(STATES)})", code="outbox-bad-state"
            )
        entries = self.store.list(states=(state,) if state else None, limit=limit)
        now = self.store.now()
        return [entry_view(e, now) for e in entries]

    def retry(self, entry_id: int) -> dict[str, Any]:
        entry = self.store.retry(entry_id, expiry_seconds=self.expiry_seconds)
        if self.dispatcher is not None:
            self.dispatcher.wake(entry.service)
        return entry_view(entry, self.store.now())

    def cancel(self, entry_id: int) -> dict[str, Any]:
        return entry_view(self.store.cancel(entry_id), self.store.now())

    def announcements(self) -> list[dict[str, Any]]:
        return [a.__dict__ for a in self.store.pending_announcements()]

    def register_control(self, server: Any) -> None:
        """Add outbox.list / outbox.retry / outbox.cancel / outbox.announcements to the daemon's ControlServer."""

        async def _list(args: dict[str, Any]) -> Any:
            return await asyncio.to_thread(self.list, args.get("state"), int(args.get("limit", 50)))

        async def _retry(args: dict[str, Any]) -> Any:
            return await asyncio.to_thread(self.retry, int(args["entry_id"]))

        async def _cancel(args: dict[str, Any]) -> Any:
            return await asyncio.to_thread(self.cancel, int(args["entry_id"]))

        async def _announcements(args: dict[str, Any]) -> Any:
            return await asyncio.to_thread(self.announcements)

        server.register("outbox.list", _list)
        server.register("outbox.retry", _retry)
        server.register("outbox.cancel", _cancel)
        server.register("outbox.announcements", _announcements)
