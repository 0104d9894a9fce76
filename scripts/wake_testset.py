#!/usr/bin/env python3
"""Generate the wake-word test set and measure an engine on it: detection rate and false accepts per hour.

Positives: "hey cabin" by Piper (en_US-joe-medium, several speeds and noise seeds) and espeak-ng voices/speeds,
each inside road noise at several SNRs. Negatives (>= 1 hour): espeak-ng and Piper reading varied text (with
confusable words like "cabinet", "hey Kevin"), music-like chords and melodies, and road noise.
Generation is cached under ~/.cache/cabin-agent/wake-testset, so reruns only measure.

    python scripts/wake_testset.py                        # full set, measure the default threshold
    python scripts/wake_testset.py --tune 1e-30,1e-20,1e-10   # sweep kws thresholds (negatives subset)
    python scripts/wake_testset.py --subset small         # the test suite's subset
    python scripts/wake_testset.py --verify --out bench/results/wake.json   # two stages: + whisper verifier
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.devtools.road_noise import mix_at_snr, noise_int16, road_noise

RATE = 16000
PHRASE = "hey cabin"
SNRS_DB: tuple[float | None, ...] = (None, 20.0, 10.0, 5.0, 0.0)
ESPEAK_VOICES = (
    "en-us",
    "en-gb",
    "en-us+f2",
    "en-us+m3",
    "en-us+f4",
    "en-029",
    "en-us-nyc",
    "en-gb-scotland",
    "en-gb-x-rp",
)
ESPEAK_SPEEDS = (130, 160, 190)
PIPER_LENGTH_SCALES = (0.85, 1.0, 1.2)
PIPER_NOISE_SCALES = (0.5, 0.667, 0.9)
PIPER_TEXTS = ("Hey cabin.", "Hey, cabin!", "hey cabin")
VOICE_ID = "piper-en_US-joe-medium"  # the dev profile's voice, from the model store

WORDS = (
    "the car road drive turn left right music play volume window open close temperature degrees warm cold "
    "navigation home work office station coffee order meal pizza delivery package locker tomorrow today "
    "weather rain sun traffic slow fast lane exit highway bridge tunnel call mom sarah message text read "
    "please thanks maybe later again stop start radio song album artist podcast news battery charge fuel "
    "parking garage seat heat fan air conditioning passenger driver kids school dinner lunch breakfast "
    "meeting minutes hours kilometres miles speed limit camera phone battery light dark morning evening night"
).split()
CONFUSABLES = (
    "hey kevin how are you",
    "the cabinet is full",
    "a cab in the city",
    "hey captain",
    "pass the cabbage",
    "hey again",
    "cabins by the lake",
    "they came in a cab",
    "hey can we stop",
    "hey, cabbie",
    "okay, come in",
    "a cabin in the woods",
    "hey man",
    "hey cab driver",
    "the cable is loose",
)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cabin-agent" / "wake-testset"


# ---------------------------------------------------------------- synthesis


def _wav_to_int16(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data), "rb") as wav:
        rate, channels = wav.getframerate(), wav.getnchannels()
        frames = wav.readframes(wav.getnframes())
    chunk = AudioChunk(frames, rate=rate, channels=channels).to_format(RATE, 1)
    return np.frombuffer(chunk.pcm, dtype="<i2").copy()


def espeak(text: str, voice: str = "en-us", speed: int = 160) -> np.ndarray:
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=True
    ).stdout
    # espeak's streamed WAV header has bogus sizes; wave copes once we fix the lengths.
    fixed = bytearray(out)
    fixed[4:8] = (len(out) - 8).to_bytes(4, "little")
    fixed[40:44] = (len(out) - 44).to_bytes(4, "little")
    return _wav_to_int16(bytes(fixed))


def piper_model_path(cache: Path | None = None) -> Path:
    """en_US-joe-medium from the model store (`cabin-agent models fetch piper-en_US-joe-medium`)."""
    from agent.core.config import Config
    from agent.core.errors import ModelError
    from agent.models import open_store

    try:
        return open_store(Config()).file(VOICE_ID)
    except ModelError as err:
        raise SystemExit(f"no Piper voice: {err}") from err


class Piper:
    def __init__(self, cache: Path) -> None:
        from piper import PiperVoice

        self.voice = PiperVoice.load(str(piper_model_path(cache)))

    def say(self, text: str, length_scale: float = 1.0, noise_scale: float = 0.667) -> np.ndarray:
        from piper import SynthesisConfig

        cfg = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale)
        parts = [c.audio_int16_bytes for c in self.voice.synthesize(text, syn_config=cfg)]
        rate = self.voice.config.sample_rate
        chunk = AudioChunk(b"".join(parts), rate=rate).to_format(RATE, 1)
        return np.frombuffer(chunk.pcm, dtype="<i2").copy()


# ---------------------------------------------------------------- the set


@dataclass(frozen=True)
class Positive:
    id: str
    voice: str
    audio: np.ndarray


def _cached(path: Path, make: Callable[[], np.ndarray]) -> np.ndarray:
    if path.exists():
        return np.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = make().astype(np.int16)
    np.save(path, audio)
    return audio


def positives(cache: Path, subset: str = "full") -> list[Positive]:
    out: list[Positive] = []
    piper: Piper | None = None
    piper_specs = [
        (t, ls, ns) for t in PIPER_TEXTS for ls in PIPER_LENGTH_SCALES for ns in PIPER_NOISE_SCALES
    ]
    espeak_specs = [(v, s) for v in ESPEAK_VOICES for s in ESPEAK_SPEEDS]
    if subset == "small":
        piper_specs = [(PIPER_TEXTS[0], ls, 0.667) for ls in PIPER_LENGTH_SCALES]
        espeak_specs = [("en-us+f2", 160), ("en-us", 160)]
    for i, (text, ls, ns) in enumerate(piper_specs):
        path = cache / "pos" / f"piper_{PIPER_TEXTS.index(text)}_{ls}_{ns}.npy"

        def make(text: str = text, ls: float = ls, ns: float = ns) -> np.ndarray:
            nonlocal piper
            piper = piper or Piper(cache)
            return piper.say(text, ls, ns)

        out.append(Positive(f"piper-{i}", "piper-joe", _cached(path, make)))
    for voice, speed in espeak_specs:
        path = cache / "pos" / f"espeak_{voice}_{speed}.npy"
        out.append(
            Positive(
                f"espeak-{voice}-{speed}",
                f"espeak-{voice}",
                _cached(path, lambda v=voice, s=speed: espeak(PHRASE, v, s)),
            )
        )
    return out


def positive_clip(pos: Positive, snr_db: float | None, seed: int) -> np.ndarray:
    """The phrase with 1 s of cabin before and after, road noise across the whole clip."""
    lead = np.zeros(RATE, dtype=np.int16)
    clip = np.concatenate([lead, pos.audio, lead])
    noise = road_noise(len(clip) / RATE, RATE, seed=seed)
    mixed = mix_at_snr(clip, noise, snr_db, RATE)
    if snr_db is None:  # still a quiet car, not digital silence
        mixed = np.clip(
            mixed.astype(np.int32) + noise_int16(len(clip) / RATE, level_dbfs=-60, seed=seed), -32768, 32767
        ).astype(np.int16)
    return mixed


def _sentence(rng: np.random.Generator) -> str:
    if rng.random() < 0.15:
        return str(rng.choice(CONFUSABLES))
    n = int(rng.integers(4, 14))
    return " ".join(rng.choice(WORDS, n)) + "."


def _music(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Chords and a melody with harmonics and note envelopes: "music-like" without a music file."""
    t_note = 0.25 + 0.25 * rng.integers(0, 3)
    notes = int(seconds / t_note)
    out = []
    root = 110 * 2 ** (rng.integers(0, 12) / 12)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    n = int(t_note * RATE)
    t = np.arange(n) / RATE
    env = np.minimum(1, t / 0.02) * np.exp(-3 * t)
    for _ in range(notes):
        chord = root * 2 ** (scale[rng.integers(0, 8, 3)] / 12)
        melody = root * 4 * 2 ** (scale[rng.integers(0, 8)] / 12)
        x = sum(np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t) for f in chord)
        x = x + 0.8 * (np.sin(2 * np.pi * melody * t) + 0.4 * np.sin(6 * np.pi * melody * t))
        out.append(x * env)
    x = np.concatenate(out) if out else np.zeros(1)
    return (x / (np.max(np.abs(x)) + 1e-9) * 12000).astype(np.int16)


def negatives(cache: Path, subset: str = "full") -> dict[str, np.ndarray]:
    """Negative audio by kind; full: >= 60 minutes in total."""
    minutes = {"espeak-speech": 32.0, "piper-speech": 10.0, "music": 10.0, "road-noise": 10.0}
    if subset == "small":
        minutes = {"espeak-speech": 2.0, "piper-speech": 1.0, "music": 0.5, "road-noise": 0.5}
    if subset == "tune":
        minutes = {"espeak-speech": 6.0, "piper-speech": 3.0, "music": 1.0, "road-noise": 1.0}
    out: dict[str, np.ndarray] = {}
    for kind, mins in minutes.items():
        # Each kind is generated once at full length; subsets are prefixes, so they share the cache.
        full_minutes = {"espeak-speech": 32.0, "piper-speech": 10.0, "music": 10.0, "road-noise": 10.0}[kind]
        path = cache / "neg" / f"{kind}.npy"
        audio = _cached(path, lambda k=kind, m=full_minutes: _make_negative(cache, k, m))
        out[kind] = audio[: int(mins * 60 * RATE)]
    return out


def _make_negative(cache: Path, kind: str, minutes: float) -> np.ndarray:
    rng = np.random.default_rng({"espeak-speech": 1, "piper-speech": 2, "music": 3, "road-noise": 4}[kind])
    target = int(minutes * 60 * RATE)
    parts: list[np.ndarray] = []
    total = 0
    piper = Piper(cache) if kind == "piper-speech" else None
    print(f"generating {minutes:.0f} min of {kind} ...", file=sys.stderr, flush=True)
    while total < target:
        if kind == "espeak-speech":
            voice = str(rng.choice(ESPEAK_VOICES))
            seg = espeak(" ".join(_sentence(rng) for _ in range(3)), voice, int(rng.integers(120, 200)))
        elif kind == "piper-speech":
            assert piper is not None
            seg = piper.say(" ".join(_sentence(rng) for _ in range(3)), float(rng.uniform(0.85, 1.2)))
        elif kind == "music":
            seg = _music(20.0, rng)
        else:
            seg = noise_int16(30.0, level_dbfs=float(rng.uniform(-45, -20)), seed=int(rng.integers(1 << 30)))
        gap = np.zeros(int(rng.uniform(0.1, 0.8) * RATE), dtype=np.int16)
        seg = np.concatenate([seg, gap])
        if kind != "road-noise":
            # In the car everything arrives with road noise under it (10-25 dB below).
            noise = road_noise(len(seg) / RATE, RATE, seed=int(rng.integers(1 << 30)))
            seg = mix_at_snr(seg, noise, float(rng.uniform(10, 25)), RATE)
        parts.append(seg)
        total += len(seg)
    return np.concatenate(parts)[:target]


# ---------------------------------------------------------------- measurement


def _chunks(audio: np.ndarray, block_ms: int = 30) -> Iterator[AudioChunk]:
    step = RATE * block_ms // 1000
    pcm = audio.astype("<i2").tobytes()
    for i in range(0, len(audio), step):
        yield AudioChunk(pcm[2 * i : 2 * (i + step)], RATE, timestamp_ms=1000.0 * i / RATE)


def measure(
    make_engine: Callable[[], object], cache: Path, subset: str = "full", refractory_seconds: float = 2.0
) -> dict[str, object]:
    pos = positives(cache, subset)
    neg = negatives(cache, "small" if subset == "small" else subset)
    engine = make_engine()
    engine_s = 0.0
    audio_s = 0.0
    per_voice: dict[str, list[int]] = {}
    per_snr: dict[str, list[int]] = {}
    snrs = {"full": SNRS_DB, "tune": (None, 10.0, 0.0), "small": (None, 10.0)}[subset]
    for k, p in enumerate(pos):
        for j, snr in enumerate(snrs):
            engine.reset()  # type: ignore[attr-defined]
            clip = positive_clip(p, snr, seed=1000 * k + j)
            t0 = time.perf_counter()
            hit = any(engine.process(c) is not None for c in _chunks(clip, 90))  # type: ignore[attr-defined]
            engine_s += time.perf_counter() - t0
            audio_s += len(clip) / RATE
            per_voice.setdefault(p.voice, [0, 0])
            per_voice[p.voice][0] += hit
            per_voice[p.voice][1] += 1
            key = "clean" if snr is None else f"{snr:g}dB"
            per_snr.setdefault(key, [0, 0])
            per_snr[key][0] += hit
            per_snr[key][1] += 1
    false_accepts: dict[str, int] = {}
    per_hour: dict[str, float] = {}
    rtf_by_kind: dict[str, float] = {}
    neg_hours = 0.0
    for kind, audio in neg.items():
        engine.reset()  # type: ignore[attr-defined]
        last = -1e9
        count = 0
        t0 = time.perf_counter()
        for c in _chunks(audio, 90):
            if engine.process(c) is not None and c.timestamp_ms - last >= refractory_seconds * 1000:  # type: ignore[attr-defined]
                count += 1
                last = c.timestamp_ms
        spent = time.perf_counter() - t0
        engine_s += spent
        audio_s += len(audio) / RATE
        neg_hours += len(audio) / RATE / 3600
        false_accepts[kind] = count
        rtf_by_kind[kind] = round(spent / (len(audio) / RATE), 4)
        per_hour[kind] = round(count / (len(audio) / RATE / 3600), 1)
    detected = sum(v[0] for v in per_voice.values())
    total = sum(v[1] for v in per_voice.values())
    piper = per_voice.get("piper-joe", [0, 0])
    espeak = [sum(v[i] for k, v in per_voice.items() if k.startswith("espeak")) for i in (0, 1)]
    report: dict[str, object] = {
        "positives": total,
        "detected": detected,
        "detection_rate": round(detected / max(1, total), 3),
        "piper_detection_rate": round(piper[0] / max(1, piper[1]), 3),
        "espeak_detection_rate": round(espeak[0] / max(1, espeak[1]), 3),
        "by_voice": {k: round(v[0] / v[1], 2) for k, v in per_voice.items()},
        "by_snr": {k: round(v[0] / v[1], 2) for k, v in per_snr.items()},
        "negative_hours": round(neg_hours, 3),
        "false_accepts": false_accepts,
        "false_accepts_per_hour": round(sum(false_accepts.values()) / max(neg_hours, 1e-9), 2),
        "false_accepts_per_hour_by_kind": per_hour,
        "real_time_factor": round(engine_s / max(audio_s, 1e-9), 4),
        # Road noise alone is the idle car: the CPU the wake stage costs while nobody speaks.
        "real_time_factor_by_kind": rtf_by_kind,
    }
    stats = getattr(engine, "stats", None)
    if stats is not None and hasattr(stats, "verify_seconds"):
        latencies = sorted(stats.verify_seconds)
        report["verifier"] = {
            "candidates": stats.candidates,
            "accepted": stats.accepted,
            "latency_ms_mean": round(stats.mean_latency_ms),
            "latency_ms_p90": round(1000 * latencies[int(0.9 * (len(latencies) - 1))]) if latencies else None,
            "latency_ms_max": round(1000 * latencies[-1]) if latencies else None,
        }
    return report


def pocketsphinx_engine(kws_threshold: float) -> Callable[[], object]:
    from agent.wake.pocketsphinx import PocketsphinxWake

    return lambda: PocketsphinxWake(PHRASE, kws_threshold=kws_threshold)


def verified_engine(
    kws_threshold: float, min_similarity: float | None = None, window_ms: int | None = None
) -> Callable[[], object]:
    """The two-stage engine create_engine builds for English: pocketsphinx, then the whisper verifier."""
    from agent.core.config import Config
    from agent.models import open_store
    from agent.wake.pocketsphinx import PocketsphinxWake
    from agent.wake.verify import DEFAULT_MIN_SIMILARITY, DEFAULT_WINDOW_MS, VerifiedWake, WhisperVerifier

    def make() -> object:
        verifier = WhisperVerifier(
            open_store(Config()).require("whisper-tiny.en"),
            PHRASE,
            min_similarity=DEFAULT_MIN_SIMILARITY if min_similarity is None else min_similarity,
        )
        first = PocketsphinxWake(PHRASE, kws_threshold=kws_threshold)
        return VerifiedWake(first, verifier, window_ms=window_ms or DEFAULT_WINDOW_MS)

    return make


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=default_cache_dir())
    parser.add_argument("--subset", choices=["full", "tune", "small"], default="full")
    parser.add_argument("--tune", help="comma-separated kws thresholds to sweep (uses the 'tune' negatives)")
    parser.add_argument("--kws-threshold", type=float, default=None)
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--verify", action="store_true", help="pocketsphinx + the whisper verifier")
    parser.add_argument("--min-similarity", type=float, default=None)
    parser.add_argument("--out", type=Path, help="also write the report here (e.g. bench/results/wake.json)")
    args = parser.parse_args(argv)
    if args.generate_only:
        positives(args.cache, args.subset)
        negatives(args.cache, args.subset)
        return 0
    reports = {}
    if args.tune:
        for value in [float(v) for v in args.tune.split(",")]:
            report = measure(pocketsphinx_engine(value), args.cache, "tune")
            reports[f"{value:g}"] = report
            print(json.dumps({"kws_threshold": value, **report}), flush=True)
        out = args.cache / "tune-report.json"
    else:
        from agent.wake.pocketsphinx import DEFAULT_KWS_THRESHOLD, VERIFIED_KWS_THRESHOLD

        default = VERIFIED_KWS_THRESHOLD if args.verify else DEFAULT_KWS_THRESHOLD
        value = args.kws_threshold if args.kws_threshold is not None else default
        make = verified_engine(value, args.min_similarity) if args.verify else pocketsphinx_engine(value)
        started = time.monotonic()
        report = measure(make, args.cache, args.subset)
        report["engine"] = "pocketsphinx+whisper" if args.verify else "pocketsphinx"
        report["kws_threshold"] = value
        report["wall_seconds"] = round(time.monotonic() - started)
        reports[f"{value:g}{'+verify' if args.verify else ''}"] = report
        print(json.dumps(report, indent=2))
        out = args.cache / f"report-{args.subset}{'-verify' if args.verify else ''}.json"
    out.write_text(json.dumps(reports, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(reports, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
