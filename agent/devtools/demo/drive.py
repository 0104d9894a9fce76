"""The simulated drive: scripted spoken requests (Piper and espeak-ng voices in road noise) fed as the microphone
through the real voice loop (agent.loop.pipeline); the car's spoken replies are written to one WAV file per turn.

A driver waits for the car to answer before speaking again, so the cabin "microphone" plays road noise while the
car is busy and starts the next request only when the car is idle (the confirmation "yes" only once the car has
asked, in the follow-up window). The whole cabin recording as fed is written to `<out>/cabin-mic.wav`.

The services are real too: a reference service on loopback (its own SQLite), the outbox, the connectivity
monitor and the dispatcher, wired into the voice loop as the daemon wires them (agent.services.wiring). Halfway
through, the car drives into a tunnel (the service goes down): the pizza ordered there is queued, placed exactly
once after the tunnel, and announced when the car is quiet.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from agent.app.wiring import build_assistant
from agent.audio.sinks import WavSink
from agent.core.events import EventBus, now_ms
from agent.devtools.demo.report import DriveReport, print_summary
from agent.devtools.demo.scenes import Scene, Tunnel
from agent.devtools.demo.script import DRIVE, DriverScript, Segment, request_segment, scene_segment
from agent.devtools.reference_service import ReferenceService, loopback_config
from agent.devtools.scripted_mic import ScriptedMic
from agent.devtools.voices import Voices
from agent.loop.pipeline import VoicePipeline
from agent.services.wiring import open_services


def _fresh(path: Path) -> Path:
    for old in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        old.unlink(missing_ok=True)
    return path


def _fresh(path: Path) -> Path:
    for old in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        old.unlink(missing_ok=True)
    return path


def car_ready(pipeline: VoicePipeline | None, report: DriveReport, gate: str) -> bool:
    """Whether the driver may go on: "now" always; otherwise once the car is idle, in the follow-up window for
    "follow-up" and out of it for "idle"; a "quiet" scene also waits until the last turn is printed."""
    if gate == "now":
        return True
    if pipeline is None or not pipeline.is_idle:
        return False
    if gate == "follow-up":
        return pipeline.in_follow_up
    # A scene waits until the last turn is printed, so its banner comes after it.
    return not pipeline.in_follow_up and (gate != "quiet" or len(report.printed) >= len(pipeline.turns))


async def spoken_drive(
    config: Any,
    out_dir: Path,
    *,
    speed: float = 1.0,
    as_json: bool = False,
    drive: list[tuple[str, str, bool] | Scene] | None = None,
    assistant: Any = None,
    model: Any = None,
) -> dict[str, Any]:
    """Run the drive; `assistant` replaces the whole assistant, `model` only the local model (tests).
    Returns the turn records and a summary (with the outbox's entries, the service's count per key and the
    announcements)."""
    drive = drive or DRIVE
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in (*out_dir.glob("turn*-reply.wav"), *out_dir.glob("announcement*.wav")):
        old.unlink()
    t0 = time.monotonic()
    voices = Voices(config)

    def speech() -> list[Segment | Scene]:
        return [
            item
            if isinstance(item, Scene)
            else request_segment(voices, item[0], item[1], wake=item[2], wake_phrase=config.wake_phrase)
            for item in drive
        ]

    planned = await asyncio.to_thread(speech)
    synth_s = time.monotonic() - t0

    # The services side, for real: the reference service on loopback, the outbox next to the replies.
    service = await asyncio.to_thread(lambda: ReferenceService(_fresh(out_dir / "service.sqlite3")).start())
    config = loopback_config(service.url, _fresh(out_dir / "outbox.sqlite3"), config, timeout_seconds=1.0,
                             probe_interval_seconds=0.5, probe_timeout_seconds=0.5)
    events = EventBus()
    wiring = await open_services(config, events)
    dispatcher = wiring.dispatcher(poll_interval_seconds=0.5)
    service_tasks = {
        asyncio.create_task(wiring.monitor.run(), name="demo-connectivity"),
        asyncio.create_task(dispatcher.run(), name="demo-outbox-dispatcher"),
        asyncio.create_task(wiring.mark_spoken(), name="demo-announcements-spoken"),
    }
    await wiring.monitor.wait_online("meals", 5.0)
    # A car that has driven before holds the catalogue (kept in the outbox for tunnels); the demo's fresh state
    # reads it before the first scene, or a drive that starts in a tunnel could order nothing.
    for plugin in wiring.registry.plugins:
        if plugin.name == "meals":
            await asyncio.wait_for(plugin.catalogue(), 10.0)

    if assistant is not None:
        assistant.events = events
    else:
        assistant = await build_assistant(
            config, events=events, services=wiring.services, registry=wiring.registry, model=model
        )
    sink = WavSink(out_dir / ".playback", name_pattern="playback{index:03d}.wav")
    report = DriveReport(out_dir=out_dir, as_json=as_json, service=service, store=wiring.store, sink=sink)
    tunnel = Tunnel(service, wiring.monitor, report)
    holder: dict[str, VoicePipeline] = {}
    segments = [scene_segment(item, tunnel) if isinstance(item, Scene) else item for item in planned]
    requests = sum(not isinstance(item, Scene) for item in drive)
    driver = DriverScript(
        segments,
        ready=lambda gate: car_ready(holder.get("p"), report, gate),
        turns=lambda: holder["p"].turns_started if "p" in holder else 0,
    )
    mic = ScriptedMic(driver, seed=2, speed=speed, keep_recording=True)
    pipeline = await VoicePipeline.from_config(
        config, assistant, mic, sink, events=events, announcements=wiring.announcements()
    )
    holder["p"] = pipeline
    owed = await wiring.replay_owed(pipeline)
    load_s = time.monotonic() - t0 - synth_s
    if not as_json:
        status = pipeline.status(last=0)
        print(
            f"simulated drive: {requests} requests, wake '{config.wake_phrase}' "
            f"({status['wake']['engine']}), "
            f"asr {status['asr']}, model {getattr(getattr(assistant, 'model', None), 'model_id', '?')}, "
            f"speed {speed:g}x; reference service {service.url}, outbox {config.outbox.path}"
            f"{f' ({owed} owed announcements)' if owed else ''}; "
            f"speech ready in {synth_s:.1f} s, models in {load_s:.1f} s",
            file=sys.stderr,
        )

    report.drive_start_ms = now_ms()
    reporter = asyncio.create_task(report.follow(events, pipeline), name="demo-report")
    try:
        await pipeline.run()
        await asyncio.sleep(0.05)
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        for task in service_tasks:
            task.cancel()
        await asyncio.gather(*service_tasks, return_exceptions=True)
        await pipeline.aclose()
        await assistant.close()
        entries = [e.as_dict() for e in reversed(await asyncio.to_thread(wiring.store.list))]
        await wiring.aclose()
        key_counts = await asyncio.to_thread(service.key_counts)
        await asyncio.to_thread(service.close)
    cabin_recording = mic.write(out_dir / "cabin-mic.wav")
    for leftover in (out_dir / ".playback").glob("*.wav"):
        leftover.unlink()
    summary = report.summary(
        status=pipeline.status(),
        driver_repeats=driver.repeats,
        cabin_recording=cabin_recording,
        entries=entries,
        key_counts=key_counts,
        wall_seconds=round(time.monotonic() - t0, 1),
    )
    if as_json:
        print(json.dumps({"summary": summary}, ensure_ascii=False))
    else:
        print_summary(summary, requests=requests, vad=config.vad, out_dir=out_dir)
    return {"records": report.printed, "summary": summary}
