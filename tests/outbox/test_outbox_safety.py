"""Issue 10, the outbox: each defect the review found, shown on real SQLite files and the real reference service.

Cancelled turns, a writer holding the lock, an uncertain commit, clock steps, restarts and reboots, a corrupt
file, two dispatchers, a service still busy with the same key, a full disk, and 4xx answers that are the
order's problem."""

from __future__ import annotations

import asyncio
import collections
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from helpers.clock import Clock, SteppedClock
from helpers.outbox import PIZZA, daemon, enqueue, order
from helpers.waiting import until
from structlog.testing import capture_logs

from agent.connectivity.monitor import ConnectivityMonitor
from agent.core.config import ServiceEndpoint
from agent.core.events import EventBus
from agent.devtools.reference_service import ReferenceService, loopback_config
from agent.outbox.dispatcher import Dispatcher
from agent.outbox.entries import (
    DELIVERED,
    FAILED,
    IN_FLIGHT,
    NOTIFY_ANNOUNCE,
    NOTIFY_INLINE,
    NOTIFY_TOLD,
    OPEN_STATES,
)
from agent.outbox.errors import OutboxError
from agent.outbox.store import OutboxStore
from agent.plugins.base import ToolContext
from agent.plugins.loader import ToolRegistry
from agent.services.client import MealsClient

T = 10.0


def notices_for(store: OutboxStore, entry_id: int) -> list[str]:
    return [a.text for a in store.pending_announcements() if a.entry_id == entry_id]


def registry_with(*plugins) -> ToolRegistry:
    registry = ToolRegistry()
    for plugin in plugins:
        registry.add_plugin(plugin)
    return registry


class Dispatching:
    """A store, monitor and dispatcher running against `service`, like the daemon runs them."""

    def __init__(self, service, tmp_path: Path, *, store_kwargs=None, clients=None, **dispatcher_kwargs) -> None:
        self.config = loopback_config(service.url, tmp_path / "outbox.db")
        self.store = OutboxStore(tmp_path / "outbox.db", **(store_kwargs or {}))
        self.monitor = ConnectivityMonitor(self.config, clients=dict(clients or {}))
        tuning = {
            "initial_backoff_seconds": 0.5,
            "max_backoff_seconds": 1.0,
            "jitter_seconds": 0.0,
            "poll_interval_seconds": 0.05,
        } | dispatcher_kwargs
        self.dispatcher = Dispatcher(self.store, self.config, monitor=self.monitor, clients=clients, **tuning)
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Dispatching:
        self.tasks = [asyncio.create_task(self.monitor.run()), asyncio.create_task(self.dispatcher.run())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), T)
        await asyncio.wait_for(self.monitor.aclose(), T)
        self.store.close()


# ------------------------------------------------------------------------------ 1. cancelled turns


@pytest.mark.parametrize(("restaurant_open", "outcome", "notice"), [
    (True, DELIVERED, "Your order is placed: a large pepperoni pizza from Luigi's Pizzeria, 89 yuan. "
                      "It should arrive in about 25 minutes."),
    (False, FAILED, "I couldn't place your order of a large pepperoni pizza from Luigi's Pizzeria, 89 yuan: "
                    "Luigi's Pizzeria is closed right now."),
])
async def test_cancelled_turn_still_announces_order(service, tmp_path, restaurant_open, outcome, notice):
    """Barge-in while the order is in flight: it is placed (or refused with a 409) and told exactly once."""
    async with daemon(service, tmp_path) as (config, store, _, meals, _):
        # Closed after the car read the catalogue: only the service's 409 can tell (a restaurant the catalogue
        # already shows closed is refused before anything is queued).
        assert await meals.catalogue() is not None
        service.set_restaurant_open("luigis", restaurant_open)
        service.slow(800)  # the request is in flight long enough to be interrupted
        ctx = ToolContext(config=config, language="en")
        spec = {t.name: t for t in meals.tools()}["order_meal"]
        turn = asyncio.create_task(spec.handler(ctx, PIZZA))
        await until(lambda: any(e.state == IN_FLIGHT for e in store.list()))
        turn.cancel()  # the driver barged in / `cabin-agent cancel` / a new `say`
        with pytest.raises(asyncio.CancelledError):
            await turn
        [entry] = store.list()
        await until(lambda: store.get(entry.id).state not in OPEN_STATES)
        await meals.access.settled()
        await asyncio.sleep(0.2)
        done = store.get(entry.id)
        notices = notices_for(store, entry.id)
    assert done.state == outcome
    assert done.notify == NOTIFY_ANNOUNCE
    assert notices == [notice]  # told once, by the announcer: nobody is left waiting inline
    assert len(service.orders()) == (1 if outcome == DELIVERED else 0)


async def test_cancel_while_the_commit_waits_still_announces_order(service, tmp_path):
    """Cancelled before the commit even landed (another writer held the file): the commit lands anyway,
    so the order is delivered and announced, never left inline."""
    async with daemon(service, tmp_path) as (config, store, _, meals, _):
        holder = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        ctx = ToolContext(config=config, language="en")
        spec = {t.name: t for t in meals.tools()}["order_meal"]
        turn = asyncio.create_task(spec.handler(ctx, PIZZA))
        await asyncio.sleep(0.4)
        turn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await turn
        holder.execute("COMMIT")
        holder.close()
        await until(lambda: bool(store.list()) and store.list()[0].state == DELIVERED)
        await meals.access.settled()
        [entry] = store.list()
        notices = notices_for(store, entry.id)
    assert entry.notify == NOTIFY_ANNOUNCE
    assert notices == [
        "Your order is placed: a large pepperoni pizza from Luigi's Pizzeria, 89 yuan. "
        "It should arrive in about 25 minutes."
    ]


def test_finished_outcome_the_tool_never_took_is_announced_once(tmp_path):
    store = OutboxStore(tmp_path / "o.db")
    text_for = lambda e: (f"told {e.id}", "normal")  # noqa: E731
    taken, dropped, crashed = (enqueue(store, order(k), notify=NOTIFY_INLINE) for k in range(3))
    for e in (taken, dropped, crashed):
        store.finish(e.id, DELIVERED, announcement="unused while inline")
    assert store.settle_waiter(taken.id, tell_inline=True).how == "told"
    assert store.settle_waiter(taken.id, tell_inline=False, text_for=text_for).how == "told"  # not twice
    first = store.settle_waiter(dropped.id, tell_inline=False, text_for=text_for)
    again = store.settle_waiter(dropped.id, tell_inline=False, text_for=text_for)
    assert (first.how, again.how) == ("announced", "announce")
    # The car died between the finish and the tool taking it: the next start announces it.
    assert store.recover(text_for) == 0
    texts = collections.Counter(a.entry_id for a in store.pending_announcements())
    assert texts == {dropped.id: 1, crashed.id: 1}
    assert store.get(taken.id).notify == NOTIFY_TOLD
    store.close()


# ------------------------------------------------------------------------------ 2. lock contention, uncertain commits


async def test_enqueue_held_up_by_another_writer_says_nothing_was_ordered(service, tmp_path):
    """Another writer holds the file past the tool's budget: the driver hears the truth, and nothing is ordered
    behind her back once the lock goes."""
    async with daemon(service, tmp_path) as (config, store, _, meals, _):
        registry = registry_with(meals)
        holder = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(6.0, lambda: (holder.execute("COMMIT"), holder.close()))
        release.start()
        try:
            result = await registry.call("order_meal", PIZZA, ToolContext(config=config, language="en"), timeout_s=5.0)
        finally:
            release.join()
        await meals.access.settled()
        await asyncio.sleep(1.5)  # time for a late commit and a dispatch, if there were one
        entries = store.list()
    assert not result.ok
    assert result.say == (
        "I couldn't place your order of a large pepperoni pizza from Luigi's Pizzeria, 89 yuan: "
        "the car couldn't save it just now, so nothing was ordered. Please ask again."
    )
    assert entries == [] and service.orders() == []


class CommitThenFail:
    """A connection whose next COMMIT lands on disk and then reports an error (an fsync that failed late)."""

    def __init__(self, db: sqlite3.Connection, error: str) -> None:
        self._db, self._error, self.armed = db, error, True

    def execute(self, sql, *args):
        result = self._db.execute(sql, *args)
        if sql == "COMMIT" and self.armed:
            self.armed = False
            raise sqlite3.OperationalError(self._error)
        return result

    def __getattr__(self, name):
        return getattr(self._db, name)


async def test_uncertain_commit_never_reports_failure_for_a_stored_order(service, tmp_path):
    async with daemon(service, tmp_path) as (config, store, _, meals, _):
        store._db = CommitThenFail(store._db, "disk I/O error")
        result = await registry_with(meals).call("order_meal", PIZZA, ToolContext(config=config, language="en"))
        await meals.access.settled()
        [entry] = store.list()
    assert result.ok, result
    assert result.say == "Ordered. It should arrive at home in about 25 minutes."
    assert entry.state == DELIVERED and len(service.orders()) == 1


# ------------------------------------------------------------------------------ 3. clocks


async def test_clock_step_back_does_not_delay_retry(service, tmp_path):
    wall = SteppedClock(time.time)
    async with Dispatching(service, tmp_path, store_kwargs={"clock": wall}) as run:
        await asyncio.wait_for(run.monitor.wait_online("meals", T), T + 1)
        service.go_down()
        e = enqueue(run.store, order(1))
        await until(lambda: run.store.get(e.id).attempts >= 1 and not run.monitor.is_online("meals"))
        wall.offset = -86_400.0  # the clock steps back a day while the retry is scheduled
        service.come_up()
        await until(lambda: run.store.get(e.id).state == DELIVERED, 10.0)
    assert len(service.orders()) == 1


async def test_clock_step_forward_does_not_expire_queued_order(service, tmp_path):
    wall = SteppedClock(time.time)
    service.go_down()
    async with Dispatching(service, tmp_path, store_kwargs={"clock": wall}) as run:
        await until(lambda: run.monitor.state("meals").online is False)
        e = enqueue(run.store, order(2), expiry_seconds=1800)
        await asyncio.sleep(0.2)
        wall.offset = 2 * 86_400.0  # a GPS fix moves the clock two days ahead
        await asyncio.sleep(0.3)
        service.come_up()
        await until(lambda: run.store.get(e.id).state not in OPEN_STATES)
        done = run.store.get(e.id)
    assert done.state == DELIVERED, done.last_error


async def test_car_clock_a_day_behind_does_not_expire_orders_at_the_service(service, tmp_path):
    """The whole car's wall clock is a day behind the service's: Not-After is sent on the service's clock."""
    wall = SteppedClock(time.time)
    wall.offset = -86_400.0
    client = MealsClient("meals", ServiceEndpoint(base_url=service.url, timeout_seconds=1.0), wall_clock=wall)
    async with Dispatching(service, tmp_path, store_kwargs={"clock": wall}, clients={"meals": client}) as run:
        e = enqueue(run.store, order(3), expiry_seconds=600)
        await until(lambda: run.store.get(e.id).state not in OPEN_STATES)
        done = run.store.get(e.id)
    await client.aclose()
    assert done.state == DELIVERED, done.last_error
    assert abs(client.server_time() - time.time()) < 3


def test_expiry_is_honest_across_restarts_and_reboots(tmp_path):
    path = tmp_path / "o.db"
    wall, mono = SteppedClock(time.time), Clock(1000.0)
    store = OutboxStore(path, clock=wall, monotonic=mono, boot_id=lambda: "boot-1")
    e = enqueue(store, order(4), expiry_seconds=600)
    store.close()

    # A daemon restart in the same boot, 5 minutes later, with the wall clock stepped back a day meanwhile:
    # the boot clock decides, so 300 s of life are gone, not -86,100.
    mono.now += 300
    wall.offset = -86_400.0
    store = OutboxStore(path, clock=wall, monotonic=mono, boot_id=lambda: "boot-1")
    assert store.get(e.id).expires_at - store.now() == pytest.approx(300, abs=1)
    store.close()

    # A reboot (a new boot id, the boot clock from zero): the downtime is what the wall clock says passed.
    wall.offset += 200
    store = OutboxStore(path, clock=wall, monotonic=Clock(5.0), boot_id=lambda: "boot-2")
    assert store.get(e.id).expires_at - store.now() == pytest.approx(100, abs=1)
    store.close()

    # Another reboot with the wall clock behind the last checkpoint: the downtime is unknown, counted as none,
    # and the outbox clock never runs backwards.
    wall.offset -= 3600
    store = OutboxStore(path, clock=wall, monotonic=Clock(3.0), boot_id=lambda: "boot-3")
    remaining = store.get(e.id).expires_at - store.now()
    assert 0 < remaining <= 100.5
    store.close()


# ------------------------------------------------------------------------------ 4. a corrupt file


def _truncated_store(path: Path) -> bytes:
    store = OutboxStore(path)
    for k in range(200):
        enqueue(store, order(k) | {"pad": "x" * 400})
    store.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
async def test_corrupt_outbox_is_set_aside_and_services_open(tmp_path, damage):
    from agent.services.wiring import open_services

    path = tmp_path / "outbox.sqlite3"
    if damage == "garbage":
        path.write_bytes(os.urandom(8192))
        (tmp_path / "outbox.sqlite3-wal").write_bytes(b"not a wal either")
    bad = path.read_bytes() if damage == "garbage" else _truncated_store(path)
    config = loopback_config("http://127.0.0.1:9", path)
    with capture_logs() as logs:
        wiring = await open_services(config, EventBus())
    try:
        owed = wiring.store.pending_announcements()
        e = enqueue(wiring.store, order(1))  # the fresh store works
        assert wiring.store.get(e.id).state == "pending"
    finally:
        await wiring.aclose()
    assert wiring.set_aside is not None
    moved = wiring.set_aside.moved_to
    assert moved[0].name.startswith("outbox.corrupt-") and moved[0].suffix == ".sqlite3"
    assert moved[0].read_bytes() == bad  # kept, byte for byte, never deleted
    if damage == "garbage":
        assert Path(str(moved[0]) + "-wal").read_bytes() == b"not a wal either"
    assert [a.priority for a in owed] == ["high"] and "set them aside" in owed[0].text
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["outbox-corrupt-set-aside"]


# ------------------------------------------------------------------------------ 5. one owner per store


async def test_second_dispatcher_refuses(service, tmp_path):
    async with Dispatching(service, tmp_path) as first:
        await until(lambda: first.store.owned)
        config = loopback_config(service.url, tmp_path / "outbox.db")
        second_store = OutboxStore(tmp_path / "outbox.db")
        second = Dispatcher(second_store, config, lock_wait_seconds=0.2)
        with pytest.raises(OutboxError) as err:
            await asyncio.wait_for(second.run(), T)
        # Readers never need the lock: listing (and the control socket's clients) work while it is owned.
        e = enqueue(first.store, order(5))
        assert [x.id for x in second_store.list()] == [e.id]
        second_store.close()
        await until(lambda: first.store.get(e.id).state == DELIVERED)
    assert err.value.code == "outbox-owned"
    assert f"pid {os.getpid()}" in err.value.message and "outbox.db.lock" in err.value.message
    assert service.key_counts()[e.key]["requests"] == 1  # sent once, by the one owner


async def test_second_daemon_refuses_to_open_the_store(tmp_path):
    from agent.services.wiring import open_services

    config = loopback_config("http://127.0.0.1:9", tmp_path / "outbox.sqlite3")
    wiring = await open_services(config, EventBus())
    try:
        with pytest.raises(OutboxError) as err:
            await open_services(config.model_copy(), EventBus())
    finally:
        await wiring.aclose()
    assert err.value.code == "outbox-owned" and err.value.exit_status == 69
    again = await open_services(config, EventBus())  # the first one's lock went with it
    await again.aclose()


# ------------------------------------------------------------------------------ 6. 409 idempotency-key-in-use


class StillProcessing(ReferenceService):
    """The reference service while it is still working on a key: the first `busy` POSTs of each key are answered
    409 idempotency-key-in-use, as it answers a concurrent request with the same key."""

    def __init__(self, *args, busy: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.busy, self.seen = busy, collections.Counter()

    def handle(self, method, raw_path, headers, body):
        key = headers.get("idempotency-key")
        if method == "POST" and key and self.seen[key] < self.busy:
            self.seen[key] += 1
            return 409, {"error": {"code": "idempotency-key-in-use", "message": "still processing this key"}}
        return super().handle(method, raw_path, headers, body)


async def test_idempotency_key_in_use_is_retried_not_failed(tmp_path):
    with StillProcessing(tmp_path / "service.db") as service:
        async with Dispatching(service, tmp_path, initial_backoff_seconds=0.05) as run:
            e = enqueue(run.store, order(6))
            await until(lambda: run.store.get(e.id).state not in OPEN_STATES)
            done = run.store.get(e.id)
            online = run.monitor.is_online("meals")
        assert done.state == DELIVERED, done.last_error
        assert done.attempts == 3 and done.key == e.key  # the same key each time
        assert online
        assert len(service.orders()) == 1


# ------------------------------------------------------------------------------ 7. disk full


def test_disk_full_reports_the_real_error(tmp_path):
    store = OutboxStore(tmp_path / "o.db")
    enqueue(store, order(0))
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")  # a real SQLITE_FULL, no disk image needed
    with pytest.raises(OutboxError) as err:
        enqueue(store, order(1) | {"pad": "x" * 50_000})
    assert err.value.code == "outbox-disk-full"
    assert "database or disk is full" in err.value.message and "rollback" not in err.value.message
    assert err.value.context["uncertain"] is False
    store._db.execute(f"PRAGMA max_page_count={pages + 1000}")
    assert enqueue(store, order(2)).state == "pending"  # the store is usable once there is room
    store.close()


@pytest.mark.parametrize("rolled_back_by_sqlite", [True, False])
def test_full_disk_at_commit_reports_the_real_error(tmp_path, rolled_back_by_sqlite):
    store = OutboxStore(tmp_path / "o.db")
    real = store._db

    class FullAtCommit:
        armed = True

        def execute(self, sql, *args):
            if sql == "COMMIT" and self.armed:
                self.armed = False
                if rolled_back_by_sqlite:
                    real.execute("ROLLBACK")  # what SQLite does itself after SQLITE_FULL
                raise sqlite3.OperationalError("database or disk is full")
            return real.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(real, name)

    store._db = FullAtCommit()
    with pytest.raises(OutboxError) as err:
        enqueue(store, order(1))
    assert err.value.code == "outbox-disk-full"
    assert "database or disk is full" in err.value.message and "rollback" not in err.value.message
    store._db = real
    assert store.list() == []  # nothing half-written
    assert enqueue(store, order(2)).state == "pending"  # and no transaction left open
    store.close()


# ------------------------------------------------------------------------------ 8. 4xx is the order's problem


async def test_4xx_is_the_orders_problem_not_the_links(service, tmp_path):
    service.set_restaurant_open("luigis", False)
    config = loopback_config(service.url, tmp_path / "outbox.db")
    # A health path the service does not have: it answers 404, which proves it is there.
    config = config.model_copy(
        update={"services": config.services.model_copy(update={
            "meals": config.services.meals.model_copy(update={"health_path": "/no-such-health"}),
        })}
    )
    store = OutboxStore(tmp_path / "outbox.db")
    monitor = ConnectivityMonitor(config)
    flips: list[bool] = []
    monitor.add_listener(lambda name, online: flips.append(online) if name == "meals" else None)
    dispatcher = Dispatcher(store, config, monitor=monitor, poll_interval_seconds=0.05)
    tasks = [asyncio.create_task(monitor.run()), asyncio.create_task(dispatcher.run())]
    try:
        refused = [enqueue(store, order(k)) for k in range(4)]
        await until(lambda: all(store.get(e.id).state == FAILED for e in refused))
        told = [notices_for(store, e.id) for e in refused]
        assert flips == [True] and monitor.is_online("meals")
        # A 5xx does count against the link.
        service.set_restaurant_open("luigis", True)
        service.fail_next(10, 500)
        e = enqueue(store, order(9))
        await until(lambda: False in flips)
        service.reset_faults()
        await until(lambda: store.get(e.id).state == DELIVERED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await monitor.aclose()
        store.close()
    assert all(len(t) == 1 and "is closed right now" in t[0] for t in told)
