"""Timestamped pipeline events (a small pub/sub bus) and the one trace each request leaves behind."""

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
class ModelCall:
    """One use of the model inside a turn: which step, how many tokens it read and wrote, how long it took."""

    phase: str  # decide (labels weighed), arguments, next (another call?), say, peek, fill
    prompt_tokens: int
    generated: int = 0
    ms: float = 0.0
    first_ms: float | None = None  # to the first generated token
    grammar: bool = False  # constrained by a tool's argument grammar
    read: int | None = None  # prompt tokens the model had to evaluate (the rest was in its cache)
    waited_ms: float | None = None  # for the model's worker (work ahead of need finishing its slice)

    def as_dict(self) -> dict[str, Any]:
        out = {"phase": self.phase, "prompt_tokens": self.prompt_tokens, "generated": self.generated,
               "grammar": self.grammar, "first_ms": None if self.first_ms is None else round(self.first_ms, 1),
               "ms": round(self.ms, 1)}
        if self.read is not None:
            out["read"] = self.read
        if self.waited_ms is not None:
            out["waited_ms"] = round(self.waited_ms, 1)
        return out


@dataclass
class TurnTrace:
    """One request from trigger to silence, on one clock: every milestone (monotonic ms, `now_ms`) marked by
    whoever reaches it (the voice loop: wake, speech end, endpoint, transcript, first audio; the turn engine:
    first token, call decoded, tool done), and each model call. The bench, the eval and the logs read this."""

    start_ms: float = field(default_factory=now_ms)
    marks: dict[str, float] = field(default_factory=dict)
    model_calls: list[ModelCall] = field(default_factory=list)

    def mark(self, name: str, at_ms: float | None = None) -> None:
        """The first time a milestone is reached counts (a second call in the turn does not move it)."""
        self.marks.setdefault(name, now_ms() if at_ms is None else at_ms)

    def since(self, origin: str | None = None) -> dict[str, float]:
        """Marks in ms after `origin` (a mark name; None: the trace's start), in the order they happened;
        marks before the origin are left out."""
        zero = self.start_ms if origin is None else self.marks.get(origin)
        if zero is None:
            return {}
        ordered = sorted(self.marks.items(), key=lambda kv: kv[1])
        return {name: round(at - zero, 1) for name, at in ordered if at >= zero}
