"""`cabin-agent run`: the long-running daemon that owns every stage, supervised, under systemd's watchdog.

Lifecycle (docs/deploy.md): load models and warm the prompt cache, open the control socket, READY=1, serve the
voice loop, the outbox dispatcher and the connectivity monitor as supervised tasks; on SIGTERM: STOPPING=1, stop
listening, cancel the reply, let the outbox store settle, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent import sdnotify
from agent.config import Config, outbox_path
from agent.errors import CabinError
from agent.events import EventBus
from agent.health import Health, Watchdog
from agent.logging import get_logger

log = get_logger("daemon")

RESTART_MAX_S = 30.0


class Supervisor:
    """Owns named tasks; a task that fails is logged and restarted with backoff, never taking the daemon down."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.restarts: dict[str, int] = {}

    def start(self, name: str, factory: Callable[[], Awaitable[Any]], *, restart: bool = True) -> None:
        self.tasks[name] = asyncio.create_task(self._guard(name, factory, restart), name=name)

    async def _guard(self, name: str, factory: Callable[[], Awaitable[Any]], restart: bool) -> None:
        delay = 0.5
        while True:
            started = time.monotonic()
            try:
                await factory()
                log.info("task-ended", task=name)
                if not restart:
                    return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.exception("task-failed", task=name, error=f"{type(err).__name__}: {err}")
            if time.monotonic() - started > 60:
                delay = 0.5  # it ran fine for a while: start the backoff over
            self.restarts[name] = self.restarts.get(name, 0) + 1
            await asyncio.sleep(delay)
            delay = min(RESTART_MAX_S, delay * 2)

    async def stop(self, timeout_s: float = 10.0) -> None:
        for task in self.tasks.values():
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks.values(), timeout=timeout_s)


def _status_line(pipeline: Any, monitor: Any, store: Any) -> str:
    state = getattr(pipeline, "state", "listening")
    state = getattr(state, "value", state)
    parts = ["listening" if state == "idle" else str(state)]
    try:
        offline = [s for s, up in monitor.snapshot().get("services", {}).items() if not up.get("online", True)]
    except Exception:
        offline = []
    try:
        queued = store.counts().get("pending", 0) + store.counts().get("in-flight", 0)
    except Exception:
        queued = 0
    if offline:
        parts.append(f"offline: {queued} orders queued" if queued else "offline")
    elif queued:
        parts.append(f"{queued} orders queued")
    return ", ".join(parts)


async def serve(
    config: Config,
    *,
    source: Any = None,
    sink: Any = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set). Returns the exit status."""
    from agent.connectivity.monitor import ConnectivityMonitor
    from agent.control import ControlServer
    from agent.outbox.admin import OutboxAdmin
    from agent.outbox.dispatcher import Dispatcher
    from agent.outbox.store import OutboxStore
    from agent.pipeline import VoicePipeline, announcements_from
    from agent.plugins.loader import load_registry
    from agent.runtime import build_assistant

    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    notifier = sdnotify.Notifier()
    health = Health()
    events = EventBus()
    started = time.monotonic()

    notifier.status("loading models")
    store = await asyncio.to_thread(OutboxStore, outbox_path(config))
    monitor = ConnectivityMonitor(config, events)
    services: dict[str, Any] = {"outbox": store, "connectivity": monitor, "events": events}
    registry = load_registry(config, services)
    for plugin in list(registry.plugins):
        try:
            await plugin.start()
        except Exception as err:  # a broken plugin is logged once; the car keeps its other functions
            log.error("plugin-start-failed", plugin=plugin.name, error=str(err))
    assistant = await build_assistant(config, events=events, services=services, registry=registry)

    if source is None:
        from agent.audio.sources import MicSource

        source = MicSource(config.audio)
    if sink is None:
        from agent.audio.sinks import SpeakerSink

        sink = SpeakerSink(config.audio)
    pipeline = await VoicePipeline.from_config(
        config, assistant, source, sink, events=events, announcements=announcements_from(events),
        health_beat=lambda: health.beat("audio"),
    )
    dispatcher = Dispatcher(store, config, monitor=monitor, events=events)

    server = ControlServer.from_config(config)

    async def status(args: dict[str, Any]) -> dict[str, Any]:
        return {
            "pid": __import__("os").getpid(),
            "uptime_s": round(time.monotonic() - started, 1),
            "pipeline": pipeline.status(int(args.get("last", 5))),
            "models": {"llm": assistant.model.model_id, "prompt_cache": assistant.warm_info},
            "connectivity": monitor.snapshot(),
            "outbox": await asyncio.to_thread(store.counts),
            "health": health.snapshot(),
        }

    async def ptt(args: dict[str, Any]) -> dict[str, Any]:
        pipeline.push_to_talk()
        return {"pressed": True}

    async def say(args: dict[str, Any]) -> dict[str, Any]:
        text = str(args.get("text", "")).strip()
        if not text:
            raise CabinError("say needs a non-empty 'text'", code="bad-request")
        result = await assistant.turn(text)
        pipeline.announce(result.reply, language=result.language)
        return result.as_dict()

    async def cancel(args: dict[str, Any]) -> dict[str, Any]:
        return {"stopped": await pipeline.cancel()}

    server.register("status", status)
    server.register("ptt", ptt)
    server.register("say", say)
    server.register("cancel", cancel)
    OutboxAdmin(store, dispatcher, expiry_seconds=config.outbox.expiry_minutes * 60).register_control(server)
    await server.start()

    # Outbox entries finished while the daemon was down are announced once the car is idle.
    for item in await asyncio.to_thread(store.pending_announcements):
        pipeline.announce(item["text"], id=item.get("id"), language=item.get("language"))

    async def mark_spoken() -> None:
        async for event in events.subscribe():
            if event.type == "announcement-spoken" and event.data.get("id") is not None:
                await asyncio.to_thread(store.mark_announced, event.data["id"])

    async def report_status() -> None:
        last = ""
        while True:
            line = _status_line(pipeline, monitor, store)
            if line != last:
                notifier.status(line)
                last = line
            await asyncio.sleep(1.0)

    tasks = Supervisor()
    health.expect("audio", deadline_s=max(5.0, 2 * config.audio.reconnect_max_seconds))
    tasks.start("voice-loop", pipeline.run, restart=True)
    tasks.start("connectivity", monitor.run)
    tasks.start("outbox-dispatcher", dispatcher.run)
    tasks.start("announcements-spoken", mark_spoken)
    tasks.start("watchdog", Watchdog(health, notifier).run)
    tasks.start("status", report_status)
    ready_s = time.monotonic() - started
    notifier.ready(status="listening")
    log.info("ready", ready_s=round(ready_s, 2), prompt_cache=assistant.warm_info.get("source"))

    await stop.wait()
    notifier.stopping(status="stopping")
    log.info("stopping")
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pipeline.cancel(), 5)
    await tasks.stop()
    await server.close()
    for plugin in registry.plugins:
        with contextlib.suppress(Exception):
            await plugin.stop()
    with contextlib.suppress(Exception):
        await monitor.aclose()
    with contextlib.suppress(Exception):
        await pipeline.aclose()
    await assistant.close()
    await asyncio.to_thread(store.close)
    log.info("stopped")
    return 0


def register(app: Any) -> None:
    import typer

    from agent.cli import get_config

    @app.command()
    def run() -> None:
        """The daemon: listen for the wake phrase, answer, speak; under systemd, Type=notify with a watchdog."""
        config = get_config()
        raise typer.Exit(asyncio.run(serve(config)))
