"""The voice loop without models: a fake assistant (the real Assistant, its model call replaced by a script),
a scripted recognizer, a tone synthesizer, a scripted microphone, and the steps that serve one request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.asr.base import Transcript
from agent.audio.chunk import AudioChunk
from agent.audio.sinks import WavSink
from agent.audio.vad import Endpointer
from agent.core.config import Config, VadConfig, WakeConfig
from agent.core.events import EventBus, TurnTrace, now_ms
from agent.loop.pipeline import VoicePipeline
from agent.plugins.loader import ToolRegistry
from agent.understanding.engine import Assistant
from agent.understanding.record import ToolCallRecord, TurnResult
from agent.wake.detector import WakeDetector

RATE = 16000
BLOCK = RATE * 30 // 1000


class FakeAssistant(Assistant):
    """The real Assistant with the model replaced by a script: replies stream word by word, slowly if asked."""

    def __init__(
        self,
        config: Config,
        *,
        reply: str = "Temperature set to 21 degrees. Anything else?",
        token_delay_s: float = 0.0,
        awaiting: bool = False,
        events: EventBus | None = None,
        replies: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.replies = list(replies)  # one per call, then `reply`
        self.registry = ToolRegistry()
        self.events = events or EventBus()
        self.reply = reply
        self.token_delay_s = token_delay_s
        self.awaiting = awaiting
        self.calls: list[str] = []
        self.cancelled = 0
        self.history, self.pending = [], None

    async def turn(self, text: str, *, on_text: Any = None, trace: TurnTrace | None = None) -> TurnResult:
        self.calls.append(text)
        trace = trace if trace is not None else TurnTrace()
        reply = self.replies.pop(0) if self.replies else self.reply
        try:
            words = reply.split(" ")
            for i, word in enumerate(words):
                await asyncio.sleep(self.token_delay_s)
                trace.mark("first_token")
                if on_text is not None:
                    on_text(word + (" " if i < len(words) - 1 else ""))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        trace.mark("tool_done")
        return TurnResult(
            "t" + str(len(self.calls)),
            text,
            "en",
            [ToolCallRecord("set_climate", {"temperature_c": 21}, {"ok": True})],
            reply,
            trace.since(),
            awaiting_confirmation=self.awaiting,
        )

    async def close(self) -> None:
        pass


class FakeRecognizer:
    """Recognizer protocol; returns `texts` in order (one per utterance), after consuming the audio."""

    name = "fake-asr"
    sample_rate_hz = 16000

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)
        self.vocabulary: list[str] = []
        self.utterance_ms: list[float] = []

    def set_vocabulary(self, words: Sequence[str]) -> None:
        self.vocabulary = list(words)

    async def transcribe(self, chunks: AsyncIterable[AudioChunk]) -> AsyncIterator[Transcript]:
        total = 0.0
        async for chunk in chunks:
            total += chunk.duration_ms
        self.utterance_ms.append(total)
        yield Transcript(self.texts.pop(0) if self.texts else "", is_final=True)

    async def aclose(self) -> None:
        pass


class ToneTts:
    """Synthesizer protocol: 0.5 s of tone per sentence, 22050 Hz, in 100 ms chunks (no model)."""

    name = "tone"
    sample_rate_hz = 22050
    language = "en"

    def __init__(self) -> None:
        self.spoken: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.spoken.append(text)
        t = np.arange(self.sample_rate_hz // 2) / self.sample_rate_hz
        pcm = (3000 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()
        step = self.sample_rate_hz // 10 * 2
        for i in range(0, len(pcm), step):
            await asyncio.sleep(0)
            yield AudioChunk(pcm[i : i + step], rate=self.sample_rate_hz)

    async def aclose(self) -> None:
        pass


def voiced(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like sound webrtcvad calls voiced: a harmonic buzz with a syllable rhythm (Silero, rightly, does not:
    these tests use webrtcvad)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 3 * t))
    return (6000 * x * envelope / 3 + rng.normal(0, 50, len(t))).astype(np.int16)


class ScriptedMic:
    """An audio source: a list of int16 arrays, paced at `speed` x real time, then silence until `close()`."""

    def __init__(self, *parts: np.ndarray, speed: float = 4.0, tail_seconds: float = 6.0) -> None:
        self.audio = np.concatenate([*parts, np.zeros(int(tail_seconds * RATE), np.int16)])
        self.speed = speed
        self.position_s = 0.0
        self.inserts: list[np.ndarray] = []

    def insert(self, audio: np.ndarray) -> None:
        """Speak this next (the driver reacting to the car)."""
        self.inserts.append(audio)

    async def stream(self) -> AsyncIterator[AudioChunk]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        pos = 0
        pending = np.zeros(0, np.int16)
        while pos < len(self.audio) or len(pending):
            if self.inserts:
                pending = np.concatenate([pending, *self.inserts])
                self.inserts.clear()
            if len(pending):
                block, pending = pending[:BLOCK], pending[BLOCK:]
            else:
                block, pos = self.audio[pos : pos + BLOCK], pos + BLOCK
            delay = start + sent / RATE / self.speed - loop.time()
            await asyncio.sleep(max(0.0, delay))
            sent += len(block)
            self.position_s = sent / RATE
            yield AudioChunk(block.astype("<i2").tobytes(), RATE, timestamp_ms=now_ms())


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


def make_pipeline(
    tmp_path: Path,
    mic: Any,
    *,
    texts: Sequence[str] = ("set the temperature to 21",),
    assistant: FakeAssistant | None = None,
    wake: WakeConfig | None = None,
    vad: VadConfig | None = None,
    sink: Any = None,
    **kwargs: Any,
) -> VoicePipeline:
    config = Config.model_validate(
        {
            "wake": (wake or WakeConfig(engine="none", follow_up_seconds=0)).model_dump(),
            "vad": (vad or VadConfig(engine="webrtcvad", silence_ms=300, no_speech_timeout_seconds=1.5)).model_dump(),
        }
    )
    assistant = assistant or FakeAssistant(config)
    return VoicePipeline(
        config,
        assistant,
        mic,
        sink or WavSink(tmp_path / "out"),
        detector=WakeDetector(None, config.wake),
        endpointer=Endpointer(config.vad),
        recognizer=FakeRecognizer(texts),
        tts=ToneTts(),
        **kwargs,
    )


async def run_until(pipeline: VoicePipeline, predicate: Any, timeout_s: float = 20.0) -> asyncio.Task[None]:
    task = asyncio.create_task(pipeline.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                if task.done():
                    break
                await asyncio.sleep(0.01)
    except TimeoutError:
        task.cancel()
        raise
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait({task}, timeout=5)


def watch_events(bus: EventBus) -> tuple[list[Any], asyncio.Task[None]]:
    """Every event the bus publishes from now on, gathered by a task (the test cancels it)."""
    seen: list[Any] = []

    async def read() -> None:
        async for event in bus.subscribe():
            seen.append(event)

    return seen, asyncio.create_task(read())


async def first_turn(pipeline: VoicePipeline, timeout_s: float = 20.0) -> asyncio.Task[None]:
    """Starts the loop, presses push-to-talk, waits for the first turn's record; returns the running loop."""
    task = await run_until(pipeline, lambda: True)
    await asyncio.sleep(0.05)
    pipeline.push_to_talk()
    async with asyncio.timeout(timeout_s):
        while not pipeline.records:
            await asyncio.sleep(0.02)
    return task


async def serve_one(pipeline: VoicePipeline, timeout_s: float = 20.0) -> None:
    """One push-to-talk request served from start to record, then the loop stopped."""
    await stop(await first_turn(pipeline, timeout_s))
