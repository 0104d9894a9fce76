"""`cabin-agent run`: the long-running daemon that owns every stage, supervised, under systemd's watchdog.

Lifecycle (docs/deploy.md): load models and warm the prompt cache, open the control socket, READY=1, serve
the voice loop, the outbox dispatcher and the connectivity monitor as supervised tasks; on SIGTERM:
STOPPING=1, stop listening, cancel the reply, stop the tasks, close the plugins' clients and the models,
flush the outbox store, exit 0. A bad config or a missing model at start exits with its own status (78, 66)
so systemd does not restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.app import sdnotify
from agent.app.health import Health, Watchdog
from agent.core.config import Config
from agent.core.errors import EX_USAGE, CabinError, ConfigError, ModelError
from agent.core.events import EventBus
from agent.core.logging import get_logger

log = get_logger("daemon")

RESTART_MAX_S = 30.0
# Each shutdown step gets this long; all of them together stay well inside the unit's TimeoutStopSec=15.
RELEASE_TIMEOUT_S = 5.0
# Errors that no restart can fix: the daemon stops and exits with their status (RestartPreventExitStatus=).
PERMANENT_ERRORS = (ConfigError, ModelError)


class UsageError(CabinError):
    """A command-line value the daemon cannot use (`--input`, `--output`)."""

    code = "usage"
    exit_status = EX_USAGE


# ---------------------------------------------------------------------------------------------- supervision


class Supervisor:
    """Owns named tasks; a task that fails is logged and restarted with backoff, never taking the daemon down.

    `restart=True` also restarts a task that returns. A ConfigError or ModelError is permanent: it is handed
    to `on_fatal` (the daemon stops and exits with its status) instead of being retried forever.
    """

    def __init__(self, on_fatal: Callable[[CabinError], None] | None = None) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.restarts: dict[str, int] = {}
        self.on_fatal = on_fatal

    def start(self, name: str, factory: Callable[[], Awaitable[Any]], *, restart: bool = True) -> None:
        self.tasks[name] = asyncio.create_task(self._guard(name, factory, restart), name=name)

    async def _guard(self, name: str, factory: Callable[[], Awaitable[Any]], restart: bool) -> None:
        delay = 0.5
        while True:
            started = time.monotonic()
            try:
                await factory()
                log.info("task-ended", task=name, restart=restart)
                if not restart:
                    return
            except asyncio.CancelledError:
                raise
            except PERMANENT_ERRORS as err:
                log.error("task-failed-permanently", task=name, code=err.code, error=err.message)
                if self.on_fatal is not None:
                    self.on_fatal(err)
                return
            except Exception as err:
                log.exception("task-failed", task=name, error=f"{type(err).__name__}: {err}")
            if time.monotonic() - started > 60:
                delay = 0.5  # it ran fine for a while: start the backoff over
            self.restarts[name] = self.restarts.get(name, 0) + 1
            log.info("task-restarting", task=name, in_s=delay, restarts=self.restarts[name])
            await asyncio.sleep(delay)
            delay = min(RESTART_MAX_S, delay * 2)

    async def stop(self, timeout_s: float = RELEASE_TIMEOUT_S) -> None:
        for task in self.tasks.values():
            task.cancel()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks.values(), timeout=timeout_s)
            if pending:
                log.warning("tasks-slow-to-stop", tasks=sorted(t.get_name() for t in pending))


async def _release(name: str, close: Callable[[], Awaitable[Any]]) -> None:
    """One shutdown step: bounded in time, and its failure never skips the steps after it."""
    try:
        await asyncio.wait_for(close(), RELEASE_TIMEOUT_S)
    except TimeoutError:
        log.warning("release-timeout", what=name, timeout_s=RELEASE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - logged; the rest of the shutdown goes on
        log.warning("release-failed", what=name, error=f"{type(err).__name__}: {err}")


def _status_line(state: str, links: dict[str, dict[str, Any]], counts: dict[str, int]) -> str:
    """systemd's STATUS=: "listening", "thinking", "listening, offline: 2 orders queued"."""
    parts = ["listening" if state == "idle" else state]
    offline = [name for name, link in links.items() if link.get("online") is False]
    queued = counts.get("pending", 0) + counts.get("in-flight", 0)
    if offline:
        parts.append(f"offline: {queued} orders queued" if queued else "offline")
    elif queued:
        parts.append(f"{queued} orders queued")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------- the daemon


class Daemon:
    """One run of the service: built by `start()`, released in reverse order of creation at the end."""

    def __init__(
        self,
        config: Config,
        *,
        source: Any = None,
        sink: Any = None,
        stop: asyncio.Event | None = None,
        notifier: sdnotify.Notifier | None = None,
        stop_when_source_ends: bool = False,
    ) -> None:
        self.config = config
        self.source = source
        self.sink = sink
        self.stop = stop or asyncio.Event()
        self.notifier = notifier or sdnotify.Notifier()
        self.stop_when_source_ends = stop_when_source_ends
        self.health = Health()
        self.events = EventBus()
        self.tasks = Supervisor(on_fatal=self._fatal)
        self.fatal: CabinError | None = None
        # SIGTERM came during the start: a model step may still run in its worker thread (see `run`).
        self.start_abandoned = False
        self.started = time.monotonic()
        self.ready_s: float | None = None
        self.store: Any = None
        self.monitor: Any = None
        self.assistant: Any = None
        self.pipeline: Any = None
        self.server: Any = None

    async def serve(self) -> int:
        """`run()` with SIGTERM/SIGINT setting `stop`, and the notification socket closed at the end."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or not a Unix loop
                pass
        try:
            return await self.run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            self.notifier.close()

    def _fatal(self, err: CabinError) -> None:
        if self.fatal is None:
            self.fatal = err
        self.stop.set()

    async def run(self) -> int:
        async with contextlib.AsyncExitStack() as resources:
            # SIGTERM during a long start (a cold prompt cache takes many seconds) stops the start at its next
            # await; a model step already running in a worker thread still finishes before the process exits.
            starting = asyncio.create_task(self.start(resources), name="daemon-start")
            stopped = asyncio.create_task(self.stop.wait(), name="daemon-stop")
            try:
                await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if starting.done():
                    self._check_start(starting)
                    await stopped
                    reason = self.fatal.code if self.fatal else "signal"
                else:
                    reason = "signal-during-start"
                    self.start_abandoned = True
            finally:
                stopped.cancel()
                if not starting.done():
                    starting.cancel()
                    await asyncio.wait({starting})
            self.notifier.stopping(status="stopping")
            stopping = time.monotonic()
            log.info("stopping", reason=reason)
            # Control before data: no new requests, the speaker and the reply stop now, then the tasks.
            if self.server is not None:
                await _release("control-socket", self.server.close)
            if self.pipeline is not None:
                await _release("reply", self.pipeline.cancel)
            await _release("tasks", self.tasks.stop)
        # Leaving the stack released the rest, newest first: dispatcher, voice stages, sink, model, plugins'
        # HTTP clients, connectivity probes and last the outbox store (its WAL checkpointed on close).
        log.info("stopped", shutdown_s=round(time.monotonic() - stopping, 2))
        if self.fatal is not None:
            raise self.fatal
        return 0

    def _check_start(self, starting: asyncio.Task[bool]) -> None:
        """A failed start is said once (STATUS=, the log) and raised: ConfigError 78, ModelError 66."""
        err = starting.exception()
        if err is None:
            return
        message = err.message if isinstance(err, CabinError) else f"{type(err).__name__}: {err}"
        self.notifier.status(f"failed: {message}")
        log.error("start-failed", error=message, code=getattr(err, "code", None))
        raise err

    async def start(self, resources: contextlib.AsyncExitStack) -> bool:
        """Everything up to READY=1. False when SIGTERM came first (no READY, straight to shutdown)."""
        from agent.app.control_server import ControlServer
        from agent.app.wiring import build_assistant
        from agent.loop.pipeline import VoicePipeline
        from agent.outbox.admin import OutboxAdmin
        from agent.services.wiring import open_services

        config = self.config
        self.notifier.status("loading models")
        log.info(
            "starting",
            pid=os.getpid(),
            input=type(self.source).__name__ if self.source is not None else "MicSource",
            output=type(self.sink).__name__ if self.sink is not None else "SpeakerSink",
        )

        # The services side exactly as the demo wires it: outbox store, connectivity monitor, plugins started.
        wiring = await open_services(config, self.events)
        store = self.store = wiring.store
        monitor = self.monitor = wiring.monitor
        # Last out: the store, even if closing the plugins timed out (closing twice is harmless).
        resources.push_async_callback(_release, "outbox-store", lambda: asyncio.to_thread(store.close))
        # Plugins' HTTP clients (opened lazily, so closed even for a plugin whose start() failed), the
        # connectivity probes' clients, then the store.
        resources.push_async_callback(_release, "services", wiring.aclose)
        if self.stop.is_set():
            return False

        assistant = self.assistant = await build_assistant(
            config, events=self.events, services=wiring.services, registry=wiring.registry
        )
        resources.push_async_callback(_release, "llm", assistant.close)
        if self.stop.is_set():
            return False

        if self.source is None:
            from agent.audio.sources import MicSource

            self.source = MicSource(config.audio)
        if self.sink is None:
            from agent.audio.sinks import SpeakerSink

            self.sink = SpeakerSink(config.audio)
        if hasattr(self.sink, "aclose"):
            resources.push_async_callback(_release, "audio-output", self.sink.aclose)
        pipeline = self.pipeline = await VoicePipeline.from_config(
            config,
            assistant,
            self.source,
            self.sink,
            events=self.events,
            announcements=wiring.announcements(),
            health_beat=lambda: self.health.beat("audio"),
        )
        resources.push_async_callback(_release, "voice-stages", pipeline.aclose)
        dispatcher = wiring.dispatcher()
        resources.push_async_callback(_release, "outbox-dispatcher", dispatcher.aclose)
        if self.stop.is_set():
            return False

        # The control socket before READY=1: `cabin-agent status` works as soon as systemd says "active".
        server = self.server = ControlServer.from_config(config)
        server.register("status", self._status)
        server.register("ptt", self._ptt)
        server.register("say", self._say)
        server.register("cancel", self._cancel)
        OutboxAdmin(store, dispatcher, expiry_seconds=config.outbox.expiry_minutes * 60).register_control(
            server
        )
        await server.start()
        resources.push_async_callback(_release, "control-socket", server.close)

        # Outbox outcomes that finished while the car was off are announced once the car is idle.
        owed = await wiring.replay_owed(pipeline)
        if owed:
            log.info("announcements-owed", count=owed)

        resources.push_async_callback(_release, "tasks", self.tasks.stop)
        self.health.expect("audio", deadline_s=max(5.0, 2 * config.audio.reconnect_max_seconds))
        self.tasks.start("voice-loop", self._voice_loop, restart=not self.stop_when_source_ends)
        self.tasks.start("connectivity", monitor.run)
        self.tasks.start("outbox-dispatcher", dispatcher.run)
        self.tasks.start("announcements-spoken", wiring.mark_spoken)
        self.tasks.start("watchdog", Watchdog(self.health, self.notifier).run)
        self.tasks.start("status", self._report_status)

        self.ready_s = time.monotonic() - self.started
        self.notifier.ready(status="listening")
        warm = assistant.warm_info
        log.info(
            "ready",
            ready_s=round(self.ready_s, 2),
            prompt_cache=warm.get("source"),
            prompt_cache_ms=round(float(warm.get("ms", 0.0)), 1),
            prompt_tokens=warm.get("tokens"),
            llm=assistant.model.model_id,
            watchdog_s=sdnotify.watchdog_interval_s(),
        )
        return True

    # -- supervised tasks

    async def _voice_loop(self) -> None:
        await self.pipeline.run()
        if self.stop_when_source_ends:
            # A file or a pipe, not a microphone: nothing more will come, so the daemon is done.
            log.info("audio-input-ended")
            self.health.forget("audio")
            self.stop.set()

    async def _report_status(self) -> None:
        last = ""
        while True:
            counts = await asyncio.to_thread(self.store.counts)
            line = _status_line(self.pipeline.state.value, self.monitor.snapshot(), counts)
            if line != last:
                self.notifier.status(line)
                last = line
            await asyncio.sleep(1.0)

    # -- control socket handlers

    async def _status(self, args: dict[str, Any]) -> dict[str, Any]:
        pipeline, assistant = self.pipeline, self.assistant
        return {
            "pid": os.getpid(),
            "state": "stopping" if self.stop.is_set() else pipeline.state.value,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "ready_s": None if self.ready_s is None else round(self.ready_s, 2),
            "audio": {"input": type(self.source).__name__, "output": type(self.sink).__name__},
            "models": {
                "llm": assistant.model.model_id,
                "prompt_cache": assistant.warm_info,
                "asr": getattr(pipeline.recognizer, "name", "?"),
                "wake": getattr(pipeline.detector.engine, "name", "push-to-talk"),
                "tts": getattr(pipeline.tts, "name", "?"),
            },
            "pipeline": pipeline.status(int(args.get("last", 5))),
            "connectivity": self.monitor.snapshot(),
            "outbox": await asyncio.to_thread(self.store.counts),
            "health": self.health.snapshot(),
            "restarts": dict(self.tasks.restarts),
        }

    async def _ptt(self, args: dict[str, Any]) -> dict[str, Any]:
        self.pipeline.push_to_talk()
        return {"pressed": True}

    async def _say(self, args: dict[str, Any]) -> dict[str, Any]:
        text = str(args.get("text", "")).strip()
        if not text:
            raise CabinError("say needs a non-empty 'text'", code="bad-request")
        # Through the voice loop, not beside it: one turn at a time on the model, spoken like any reply.
        record = await self.pipeline.request(text)
        return record.as_dict()

    async def _cancel(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"stopped": await self.pipeline.cancel()}


async def serve(
    config: Config,
    *,
    source: Any = None,
    sink: Any = None,
    stop: asyncio.Event | None = None,
    stop_when_source_ends: bool = False,
) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set). Returns the exit status (0).

    `source`/`sink` default to the configured microphone and speaker. A source that ends is read again
    (restarted with backoff) unless `stop_when_source_ends`: then the daemon stops (a WAV file, a pipe).
    A ConfigError or ModelError, at start or from a task, is raised after everything is released.
    """
    daemon = Daemon(config, source=source, sink=sink, stop=stop, stop_when_source_ends=stop_when_source_ends)
    return await daemon.serve()


# ------------------------------------------------------------------------- audio in and out (`run --input/--output`)

INPUT_HELP = (
    "Audio in: mic (the configured device), wav:PATH (a WAV file at real-time pace), raw:PATH or raw:- "
    "(16 kHz mono s16le from a file, FIFO or stdin). A file or pipe that ends stops the daemon."
)
OUTPUT_HELP = "Audio out: speaker (the configured device), wav:DIR (one WAV file per reply) or null."


def open_input(spec: str, config: Config) -> Any:
    """The audio source `--input` names (None: the microphone, opened by the daemon)."""
    from agent.audio.sources import RawSource, WavSource

    kind, _, where = spec.partition(":")
    if spec == "mic":
        return None
    if kind == "wav" and where:
        if not Path(where).is_file():
            raise UsageError(f"--input: no such WAV file: {where}")
        return WavSource.from_config(where, config.audio, pace_realtime=True, tail_silence_ms=1000)
    if kind == "raw" and where:
        if where != "-" and not Path(where).exists():
            raise UsageError(f"--input: no such file or FIFO: {where}")
        return RawSource(
            where, rate_hz=config.audio.sample_rate_hz, block_ms=config.audio.block_ms, pace_realtime=True
        )
    raise UsageError(f"--input: expected mic, wav:PATH, raw:PATH or raw:- (got {spec!r})")


def open_output(spec: str, config: Config) -> Any:
    """The audio sink `--output` names (None: the speaker, opened by the daemon)."""
    from agent.audio.sinks import NullSink, WavSink

    kind, _, where = spec.partition(":")
    if spec == "speaker":
        return None
    if spec == "null":
        return NullSink(pace_realtime=True)
    if kind == "wav" and where:
        return WavSink(where, pace_realtime=True)
    raise UsageError(f"--output: expected speaker, wav:DIR or null (got {spec!r})")
