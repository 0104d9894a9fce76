"""The dispatcher against the real reference service: online, offline then online, flapping, 5xx then recovery,
4xx, slow service, expiry, in order per service. Every entry's side effect is counted on the service side."""

from __future__ import annotations

import asyncio
import collections
from contextlib import asynccontextmanager

from helpers.outbox import enqueue, order
from helpers.waiting import until

from agent.connectivity.monitor import ConnectivityMonitor
from agent.core.events import EventBus
from agent.devtools.reference_service import loopback_config
from agent.outbox.dispatcher import Dispatcher
from agent.outbox.entries import DELIVERED, EXPIRED, FAILED, OPEN_STATES
from agent.outbox.store import OutboxStore

T = 10.0


@asynccontextmanager
async def running(service, tmp_path, *, events=None, **config_overrides):
    config = loopback_config(service.url, tmp_path / "outbox.db", **config_overrides)
    store = OutboxStore(tmp_path / "outbox.db")
    monitor = ConnectivityMonitor(config, events)
    dispatcher = Dispatcher(
        store,
        config,
        monitor=monitor,
        events=events,
        initial_backoff_seconds=0.02,
        max_backoff_seconds=0.1,
        jitter_seconds=0.02,
        poll_interval_seconds=0.05,
    )
    tasks = [asyncio.create_task(monitor.run()), asyncio.create_task(dispatcher.run())]
    try:
        yield store, dispatcher, monitor
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), T)
        await asyncio.wait_for(monitor.aclose(), T)
        store.close()


async def settled(store, ids, limit_seconds=T):
    async def wait():
        while any(store.get(i).state in OPEN_STATES for i in ids):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), limit_seconds)
    return [store.get(i) for i in ids]


def effects_by_note(service):
    return collections.Counter(e["body"].get("note") for e in service.effects())


async def test_online_order_is_delivered_once(service, tmp_path):
    async with running(service, tmp_path) as (store, _, _):
        e = enqueue(store, order(1))
        [done] = await settled(store, [e.id])
    assert done.state == DELIVERED and done.attempts == 1 and done.result["order"]["id"] == "M1001"
    assert effects_by_note(service) == {"order-1": 1}


async def test_offline_then_online_delivers_and_announces(service, tmp_path):
    bus = EventBus()
    announcements = []

    async def listen():
        async for event in bus.subscribe():
            if event.type == "announcement":
                announcements.append(event.data)

    listener = asyncio.create_task(listen())
    service.go_down()
    try:
        async with running(service, tmp_path, events=bus) as (store, _, monitor):
            await until(lambda: monitor.state("meals").online is False, T)
            e = enqueue(store, order(2))
            await asyncio.sleep(0.3)
            assert store.get(e.id).state == "pending" and store.get(e.id).attempts == 0
            assert not service.effects()
            service.come_up()
            [done] = await settled(store, [e.id])
            await until(lambda: announcements, T)
            stored = store.pending_announcements()
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    assert done.state == DELIVERED
    assert announcements[0]["text"].startswith("Your order is placed: a large pepperoni pizza")
    assert [a.text for a in stored] == [announcements[0]["text"]]  # kept across a restart until spoken
    assert effects_by_note(service) == {"order-2": 1}


async def test_flapping_link_delivers_everything_once_and_in_order(service, tmp_path):
    async def flap():
        for _ in range(8):
            service.go_down()
            await asyncio.sleep(0.08)
            service.come_up()
            await asyncio.sleep(0.12)

    async with running(service, tmp_path) as (store, _, _):
        flapper = asyncio.create_task(flap())
        ids = []
        for k in range(12):
            ids.append(enqueue(store, order(k)).id)
            if k % 3 == 2:
                ids.append(
                    enqueue(
                        store,
                        {"day": f"day {k}", "note": f"move-{k}"},
                        service="deliveries",
                        path="/deliveries/P2/reschedule",
                        action="reschedule_delivery",
                        summary="your phone charger",
                    ).id
                )
            await asyncio.sleep(0.05)
        await asyncio.wait_for(flapper, T)
        entries = await settled(store, ids, limit_seconds=20)
    assert all(e.state == DELIVERED for e in entries)
    counts = effects_by_note(service)
    assert all(n == 1 for n in counts.values()) and len(counts) == len(ids)
    meals_order = [e["body"]["note"] for e in service.effects("order")]
    assert meals_order == [f"order-{k}" for k in range(12)]  # in order per service


async def test_5xx_then_recovery_retries_with_the_same_key(service, tmp_path):
    service.fail_next(3, 503)
    async with running(service, tmp_path) as (store, _, _):
        e = enqueue(store, order(3))
        [done] = await settled(store, [e.id])
    assert done.state == DELIVERED and done.attempts == 4
    assert effects_by_note(service) == {"order-3": 1}


async def test_4xx_fails_and_the_driver_is_told_why(service, tmp_path):
    service.set_restaurant_open("luigis", False)
    async with running(service, tmp_path) as (store, _, _):
        e = enqueue(store, order(4))
        [done] = await settled(store, [e.id])
        notice = store.pending_announcements()
    assert done.state == FAILED and done.attempts == 1 and "closed" in done.last_error
    assert notice[0].priority == "high"
    assert notice[0].text == (
        "I couldn't place your order of a large pepperoni pizza from Luigi's Pizzeria, 89 yuan: "
        "Luigi's Pizzeria is closed right now."
    )
    assert not service.effects()


async def test_slow_service_lost_answer_is_replayed_not_doubled(service, tmp_path):
    # The service commits, then answers after the client gave up: the retry must get the stored first result.
    service.slow(0, after_commit_ms=1500)
    async with running(service, tmp_path, services={"meals": {"timeout_seconds": 0.5}}) as (store, _, _):
        e = enqueue(store, order(5))
        await until(lambda: store.get(e.id).attempts >= 2, T)
        service.slow(0, 0)
        [done] = await settled(store, [e.id])
    assert done.state == DELIVERED and done.attempts >= 2
    assert effects_by_note(service) == {"order-5": 1}
    assert service.key_counts()[done.key]["replays"] >= 1


async def test_never_sent_entry_expires_with_a_notice(service, tmp_path):
    service.go_down()
    async with running(service, tmp_path) as (store, _, monitor):
        await until(lambda: monitor.state("meals").online is False, T)
        e = enqueue(store, order(6), expiry_seconds=0.2)
        [done] = await settled(store, [e.id])
        notice = store.pending_announcements()
        service.come_up()
    assert done.state == EXPIRED and done.attempts == 0
    assert notice[0].text.startswith("I didn't place your order of a large pepperoni pizza")
    assert "Ask me again" in notice[0].text
    assert not service.effects()


async def test_sent_entry_past_expiry_is_decided_by_the_service(service, tmp_path):
    # Accepted by the service, answer lost, then expired: the replay says it was placed, so it is delivered.
    store = OutboxStore(tmp_path / "outbox.db")
    accepted = enqueue(store, order(7), expiry_seconds=0.5)
    refused = enqueue(store, order(8), expiry_seconds=0.5)
    from agent.core.config import ServiceEndpoint
    from agent.services.client import MealsClient

    async with MealsClient("meals", ServiceEndpoint(base_url=service.url)) as client:
        await asyncio.wait_for(
            client.request("POST", "/orders", json=accepted.body, idempotency_key=accepted.key), T
        )
    store.begin_attempt(accepted.id)
    store.begin_attempt(refused.id)  # "sent", but it never arrived
    store.close()
    await asyncio.sleep(0.6)
    async with running(service, tmp_path) as (store, _, _):
        done = await settled(store, [accepted.id, refused.id])
    assert [e.state for e in done] == [DELIVERED, EXPIRED]
    assert effects_by_note(service) == {"order-7": 1}


async def test_cancel_waits_for_its_order_and_uses_its_id(service, tmp_path):
    service.go_down()
    async with running(service, tmp_path) as (store, _, monitor):
        await until(lambda: monitor.state("meals").online is False, T)
        o = enqueue(store, order(9))
        c = enqueue(
            store,
            {},
            path="/orders/{order_id}/cancel",
            action="cancel_order",
            depends_on=o.key,
            summary="your order from Luigi's Pizzeria",
        )
        service.come_up()
        done = await settled(store, [o.id, c.id])
    assert [e.state for e in done] == [DELIVERED, DELIVERED]
    assert done[1].result["order"]["status"] == "cancelled"
    assert [e["kind"] for e in service.effects()] == ["order", "cancel"]


async def test_out_of_attempts_fails_with_a_notice(service, tmp_path):
    service.fail_next(100, 500)
    async with running(service, tmp_path, outbox={"max_attempts": 3}) as (store, _, _):
        e = enqueue(store, order(10))
        [done] = await settled(store, [e.id])
    assert done.state == FAILED and done.attempts == 3 and "gave up" in done.last_error

