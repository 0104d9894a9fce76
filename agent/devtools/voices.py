"""The driver's synthetic voices for the demo, the bench and the voice tests: Piper and espeak-ng speech at
the cabin recording's level, 16 kHz int16, cached on disk."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.core.config import cache_dir

RATE = 16000
CACHE_VERSION = "2"
SPEECH_DBFS = -22.0  # active speech level in the cabin recording


def demo_cache_dir() -> Path:
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


def write_wav(path: Path, pcm: np.ndarray, rate_hz: int = RATE) -> Path:
    """16-bit mono samples as a WAV file (a cabin recording, the idle daemon's microphone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate_hz)
        wav.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return path


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
        elif voice == "espeak" or voice.startswith("espeak:"):
            # "espeak:en-gb+f3": another accent and speaker than the default one
            audio = espeak(text, voice.partition(":")[2] or "en-us+m3")
        else:
            raise ValueError(f"unknown demo voice {voice!r}")
        audio = _level(audio, SPEECH_DBFS)
        self.cache.mkdir(parents=True, exist_ok=True)
        np.save(path, audio)
        return audio


def _level(audio: np.ndarray, dbfs: float) -> np.ndarray:
    from agent.devtools.road_noise import active_rms

    rms = active_rms(audio.astype(np.float64), RATE) or 1.0
    gain = 32768 * 10 ** (dbfs / 20) / rms
    return np.clip(np.round(audio.astype(np.float64) * gain), -32768, 32767).astype(np.int16)
