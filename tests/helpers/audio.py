"""Audio for tests: espeak-ng's synthetic voices, and a clip cut into the blocks a microphone delivers."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from collections.abc import AsyncIterator

import numpy as np

from agent.audio.chunk import AudioChunk
from helpers.real import require


def espeak(text: str, voice: str = "en-us", speed: int = 160) -> AudioChunk:
    """What espeak-ng says in `voice` at `speed` words a minute, at its own rate (22050 Hz mono); skipped
    locally (failed in CI) when espeak-ng is not installed."""
    require(shutil.which("espeak-ng") is not None, "espeak-ng is not installed (apt-get install espeak-ng)")
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    with wave.open(io.BytesIO(out)) as wav:
        return AudioChunk(wav.readframes(wav.getnframes()), rate=wav.getframerate())


def espeak_samples(text: str, voice: str = "en-us", speed: int = 160, rate: int = 16000) -> np.ndarray:
    """`espeak` as int16 samples at `rate`, mono (what the wake engines and the VAD take)."""
    chunk = espeak(text, voice, speed).to_format(rate, 1)
    return np.frombuffer(chunk.pcm, dtype="<i2").copy()


async def mic_blocks(audio: AudioChunk, block_ms: int = 30) -> AsyncIterator[AudioChunk]:
    """`audio` as a microphone delivers it: consecutive blocks of `block_ms`, at the clip's rate."""
    step = audio.rate * block_ms // 1000 * 2
    for i in range(0, len(audio.pcm), step):
        yield AudioChunk(audio.pcm[i : i + step], rate=audio.rate)


async def collect(stream):  # type: ignore[no-untyped-def]
    """Everything an async stream yields, as a list."""
    return [x async for x in stream]


async def aiter_of(items):  # type: ignore[no-untyped-def]
    """A list as an async stream."""
    for item in items:
        yield item
