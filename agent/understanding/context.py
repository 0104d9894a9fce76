"""What the model remembers of the drive: the requests that led to calls, with the calls as they were made.

Only turns that did something are kept. Canned lines (refusals, "didn't catch that", confirmations) and failed
turns are never shown back to the model: a small model copies what it sees, and one remembered refusal made it
refuse everything after. Turns go stale with time as well as with count: what was said ten minutes ago is not
what "make it warmer" refers to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.understanding.wire import CallFormat, Decision


@dataclass(frozen=True)
class Exchange:
    at: float  # monotonic seconds
    utterance: str
    decision: Decision


class Conversation:
    """The remembered exchanges, oldest first, bounded by count and age."""

    def __init__(self, *, max_turns: int, max_age_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_turns = max_turns
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._exchanges: list[Exchange] = []

    def remember(self, utterance: str, decision: Decision) -> None:
        if self.max_turns <= 0 or not decision.calls:
            return
        self._exchanges.append(Exchange(self._clock(), utterance, decision))
        del self._exchanges[: -self.max_turns]

    def forget_last(self) -> None:
        if self._exchanges:
            self._exchanges.pop()

    def clear(self) -> None:
        self._exchanges.clear()

    def current(self) -> list[Exchange]:
        cutoff = self._clock() - self.max_age_seconds
        self._exchanges = [e for e in self._exchanges if e.at >= cutoff]
        return list(self._exchanges)

    def messages(self, fmt: CallFormat) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for e in self.current():
            out += [{"role": "user", "content": e.utterance}, {"role": "assistant", "content": fmt.render(e.decision)}]
        return out

    def last_tools(self) -> list[str]:
        return [c.name for e in self.current() for c in e.decision.calls]
