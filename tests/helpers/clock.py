"""Fake clocks for code that takes its clock as an argument (the outbox, health, the turn engine)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    """A clock that stands still until the test moves `now` (seconds): a fake monotonic or boot-time clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SteppedClock:
    """A real clock (`source`) that the test can step by `offset` seconds: NTP or the driver setting the wall
    clock (`time.time`), or time passing for the outbox's monotonic clock (`time.monotonic`)."""

    def __init__(self, source: Callable[[], float] = time.monotonic) -> None:
        self.offset = 0.0
        self._source = source

    def __call__(self) -> float:
        return self._source() + self.offset
