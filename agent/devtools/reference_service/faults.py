"""What the reference service is told to do wrong, on command: fail the next requests, answer slowly, or
answer late after committing (the lost-answer window the car's retry must survive)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from agent.devtools.reference_service.requests import HttpError


@dataclass
class Faults:
    """What the service is told to do wrong. Applies to API requests, not to /admin (and not /health
    unless `include_health`): a 5xx backend behind a healthy front door is the common case."""

    fail_count: int = 0
    fail_status: int = 503
    fail_message: str = "the service is having trouble"
    delay_ms: int = 0
    delay_after_commit_ms: int = 0  # the side effect is committed, the answer is late: the lost-ack window
    include_health: bool = False


class FaultInjector:
    """The service's current `Faults`, changed by tests and /admin/faults while handler threads read them."""

    def __init__(self) -> None:
        self.faults = Faults()
        self._lock = threading.Lock()

    def fail_next(
        self, count: int, status: int = 503, message: str | None = None, include_health: bool = False
    ) -> None:
        with self._lock:
            self.faults.fail_count = count
            self.faults.fail_status = status
            self.faults.fail_message = message or (
                "the service is having trouble" if status >= 500 else "the request was refused"
            )
            self.faults.include_health = include_health

    def slow(self, delay_ms: int, after_commit_ms: int = 0) -> None:
        with self._lock:
            self.faults.delay_ms = delay_ms
            self.faults.delay_after_commit_ms = after_commit_ms

    def reset(self) -> None:
        with self._lock:
            self.faults = Faults()

    def inject(self, path: str) -> None:
        """Wait the delay, then fail if a failure is due; called before any side effect."""
        with self._lock:
            faults = self.faults
            delay = faults.delay_ms
            fail = faults.fail_count > 0 and (path != "/health" or faults.include_health)
            if fail:
                faults.fail_count -= 1
        if delay:
            time.sleep(delay / 1000)
        if fail:
            # Fails before any side effect: a 5xx from this service always means "nothing happened".
            raise HttpError(faults.fail_status, "injected-failure", faults.fail_message)

    def delay_after_commit_ms(self) -> int:
        with self._lock:
            return self.faults.delay_after_commit_ms
