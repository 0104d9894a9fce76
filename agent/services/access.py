"""What a service plugin needs from the shared machinery: is the service online, queue a side effect through the
outbox and say what happened, answer a read-only question fresh or from the last known status with its age.

The daemon passes its outbox store, connectivity monitor and event bus in `services`; a one-shot run
(`cabin-agent say`) has none of them, so this opens the store itself, probes on demand, and delivers the new
entry inline with its own dispatcher (unless a daemon owns the store: then the daemon delivers it).

However the waiting turn ends (barge-in, `cancel`, a new `say`, an error), an entry it committed is handed to
the announcer, shielded from the cancel: every finished entry is told exactly once, inline or announced."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from agent.core.errors import ServiceError
from agent.core.logging import get_logger
from agent.outbox.entries import FAILED, NOTIFY_INLINE, PENDING, Entry, Settled
from agent.outbox.errors import OutboxError, OutboxOwned
from agent.outbox.messages import age_phrase, announcement_for, not_saved_reason
from agent.outbox.store import OutboxStore

if TYPE_CHECKING:
    from agent.connectivity.monitor import ConnectivityMonitor
    from agent.core.config import Config
    from agent.outbox.dispatcher import Dispatcher
    from agent.services.client import ServiceClient

log = get_logger("services")

# How long a confirmed action waits for the service before the car says "queued" instead of "done".
INLINE_WAIT_SECONDS = 4.0
# After a failed COMMIT the entry may or may not be there: how long to keep looking before giving up.
VERIFY_SECONDS = 30.0


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
        # Entries whose waiting turn went away, being handed to the announcer (owned, awaited in aclose).
        self._releases: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ lazily created parts

    @property
    def store(self) -> OutboxStore:
        if self._store is None:
            from agent.core.config import outbox_path

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

    async def settled(self, timeout_seconds: float = 10.0) -> None:
        """Wait until every entry whose turn went away has been handed to the announcer."""
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=timeout_seconds)

    async def aclose(self) -> None:
        await self.settled()
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
        is backed by it; if the car dies now, the dispatcher delivers it and announces the outcome. If it could
        not be saved, the answer is a finished FAILED entry that is not in the store ("nothing was ordered"),
        and only when the store is known not to hold it. If this turn is cancelled at any point, the entry (once
        committed) is released to be announced."""
        key = str(uuid.uuid4())
        enqueue = functools.partial(
            self.store.enqueue,
            service=service,
            action=action,
            method=method,
            path=path,
            body=body,
            summary=summary,
            language=language,
            expiry_seconds=self.config.outbox.expiry_minutes * 60,
            depends_on=depends_on,
            notify=NOTIFY_INLINE,
            key=key,
        )
        # The commit runs to its end in its thread whatever happens to this turn; `job` is how we learn it.
        job: asyncio.Future[Entry] = asyncio.ensure_future(asyncio.to_thread(enqueue))
        told_ok = False
        try:
            try:
                entry = await asyncio.shield(job)
            except OutboxError as err:
                found = await self._verify_after_failed_enqueue(err, key)
                fields = (service, action, method, path, body, summary, language)
                if found is None:
                    told_ok = True  # known not stored: nothing to release, and the driver hears the truth
                    return self._not_saved(err, key, *fields)
                if found is False:
                    # Neither there nor known absent: never say "failed" for what may be stored. The release
                    # below keeps looking and announces the outcome if it turns up.
                    return Queued(self._unsaved_entry(key, PENDING, *fields), False, finished=False)
                entry = found
            online = await self.online(service)
            if online:
                entry = await self._wait_inline(entry)
            if entry.is_open:
                # What the link looks like now, after the attempt: the first failed send may have tipped it.
                online = online and self.monitor.is_online(service)
            settled = await self._shielded(self.store.settle_waiter, entry.id, tell_inline=True)
            told_ok = True
            return Queued(settled.entry, online, finished=settled.how == "told")
        finally:
            if not told_ok:
                # Cancelled (barge-in, `cancel`, a new `say`) or failed before the driver heard anything: the
                # committed entry goes to the announcer, in a task the cancel cannot reach.
                self._release_later(job, key)

    async def _shielded(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A store call that completes even if this turn is cancelled meanwhile (the caller still sees the
        cancel; the release path then finds the store already changed and acts on that)."""
        return await asyncio.shield(asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs)))

    def _release_later(self, job: asyncio.Future[Entry], key: str) -> None:
        task = asyncio.get_running_loop().create_task(
            self._release(job, key), name=f"outbox-release:{key[:8]}"
        )
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, job: asyncio.Future[Entry], key: str) -> None:
        try:
            try:
                entry: Entry | None = await job
            except OutboxError as err:
                found = await self._verify_after_failed_enqueue(err, key, patient=True)
                entry = found or None
            except Exception:
                entry = await asyncio.to_thread(self.store.by_key, key)
            if entry is None:
                return  # never committed: nothing was ordered and nothing is owed
            text_for = functools.partial(announcement_for, expiry_minutes=self.config.outbox.expiry_minutes)
            settled: Settled = await asyncio.to_thread(
                self.store.settle_waiter, entry.id, tell_inline=False, text_for=text_for, retract_told=True
            )
            log.info("outbox-released-to-announce", entry=entry.id, how=settled.how)
            ann = settled.announcement
            if ann is not None and self.events is not None:
                ann.publish(self.events)
        except Exception as err:  # logged: the entry itself is safe in the store and a restart announces it
            log.error("outbox-release-failed", key=key[:8], error=f"{type(err).__name__}: {err}")

    async def _verify_after_failed_enqueue(
        self, err: OutboxError, key: str, *, patient: bool = False
    ) -> Entry | None | bool:
        """After a failed enqueue: the entry (it is there after all), None (known not there), or False
        (cannot tell). Only a failed COMMIT leaves it uncertain; everything else rolled back."""
        if not err.context.get("uncertain"):
            log.warning("outbox-enqueue-failed", code=err.code, error=err.message)
            return None
        deadline = time.monotonic() + (VERIFY_SECONDS if patient else 1.0)
        while True:
            try:
                return await asyncio.to_thread(self.store.by_key, key)  # None: rolled back after all
            except OutboxError as read_err:
                if time.monotonic() >= deadline:
                    log.error("outbox-enqueue-uncertain", key=key[:8], error=read_err.message)
                    return False
            await asyncio.sleep(0.2)

    def _not_saved(self, err: OutboxError, key: str, *fields: Any) -> Queued:
        service, action, method, path, body, summary, language = fields
        reason = not_saved_reason(err.code, language)
        entry = self._unsaved_entry(key, FAILED, service, action, method, path, body, summary, language)
        return Queued(replace(entry, last_error=f"{err.code}: {reason}"), online=False, finished=True)

    def _unsaved_entry(self, key: str, state: str, *fields: Any) -> Entry:
        """An entry that is not in the store (id 0): what the tool reports when nothing could be saved."""
        service, action, method, path, body, summary, language = fields
        now = time.time()
        expiry = self.config.outbox.expiry_minutes * 60
        return Entry(
            id=0,
            key=key,
            service=service,
            action=action,
            method=method.upper(),
            path=path,
            body=body,
            summary=summary,
            language=language,
            depends_on=None,
            state=state,
            notify=NOTIFY_INLINE,
            created_at=now,
            expires_at=now + expiry,
            updated_at=now,
            next_attempt_at=0.0,
            attempts=0,
            last_error=None,
            result=None,
        )

    async def _wait_inline(self, entry: Entry) -> Entry:
        deadline = time.monotonic() + self.inline_wait_seconds
        if self.delivers_itself:
            try:
                took = await asyncio.to_thread(self.store.own)
            except OutboxOwned:
                took = None  # a daemon delivers this store: watch the entry like the daemon's tools do
            if took is not None:
                try:
                    await asyncio.wait_for(
                        self.dispatcher().drain(entry.service, self.inline_wait_seconds),
                        self.inline_wait_seconds + 0.5,
                    )
                except TimeoutError:
                    pass
                except OutboxOwned:
                    pass
                except Exception as err:  # delivery errors are the dispatcher's business; the entry is safe
                    log.warning("inline-delivery-failed", entry=entry.id, error=f"{type(err).__name__}: {err}")
                finally:
                    if took:
                        self.store.disown()
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
