"""Self-describing audio: every chunk carries its rate, sample width, channel count and capture time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class AudioChunk:
    pcm: bytes
    rate: int = 16000
    width: int = 2  # bytes per sample; 2 = signed 16-bit little-endian
    channels: int = 1
    timestamp_ms: float = 0.0  # capture time on the monotonic clock (agent.core.events.now_ms)

    @property
    def samples(self) -> int:
        return len(self.pcm) // (self.width * self.channels)

    @property
    def duration_ms(self) -> float:
        return 1000.0 * self.samples / self.rate

    def as_int16(self) -> np.ndarray:
        if self.width != 2:
            raise ValueError(f"expected 16-bit audio, got width {self.width}")
        return np.frombuffer(self.pcm, dtype="<i2").reshape(-1, self.channels)

    def to_format(self, rate: int = 16000, channels: int = 1) -> AudioChunk:
        """Mono/rate conversion at the edges (mic, speaker, engine); linear resampling is enough for speech."""
        if self.rate == rate and self.channels == channels and self.width == 2:
            return self
        data = self.as_int16().astype(np.float32)
        data = data.mean(axis=1, keepdims=True) if channels == 1 else np.repeat(data.mean(axis=1, keepdims=True), channels, 1)
        if self.rate != rate and len(data):
            n_out = max(1, round(len(data) * rate / self.rate))
            x_old = np.arange(len(data)) / self.rate
            x_new = np.arange(n_out) / rate
            data = np.stack([np.interp(x_new, x_old, data[:, c]) for c in range(data.shape[1])], axis=1)
        pcm = np.clip(np.round(data), -32768, 32767).astype("<i2").tobytes()
        return AudioChunk(pcm, rate=rate, width=2, channels=channels, timestamp_ms=self.timestamp_ms)
