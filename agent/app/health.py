"""Pipeline health, and the systemd watchdog that pings only while the pipeline is really moving.

Components prove progress by beating (`health.beat("audio")` per microphone chunk); the event loop proves
it is responsive through a lag probe. `Watchdog.run()` sends WATCHDOG=1 only while every expected component
has beaten within its deadline and the loop lag is under its bound, so a stalled audio loop stops the
pings and systemd restarts the service, instead of a thread that pings while everything else is stuck.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from agent.app.sdnotify import Notifier, watchdog_interval_s
from agent.core.logging import get_logger

log = get_logger("health")

EVENT_LOOP = "event-loop"


@dataclass
class _Expectation:
    deadline_s: float
    since: float  # when the expectation started: a component gets a full deadline before its first beat


class Health:
    """Who must show progress, how often, and whether they did.

    `beat()` is cheap and safe from any thread (one dict store under the GIL), so an audio callback thread
    may call it directly. Beats from names nobody `expect()`s are recorded but never make us unhealthy.
    """

    def __init__(
        self,
        *,
        max_loop_lag_s: float = 2.0,
        loop_probe_interval_s: float = 0.25,
        lag_window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_loop_lag_s = max_loop_lag_s
        self.loop_probe_interval_s = loop_probe_interval_s
        self.lag_window_s = lag_window_s
        self._clock = clock
        self._expected: dict[str, _Expectation] = {}
        self._last_beat: dict[str, float] = {}
        self._beats: dict[str, int] = {}
        self._lags: deque[tuple[float, float]] = deque()

    # ------------------------------------------------------------ components

    def expect(self, name: str, deadline_s: float) -> None:
        """From now on `name` must beat at least every `deadline_s` seconds (the first beat included)."""
        if deadline_s <= 0:
            raise ValueError(f"deadline_s must be > 0 (got {deadline_s})")
        self._expected[name] = _Expectation(deadline_s, self._clock())

    def forget(self, name: str) -> None:
        """`name` no longer has to beat (it finished, or was deliberately stopped)."""
        self._expected.pop(name, None)

    @contextmanager
    def watching(self, name: str, deadline_s: float) -> Iterator[None]:
        """Expect beats from `name` only while the block runs (e.g. one LLM generation, beating per token)."""
        self.expect(name, deadline_s)
        try:
            yield
        finally:
            self.forget(name)

    def beat(self, name: str) -> None:
        self._last_beat[name] = self._clock()
        self._beats[name] = self._beats.get(name, 0) + 1

    # ------------------------------------------------------------ event loop

    def record_loop_lag(self, lag_s: float) -> None:
        now = self._clock()
        self._lags.append((now, max(0.0, lag_s)))
        while self._lags and now - self._lags[0][0] > self.lag_window_s:
            self._lags.popleft()
        self.beat(EVENT_LOOP)

    @property
    def loop_lag_s(self) -> float:
        """The worst loop lag seen in the last `lag_window_s` (0 before the probe has run)."""
        now = self._clock()
        return max((lag for t, lag in self._lags if now - t <= self.lag_window_s), default=0.0)

    async def run_loop_probe(self) -> None:
        """Forever: sleep a fixed interval and record how late we woke up. Cancel to stop."""
        self.expect(EVENT_LOOP, max(5 * self.loop_probe_interval_s, self.max_loop_lag_s + 1.0))
        try:
            while True:
                start = self._clock()
                await asyncio.sleep(self.loop_probe_interval_s)
                self.record_loop_lag(self._clock() - start - self.loop_probe_interval_s)
        finally:
            self.forget(EVENT_LOOP)

    # ------------------------------------------------------------ verdict

    def healthy(self) -> tuple[bool, list[str]]:
        """(True, []) when everything expected is moving; else (False, one reason per problem)."""
        now = self._clock()
        reasons: list[str] = []
        for name, expectation in sorted(self._expected.items()):
            last = self._last_beat.get(name)
            reference = expectation.since if last is None or last < expectation.since else last
            age = now - reference
            if age > expectation.deadline_s:
                what = "no progress yet" if last is None or last < expectation.since else "no progress"
                reasons.append(f"{name}: {what} for {age:.1f}s (deadline {expectation.deadline_s:g}s)")
        lag = self.loop_lag_s
        if lag > self.max_loop_lag_s:
            reasons.append(f"{EVENT_LOOP}: lag {lag:.2f}s (bound {self.max_loop_lag_s:g}s)")
        return (not reasons, reasons)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready health for the control socket's status reply."""
        now = self._clock()
        ok, reasons = self.healthy()
        components = {}
        for name in sorted(set(self._expected) | set(self._last_beat)):
            last = self._last_beat.get(name)
            expectation = self._expected.get(name)
            components[name] = {
                "last_beat_age_s": None if last is None else round(now - last, 3),
                "deadline_s": None if expectation is None else expectation.deadline_s,
                "beats": self._beats.get(name, 0),
            }
        return {
            "healthy": ok,
            "reasons": reasons,
            "loop_lag_ms": round(self.loop_lag_s * 1000, 1),
            "components": components,
        }


class Watchdog:
    """Pings systemd's watchdog while `health` is healthy; goes quiet (and says why) when it is not.

    The ping period is a quarter of WatchdogSec=, so one unhealthy check (a transient spike) costs no
    restart, but a component stalled past its deadline for about WatchdogSec= does. Without a systemd
    watchdog (WATCHDOG_USEC unset) it still runs the loop probe and logs health transitions.
    """

    def __init__(
        self,
        health: Health,
        notifier: Notifier,
        *,
        timeout_s: float | None = None,
        environ: Mapping[str, str] | None = None,
        check_interval_s: float | None = None,
    ) -> None:
        self.health = health
        self.notifier = notifier
        self.timeout_s = timeout_s if timeout_s is not None else watchdog_interval_s(environ)
        if check_interval_s is not None:
            self.check_interval_s = check_interval_s
        elif self.timeout_s is not None:
            self.check_interval_s = self.timeout_s / 4
        else:
            self.check_interval_s = 5.0
        if self.timeout_s is not None:
            # A single lag spike must cost less than WatchdogSec= of silence, or it would mean a restart.
            health.lag_window_s = min(health.lag_window_s, self.timeout_s / 2)
        self.pings = 0
        self.healthy = True
        self.reasons: list[str] = []

    @property
    def enabled(self) -> bool:
        return self.timeout_s is not None and self.notifier.enabled

    def check(self) -> bool:
        """One watchdog round: ping if healthy, report transitions. Returns the verdict."""
        ok, reasons = self.health.healthy()
        if ok:
            if self.enabled and self.notifier.watchdog():
                self.pings += 1
            if not self.healthy:
                log.info("health-recovered")
                if self.notifier.last_status:
                    self.notifier.status(self.notifier.last_status)
        elif reasons != self.reasons or self.healthy:
            # Logged on each change, not each round: a stall for minutes is one line, not hundreds.
            log.warning("health-degraded", reasons=reasons, watchdog_pings_stopped=self.enabled)
            self.notifier.status("unhealthy: " + "; ".join(reasons), remember=False)
        self.healthy, self.reasons = ok, reasons
        return ok

    async def run(self) -> None:
        """Forever (cancel to stop): loop-lag probe and ping rounds, as one task for the daemon to own."""
        probe = asyncio.create_task(self.health.run_loop_probe(), name="health-loop-probe")
        try:
            while True:
                self.check()
                start = time.monotonic()
                await asyncio.sleep(self.check_interval_s)
                # Our own lateness is a lag sample too, taken before the verdict: after a blocked loop
                # the verdict must not depend on whether the probe or this task wakes up first.
                self.health.record_loop_lag(time.monotonic() - start - self.check_interval_s)
        finally:
            probe.cancel()
            with suppress(asyncio.CancelledError):
                await probe
