"""Voice stages from the config: which wake/ASR engine runs ("auto" = the profile's default model's engine),
the loaded wake detector, endpointer, recognizer and voice, and `transcribe_file` for `say --audio`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.asr.base import Recognizer
from agent.audio.chunk import AudioChunk
from agent.audio.sources import block_samples, read_wav, split_blocks
from agent.audio.vad import Endpointer
from agent.config import Config
from agent.errors import ModelError
from agent.logging import get_logger
from agent.tts.base import Synthesizer
from agent.wake.detector import WakeDetector
from agent.wake.push_to_talk import PushToTalk

log = get_logger("pipeline")

# Engines that can serve each role; a profile default of another engine (e.g. silero for vad) is not ours.
_ENGINES = {"asr": ("vosk", "whisper"), "wake": ("vosk", "pocketsphinx", "openwakeword")}


def effective_engine(config: Config, role: Literal["asr", "wake"], language: str | None = None) -> str:
    """The engine that will run for `role`: the configured one, or for "auto" the engine of the model the
    profile picks for (role, language) — whisper + pocketsphinx for English on dev, vosk on pi5/jetson.

    A profile without a wake model for the language gives "none" (push-to-talk only, logged once).
    """
    configured = config.asr.engine if role == "asr" else config.wake.engine
    if configured != "auto":
        return configured
    from agent.models.manifest import load_manifest, resolve

    manifest = load_manifest(config.models.manifest)
    try:
        engine = manifest.model(resolve(config, role, language, manifest=manifest)).engine
    except ModelError:
        if role == "wake":
            log.warning(
                "wake-auto-none",
                profile=config.models.profile,
                language=language or config.language,
                using="push-to-talk only",
            )
            return "none"
        raise
    if engine not in _ENGINES[role]:
        raise ModelError(
            f"{role}.engine: auto picked a {engine} model, which no {role} engine loads; set {role}.engine",
            code="model-unresolved",
            role=role,
        )
    return engine


def resolved_config(config: Config, language: str | None = None) -> Config:
    """The config with "auto" engines replaced by the ones that will run (stage factories expect concrete names)."""
    asr = effective_engine(config, "asr", language)
    wake = effective_engine(config, "wake", language)
    return config.model_copy(
        update={
            "asr": config.asr.model_copy(update={"engine": asr}),
            "wake": config.wake.model_copy(update={"engine": wake}),
        }
    )


def bias_vocabulary(config: Config, registry: Any | None) -> list[str]:
    """What recognition is biased toward: the plugins' words (menu, contacts, places) and the wake phrase."""
    if not config.asr.bias_vocabulary:
        return []
    words: list[str] = list(registry.vocabulary()) if registry is not None else []
    return [*words, config.wake_phrase]


@dataclass
class VoiceStages:
    detector: WakeDetector
    endpointer: Endpointer
    recognizer: Recognizer
    tts: Synthesizer
    config: Config  # with concrete engine names

    async def aclose(self) -> None:
        self.detector.close()
        await self.recognizer.aclose()
        await self.tts.aclose()


async def load_wake_engine(config: Config) -> Any:
    """The configured wake engine (None = push-to-talk only), loaded off the event loop."""
    from agent.wake.base import create_engine

    config = resolved_config(config)
    model_dir = None
    if config.wake.engine == "vosk":
        from agent.models import model_path

        model_dir = await asyncio.to_thread(model_path, config, "wake", None, engine="vosk")
    return await asyncio.to_thread(create_engine, config, model_dir=model_dir)


async def load_recognizer(config: Config, vocabulary: Sequence[str] = ()) -> Recognizer:
    from agent.asr.factory import load_recognizer as load

    config = resolved_config(config)
    recognizer = await load(config, engine=config.asr.engine)
    if vocabulary:
        recognizer.set_vocabulary(list(vocabulary))
    return recognizer


async def build_stages(
    config: Config, registry: Any | None = None, *, push_to_talk: PushToTalk | None = None
) -> VoiceStages:
    """Load every voice stage the config names, models from the store. `registry` biases recognition."""
    from agent.tts.factory import load_synthesizer

    concrete = resolved_config(config)
    engine = await load_wake_engine(concrete)
    detector = WakeDetector(engine, concrete.wake, push_to_talk=push_to_talk)
    endpointer = Endpointer(concrete.vad, rate_hz=concrete.audio.sample_rate_hz)
    recognizer = await load_recognizer(concrete, bias_vocabulary(concrete, registry))
    # One onnxruntime thread: speech is synthesised while the model generates on the other core.
    tts = await load_synthesizer(concrete, threads=1)
    log.info(
        "voice-stages",
        wake=concrete.wake.engine,
        asr=concrete.asr.engine,
        vad=endpointer.vad.name,
        tts=tts.name,
    )
    return VoiceStages(detector, endpointer, recognizer, tts, concrete)


async def _iterate(chunks: Sequence[AudioChunk]) -> AsyncIterator[AudioChunk]:
    for chunk in chunks:
        yield chunk


async def transcribe_file(config: Config, path: str | Path) -> str:
    """The recognised text of a WAV file (any rate/channels), biased like the voice loop. `say --audio` uses it."""
    from agent.plugins.loader import load_registry

    audio = await asyncio.to_thread(read_wav, path, 16000)
    registry = None
    if config.asr.bias_vocabulary:
        try:
            registry = await asyncio.to_thread(load_registry, config)
        except Exception as err:  # noqa: BLE001 - recognition still works without the bias
            log.warning("vocabulary-unavailable", error=str(err))
    recognizer = await load_recognizer(config, bias_vocabulary(config, registry))
    try:
        final = ""
        async for transcript in recognizer.transcribe(
            _iterate(split_blocks(audio, block_samples(16000, 30)))
        ):
            if transcript.is_final:
                final = transcript.text
        return final.strip()
    finally:
        await recognizer.aclose()
