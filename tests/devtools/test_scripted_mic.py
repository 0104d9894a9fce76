"""The scripted cabin microphone the demo and the bench share: speech arrives mixed into road noise,
in 30 ms blocks paced like a real microphone, and the cabin recording keeps exactly what was fed."""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.devtools.scripted_mic import ScriptedMic


async def _speech_then_noise(mic: ScriptedMic) -> AsyncIterator[AudioChunk]:
    async for chunk in mic.play(np.full(mic.block * 3 + 100, 8000, np.int16)):  # a short last block
        yield chunk
    yield await mic.noise_block()
    async for chunk in mic.noise(0.09):
        yield chunk


async def _collect(mic: ScriptedMic) -> list[AudioChunk]:
    async def run() -> list[AudioChunk]:
        return [chunk async for chunk in mic.stream()]

    return await asyncio.wait_for(run(), timeout=10)


async def test_blocks_in_road_noise_paced_like_a_microphone(tmp_path: Path) -> None:
    mic = ScriptedMic(_speech_then_noise, seed=3, speed=1.0, keep_recording=True)
    started = time.monotonic()
    chunks = await _collect(mic)
    assert [c.samples for c in chunks] == [480, 480, 480, 100, 480, 480, 480, 480]
    # A block arrives once its last sample would have: the whole script takes its own length in real time.
    assert time.monotonic() - started >= mic.sent_seconds - 0.02
    assert mic.sent_seconds == sum(c.samples for c in chunks) / 16000
    assert all(b.timestamp_ms >= a.timestamp_ms for a, b in zip(chunks, chunks[1:], strict=False))
    speech = np.frombuffer(chunks[0].pcm, np.int16)
    noise = np.frombuffer(chunks[4].pcm, np.int16)
    assert abs(speech.mean() - 8000) < 200 and 0 < np.abs(noise).max() < 2000  # noise at 20 dB below speech
    with wave.open(str(mic.write(tmp_path / "cabin.wav"))) as wav:
        assert wav.getnframes() == sum(c.samples for c in chunks)


async def test_the_same_seed_is_the_same_cabin() -> None:
    first = await _collect(ScriptedMic(_speech_then_noise, seed=5, speed=8.0))
    again = await _collect(ScriptedMic(_speech_then_noise, seed=5, speed=8.0))
    other = await _collect(ScriptedMic(_speech_then_noise, seed=6, speed=8.0))
    assert [c.pcm for c in first] == [c.pcm for c in again] != [c.pcm for c in other]
