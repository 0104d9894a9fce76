"""The outbox as the daemon wires it, on the reference service: orders, their entries, the dispatcher."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from agent.connectivity.monitor import ConnectivityMonitor
from agent.core.events import EventBus
from agent.devtools.reference_service import loopback_config
from agent.outbox.dispatcher import Dispatcher
from agent.outbox.entries import NOTIFY_ANNOUNCE
from agent.outbox.store import OutboxStore
from agent.plugins.deliveries import DeliveriesPlugin
from agent.plugins.meals import MealsPlugin

T = 10.0
PIZZA = {"item": "pepperoni pizza", "size": "large", "restaurant": "Luigi's"}


def order(
    k: int, restaurant: str = "luigis", item: str = "pepperoni pizza", size: str = "large", price: float = 89
) -> dict:
    """The body of meal order `k`; its note tells its side effect apart on the service."""
    return {
        "restaurant_id": restaurant,
        "items": [{"name": item, "size": size, "quantity": 1}],
        "delivery_address": "12 Linden Road",
        "expected_total": price,
        "note": f"order-{k}",
    }


def enqueue(
    store: OutboxStore,
    body: dict,
    *,
    service: str = "meals",
    path: str = "/orders",
    action: str = "order_meal",
    **kw,
):
    """An order's entry as the meals plugin writes it, announced once delivered unless `notify` says not."""
    kw.setdefault("notify", NOTIFY_ANNOUNCE)
    return store.enqueue(
        service=service,
        action=action,
        method="POST",
        path=path,
        body=body,
        summary=kw.pop("summary", "a large pepperoni pizza from Luigi's Pizzeria, 89 yuan"),
        **kw,
    )


@asynccontextmanager
async def daemon(service, tmp_path, clock=None, **overrides):
    """What the daemon will do: one store, monitor and bus in `services`, the dispatcher as a task."""
    config = loopback_config(service.url, tmp_path / "outbox.db", **overrides)
    bus = EventBus()
    store = OutboxStore(tmp_path / "outbox.db", **({"monotonic": clock} if clock else {}))
    monitor = ConnectivityMonitor(config, bus)
    services = {"outbox": store, "connectivity": monitor, "events": bus}
    dispatcher = Dispatcher(
        store,
        config,
        monitor=monitor,
        events=bus,
        initial_backoff_seconds=0.02,
        max_backoff_seconds=0.1,
        poll_interval_seconds=0.05,
    )
    meals, deliveries = MealsPlugin(config, services=services), DeliveriesPlugin(config, services=services)
    tasks = [asyncio.create_task(monitor.run()), asyncio.create_task(dispatcher.run())]
    try:
        await asyncio.wait_for(
            monitor.wait_online("meals", T) if service.is_up else asyncio.sleep(0.2), T + 1
        )
        if service.is_up:
            await meals.catalogue()  # what the daemon's start() does before the first turn
        yield config, store, monitor, meals, deliveries
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), T)
        await asyncio.wait_for(meals.stop(), T)
        await asyncio.wait_for(deliveries.stop(), T)
        await asyncio.wait_for(monitor.aclose(), T)
        store.close()
