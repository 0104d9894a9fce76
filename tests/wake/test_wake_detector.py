"""WakeDetector: refractory period, gating while the car speaks, barge-in, push-to-talk, the follow-up window,
and the engine running off the event loop (the loop stays responsive, the engine keeps up with real time)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agent.audio.chunk import AudioChunk
from agent.core.config import WakeConfig
from agent.core.events import now_ms
from agent.devtools.road_noise import noise_int16
from agent.wake.base import Detection, WakeEngine
from agent.wake.detector import WakeDetector
from agent.wake.push_to_talk import PushToTalk

RATE = 16000
MARK = 12345  # a chunk whose first sample is MARK "contains the phrase" for the fake engine


class FakeWake:
    """A WakeEngine that fires on marked chunks; records resets and which thread ran it."""

    name = "fake"
    phrase = "hey cabin"
    rate_hz = RATE

    def __init__(self, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = delay_seconds
        self.resets = 0
        self.threads: set[str] = set()

    def process(self, chunk: AudioChunk) -> Detection | None:
        self.threads.add(threading.current_thread().name)
        if self.delay_seconds:
            time.sleep(self.delay_seconds)  # a blocking engine
        if chunk.as_int16()[0, 0] == MARK:
            return Detection(self.phrase, self.name, chunk.timestamp_ms or now_ms(), score=1.0)
        return None

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        pass


def quiet(ts: float = 0.0) -> AudioChunk:
    return AudioChunk(np.zeros(480, np.int16).tobytes(), RATE, timestamp_ms=ts)


def marked(ts: float = 0.0) -> AudioChunk:
    x = np.zeros(480, np.int16)
    x[0] = MARK
    return AudioChunk(x.tobytes(), RATE, timestamp_ms=ts)


def speech_chunks(seconds: float, start_ms: float = 0.0) -> list[AudioChunk]:
    t = np.arange(int(seconds * RATE)) / RATE
    voiced = (8000 * np.sin(2 * np.pi * 300 * t) * (1 + np.sin(2 * np.pi * 4 * t)) / 2).astype(np.int16)
    return [
        AudioChunk(voiced[i : i + 480].tobytes(), RATE, timestamp_ms=start_ms + 1000 * i / RATE)
        for i in range(0, len(voiced), 480)
    ]


def test_fake_is_a_wake_engine() -> None:
    assert isinstance(FakeWake(), WakeEngine)


async def test_refractory_period_drops_a_second_detection() -> None:
    det = WakeDetector(FakeWake(), WakeConfig(refractory_seconds=2.0))
    assert await asyncio.wait_for(det.feed(marked(1000)), 5) is not None
    assert await asyncio.wait_for(det.feed(marked(2500)), 5) is None  # 1.5 s later: same wake
    assert await asyncio.wait_for(det.feed(marked(3100)), 5) is not None  # 2.1 s later: a new one
    assert det.stats.suppressed == 1 and det.stats.detections == 2


async def test_gated_while_the_car_speaks_without_barge_in() -> None:
    engine = FakeWake()
    det = WakeDetector(engine, WakeConfig(barge_in=False, refractory_seconds=0))
    det.set_speaking(True)
    assert await asyncio.wait_for(det.feed(marked(0)), 5) is None
    det.set_speaking(False)
    resets = engine.resets
    assert await asyncio.wait_for(det.feed(quiet(30)), 5) is None
    assert engine.resets == resets + 1  # half a phrase of our own voice is forgotten
    assert await asyncio.wait_for(det.feed(marked(60)), 5) is not None


async def test_barge_in_during_playback() -> None:
    det = WakeDetector(FakeWake(), WakeConfig(barge_in=True))
    det.set_speaking(True)
    found = await asyncio.wait_for(det.feed(marked(0)), 5)
    assert found is not None and found.during_playback and found.source == "engine"


async def test_push_to_talk_works_without_an_engine() -> None:
    ptt = PushToTalk()
    det = WakeDetector(None, WakeConfig(engine="none"), push_to_talk=ptt)

    async def mic() -> AsyncIterator[AudioChunk]:
        for i in range(1000):
            yield quiet(30.0 * i)
            await asyncio.sleep(0.001)

    async def press_later() -> None:
        await asyncio.sleep(0.05)
        ptt.press()

    presser = asyncio.create_task(press_later(), name="press")
    found = await asyncio.wait_for(det.wait(mic()), 5)
    await asyncio.wait_for(presser, 5)
    assert found.source == "push-to-talk" and found.engine == "push-to-talk"
    assert not ptt.is_pressed()  # consumed


async def test_push_to_talk_from_another_thread() -> None:
    ptt = PushToTalk()
    ptt.bind_loop()
    threading.Thread(target=ptt.press_threadsafe, name="steering-wheel-button").start()
    assert await ptt.wait(timeout_seconds=5) > 0


async def test_follow_up_window_accepts_speech_without_the_phrase() -> None:
    det = WakeDetector(FakeWake(), WakeConfig(follow_up_seconds=3.0))
    det.open_follow_up()
    assert det.in_follow_up
    for chunk in [AudioChunk(noise_int16(0.03, level_dbfs=-60, seed=i).tobytes(), RATE) for i in range(5)]:
        assert await asyncio.wait_for(det.feed(chunk), 5) is None  # cabin noise is not an answer
    found = None
    for chunk in speech_chunks(1.0):
        found = await asyncio.wait_for(det.feed(chunk), 5)
        if found:
            break
    assert found is not None and found.source == "follow-up"
    assert found.preroll and sum(c.duration_ms for c in found.preroll) <= 450
    assert not det.in_follow_up


async def test_follow_up_window_expires() -> None:
    det = WakeDetector(FakeWake(), WakeConfig(follow_up_seconds=0.05))
    det.open_follow_up()
    await asyncio.sleep(0.1)
    for chunk in speech_chunks(0.5):
        assert await asyncio.wait_for(det.feed(chunk), 5) is None


async def test_engine_runs_off_the_loop_and_the_loop_stays_responsive() -> None:
    engine = FakeWake(delay_seconds=0.05)  # 50 ms of blocking work per 100 ms chunk
    det = WakeDetector(engine, WakeConfig())
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker(), name="ticker")
    try:
        for i in range(15):
            chunk = AudioChunk(np.zeros(1600, np.int16).tobytes(), RATE, timestamp_ms=100.0 * i)
            await asyncio.wait_for(det.feed(chunk), 5)
    finally:
        tick.cancel()
        with pytest.raises(asyncio.CancelledError):
            await tick
    assert engine.threads and all(name.startswith("wake") for name in engine.threads)
    assert max(gaps) < 0.035  # never blocked for a whole 50 ms engine call (slack for shared cores)
    assert 0.4 < det.stats.real_time_factor < 0.8
    det.close()


async def test_pocketsphinx_keeps_up_with_real_time() -> None:
    from agent.wake.pocketsphinx import PocketsphinxWake

    det = WakeDetector(PocketsphinxWake("hey cabin"), WakeConfig())
    audio = noise_int16(10.0, level_dbfs=-35, seed=2)
    for i in range(0, len(audio), 480):
        await asyncio.wait_for(det.feed(AudioChunk(audio[i : i + 480].tobytes(), RATE)), 5)
    assert det.stats.audio_ms == pytest.approx(10000, abs=30)
    assert det.stats.real_time_factor < 0.25  # two shared cores: must leave most of one for the rest
    det.close()
