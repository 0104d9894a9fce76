"""Crash drill worker: queue scripted actions like the plugins do, and deliver them like the daemon does.

The crash test starts this as a process, SIGKILLs it (from outside, or at a named crash point, see faults.py),
starts it again, and so on. Each action `k` is queued once: after a restart, actions already in the store are not
queued again (the driver was told about them), and an action lost before its commit is queued afresh (the driver
was never told). After each commit the worker prints `ACK k key`: that is the moment the driver hears "queued".
It prints `DONE` and exits 0 when every action is queued and none is open.

    python -m agent.outbox.drill --db OUTBOX --url http://127.0.0.1:PORT --actions 120
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from agent.config import validate
from agent.connectivity.monitor import ConnectivityMonitor
from agent.logging import setup_logging
from agent.outbox.dispatcher import Dispatcher
from agent.outbox.store import NOTIFY_ANNOUNCE, OutboxStore

ITEMS = [
    ("luigis", "pepperoni pizza", "large", 89),
    ("noodle-house", "beef noodles", "regular", 28),
    ("bean-there", "latte", "medium", 26),
    ("burger-barn", "cheeseburger", "regular", 32),
]


def action(k: int) -> dict:
    """Action k of the drill: mostly meal orders, every fifth a delivery change (a second service, in order)."""
    tag = f"drill-{k}"
    if k % 5 == 4:
        return {
            "service": "deliveries",
            "action": "reschedule_delivery",
            "method": "POST",
            "path": "/deliveries/P2/reschedule",
            "body": {"day": f"day {k}", "package_id": "P2", "note": tag},
            "summary": f"drill reschedule {k}",
        }
    rid, item, size, price = ITEMS[k % len(ITEMS)]
    return {
        "service": "meals",
        "action": "order_meal",
        "method": "POST",
        "path": "/orders",
        "body": {
            "restaurant_id": rid,
            "items": [{"name": item, "size": size, "quantity": 1}],
            "delivery_address": "12 Linden Road",
            "expected_total": price,
            "note": tag,
        },
        "summary": f"drill order {k}",
    }


async def produce(store: OutboxStore, count: int, interval_seconds: float) -> None:
    known = {e.body.get("note") for e in store.list(limit=100_000)}
    for k in range(count):
        if f"drill-{k}" in known:
            continue
        entry = await asyncio.to_thread(
            store.enqueue, language="en", expiry_seconds=1800.0, notify=NOTIFY_ANNOUNCE, **action(k)
        )
        print(f"ACK {k} {entry.key}", flush=True)
        await asyncio.sleep(interval_seconds)


async def main_async(args: argparse.Namespace) -> int:
    config = validate(
        {
            "services": {
                "meals": {"base_url": args.url, "timeout_seconds": 2.0},
                "deliveries": {"base_url": args.url, "timeout_seconds": 2.0},
            },
            "outbox": {"path": args.db, "max_attempts": 1000},
            "connectivity": {
                "probe_interval_seconds": 0.1,
                "probe_timeout_seconds": 0.5,
                "up_after": 2,
                "down_after": 2,
                "use_networkmanager": False,
            },
        }
    )
    store = OutboxStore(args.db)
    monitor = ConnectivityMonitor(config)
    dispatcher = Dispatcher(
        store,
        config,
        monitor=monitor,
        initial_backoff_seconds=0.02,
        max_backoff_seconds=0.2,
        jitter_seconds=0.05,
        poll_interval_seconds=0.05,
    )
    tasks = [
        asyncio.create_task(monitor.run(), name="drill:monitor"),
        asyncio.create_task(dispatcher.run(), name="drill:dispatcher"),
    ]
    try:
        await produce(store, args.actions, args.interval)
        while True:
            counts = await asyncio.to_thread(store.counts)
            if counts["pending"] == 0 and counts["in-flight"] == 0:
                print("DONE", flush=True)
                return 0
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await monitor.aclose()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--actions", type=int, default=120)
    parser.add_argument("--interval", type=float, default=0.002, help="seconds between queued actions")
    args = parser.parse_args()
    setup_logging("error", "json")
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
