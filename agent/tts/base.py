"""Speech output stage: the Synthesizer protocol and TtsError codes.

Backends (piper.py) import their native libraries; this module stays light so the pipeline imports fast.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from agent.asr.base import EngineThread
from agent.audio.chunk import AudioChunk
from agent.core.errors import TtsError

__all__ = ["TTS_ENGINE_FAILED", "TTS_VOICE_MISSING", "EngineThread", "Synthesizer", "TtsError"]

TTS_VOICE_MISSING = "tts-voice-missing"
TTS_ENGINE_FAILED = "tts-engine-failed"


@runtime_checkable
class Synthesizer(Protocol):
    """Text in, audio out at the voice's native rate: `async for chunk in tts.synthesize("Done."): ...`."""

    name: str
    sample_rate_hz: int
    language: str  # "en", "zh": what text normalisation the voice gets

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Audio for `text`, sentence by sentence. Closing the iterator stops before the next sentence."""
        ...

    async def aclose(self) -> None: ...
