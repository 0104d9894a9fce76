"""Crash drill worker: queue scripted actions like the plugins do, and deliver them like the daemon does.

The crash test starts this as a process, SIGKILLs it (from outside, or at a named crash point, see faults.py),
starts it again, and so on. Each action `k` is queued once: after a restart, actions already in the store are
not queued again (the driver was told about them), and an action lost before its commit is queued afresh (the
driver was never told). After each commit the worker prints `ACK k key`: that is the moment the driver hears
"queued". It prints `DONE` and exits 0 when every action is queued and none is open.

The harsher parts of the drill: every `--cancel-every`th action goes through the plugins' inline path
(ServiceAccess.queue) and its turn is cancelled mid-call (`CANCELLED k`); an enqueue refused because another
writer held the file prints `REFUSED k key` (the driver heard "nothing was ordered") and is asked again later;
`--wall-offset-file` steps this process's wall clock; the store is opened as its owner (a second worker exits
69, `OutboxOwned`), and a corrupt file is set aside.

    python -m agent.devtools.outbox_drill --db OUTBOX --url http://127.0.0.1:PORT --actions 120
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from agent.connectivity.monitor import ConnectivityMonitor
from agent.core.errors import EX_UNAVAILABLE
from agent.core.logging import setup_logging
from agent.devtools.reference_service import loopback_config
from agent.outbox.dispatcher import Dispatcher
from agent.outbox.entries import NOTIFY_ANNOUNCE
from agent.outbox.errors import OutboxBusy, OutboxOwned
from agent.outbox.recovery import open_owned
from agent.outbox.store import OutboxStore
from agent.services.access import ServiceAccess
from agent.services.client import client_for

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


class SteppedWall:
    """The wall clock plus whatever offset the test wrote into a file (a clock step, forward or back)."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.offset = 0.0
        self._read_at = 0.0

    def __call__(self) -> float:
        now = time.monotonic()
        if self.path is not None and now - self._read_at > 0.1:
            self._read_at = now
            with contextlib.suppress(OSError, ValueError):
                self.offset = float(self.path.read_text() or 0)
        return time.time() + self.offset


def _known(store: OutboxStore) -> set[str]:
    return {e.body.get("note") for e in store.list(limit=100_000)}


async def produce(
    store: OutboxStore,
    access: ServiceAccess,
    actions: range,
    interval_seconds: float,
    cancel_every: int,
    rng: random.Random,
) -> None:
    todo = [k for k in actions if f"drill-{k}" not in await asyncio.to_thread(_known, store)]
    while todo:
        again = []
        for k in todo:
            if cancel_every and k % cancel_every == 0:
                if not await _queue_and_cancel(store, access, k, rng):
                    again.append(k)
            else:
                key = str(uuid.uuid4())
                try:
                    entry = await asyncio.to_thread(
                        store.enqueue,
                        language="en",
                        expiry_seconds=1800.0,
                        notify=NOTIFY_ANNOUNCE,
                        key=key,
                        **action(k),
                    )
                except OutboxBusy:
                    print(f"REFUSED {k} {key}", flush=True)  # "nothing was ordered": asked again later
                    again.append(k)
                    continue
                print(f"ACK {k} {entry.key}", flush=True)
            await asyncio.sleep(interval_seconds)
        todo = again
        if todo:
            await asyncio.sleep(0.2)


async def _queue_and_cancel(store: OutboxStore, access: ServiceAccess, k: int, rng: random.Random) -> bool:
    """Action k through the plugins' path, its turn cancelled after a random moment. True when it is in the
    store afterwards (committed: it will be announced), False when the driver must ask again."""
    spec = action(k)
    turn = asyncio.create_task(access.queue(language="en", **spec))
    await asyncio.sleep(rng.uniform(0.0, 0.4))
    turn.cancel()
    try:
        queued = await turn
    except asyncio.CancelledError:
        print(f"CANCELLED {k}", flush=True)
    else:
        print(f"TOLD {k} {queued.entry.key} {queued.state}", flush=True)
    await access.settled()
    return f"drill-{k}" in await asyncio.to_thread(_known, store)


async def main_async(args: argparse.Namespace) -> int:
    config = loopback_config(
        args.url, args.db, timeout_seconds=2.0, probe_interval_seconds=0.1, outbox={"max_attempts": 1000}
    )
    wall = SteppedWall(args.wall_offset_file)
    try:
        store, aside = await asyncio.to_thread(
            open_owned, args.db, lock_wait_seconds=args.lock_wait, clock=wall
        )
    except OutboxOwned as err:
        print(f"REFUSED-OWNER {err.message}", file=sys.stderr, flush=True)
        return EX_UNAVAILABLE
    if aside is not None:
        print(f"SET-ASIDE {' '.join(str(p) for p in aside.moved_to)}", flush=True)
    if args.only_own:
        print("OWNED", flush=True)  # a second dispatcher that found nobody else owning the store
        store.close()
        return 0
    clients: dict[str, Any] = {
        name: client_for(name, config, timeout_seconds=2.0, wall_clock=wall) for name in ("meals", "deliveries")
    }
    monitor = ConnectivityMonitor(config, clients=clients)
    dispatcher = Dispatcher(
        store,
        config,
        monitor=monitor,
        clients=clients,
        initial_backoff_seconds=0.02,
        max_backoff_seconds=0.2,
        jitter_seconds=0.05,
        poll_interval_seconds=0.05,
    )
    access = ServiceAccess(config, {"outbox": store, "connectivity": monitor})
    access.inline_wait_seconds = 0.5
    tasks = [
        asyncio.create_task(monitor.run(), name="drill:monitor"),
        asyncio.create_task(dispatcher.run(), name="drill:dispatcher"),
    ]
    rng = random.Random(args.seed or os.getpid())
    try:
        await produce(
            store, access, range(args.first, args.first + args.actions), args.interval, args.cancel_every, rng
        )
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
        await access.settled()
        await monitor.aclose()
        for client in clients.values():
            await client.aclose()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--actions", type=int, default=120)
    parser.add_argument("--interval", type=float, default=0.002, help="seconds between queued actions")
    parser.add_argument("--first", type=int, default=0, help="number of the first action")
    parser.add_argument("--cancel-every", type=int, default=0, help="every Nth action: cancel its turn mid-call")
    parser.add_argument("--wall-offset-file", default=None, help="file holding seconds added to the wall clock")
    parser.add_argument("--lock-wait", type=float, default=0.5, help="seconds to wait for the store's owner lock")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only-own", action="store_true", help="take the owner lock (or be refused), then exit")
    args = parser.parse_args()
    setup_logging("error", "json")
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
