"""The simulated drive: scripted spoken requests (Piper and espeak-ng voices in road noise) fed as the microphone
through the real voice loop (agent.pipeline); the car's spoken replies are written to one WAV file per turn.

A driver waits for the car to answer before speaking again, so the cabin "microphone" plays road noise while the
car is busy and starts the next request only when the car is idle (the confirmation "yes" only once the car has
asked, in the follow-up window). The whole cabin recording as fed is written to `<out>/cabin-mic.wav`.
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from agent.audio.chunk import AudioChunk
from agent.events import now_ms
from agent.logging import get_logger

log = get_logger("pipeline")

RATE = 16000
CACHE_VERSION = "2"
SPEECH_DBFS = -22.0  # active speech level in the cabin recording
SNR_DB = 20.0  # road noise this far below the speech (pocketsphinx misses ~1 wake in 4 at 15 dB)

# (voice, what the driver says, wake phrase first?). The wake phrase is always said by the Piper voice:
# pocketsphinx does not hear espeak-ng's "hey cabin" (docs/audio.md), a real driver sounds more like Piper.
DRIVE: list[tuple[str, str, bool]] = [
    ("piper", "set the temperature to twenty one degrees", True),
    ("espeak", "please call mom", True),
    # whisper hears espeak-ng's "navigate" as "now we get to": that one is Piper's.
    ("piper", "navigate to work", True),
    ("espeak", "play some jazz", True),
    ("piper", "order a large pepperoni pizza", True),
    ("espeak", "yes", False),  # answers the car's question in the follow-up window, no wake phrase
    ("piper", "where is my package", True),
    ("espeak", "what is the capital of France", True),
]


# ---------------------------------------------------------------- speech for the script


def demo_cache_dir() -> Path:
    from agent.config import cache_dir

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
        elif voice == "espeak":
            audio = espeak(text)
        else:
            raise ValueError(f"unknown demo voice {voice!r}")
        audio = _level(audio, SPEECH_DBFS)
        self.cache.mkdir(parents=True, exist_ok=True)
        np.save(path, audio)
        return audio


def _level(audio: np.ndarray, dbfs: float) -> np.ndarray:
    from agent.audio.noise import active_rms

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
        from agent.audio.noise import road_noise

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
    print(f"car    › {record['reply'] or '(silent: ' + record['outcome'] + ')'}", file=out)
    print(f"         {_fmt_latency(record['latency_ms'])}", file=out)
    if wav is not None:
        print(f"         reply audio: {wav}", file=out)


async def spoken_drive(
    config: Any,
    out_dir: Path,
    *,
    speed: float = 1.0,
    as_json: bool = False,
    drive: list[tuple[str, str, bool]] | None = None,
    assistant: Any = None,
) -> dict[str, Any]:
    """Run the drive; `assistant` replaces the local model's (tests). Returns the turn records and a summary."""
    from agent.audio.sinks import WavSink
    from agent.events import EventBus
    from agent.pipeline import State, VoicePipeline
    from agent.runtime import build_assistant

    drive = drive or DRIVE
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("turn*-reply.wav"):
        old.unlink()
    t0 = time.monotonic()
    voices = Voices(config)
    segments = await asyncio.to_thread(
        lambda: [
            request_segment(voices, v, text, wake=w, wake_phrase=config.wake_phrase) for v, text, w in drive
        ]
    )
    synth_s = time.monotonic() - t0

    events = EventBus()
    if assistant is None:
        assistant = await build_assistant(config, events=events)
    else:
        assistant.events = events
    holder: dict[str, VoicePipeline] = {}

    def ready(gate: str) -> bool:
        pipeline = holder.get("p")
        if pipeline is None or pipeline.state != State.IDLE or pipeline._active is not None:
            return False
        in_follow_up = pipeline.detector.in_follow_up
        return in_follow_up if gate == "follow-up" else not in_follow_up

    mic = CabinMic(
        segments, ready=ready, speed=speed, turns=lambda: holder["p"]._turns if "p" in holder else 0
    )
    sink = WavSink(out_dir / ".playback", name_pattern="playback{index:03d}.wav")
    pipeline = await VoicePipeline.from_config(config, assistant, mic, sink, events=events)
    holder["p"] = pipeline
    load_s = time.monotonic() - t0 - synth_s
    if not as_json:
        print(
            f"simulated drive: {len(drive)} requests, wake '{config.wake_phrase}' "
            f"({pipeline.detector.engine.name if pipeline.detector.engine else 'push-to-talk'}), "
            f"asr {pipeline.recognizer.name}, model {getattr(getattr(assistant, 'model', None), 'model_id', '?')}, "
            f"speed {speed:g}x; "
            f"speech ready in {synth_s:.1f} s, models in {load_s:.1f} s",
            file=sys.stderr,
        )

    printed: list[dict[str, Any]] = []

    async def report() -> None:
        async for event in events.subscribe():
            if event.type != "turn-record":
                continue
            record = dict(event.data)
            await asyncio.sleep(0)  # let the sink close the file
            playback = next((r.playback_index for r in pipeline.records if r.index == record["index"]), None)
            wav = None
            if playback is not None and playback <= len(sink.files) and sink.files[playback - 1].exists():
                wav = out_dir / f"turn{record['index']:02d}-reply.wav"
                sink.files[playback - 1].replace(wav)
            record["reply_wav"] = str(wav) if wav else None
            printed.append(record)
            if as_json:
                print(json.dumps(record, ensure_ascii=False), flush=True)
            else:
                print_record(record, wav)
                sys.stdout.flush()

    reporter = asyncio.create_task(report(), name="demo-report")
    try:
        await pipeline.run()
        await asyncio.sleep(0.05)
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        await pipeline.aclose()
        await assistant.close()
    mic.write(out_dir / "cabin-mic.wav")
    for leftover in (out_dir / ".playback").glob("*.wav"):
        leftover.unlink()
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
        "wall_seconds": round(time.monotonic() - t0, 1),
    }
    if as_json:
        print(json.dumps({"summary": summary}, ensure_ascii=False))
    else:
        median = summary["median_speech_end_to_first_audio_ms"]
        print(
            f"\n{summary['replied']}/{len(drive)} requests answered, {summary['tool_calls']} tool calls; "
            f"median end of speech → first audio {median if median is not None else '—'} ms "
            f"(includes the {config.vad.silence_ms} ms endpoint silence); "
            f"replies in {out_dir}/, cabin recording {summary['cabin_recording']}; {summary['wall_seconds']} s"
        )
        lag = summary["audio_lag"]
        print(
            "mic loop: chunks handled after capture, max "
            + ", ".join(f"{state} {lag[state]['max_lag_ms']:.0f} ms" for state in ("idle", "thinking", "speaking"))
            + f"; wake engine real-time factor {summary['wake_real_time_factor']}"
        )
    return {"records": printed, "summary": summary}


def register(app: typer.Typer) -> None:
    from agent.cli import get_config

    @app.command()
    def demo(
        out: Annotated[
            Path, typer.Option("--out", help="Where the car's spoken replies are written.")
        ] = Path("demo-out"),
        as_json: Annotated[
            bool, typer.Option("--json", help="One JSON object per turn, then a summary.")
        ] = False,
        speed: Annotated[
            float,
            typer.Option(
                "--speed",
                min=0.25,
                max=8.0,
                help="Feed the cabin audio this many times faster than real time.",
            ),
        ] = 1.0,
    ) -> None:
        """A simulated spoken drive through the real voice loop on the embedded defaults (no microphone needed)."""
        config = get_config()
        asyncio.run(spoken_drive(config, out, speed=speed, as_json=as_json))
