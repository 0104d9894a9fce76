"""What a service plugin needs from the shared machinery: is the service online, queue a side effect through the
outbox and say what happened, answer a read-only question fresh or from the last known status with its age.

The daemon passes its outbox store, connectivity monitor and event bus in `services`; a one-shot run
(`cabin-agent say`) has none of them, so this opens the store itself, probes on demand, and delivers the new
entry inline with its own dispatcher.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.errors import ServiceError
from agent.logging import get_logger
from agent.outbox.store import NOTIFY_INLINE, Entry, OutboxStore, age_phrase

if TYPE_CHECKING:
    from agent.config import Config
    from agent.connectivity.monitor import ConnectivityMonitor
    from agent.outbox.dispatcher import Dispatcher
    from agent.services.client import ServiceClient

log = get_logger("services")

# How long a confirmed action waits for the service before the car says "queued" instead of "done".
INLINE_WAIT_SECONDS = 4.0


@dataclass
class Queued:
    """The outcome of queueing a side effect, as far as the driver should hear it now."""

    entry: Entry
    online: bool
    finished: bool  # delivered/failed/expired/cancelled while the tool waited: tell the driver now

    @property
    def state(self) -> str:
        return self.entry.state


@dataclass
class Read:
    """A read-only answer: fresh from the service, or the last known one with its age."""

    data: Any
    source: str  # "service" or "cache"
    age_seconds: float = 0.0

    def as_of(self, language: str) -> str:
        return age_phrase(self.age_seconds, language)


class ServiceAccess:
    def __init__(self, config: Config, services: dict[str, Any] | None = None) -> None:
        self.config = config
        self.services = services if services is not None else {}
        self._store: OutboxStore | None = self.services.get("outbox")
        self._monitor: ConnectivityMonitor | None = self.services.get("connectivity")
        self.events = self.services.get("events")
        # With a daemon, its dispatcher delivers; alone, we deliver our own entries inline.
        self.delivers_itself = "outbox" not in self.services
        self._dispatcher: Dispatcher | None = None
        self._clients: dict[str, ServiceClient] = {}
        self.inline_wait_seconds = INLINE_WAIT_SECONDS

    # ------------------------------------------------------------ lazily created parts

    @property
    def store(self) -> OutboxStore:
        if self._store is None:
            from agent.config import outbox_path

            self._store = OutboxStore(outbox_path(self.config))
        return self._store

    @property
    def monitor(self) -> ConnectivityMonitor:
        if self._monitor is None:
            from agent.connectivity.monitor import ConnectivityMonitor

            self._monitor = ConnectivityMonitor(self.config, self.events)
        return self._monitor

    def client(self, service: str) -> ServiceClient:
        if service not in self._clients:
            from agent.services.client import client_for

            self._clients[service] = client_for(service, self.config)
        return self._clients[service]

    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            from agent.outbox.dispatcher import Dispatcher

            self._dispatcher = Dispatcher(
                self.store, self.config, monitor=self.monitor, events=self.events, clients=dict(self._clients)
            )
        return self._dispatcher

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        if self._dispatcher is not None:
            await self._dispatcher.aclose()
        if "connectivity" not in self.services and self._monitor is not None:
            await self._monitor.aclose()

    # ------------------------------------------------------------ connectivity

    async def online(self, service: str) -> bool:
        """With the daemon's monitor running this is its current belief; alone it probes when unsure."""
        try:
            return await self.monitor.check(service)
        except Exception as err:  # a probe bug must not turn into a tool failure
            log.warning("connectivity-check-failed", service=service, error=str(err))
            return False

    # ------------------------------------------------------------ side effects

    async def queue(
        self,
        *,
        service: str,
        action: str,
        method: str,
        path: str,
        body: dict[str, Any],
        summary: str,
        language: str,
        depends_on: str | None = None,
    ) -> Queued:
        """Commit the action to the outbox, then give the service a few seconds to take it.

        The entry is on disk before this returns anything, so whatever the car says next ("done" or "queued")
        is backed by it; if the car dies now, the dispatcher delivers it and announces the outcome."""
        expiry_seconds = self.config.outbox.expiry_minutes * 60
        entry = await asyncio.to_thread(
            self.store.enqueue,
            service=service,
            action=action,
            method=method,
            path=path,
            body=body,
            summary=summary,
            language=language,
            expiry_seconds=expiry_seconds,
            depends_on=depends_on,
            notify=NOTIFY_INLINE,
        )
        online = await self.online(service)
        if online:
            entry = await self._wait_inline(entry)
        if entry.is_open:
            # What the link looks like now, after the attempt: the first failed send may have tipped it offline.
            online = online and self.monitor.is_online(service)
            if await asyncio.to_thread(self.store.release_to_announce, entry.id):
                return Queued(await asyncio.to_thread(self.store.get, entry.id), online, finished=False)
            entry = await asyncio.to_thread(self.store.get, entry.id)  # it finished just now
        return Queued(entry, online, finished=True)

    async def _wait_inline(self, entry: Entry) -> Entry:
        deadline = time.monotonic() + self.inline_wait_seconds
        if self.delivers_itself:
            try:
                await asyncio.wait_for(
                    self.dispatcher().drain(entry.service, self.inline_wait_seconds),
                    self.inline_wait_seconds + 0.5,
                )
            except TimeoutError:
                pass
            except Exception as err:  # delivery errors are the dispatcher's business; the entry is safe
                log.warning("inline-delivery-failed", entry=entry.id, error=f"{type(err).__name__}: {err}")
            return await asyncio.to_thread(self.store.get, entry.id)
        # The daemon's dispatcher was woken by the commit; watch the entry until it settles or time is up.
        while time.monotonic() < deadline:
            current = await asyncio.to_thread(self.store.get, entry.id)
            if not current.is_open:
                return current
            await asyncio.sleep(0.05)
        return await asyncio.to_thread(self.store.get, entry.id)

    # ------------------------------------------------------------ read-only questions

    async def read(self, service: str, subject: str, fetch: Callable[[], Awaitable[Any]]) -> Read | None:
        """Fresh when online (and remembered), else the last known answer with its age; None when neither."""
        if await self.online(service):
            try:
                data = await fetch()
            except ServiceError as err:
                if not err.retryable:
                    raise
                log.info("read-fell-back-to-cache", service=service, subject=subject, error=err.code)
            else:
                await asyncio.to_thread(self.store.save_status, service, subject, data)
                return Read(data, "service")
        cached = await asyncio.to_thread(self.store.last_status, service, subject)
        if cached is None:
            return None
        data, fetched_at = cached
        return Read(data, "cache", max(0.0, self.store.now() - fetched_at))
