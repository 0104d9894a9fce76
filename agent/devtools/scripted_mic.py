"""The scripted cabin microphone the demo and the bench drive the voice loop with: clean speech mixed into
road noise, paced like a real microphone (a block arrives when its last sample does), as a script plays it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.core.events import now_ms
from agent.devtools.road_noise import road_noise
from agent.devtools.voices import RATE, SPEECH_DBFS, write_wav

SNR_DB = 20.0  # road noise this far below the speech (pocketsphinx misses ~1 wake in 4 at 15 dB)


def noise_level(snr_db: float = SNR_DB) -> float:
    """The road noise's amplitude (int16 scale) for speech at SPEECH_DBFS and `snr_db` of headroom."""
    return 32768 * 10 ** ((SPEECH_DBFS - snr_db) / 20)


Script = Callable[["ScriptedMic"], AsyncIterator[AudioChunk]]


class ScriptedMic:
    """The cabin as an audio source: `script(mic)` says what the cabin hears and when (it waits for the car
    with `noise_block()`, speaks with `play()`), the mic mixes every block into road noise and paces it at
    `speed` x real time. With `keep_recording`, `fed` keeps everything it played (`write()` saves it)."""

    def __init__(
        self,
        script: Script,
        *,
        seed: int,
        snr_db: float = SNR_DB,
        speed: float = 1.0,
        block_ms: int = 30,
        keep_recording: bool = False,
    ) -> None:
        self.script = script
        self.speed = max(0.1, speed)
        self.block = RATE * block_ms // 1000
        self.block_seconds = self.block / RATE
        self.keep_recording = keep_recording
        self.fed: list[np.ndarray] = []
        self._noise = (road_noise(60.0, RATE, seed=seed) * noise_level(snr_db)).astype(np.float32)
        self._noise_at = 0
        self._started = 0.0
        self._sent = 0

    @property
    def sent_seconds(self) -> float:
        """Seconds of cabin audio played so far (at 1x; the script's time line)."""
        return self._sent / RATE

    async def stream(self) -> AsyncIterator[AudioChunk]:
        self._started = time.monotonic()
        self._sent = 0
        async with contextlib.aclosing(self.script(self)) as chunks:
            async for chunk in chunks:
                yield chunk

    def _road_noise(self, n: int) -> np.ndarray:
        idx = (self._noise_at + np.arange(n)) % len(self._noise)
        self._noise_at = (self._noise_at + n) % len(self._noise)
        return self._noise[idx]

    async def emit(self, clean: np.ndarray) -> AudioChunk:
        """One block of `clean` audio in road noise, once its last sample would have reached the mic."""
        mixed = np.clip(np.round(clean.astype(np.float32) + self._road_noise(len(clean))), -32768, 32767)
        block = mixed.astype(np.int16)
        self._sent += len(block)
        if self.keep_recording:
            self.fed.append(block)
        ahead = self._started + self._sent / RATE / self.speed - time.monotonic()
        await asyncio.sleep(max(0.0, ahead))
        return AudioChunk(block.tobytes(), RATE, timestamp_ms=now_ms())

    async def noise_block(self) -> AudioChunk:
        """One block of road noise alone (the cabin while the driver waits)."""
        return await self.emit(np.zeros(self.block, np.int16))

    async def play(self, clean: np.ndarray) -> AsyncIterator[AudioChunk]:
        for start in range(0, len(clean), self.block):
            yield await self.emit(clean[start : start + self.block])

    async def noise(self, seconds: float) -> AsyncIterator[AudioChunk]:
        async for chunk in self.play(np.zeros(int(seconds * RATE), np.int16)):
            yield chunk

    def write(self, path: Path) -> Path:
        """The cabin recording as fed (needs `keep_recording`), as a 16 kHz mono WAV."""
        return write_wav(path, np.concatenate(self.fed) if self.fed else np.zeros(0, np.int16))
