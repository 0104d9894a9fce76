"""The car's service side as one unit: outbox store, connectivity monitor and plugins on one event bus, wired
into the voice loop the way `cabin-agent run` does it (announcements in, "spoken" marks back to the store).

The daemon and the demo both build it: `wiring = await open_services(config, events)`, then
`build_assistant(..., services=wiring.services, registry=wiring.registry)`,
`VoicePipeline(..., announcements=wiring.announcements())`, and run `wiring.monitor.run`, `dispatcher.run` and
`wiring.mark_spoken` as owned tasks.

The store is opened as its owner (one dispatcher per file: a second daemon refuses with OutboxOwned), and a
damaged file is set aside with one journal line and one notice to the driver instead of stopping the car
(agent/outbox/recovery.py)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.logging import get_logger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from agent.connectivity.monitor import ConnectivityMonitor
    from agent.core.config import Config
    from agent.core.events import EventBus
    from agent.outbox.dispatcher import Dispatcher
    from agent.outbox.recovery import SetAside
    from agent.outbox.store import OutboxStore
    from agent.plugins.loader import ToolRegistry

log = get_logger("daemon")


@dataclass
class ServiceWiring:
    config: Config
    events: EventBus
    store: OutboxStore
    monitor: ConnectivityMonitor
    registry: ToolRegistry
    # What plugins and the assistant share (agent.services.access): {"outbox", "connectivity", "events"}.
    services: dict[str, Any]
    # Where a damaged store was put when this one was opened (None: the file was fine).
    set_aside: SetAside | None = None

    def dispatcher(self, **tuning: Any) -> Dispatcher:
        from agent.outbox.dispatcher import Dispatcher

        return Dispatcher(self.store, self.config, monitor=self.monitor, events=self.events, **tuning)

    def announcements(self) -> AsyncIterator[dict[str, Any]]:
        """The outbox's announcements as they happen, for `VoicePipeline(announcements=...)`."""
        return announcements_from(self.events)

    async def replay_owed(self, pipeline: Any) -> int:
        """Queue what finished while the car was off (stored, never spoken); spoken once the car is idle."""
        owed = await asyncio.to_thread(self.store.pending_announcements)
        for item in owed:
            pipeline.announce(item.text, id=item.id, language=item.language)
        return len(owed)

    async def mark_spoken(self) -> None:
        """Run as a task: an announcement the car finished speaking is marked in the store (never again)."""
        async for event in self.events.subscribe():
            if event.type == "announcement-spoken" and event.data.get("id") is not None:
                await asyncio.to_thread(self.store.mark_announced, event.data["id"])

    async def aclose(self) -> None:
        for plugin in self.registry.plugins:
            with contextlib.suppress(Exception):
                await plugin.stop()
        with contextlib.suppress(Exception):
            await self.monitor.aclose()
        await asyncio.to_thread(self.store.close)


async def open_services(
    config: Config, events: EventBus, *, outbox_file: Path | None = None
) -> ServiceWiring:
    """Open the store as its owner (off the loop), create the monitor, load and start the plugins with them.

    A plugin that fails to start is logged once and the car keeps its other functions. OutboxOwned when another
    dispatcher (a second daemon) already owns the store; a damaged store is set aside and replaced."""
    from agent.connectivity.monitor import ConnectivityMonitor
    from agent.core.config import outbox_path
    from agent.outbox.recovery import open_owned
    from agent.plugins.loader import load_registry

    store, aside = await asyncio.to_thread(
        open_owned, outbox_file or outbox_path(config), language=config.language
    )
    monitor = ConnectivityMonitor(config, events)
    services: dict[str, Any] = {"outbox": store, "connectivity": monitor, "events": events}
    registry = load_registry(config, services)
    for plugin in list(registry.plugins):
        try:
            await plugin.start()
        except Exception as err:
            log.error("plugin-start-failed", plugin=plugin.name, error=str(err))
    return ServiceWiring(config, events, store, monitor, registry, services, aside)


async def announcements_from(events: EventBus) -> AsyncIterator[dict[str, Any]]:
    """The outbox's `announcement` events as pipeline announcements: `VoicePipeline(announcements=...)`."""
    async for event in events.subscribe():
        if event.type == "announcement":
            yield dict(event.data)
