"""Voice stages from a config whose engines are concrete (resolved at wiring by agent.models.engines):
the loaded wake detector, endpointer, recognizer and voice, and the words recognition is biased toward.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.asr.base import Recognizer
from agent.asr.factory import load_recognizer as load_engine_recognizer
from agent.audio.vad import Endpointer
from agent.core.config import Config
from agent.core.logging import get_logger
from agent.models import model_path
from agent.tts.base import Synthesizer
from agent.tts.factory import load_synthesizer
from agent.wake.detector import WakeDetector
from agent.wake.factory import create_engine
from agent.wake.push_to_talk import PushToTalk

log = get_logger("pipeline")


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
    model_dir = None
    if config.wake.engine == "vosk":
        model_dir = await asyncio.to_thread(model_path, config, "wake", None, engine="vosk")
    return await asyncio.to_thread(create_engine, config, model_dir=model_dir)


async def load_recognizer(config: Config, vocabulary: Sequence[str] = ()) -> Recognizer:
    recognizer = await load_engine_recognizer(config, engine=config.asr.engine)
    if vocabulary:
        recognizer.set_vocabulary(list(vocabulary))
    return recognizer


async def build_stages(
    config: Config, registry: Any | None = None, *, push_to_talk: PushToTalk | None = None
) -> VoiceStages:
    """Load every voice stage the config names, models from the store. `registry` biases recognition.

    The config's engines are concrete (agent.models.engines.resolved_config); a factory refuses "auto".
    """
    engine = await load_wake_engine(config)
    detector = WakeDetector(engine, config.wake, push_to_talk=push_to_talk)
    endpointer = Endpointer(config.vad, rate_hz=config.audio.sample_rate_hz)
    recognizer = await load_recognizer(config, bias_vocabulary(config, registry))
    tts = await load_synthesizer(config, threads=config.tts.threads)
    log.info(
        "voice-stages",
        wake=config.wake.engine,
        asr=config.asr.engine,
        vad=endpointer.vad.name,
        tts=tts.name,
    )
    return VoiceStages(detector, endpointer, recognizer, tts, config)
