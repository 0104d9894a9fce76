"""Timestamped pipeline events: a small pub/sub bus, and the per-turn latency record built from them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


def now_ms() -> float:
    return time.monotonic() * 1000.0


@dataclass(frozen=True)
class Event:
    type: str  # e.g. "state", "wake-detected", "speech-end", "transcript-final", "first-token", ...
    data: dict[str, Any] = field(default_factory=dict)
    timestamp_ms: float = field(default_factory=now_ms)


class EventBus:
    """Fan-out of events to any number of subscribers; a slow subscriber drops its oldest events, never blocks."""

    def __init__(self, queue_size: int = 256) -> None:
        self._queues: set[asyncio.Queue[Event]] = set()
        self._queue_size = queue_size

    def publish(self, type_: str, **data: Any) -> Event:
        event = Event(type_, data)
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
        return event

    async def subscribe(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)


@dataclass
class TurnTimings:
    """Milliseconds since the turn started, per milestone; rendered as `timings_ms` in JSON output."""

    start_ms: float = field(default_factory=now_ms)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, now_ms() - self.start_ms)

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 1) for name, value in self.marks.items()}
