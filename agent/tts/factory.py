"""Build the configured voice (`tts.voice`, else the profile's voice for a language) from the model store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.core.config import Config
from agent.core.errors import ModelError
from agent.models import model_file
from agent.tts.base import TTS_VOICE_MISSING, Synthesizer, TtsError


def voice_file(config: Config, language: str | None = None) -> Path:
    """The verified .onnx of the configured voice; TtsError names the fix when missing."""
    try:
        return model_file(config, "tts", language, engine="piper")
    except ModelError as err:
        raise TtsError(err.message, code=TTS_VOICE_MISSING, **err.context) from err


async def load_synthesizer(
    config: Config, *, voice: Path | None = None, language: str | None = None, **options: Any
) -> Synthesizer:
    """Load the voice once, off the event loop; `options` go to PiperTts (threads, chunk_ms)."""
    from agent.tts.piper import PiperTts

    options.setdefault("length_scale", config.tts.length_scale)
    return await PiperTts.load(voice or voice_file(config, language), **options)
