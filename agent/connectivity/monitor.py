"""Decides, per service, whether the car can reach it: health probes with hysteresis, events on every change.

A flapping link (a tunnel, a bridge, a car park) must not thrash the outbox: a service flips online only after
`connectivity.up_after` consecutive good observations, and offline after `down_after` bad ones. The very first
observation decides at once, so a fresh start does not wait for several probes. Real requests count too
(`report`), and NetworkManager (optional) short-cuts both directions: a lost link is offline now, a regained one
is probed now.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.core.logging import get_logger
from agent.services.client import ServiceClient, client_for

if TYPE_CHECKING:
    from agent.core.config import Config
    from agent.core.events import EventBus

log = get_logger("connectivity")

SERVICES = ("meals", "deliveries")


@dataclass
class LinkState:
    """What the monitor believes about one service."""

    service: str
    online: bool | None = None  # None: not observed yet
    successes: int = 0  # consecutive
    failures: int = 0  # consecutive
    changed_at: float = 0.0  # monotonic seconds
    observed_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "online": self.online,
            "since_seconds": round(time.monotonic() - self.changed_at, 1) if self.changed_at else None,
        }


class ConnectivityMonitor:
    """`run()` probes every service periodically (the daemon supervises it); without `run()`,
    `await check(name)` probes on demand, which is what a one-shot `cabin-agent say` gets."""

    def __init__(
        self,
        config: Config,
        events: EventBus | None = None,
        *,
        services: tuple[str, ...] = SERVICES,
        clients: dict[str, ServiceClient] | None = None,
    ) -> None:
        self.config = config
        self.events = events
        cc = config.connectivity
        self.probe_interval_seconds = cc.probe_interval_seconds
        self.probe_timeout_seconds = cc.probe_timeout_seconds
        self.up_after, self.down_after = cc.up_after, cc.down_after
        self._clients = clients or {}
        self._owned_clients: list[ServiceClient] = []
        self.links = {name: LinkState(name) for name in services}
        self._listeners: list[Callable[[str, bool], None]] = []
        self._kick: asyncio.Event | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self.link_up: bool | None = None  # NetworkManager's view, when it is there

    # ------------------------------------------------------------ queries

    def is_online(self, service: str) -> bool:
        link = self.links.get(service)
        return bool(link and link.online)

    def state(self, service: str) -> LinkState:
        return self.links[service]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: link.as_dict() for name, link in self.links.items()}

    async def check(self, service: str, max_age_seconds: float | None = None) -> bool:
        """Online now? Probes first when nothing recent is known (one-shot use), else answers from state."""
        link = self._link(service)
        max_age = self.probe_interval_seconds if max_age_seconds is None else max_age_seconds
        if link.online is None or time.monotonic() - link.observed_at > max_age:
            await self.probe(service)
        return bool(link.online)

    async def wait_online(self, service: str, timeout_seconds: float) -> bool:
        deadline = time.monotonic() + timeout_seconds
        while not self.is_online(service):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await self.wait_change(remaining)
        return True

    async def wait_change(self, timeout_seconds: float) -> None:
        """Return at the next online/offline change of any service, or after the timeout."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), timeout_seconds)
        finally:
            self._waiters.discard(future)

    def add_listener(self, callback: Callable[[str, bool], None]) -> None:
        """`callback(service, online)` on every change, on the event loop."""
        self._listeners.append(callback)

    # ------------------------------------------------------------ observations

    def _link(self, service: str) -> LinkState:
        if service not in self.links:
            self.links[service] = LinkState(service)
        return self.links[service]

    def _client(self, service: str) -> ServiceClient:
        if service not in self._clients:
            client = client_for(service, self.config, timeout_seconds=self.probe_timeout_seconds)
            self._clients[service] = client
            self._owned_clients.append(client)
        return self._clients[service]

    async def probe(self, service: str) -> bool:
        ok = await self._client(service).healthy(self.probe_timeout_seconds)
        self.report(service, ok, source="probe")
        return ok

    def report(self, service: str, ok: bool, *, source: str = "request") -> None:
        """Feed one observation (a probe, or a real request's outcome) through the hysteresis."""
        link = self._link(service)
        link.observed_at = time.monotonic()
        if ok:
            link.successes, link.failures = link.successes + 1, 0
            if link.online is not True and (link.online is None or link.successes >= self.up_after):
                self._flip(link, True, source)
        else:
            link.successes, link.failures = 0, link.failures + 1
            if link.online is not False and (link.online is None or link.failures >= self.down_after):
                self._flip(link, False, source)

    def _flip(self, link: LinkState, online: bool, source: str) -> None:
        link.online = online
        link.changed_at = time.monotonic()
        log.info("connectivity-changed", service=link.service, online=online, source=source)
        if self.events is not None:
            self.events.publish("connectivity", service=link.service, online=online)
        for callback in list(self._listeners):
            try:
                callback(link.service, online)
            except Exception:
                log.exception("connectivity-listener-failed", service=link.service)
        for future in list(self._waiters):
            if not future.done():
                future.set_result(None)

    def set_link(self, up: bool) -> None:
        """NetworkManager's word on the whole link: down is believed at once; up triggers probes now."""
        self.link_up = up
        if not up:
            for link in self.links.values():
                if link.online is not False:
                    link.successes, link.failures = 0, self.down_after
                    self._flip(link, False, "networkmanager")
        self.kick()

    def kick(self) -> None:
        """Probe now instead of at the next interval."""
        if self._kick is not None:
            self._kick.set()

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Probe all services every `probe_interval_seconds` until cancelled; survives any probe error."""
        self._kick = asyncio.Event()
        nm_task: asyncio.Task[None] | None = None
        if self.config.connectivity.use_networkmanager:
            from agent.connectivity.networkmanager import watch_networkmanager

            nm_task = asyncio.create_task(
                watch_networkmanager(self.set_link), name="connectivity:networkmanager"
            )
        try:
            while True:
                await self.probe_all()
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), self.probe_interval_seconds)
        finally:
            if nm_task is not None:
                nm_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await nm_task

    async def probe_all(self) -> None:
        names = list(self.links)
        results = await asyncio.gather(*(self.probe(n) for n in names), return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                log.warning(
                    "connectivity-probe-error", service=name, error=f"{type(result).__name__}: {result}"
                )
                self.report(name, False, source="probe")

    async def aclose(self) -> None:
        for client in self._owned_clients:
            await client.aclose()
        self._owned_clients.clear()
