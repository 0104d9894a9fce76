"""Build the configured recognizer: a concrete engine (`asr.engine` resolved at wiring, or one named by the
caller), its model from the model store or a given path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.asr.base import ASR_MODEL_MISSING, AsrError, Recognizer
from agent.core.config import Config
from agent.core.errors import ModelError
from agent.models import model_path
from agent.models.engines import unresolved


def asr_model_dir(config: Config, engine: str, language: str | None = None) -> Path:
    """The verified model directory for `engine` from the model store; AsrError names the fix when missing."""
    try:
        return model_path(config, "asr", language, engine=engine)
    except ModelError as err:
        raise AsrError(err.message, code=ASR_MODEL_MISSING, **err.context) from err


async def load_recognizer(
    config: Config,
    *,
    engine: str | None = None,
    model_dir: Path | None = None,
    language: str | None = None,
    **options: Any,
) -> Recognizer:
    """Load the recognizer off the event loop. `options` go to the engine (e.g. mode="grammar" for vosk)."""
    engine = engine or config.asr.engine
    if engine == "auto":
        raise unresolved("asr")
    directory = model_dir or asr_model_dir(config, engine, language)
    if engine == "vosk":
        from agent.asr.vosk import VoskRecognizer

        return await VoskRecognizer.load(directory, sample_rate_hz=16000, **options)
    if engine == "whisper":
        from agent.asr.whisper import WhisperRecognizer

        options.setdefault("beam_size", config.asr.beam_size)
        options.setdefault("window", config.asr.whisper_window)
        options.setdefault("language", language or config.language)
        return await WhisperRecognizer.load(directory, **options)
    raise AsrError(
        f"asr.engine: unknown engine {engine!r} (allowed: vosk, whisper)", code="asr-engine-failed"
    )
