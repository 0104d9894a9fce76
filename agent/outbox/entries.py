"""What the outbox holds, as the car reads it: an entry's states and who tells the driver its outcome, the
entry itself, the announcements it owes, and what a state change produced.

Modelled on persist-queue's SQLiteAckQueue (ready / unacked / acked / failed), in the car's words:

    pending    committed, not sent yet (or sent and answered with a retryable error)
    in-flight  being sent; after a crash it is re-sent with the same idempotency key
    delivered  the service answered 2xx                                   (terminal)
    failed     the service answered 4xx, or the attempts ran out         (terminal)
    expired    never reached the service before its expiry              (terminal)
    cancelled  withdrawn by the driver before it was ever sent           (terminal)
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

PENDING = "pending"
IN_FLIGHT = "in-flight"
DELIVERED = "delivered"
FAILED = "failed"
EXPIRED = "expired"
CANCELLED = "cancelled"
STATES = (PENDING, IN_FLIGHT, DELIVERED, FAILED, EXPIRED, CANCELLED)
OPEN_STATES = (PENDING, IN_FLIGHT)
TERMINAL_STATES = (DELIVERED, FAILED, EXPIRED, CANCELLED)

# Who tells the driver about the outcome: the tool that is still waiting for it ("inline"), or the
# dispatcher through an announcement at a quiet moment ("announce"). "told": the waiting tool took the finished
# outcome to say it itself. Every finished entry ends as told, or as announce with exactly one announcement.
NOTIFY_INLINE = "inline"
NOTIFY_ANNOUNCE = "announce"
NOTIFY_TOLD = "told"


@dataclass(frozen=True)
class Entry:
    id: int
    key: str
    service: str
    action: str
    method: str
    path: str
    body: dict[str, Any]
    summary: str
    language: str
    depends_on: str | None
    state: str
    notify: str
    created_at: float
    expires_at: float
    updated_at: float
    next_attempt_at: float
    attempts: int
    last_error: str | None
    result: dict[str, Any] | None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def ever_sent(self) -> bool:
        """Whether the service may have seen it: then only the service can tell what happened."""
        return self.attempts > 0

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class Announcement:
    id: int
    created_at: float
    text: str
    language: str
    priority: str
    entry_id: int | None
    delivered: bool
    delivered_at: float | None = None

    def publish(self, events: Any) -> None:
        """Hand this announcement to the car's event bus (the announcer speaks it when the cabin is quiet)."""
        events.publish(
            "announcement", id=self.id, text=self.text, language=self.language, priority=self.priority,
            entry_id=self.entry_id,
        )  # fmt: skip


@dataclass
class Transition:
    """What a state change produced: the updated entry and the announcement it owes the driver, if any."""

    entry: Entry
    announcement: Announcement | None = None


@dataclass
class Settled:
    """How a waiting tool let go of its entry: "announce" (the dispatcher will tell), "told" (the tool tells now),
    "announced" (it had finished unseen; `announcement` now owes it to the driver)."""

    entry: Entry
    how: str
    announcement: Announcement | None = None



def row_to_entry(row: sqlite3.Row) -> Entry:
    data = dict(row)
    data["body"] = json.loads(data["body"])
    data["result"] = json.loads(data["result"]) if data["result"] else None
    return Entry(**data)


def row_to_announcement(row: sqlite3.Row) -> Announcement:
    data = dict(row)
    data["delivered"] = bool(data["delivered"])
    return Announcement(**data)
