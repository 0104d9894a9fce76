"""What the bench's simulated driver says and how: the spoken script, its speech, and the cabin it is played
in (the scripted microphone, waiting for the car before each request like a driver)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.core.logging import get_logger
from agent.devtools.bench.progress import say
from agent.devtools.road_noise import road_noise
from agent.devtools.scripted_mic import ScriptedMic, noise_level
from agent.devtools.voices import RATE, Voices
from agent.loop.pipeline import State, VoicePipeline

log = get_logger("bench")

# What the simulated driver says: (kind, voice, text, trigger). Kinds are compared separately: vehicle
# commands are answered locally, service commands go to the (loopback) meals/deliveries service, a
# confirmation is the "yes" to the car's question (answered without the model), a question needs no tool.
SCRIPT: tuple[tuple[str, str, str, str], ...] = (
    ("vehicle", "piper", "set the temperature to twenty one degrees", "wake"),
    ("service", "espeak", "where is my package", "ptt"),
    ("vehicle", "espeak", "navigate to work", "wake"),
    ("vehicle", "piper", "play some jazz", "ptt"),
    ("service", "piper", "find a pizza place nearby", "wake"),
    ("vehicle", "espeak", "call mom", "ptt"),
    ("service", "piper", "order a large pepperoni pizza", "wake"),
    ("confirmation", "espeak", "yes", "follow-up"),
    ("vehicle", "piper", "make it nineteen degrees in here", "ptt"),
    ("service", "espeak", "what packages do I have coming", "wake"),
    ("vehicle", "piper", "take me home", "ptt"),
    ("no-tool", "espeak", "what is the capital of France", "wake"),
    ("vehicle", "piper", "call Sarah", "ptt"),
    ("service", "piper", "what is the status of my order", "wake"),
    ("vehicle", "espeak", "play the news", "ptt"),
    ("service", "piper", "has my shoe delivery shipped yet", "wake"),
)


@dataclass(eq=False)  # identity: the script repeats the same request, and arrays don't compare
class ScriptedTurn:
    kind: str
    voice: str
    text: str
    trigger: str  # wake, ptt, follow-up
    speech: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int16))
    wake: np.ndarray | None = field(repr=False, default=None)
    # filled while it is played
    turn_before: int = 0
    speech_end_ms: float | None = None  # when the driver's last sample reached the microphone (monotonic ms)
    wake_missed: bool = False
    load_1min: float | None = None  # the machine's load average as the driver stopped speaking


def trim_silence(audio: np.ndarray, threshold_dbfs: float = -50.0, frame: int = 160) -> np.ndarray:
    """Synthetic speech without its leading/trailing near-silence, so the clip ends where speech ends."""
    x = audio.astype(np.float64)
    n = len(x) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)) / 32768
    loud = np.nonzero(rms > 10 ** (threshold_dbfs / 20))[0]
    if len(loud) == 0:
        return audio
    return audio[loud[0] * frame : (loud[-1] + 1) * frame]


class SpokenTurns:
    """The bench's script for the scripted microphone: before each turn, road noise until the car is
    ready (idle; for a confirmation, its question asked), then the trigger (wake phrase, or a push-to-talk
    press), the request, and a tail of road noise. A wake phrase the car did not hear is followed by a
    push-to-talk press, so every request is served and the miss is counted."""

    def __init__(
        self,
        turns: list[ScriptedTurn],
        pipeline: Callable[[], VoicePipeline | None],
        *,
        max_wait_seconds: float = 300.0,
    ) -> None:
        self.turns = turns
        self.pipeline = pipeline
        self.max_wait_seconds = max_wait_seconds

    def _ready(self, gate: str) -> bool:
        p = self.pipeline()
        if p is None or p.state != State.IDLE:
            return False
        return p.in_follow_up if gate == "follow-up" else not p.in_follow_up

    def _turn_count(self) -> int:
        p = self.pipeline()
        return p.turns_started if p is not None else 0

    async def __call__(self, mic: ScriptedMic) -> AsyncIterator[AudioChunk]:
        for number, turn in enumerate(self.turns, start=1):
            gate = "follow-up" if turn.trigger == "follow-up" else "idle"
            waited = 0.0
            while not self._ready(gate) and waited < self.max_wait_seconds:
                yield await mic.noise_block()
                waited += mic.block_seconds
            if waited >= self.max_wait_seconds:
                log.warning("bench-gate-timeout", text=turn.text, gate=gate)
            say(f"  turn {number}/{len(self.turns)} ({turn.trigger}, waited {waited:.1f} s): {turn.text}")
            async for chunk in mic.noise(0.6):
                yield chunk
            turn.turn_before = self._turn_count()
            if turn.trigger == "wake" and turn.wake is not None:
                async for chunk in mic.play(turn.wake):
                    yield chunk
                async for chunk in mic.noise(0.6):
                    yield chunk
                if self._turn_count() == turn.turn_before:
                    turn.wake_missed = True
            pipeline = self.pipeline()
            if (turn.trigger == "ptt" or turn.wake_missed) and pipeline is not None:
                pipeline.push_to_talk()
                async for chunk in mic.noise(0.3):
                    yield chunk
            speech = turn.speech
            for start in range(0, len(speech), mic.block):
                chunk = await mic.emit(speech[start : start + mic.block])
                if start + mic.block >= len(speech):
                    # The block carrying the driver's last sample arrives now (it ends with that sample).
                    turn.speech_end_ms = chunk.timestamp_ms
                    turn.load_1min = round(os.getloadavg()[0], 2)
                yield chunk
            async for chunk in mic.noise(1.5):
                yield chunk
        # Let the last reply finish before the source ends (the pipeline then finishes and returns).
        waited = 0.0
        while not self._ready("idle") and waited < self.max_wait_seconds:
            yield await mic.noise_block()
            waited += mic.block_seconds
        async for chunk in mic.noise(0.5):
            yield chunk


def build_script(turns: int, trigger: str) -> list[ScriptedTurn]:
    """`turns` requests from SCRIPT, cycled; a confirmation always follows its order (never cut in half)."""
    out: list[ScriptedTurn] = []
    i = 0
    while len(out) < turns or (out and out[-1].text.startswith("order")):
        kind, voice, text, how = SCRIPT[i % len(SCRIPT)]
        if how != "follow-up" and trigger != "mixed":
            how = trigger
        out.append(ScriptedTurn(kind, voice, text, how))
        i += 1
    return out


def synthesise(script: list[ScriptedTurn], config: Any, cache: Path) -> float:
    """Speech for every turn (Piper and espeak-ng via the demo's cached voices); returns seconds spent."""
    started = time.monotonic()
    voices = Voices(config, cache=cache)
    wake = trim_silence(voices.say("piper", config.wake_phrase))
    for turn in script:
        turn.speech = trim_silence(voices.say(turn.voice, turn.text))
        turn.wake = wake
    return time.monotonic() - started


def noisy(speech: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """A request clip with half a second of road noise either side (the overhead phase's ASR input)."""
    pad = np.zeros(RATE // 2, np.int16)
    clean = np.concatenate([pad, speech, pad]).astype(np.float32)
    noisy = clean + road_noise(len(clean) / RATE, RATE, seed=seed)[: len(clean)] * noise_level(snr_db)
    return np.clip(np.round(noisy), -32768, 32767).astype(np.int16)
