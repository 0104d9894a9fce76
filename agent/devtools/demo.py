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
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.core.events import now_ms
from agent.core.logging import get_logger

log = get_logger("pipeline")

RATE = 16000
CACHE_VERSION = "2"
SPEECH_DBFS = -22.0  # active speech level in the cabin recording
SNR_DB = 20.0  # road noise this far below the speech (pocketsphinx misses ~1 wake in 4 at 15 dB)


@dataclass(frozen=True)
class Scene:
    """A moment of the drive between two requests: a tunnel's entrance or exit.

    `when="quiet"` plays it once the car is idle (the demo); `"now"` right after the driver's last words, while
    the car may still be thinking or speaking (tests: an order placed in the middle of another reply)."""

    name: str  # "enter-tunnel" (the services go down) or "leave-tunnel" (they come back)
    when: str = "quiet"


ENTER_TUNNEL = Scene("enter-tunnel")
LEAVE_TUNNEL = Scene("leave-tunnel")

# (voice, what the driver says, wake phrase first?) or a Scene. The wake phrase is always said by the Piper
# voice: pocketsphinx does not hear espeak-ng's "hey cabin" (docs/audio.md); a real driver sounds more like
# Piper.
DRIVE: list[tuple[str, str, bool] | Scene] = [
    ("piper", "set the temperature to twenty one degrees", True),
    ("espeak", "please call mom", True),
    ("espeak", "play some jazz", True),
    # whisper hears espeak-ng's "navigate" as "now we get to": that one is Piper's.
    ("piper", "navigate to work", True),
    # Online: fresh from the service, and remembered. Just before the tunnel on purpose: the model sees one past
    # turn (llm.history_turns), and a failed jazz request there once made it answer the order in words instead
    # of calling order_meal.
    ("piper", "where is my package", True),
    ENTER_TUNNEL,
    ("piper", "I'd like a large pepperoni pizza", True),
    ("espeak", "yes", False),  # answers the car's question in the follow-up window, no wake phrase
    ("piper", "where is my package", True),  # offline: the last known status, with its age
    LEAVE_TUNNEL,
    ("espeak", "what is the capital of France", True),
]

TUNNEL_BANNERS = {
    "enter-tunnel": "— entering tunnel: no connectivity —",
    "leave-tunnel": "— leaving tunnel: back online —",
}


# ---------------------------------------------------------------- speech for the script


def demo_cache_dir() -> Path:
    from agent.core.config import cache_dir

    return cache_dir() / "demo"


def _wav_int16(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        rate, frames = wav.getframerate(), wav.readframes(wav.getnframes())
    return np.frombuffer(frames, dtype="<i2").copy(), rate


def _to_16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    return AudioChunk(pcm.astype("<i2").tobytes(), rate=rate).to_format(RATE, 1).as_int16()[:, 0].copy()


def espeak(text: str, voice: str = "en-us+m3", speed_wpm: int = 140) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "say.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-w", str(out), text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        pcm, rate = _wav_int16(out)
    return _to_16k(pcm, rate)


class Voices:
    """Synthesises (and caches) what the driver says: `say("piper", "play some jazz")` -> 16 kHz int16."""

    def __init__(self, config: Any, cache: Path | None = None) -> None:
        self.config = config
        self.cache = cache or demo_cache_dir()
        self._piper: Any = None

    def _piper_voice(self) -> Any:
        if self._piper is None:
            from agent.tts.factory import voice_file
            from agent.tts.piper import PiperTts

            self._piper = PiperTts(voice_file(self.config, "en"), threads=1, warm_up=False)
        return self._piper

    def say(self, voice: str, text: str) -> np.ndarray:
        key = hashlib.sha256(f"{CACHE_VERSION}|{voice}|{text}".encode()).hexdigest()[:16]
        path = self.cache / f"{voice}-{key}.npy"
        if path.exists():
            return np.load(path)
        if voice == "piper":
            piper = self._piper_voice()
            pcm = np.frombuffer(piper.synthesize_blocking(text), dtype="<i2")
            audio = _to_16k(pcm, piper.sample_rate_hz)
        elif voice == "espeak" or voice.startswith("espeak:"):
            # "espeak:en-gb+f3": another accent and speaker than the default one
            audio = espeak(text, voice.partition(":")[2] or "en-us+m3")
        else:
            raise ValueError(f"unknown demo voice {voice!r}")
        audio = _level(audio, SPEECH_DBFS)
        self.cache.mkdir(parents=True, exist_ok=True)
        np.save(path, audio)
        return audio


def _level(audio: np.ndarray, dbfs: float) -> np.ndarray:
    from agent.devtools.road_noise import active_rms

    rms = active_rms(audio.astype(np.float64), RATE) or 1.0
    gain = 32768 * 10 ** (dbfs / 20) / rms
    return np.clip(np.round(audio.astype(np.float64) * gain), -32768, 32767).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


@dataclass
class Segment:
    """One thing the driver says, and when: "idle" waits for the car to be quiet, "follow-up" for its question."""

    label: str
    audio: np.ndarray  # clean 16 kHz speech with its pauses; road noise is added as it is played
    gate: str = "idle"
    # A scene instead of speech: `action` runs when the gate opens, then road noise plays for `audio`'s length
    # and on until `until()` (at most `until_max_seconds`).
    action: Callable[[], Awaitable[None]] | None = None
    until: Callable[[], bool] | None = None
    until_max_seconds: float = 30.0


def request_segment(
    voices: Voices,
    voice: str,
    text: str,
    *,
    wake: bool,
    wake_phrase: str = "hey cabin",
    lead_seconds: float = 1.0,
    gap_seconds: float = 0.6,
    tail_seconds: float = 1.2,
) -> Segment:
    parts = [silence(lead_seconds)]
    if wake:
        parts += [voices.say("piper", wake_phrase), silence(gap_seconds)]
    parts += [voices.say(voice, text), silence(tail_seconds)]
    return Segment(text, np.concatenate(parts), "idle" if wake else "follow-up")


# ---------------------------------------------------------------- the cabin microphone


class CabinMic:
    """The cabin as an audio source: segments in road noise, paced at `speed` x real time.

    Before each segment it plays road noise until `ready(segment.gate)` (at most `max_wait_seconds`), as a
    driver waits for the car. `fed` keeps everything it played (the cabin recording).
    """

    def __init__(
        self,
        segments: list[Segment],
        *,
        ready: Callable[[str], bool],
        speed: float = 1.0,
        block_ms: int = 30,
        seed: int = 2,
        max_wait_seconds: float = 300.0,
        tail_seconds: float = 2.0,
        turns: Callable[[], int] | None = None,
    ) -> None:
        from agent.devtools.road_noise import road_noise

        self.segments = segments
        self.ready = ready
        self.speed = max(0.1, speed)
        self.block = RATE * block_ms // 1000
        self.max_wait_seconds = max_wait_seconds
        self.tail_seconds = tail_seconds
        # How many requests the car has started: a driver whose wake phrase went unheard says it all again.
        self.turns = turns
        self.repeats = 0
        level = 32768 * 10 ** ((SPEECH_DBFS - SNR_DB) / 20)
        self._noise = (road_noise(60.0, RATE, seed=seed) * level).astype(np.float32)
        self._noise_at = 0
        self.fed: list[np.ndarray] = []
        self.segment_starts_s: list[float] = []
        self.waited_s = 0.0

    def _noise_block(self, n: int) -> np.ndarray:
        idx = (self._noise_at + np.arange(n)) % len(self._noise)
        self._noise_at = (self._noise_at + n) % len(self._noise)
        return self._noise[idx]

    def _blocks(self, clean: np.ndarray) -> list[np.ndarray]:
        out = []
        for start in range(0, len(clean), self.block):
            part = clean[start : start + self.block].astype(np.float32)
            out.append(np.clip(np.round(part + self._noise_block(len(part))), -32768, 32767).astype(np.int16))
        return out

    async def stream(self) -> AsyncIterator[AudioChunk]:
        started = time.monotonic()
        sent = 0

        async def emit(block: np.ndarray) -> AudioChunk:
            nonlocal sent
            ahead = started + sent / RATE / self.speed - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            else:
                await asyncio.sleep(0)
            sent += len(block)
            self.fed.append(block)
            return AudioChunk(block.tobytes(), RATE, timestamp_ms=now_ms())

        for segment in self.segments:
            waited = 0.0
            while not self.ready(segment.gate) and waited < self.max_wait_seconds:
                yield await emit(self._blocks(silence(self.block / RATE))[0])
                waited += self.block / RATE
            if waited >= self.max_wait_seconds:
                log.warning("demo-gate-timeout", segment=segment.label, gate=segment.gate)
            self.waited_s += waited
            self.segment_starts_s.append(sent / RATE)
            if segment.action is not None:
                await segment.action()
                for block in self._blocks(segment.audio):
                    yield await emit(block)
                waited = 0.0
                while (
                    segment.until is not None and not segment.until() and waited < segment.until_max_seconds
                ):
                    yield await emit(self._blocks(silence(self.block / RATE))[0])
                    waited += self.block / RATE
                if waited >= segment.until_max_seconds:
                    log.warning("demo-scene-timeout", segment=segment.label)
                continue
            before = self.turns() if self.turns is not None else 0
            for block in self._blocks(segment.audio):
                yield await emit(block)
            # pocketsphinx misses more wakes after long stretches of road noise (docs/voice-loop.md): like a
            # driver, say it again (at most twice) when the car did not react.
            for _ in range(2):
                if self.turns is None or self.turns() != before:
                    break
                self.repeats += 1
                log.info("demo-driver-repeats", segment=segment.label)
                for block in self._blocks(segment.audio):
                    yield await emit(block)
        for block in self._blocks(silence(self.tail_seconds)):
            yield await emit(block)

    def write(self, path: Path) -> Path:
        pcm = np.concatenate(self.fed) if self.fed else np.zeros(0, np.int16)
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(RATE)
            wav.writeframes(pcm.tobytes())
        return path


# ---------------------------------------------------------------- the drive


def _fmt_latency(lat: dict[str, float]) -> str:
    labels = (
        ("transcript_final", "transcript"),
        ("first_token", "first token"),
        ("tool_done", "tool done"),
        ("first_audio", "first audio"),
    )
    parts = [f"{label} +{lat[key]:.0f}" for key, label in labels if key in lat]
    return "end of speech → " + " → ".join(parts) + " ms" if parts else "(no latency: no speech end)"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _outbox_line(call: dict[str, Any]) -> str | None:
    """What a tool call did to the outbox, or where a read-only answer came from."""
    result = call.get("result") or {}
    entry = result.get("outbox")
    if isinstance(entry, dict) and entry.get("key"):
        why = " (queued: offline)" if result.get("queued") else ""
        return (
            f"outbox › entry {entry['id']} {entry['state']}{why}, key {entry['key']}, "
            f"{_count(entry['attempts'], 'attempt')}"
        )
    if result.get("source") == "cache":
        return f"status › last known, {result.get('age_seconds', 0)} s old (offline)"
    return None


def print_record(record: dict[str, Any], wav: Path | None, out: Any = sys.stdout) -> None:
    print(
        f"\n— turn {record['index']} ({record['trigger']}{', barge-in' if record['barge_in'] else ''}) —",
        file=out,
    )
    print(f"heard  › {record['transcript'] if record['transcript'] is not None else '(nothing)'}", file=out)
    for call in record["tool_calls"]:
        print(
            f"tool   › {call['name']} {json.dumps(call['arguments'], ensure_ascii=False)}  [{call['status']}]",
            file=out,
        )
        line = _outbox_line(call)
        if line:
            print(line, file=out)
    print(f"car    › {record['reply'] or '(silent: ' + record['outcome'] + ')'}", file=out)
    print(f"         {_fmt_latency(record['latency_ms'])}", file=out)
    if wav is not None:
        print(f"         reply audio: {wav}", file=out)


def demo_service_config(config: Any, url: str, outbox_file: Path) -> Any:
    """`config` with both services at the demo's reference service, the outbox in `outbox_file`, probes every
    half second and no NetworkManager (the machine's own link says nothing about a loopback service)."""
    endpoint = {"base_url": url, "api_key": None, "timeout_seconds": 1.0}
    return config.model_copy(
        update={
            "services": config.services.model_copy(
                update={
                    "meals": config.services.meals.model_copy(update=endpoint),
                    "deliveries": config.services.deliveries.model_copy(update=endpoint),
                }
            ),
            "outbox": config.outbox.model_copy(update={"path": outbox_file}),
            "connectivity": config.connectivity.model_copy(
                update={
                    "probe_interval_seconds": 0.5,
                    "probe_timeout_seconds": 0.5,
                    "use_networkmanager": False,
                }
            ),
        }
    )


def _fresh(path: Path) -> Path:
    for old in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        old.unlink(missing_ok=True)
    return path


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
    from agent.app.wiring import build_assistant
    from agent.audio.sinks import WavSink
    from agent.core.events import EventBus
    from agent.devtools.reference_service import ReferenceService
    from agent.loop.pipeline import State, VoicePipeline
    from agent.services.wiring import open_services
    from agent.understanding.engine import Assistant

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
    config = demo_service_config(config, service.url, _fresh(out_dir / "outbox.sqlite3"))
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
    elif model is not None:
        assistant = Assistant(config, wiring.registry, model, events=events, services=wiring.services)
        await assistant.warm()
    else:
        assistant = await build_assistant(
            config, events=events, services=wiring.services, registry=wiring.registry
        )
    holder: dict[str, VoicePipeline] = {}
    printed: list[dict[str, Any]] = []
    scenes: list[dict[str, Any]] = []
    announcements: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    speaking: list[dict[str, Any]] = []  # who spoke when (monotonic ms): turns and announcements
    queued_keys: list[str] = []

    def ready(gate: str) -> bool:
        pipeline = holder.get("p")
        if gate == "now":
            return True
        if pipeline is None or pipeline.state != State.IDLE or pipeline._active is not None:
            return False
        in_follow_up = pipeline.detector.in_follow_up
        if gate == "follow-up":
            return in_follow_up
        # A scene waits until the last turn is printed, so its banner comes after it.
        return not in_follow_up and (gate != "quiet" or len(printed) >= len(pipeline.records))

    def emit(kind: str, text_lines: list[str], **data: Any) -> None:
        if as_json:
            print(json.dumps({"event": kind, **data}, ensure_ascii=False), flush=True)
        else:
            for text in text_lines:
                print(text)
            sys.stdout.flush()

    def since_scene_s() -> float:
        return round(time.monotonic() - scenes[-1]["at"], 1) if scenes else 0.0

    def scene_segment(scene: Scene) -> Segment:
        async def act() -> None:
            scenes.append({"name": scene.name, "at": time.monotonic(), "at_ms": now_ms()})
            if scene.name == "enter-tunnel":
                await asyncio.to_thread(service.go_down)
            elif scene.name == "leave-tunnel":
                await asyncio.to_thread(service.come_up)
            else:
                raise ValueError(f"unknown demo scene {scene.name!r}")
            banner = TUNNEL_BANNERS[scene.name]
            emit(
                "scene",
                [
                    f"\n{banner}",
                    f"service › {'down' if scene.name == 'enter-tunnel' else 'up'} ({service.url})",
                ],
                scene=scene.name,
                service_up=service.is_up,
            )

        if scene.name == "enter-tunnel":
            until: Callable[[], bool] = lambda: not wiring.monitor.is_online("meals")  # noqa: E731
        else:
            # Back online: wait while the queued order is placed and the car tells the driver.
            until = lambda: len(announcements) >= len(queued_keys)  # noqa: E731
        return Segment(scene.name, silence(1.5), scene.when, action=act, until=until, until_max_seconds=45.0)

    segments = [scene_segment(item) if isinstance(item, Scene) else item for item in planned]
    requests = sum(not isinstance(item, Scene) for item in drive)
    mic = CabinMic(
        segments, ready=ready, speed=speed, turns=lambda: holder["p"]._turns if "p" in holder else 0
    )
    sink = WavSink(out_dir / ".playback", name_pattern="playback{index:03d}.wav")
    pipeline = await VoicePipeline.from_config(
        config, assistant, mic, sink, events=events, announcements=wiring.announcements()
    )
    holder["p"] = pipeline
    owed = await wiring.replay_owed(pipeline)
    load_s = time.monotonic() - t0 - synth_s
    if not as_json:
        print(
            f"simulated drive: {requests} requests, wake '{config.wake_phrase}' "
            f"({pipeline.detector.engine.name if pipeline.detector.engine else 'push-to-talk'}), "
            f"asr {pipeline.recognizer.name}, model {getattr(getattr(assistant, 'model', None), 'model_id', '?')}, "
            f"speed {speed:g}x; reference service {service.url}, outbox {config.outbox.path}"
            f"{f' ({owed} owed announcements)' if owed else ''}; "
            f"speech ready in {synth_s:.1f} s, models in {load_s:.1f} s",
            file=sys.stderr,
        )

    announcement_playback: dict[str, int] = {}
    drive_start_ms = [now_ms()]

    async def on_turn(record: dict[str, Any]) -> None:
        await asyncio.sleep(0)  # let the sink close the file
        playback = next((r.playback_index for r in pipeline.records if r.index == record["index"]), None)
        wav = None
        if playback is not None and playback <= len(sink.files) and sink.files[playback - 1].exists():
            wav = out_dir / f"turn{record['index']:02d}-reply.wav"
            sink.files[playback - 1].replace(wav)
        record["reply_wav"] = str(wav) if wav else None
        for call in record["tool_calls"]:
            entry = (call.get("result") or {}).get("outbox")
            if isinstance(entry, dict) and entry.get("state") in ("pending", "in-flight"):
                queued_keys.append(entry["key"])
        printed.append(record)
        if as_json:
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            print_record(record, wav)
            sys.stdout.flush()

    def rel_ms(at_ms: float) -> float:
        """Milliseconds since the drive started (the summary's time line)."""
        return round(at_ms - drive_start_ms[0], 1)

    async def on_delivered(data: dict[str, Any], at_ms: float) -> None:
        entry = await asyncio.to_thread(wiring.store.get, data["entry_id"])
        counts = (await asyncio.to_thread(service.key_counts)).get(entry.key, {})
        order = ((entry.result or {}).get("order") or {}).get("id")
        item = {
            "entry_id": entry.id,
            "action": entry.action,
            "state": entry.state,
            "key": entry.key,
            "attempts": entry.attempts,
            "order_id": order,
            "service_key_count": counts,
            "seconds_after_scene": since_scene_s(),
            "at_ms": rel_ms(at_ms),
        }
        deliveries.append(item)
        emit(
            "outbox",
            [
                f"outbox › entry {entry.id} {entry.state} {since_scene_s()} s after the tunnel"
                f"{f', order {order}' if order else ''} ({_count(entry.attempts, 'attempt')})",
                f"         idempotency key {entry.key}: the service saw "
                f"{_count(counts.get('requests', 0), 'request')}, {_count(counts.get('replays', 0), 'replay')}, "
                f"{_count(counts.get('effects', 0), 'order')} for it",
            ],
            **item,
        )

    def on_spoken(data: dict[str, Any], at_ms: float) -> None:
        started = next((s for s in reversed(speaking) if s["who"] == "announcement"), None)
        index = len(announcements) + 1
        wav = None
        playback = announcement_playback.pop("index", None)
        if playback is not None and playback <= len(sink.files) and sink.files[playback - 1].exists():
            wav = out_dir / f"announcement{index:02d}.wav"
            sink.files[playback - 1].replace(wav)
        text = data.get("text") or ""
        item = {
            "index": index,
            "id": data.get("id"),
            "text": text,
            "reply_wav": str(wav) if wav else None,
            "start_ms": started["start_ms"] if started else None,
            "end_ms": rel_ms(at_ms),
            "after_turn": printed[-1]["index"] if printed else None,
            "seconds_after_scene": since_scene_s(),
        }
        announcements.append(item)
        emit(
            "announcement",
            [
                f"\n— announcement (the car is quiet, {item['seconds_after_scene']} s after the tunnel) —",
                f"car    › {text}",
                *([f"         reply audio: {wav}"] if wav else []),
            ],
            **item,
        )

    texts: dict[Any, str] = {}

    async def report() -> None:
        async for event in events.subscribe():
            data = dict(event.data)
            if event.type == "turn-record":
                await on_turn(data)
            elif event.type == "state":
                if data.get("state") == "speaking":
                    who = "announcement" if data.get("turn") is None else f"turn {data['turn']}"
                    speaking.append({"who": who, "start_ms": rel_ms(event.timestamp_ms), "end_ms": None})
                    if who == "announcement":
                        announcement_playback["index"] = pipeline._playbacks
                elif data.get("previous") == "speaking" and speaking and speaking[-1]["end_ms"] is None:
                    speaking[-1]["end_ms"] = rel_ms(event.timestamp_ms)
            elif event.type == "connectivity":
                emit(
                    "connectivity",
                    [
                        f"link   › {data['service']} {'online' if data['online'] else 'offline'}"
                        f"{f' ({since_scene_s()} s after the tunnel)' if scenes else ''}"
                    ],
                    **data,
                )
            elif event.type == "outbox" and data.get("state") == "delivered":
                await on_delivered(data, event.timestamp_ms)
            elif event.type == "outbox":
                emit(
                    "outbox",
                    [f"outbox › entry {data['entry_id']} {data['state']}: {data.get('error')}"],
                    **data,
                )
            elif event.type == "announcement":
                texts[data.get("id")] = data.get("text", "")
            elif event.type in ("announcement-spoken", "announcement-interrupted"):
                if event.type == "announcement-spoken":
                    on_spoken({**data, "text": texts.get(data.get("id"), "")}, event.timestamp_ms)

    drive_start_ms[0] = now_ms()
    reporter = asyncio.create_task(report(), name="demo-report")
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
    mic.write(out_dir / "cabin-mic.wav")
    for leftover in (out_dir / ".playback").glob("*.wav"):
        leftover.unlink()
    turn_spans = [s for s in speaking if s["who"] != "announcement"]
    for item in announcements:
        span = next(
            (s for s in speaking if s["who"] == "announcement" and s["start_ms"] == item["start_ms"]), None
        )
        item["over_a_reply"] = span is None or any(
            t["start_ms"] < (span["end_ms"] or float("inf"))
            and span["start_ms"] < (t["end_ms"] or float("inf"))
            for t in turn_spans
        )
    with_audio = [
        r["latency_ms"]["first_audio"]
        for r in printed
        if r["outcome"] == "replied" and "first_audio" in r.get("latency_ms", {})
    ]
    summary = {
        "turns": len(printed),
        "replied": sum(r["outcome"] == "replied" for r in printed),
        "tool_calls": sum(len(r["tool_calls"]) for r in printed),
        "median_speech_end_to_first_audio_ms": round(statistics.median(with_audio)) if with_audio else None,
        "speech_end_to_first_audio_ms": with_audio,
        "audio_lag": pipeline.status()["audio_lag"],
        "wake_real_time_factor": round(pipeline.detector.stats.real_time_factor, 3),
        "driver_repeats": mic.repeats,
        "cabin_recording": str(out_dir / "cabin-mic.wav"),
        "scenes": [s["name"] for s in scenes],
        "outbox": [
            {k: e[k] for k in ("id", "action", "state", "key", "attempts", "summary", "last_error")}
            | {"service_key_count": key_counts.get(e["key"], {"requests": 0, "replays": 0, "effects": 0})}
            for e in entries
        ],
        "queued_offline": queued_keys,
        "deliveries": deliveries,
        "announcements": announcements,
        # Who spoke when, in ms since the drive started: every reply and announcement.
        "speaking": speaking,
        "wall_seconds": round(time.monotonic() - t0, 1),
    }
    if as_json:
        print(json.dumps({"summary": summary}, ensure_ascii=False))
    else:
        median = summary["median_speech_end_to_first_audio_ms"]
        print(
            f"\n{summary['replied']}/{requests} requests answered, {summary['tool_calls']} tool calls; "
            f"median end of speech → first audio {median if median is not None else '—'} ms "
            f"(includes the {config.vad.silence_ms} ms endpoint silence); "
            f"replies in {out_dir}/, cabin recording {summary['cabin_recording']}; {summary['wall_seconds']} s"
        )
        for e in summary["outbox"]:
            c = e["service_key_count"]
            print(
                f"outbox: {e['action']} {e['state']} after {_count(e['attempts'], 'attempt')}, key {e['key']}; "
                f"service: {_count(c['requests'], 'request')}, {_count(c['effects'], 'order')} for that key"
            )
        lag = summary["audio_lag"]
        print(
            "mic loop: chunks handled after capture, max "
            + ", ".join(
                f"{state} {lag[state]['max_lag_ms']:.0f} ms" for state in ("idle", "thinking", "speaking")
            )
            + f"; wake engine real-time factor {summary['wake_real_time_factor']}"
        )
    return {"records": printed, "summary": summary}
