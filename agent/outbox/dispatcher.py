"""Delivers outbox entries to their services: in order per service, only when online, exactly once per key.

One loop per service sends that service's oldest open entry (head of line), so "cancel my order" can never
overtake the order. Timeouts and 5xx are retried with exponential backoff and jitter (tenacity), always with
the entry's own Idempotency-Key, so a retry after a lost answer or a crash cannot place a second order. A 2xx
marks it delivered; a 4xx fails it and the driver is told why; an entry that never left the car before its
expiry expires with a notice. Entries that may have reached the service are never expired locally: they are
re-sent with their key and a `Not-After` deadline, and the service's answer (the stored first result, or 410)
decides.

Run it as a supervised task in the daemon (`await dispatcher.run()`), or as its own process (`python -m
agent.outbox.dispatcher`, `cabin-agent outbox dispatch`). Either way it owns the store (a lock next to the
file): a second dispatcher on the same file refuses with OutboxOwned instead of sending everything twice.
Times are on the outbox clock (agent/outbox/clock.py), so a wall-clock step neither delays nor expires
anything; the `Not-After` deadline is sent on the service's own clock (learned from its `Date` header)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tenacity import AsyncRetrying, retry_if_exception, stop_any, wait_exponential_jitter
from tenacity.stop import stop_base

from agent.core.errors import ServiceError
from agent.core.logging import get_logger
from agent.outbox.entries import CANCELLED, DELIVERED, EXPIRED, FAILED, Entry, Transition
from agent.outbox.faults import crashpoint
from agent.outbox.messages import announcement_for, outcome_text
from agent.outbox.store import OutboxStore
from agent.services.client import ServiceClient, client_for, counts_against_link

if TYPE_CHECKING:
    from agent.connectivity.monitor import ConnectivityMonitor
    from agent.core.config import Config
    from agent.core.events import EventBus

log = get_logger("outbox")

SERVICES = ("meals", "deliveries")


def _retryable(err: BaseException) -> bool:
    return isinstance(err, ServiceError) and err.retryable


def _backoff(first_seconds: float, max_seconds: float, jitter_seconds: float) -> wait_exponential_jitter:
    """Exponential backoff with jitter; tenacity 9 renamed `initial` to `multiplier`, 8.x only knows `initial`."""
    import inspect

    params = inspect.signature(wait_exponential_jitter.__init__).parameters
    first = {"multiplier": first_seconds} if "multiplier" in params else {"initial": first_seconds}
    return wait_exponential_jitter(**first, max=max_seconds, jitter=jitter_seconds)


class _stop_when(stop_base):
    """A tenacity stop condition from a plain predicate (offline, expired, entry gone)."""

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: Any) -> bool:
        return self.predicate()


class Dispatcher:
    def __init__(
        self,
        store: OutboxStore,
        config: Config,
        *,
        monitor: ConnectivityMonitor | None = None,
        events: EventBus | None = None,
        clients: dict[str, ServiceClient] | None = None,
        services: tuple[str, ...] = SERVICES,
        initial_backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        jitter_seconds: float = 0.5,
        poll_interval_seconds: float = 1.0,
        request_timeout_seconds: float | None = None,
        lock_wait_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.config = config
        self.monitor = monitor
        self.events = events
        self.services = services
        self.max_attempts = config.outbox.max_attempts
        self.expiry_minutes = config.outbox.expiry_minutes
        self.initial_backoff_seconds = initial_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.jitter_seconds = jitter_seconds
        self.poll_interval_seconds = poll_interval_seconds
        self._request_timeout_seconds = request_timeout_seconds
        self.lock_wait_seconds = lock_wait_seconds
        self._clients = dict(clients or {})
        self._owned: list[ServiceClient] = []
        self._wake: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ plumbing

    def client(self, service: str) -> ServiceClient:
        if service not in self._clients:
            client = client_for(service, self.config, timeout_seconds=self._request_timeout_seconds)
            self._clients[service] = client
            self._owned.append(client)
        return self._clients[service]

    def _online(self, service: str) -> bool:
        return self.monitor is None or self.monitor.is_online(service)

    def wake(self, service: str | None = None) -> None:
        """Look at the store again now (a new entry, a retry from the CLI, a connectivity change)."""
        for name, event in self._wake.items():
            if service is None or name == service:
                event.set()

    def _on_store_change(self) -> None:
        # Called from whichever thread committed; hop onto our loop.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.wake)

    async def _wait(self, service: str, seconds: float) -> None:
        event = self._wake.setdefault(service, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(0.01, seconds))
        event.clear()

    async def aclose(self) -> None:
        for client in self._owned:
            await client.aclose()
        self._owned.clear()

    # ------------------------------------------------------------ the loops

    async def run(self) -> None:
        """Deliver until cancelled. Each service's loop survives any error (logged, backed off)."""
        self._loop = asyncio.get_running_loop()
        # One dispatcher per file: refuse (OutboxOwned) rather than send every entry a second time.
        took_ownership = await asyncio.to_thread(self.store.own, wait_seconds=self.lock_wait_seconds)
        try:
            reopened = await asyncio.to_thread(self.store.recover, self.announcement_for)
            if reopened:
                log.info("outbox-recovered", open_entries=reopened)
            await self._run_loops()
        finally:
            if took_ownership:
                self.store.disown()

    def announcement_for(self, entry: Entry) -> tuple[str, str]:
        """(text, priority) of the notice a finished entry owes the driver when no tool is there to say it."""
        return announcement_for(entry, expiry_minutes=self.expiry_minutes)

    async def _run_loops(self) -> None:
        self.store.add_listener(self._on_store_change)
        if self.monitor is not None:
            self.monitor.add_listener(lambda service, online: self.wake(service))
        for service in self.services:
            self._wake.setdefault(service, asyncio.Event())
        tasks = {asyncio.create_task(self._service_loop(s), name=f"outbox:{s}") for s in self.services}
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.store.remove_listener(self._on_store_change)
            await self.aclose()

    async def _service_loop(self, service: str) -> None:
        backoff = self.initial_backoff_seconds
        while True:
            try:
                delay = await self.step(service)
                backoff = self.initial_backoff_seconds
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug or a broken database must not end delivery for good: log, back off, try again.
                log.exception("outbox-loop-error", service=service)
                delay, backoff = backoff, min(self.max_backoff_seconds, backoff * 2)
            if delay:
                await self._wait(service, delay)

    async def step(self, service: str) -> float:
        """Handle the head entry of `service` once. Returns how long to wait before the next step (0: now)."""
        entry = await asyncio.to_thread(self.store.head, service)
        if entry is None:
            return self.poll_interval_seconds
        now = self.store.now()
        if now >= entry.expires_at and not entry.ever_sent:
            await self._finish(entry, EXPIRED, error="expired before it could be sent")
            return 0
        if entry.depends_on:
            resolved, wait_seconds = await self._resolve_dependency(entry)
            if resolved is None:
                return wait_seconds
            entry = resolved
        if not self._online(service):
            return self.poll_interval_seconds
        if entry.next_attempt_at > now:
            return min(entry.next_attempt_at - now, self.poll_interval_seconds)
        await self.deliver(entry)
        return 0

    async def drain(self, service: str, timeout_seconds: float) -> None:
        """Deliver what is due for `service` now, without the background loop (one-shot `say`)."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            head = await asyncio.to_thread(self.store.head, service)
            if head is None or not self._online(service) or head.next_attempt_at > self.store.now():
                return
            remaining = deadline - time.monotonic()
            await asyncio.wait_for(self.step(service), remaining)

    # ------------------------------------------------------------ one entry

    async def deliver(self, entry: Entry) -> Entry:
        """Send one entry until it is delivered, fails, or must wait (offline, expired, out of attempts)."""
        service = entry.service
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=_backoff(self.initial_backoff_seconds, self.max_backoff_seconds, self.jitter_seconds),
            stop=stop_any(
                _stop_when(lambda: not self._online(service)),
                _stop_when(lambda: attempts_made[0] >= self.max_attempts),
            ),
            before_sleep=lambda rs: log.info(
                "outbox-retry",
                entry=entry.id,
                service=service,
                attempt=rs.attempt_number,
                wait_seconds=round(rs.upcoming_sleep, 2),
                error=str(rs.outcome.exception()),
            ),
            reraise=True,
        )
        current = entry
        attempts_made = [entry.attempts]  # persisted attempts, including those before a restart

        async def attempt_once() -> Entry:
            attempts_made[0] += 1
            return await self._attempt(current)

        try:
            async for attempt in retrying:
                with attempt:
                    current = await attempt_once()
        except ServiceError as err:
            current = await asyncio.to_thread(self.store.get, entry.id)
            if current.is_open and current.attempts >= self.max_attempts:
                await self._finish(
                    current,
                    FAILED,
                    error=f"gave up after {current.attempts} attempts: {err.message}",
                    detail="the service did not answer after many tries",
                    priority="high",
                )
            # Otherwise: offline now; the entry stays pending with its key and the loop waits for the link.
        return await asyncio.to_thread(self.store.get, entry.id)

    async def _attempt(self, entry: Entry) -> Entry:
        crashpoint("before-send")
        fresh = await asyncio.to_thread(self.store.begin_attempt, entry.id)
        if not fresh.is_open:
            return fresh  # cancelled from the CLI meanwhile
        entry = _with_path(fresh, entry.path)  # keep a path resolved from a dependency
        crashpoint("in-flight")
        log.info(
            "outbox-send",
            entry=entry.id,
            service=entry.service,
            action=entry.action,
            attempt=entry.attempts,
            key=entry.key[:8],
        )
        client = self.client(entry.service)
        # The deadline on the service's clock: our wall clock may be a day off after a step.
        not_after = client.server_time() + (entry.expires_at - self.store.now())
        try:
            result = await client.request(
                entry.method,
                entry.path,
                json=entry.body,
                idempotency_key=entry.key,
                not_after=not_after,
            )
        except ServiceError as err:
            if self.monitor is not None:
                # Only a transport error, a timeout or a 5xx counts against the link; a 4xx is an answer, so
                # the link is fine and the problem is the order's.
                self.monitor.report(entry.service, not counts_against_link(err))
            if err.retryable:
                backoff_hint = self.store.now() + self.initial_backoff_seconds
                await asyncio.to_thread(
                    self.store.retry_later, entry.id, f"{err.code}: {err.message}", backoff_hint
                )
                raise
            if err.status == 410:
                await self._finish(entry, EXPIRED, error=f"{err.code}: {err.message}")
            else:
                await self._finish(
                    entry, FAILED, error=f"{err.code}: {err.message}", detail=err.message, priority="high"
                )
            return await asyncio.to_thread(self.store.get, entry.id)
        crashpoint("after-response")
        if self.monitor is not None:
            self.monitor.report(entry.service, True)
        transition = await self._finish(entry, DELIVERED, result=result)
        return transition.entry

    async def _resolve_dependency(self, entry: Entry) -> tuple[Entry | None, float]:
        """Fill the path from the entry it depends on (a cancel needs the order's id).

        (entry, 0) to send now; (None, 0) when it was settled without sending; (None, seconds) to wait for the
        dependency, which only happens when it belongs to another service (same-service order is guaranteed)."""
        dep = await asyncio.to_thread(self.store.by_key, entry.depends_on or "")
        if dep is None or dep.state in (FAILED, EXPIRED, CANCELLED):
            # The order was never placed, so there is nothing to cancel; its own notice told the driver.
            reason = "its order is unknown" if dep is None else f"its order was {dep.state}"
            await asyncio.to_thread(self.store.finish, entry.id, CANCELLED, error=f"nothing to do: {reason}")
            return None, 0.0
        if dep.is_open:
            return None, self.poll_interval_seconds
        order = (dep.result or {}).get("order") or {}
        if "{order_id}" in entry.path and order.get("id"):
            entry = _with_path(entry, entry.path.replace("{order_id}", str(order["id"])))
        return entry, 0.0

    async def _finish(
        self,
        entry: Entry,
        state: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        detail: str | None = None,
        priority: str = "normal",
    ) -> Transition:
        draft = _with_result(entry, result)
        text = outcome_text(draft, state, detail or error, expiry_minutes=self.expiry_minutes)
        transition = await asyncio.to_thread(
            self.store.finish,
            entry.id,
            state,
            result=result,
            error=error,
            announcement=text,
            priority=priority,
        )
        log.info(
            "outbox-finished",
            entry=entry.id,
            service=entry.service,
            action=entry.action,
            state=state,
            attempts=transition.entry.attempts,
            error=error,
        )
        if self.events is not None:
            self.events.publish(
                "outbox",
                entry_id=entry.id,
                service=entry.service,
                action=entry.action,
                state=state,
                error=error,
            )
            ann = transition.announcement
            if ann is not None:
                ann.publish(self.events)
        return transition


def _with_path(entry: Entry, path: str) -> Entry:
    from dataclasses import replace

    return replace(entry, path=path)


def _with_result(entry: Entry, result: dict[str, Any] | None) -> Entry:
    from dataclasses import replace

    return replace(entry, result=result) if result is not None else entry


# ---------------------------------------------------------------- standalone process


async def run_standalone(config: Config, *, probe: bool = True, **dispatcher_kwargs: Any) -> None:
    """The dispatcher as its own process: its store, its connectivity monitor, until SIGTERM/cancel."""
    from agent.connectivity.monitor import ConnectivityMonitor
    from agent.core.config import outbox_path
    from agent.outbox.recovery import open_owned

    store, _ = await asyncio.to_thread(open_owned, outbox_path(config), language=config.language)
    monitor = ConnectivityMonitor(config) if probe else None
    dispatcher = Dispatcher(store, config, monitor=monitor, **dispatcher_kwargs)
    tasks = [asyncio.create_task(dispatcher.run(), name="outbox:dispatcher")]
    if monitor is not None:
        tasks.append(asyncio.create_task(monitor.run(), name="connectivity:monitor"))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if monitor is not None:
            await monitor.aclose()
        store.close()


def main() -> None:
    import argparse

    from agent.core.config import load_config
    from agent.core.logging import setup_logging

    parser = argparse.ArgumentParser(description="Deliver the outbox until stopped.")
    parser.add_argument("--config", default=None)
    args = parser.parse_args()
    config = load_config(args.config)
    setup_logging(config.logging.level, config.logging.format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_standalone(config))


if __name__ == "__main__":
    main()
