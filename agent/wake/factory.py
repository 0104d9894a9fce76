"""Builds the wake engine a config names (a concrete engine: "auto" is resolved at wiring), with the whisper
verifier in front for English phrases. Only the chosen backend module is imported."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agent.core.config import Config
from agent.core.errors import CabinError, WakeError
from agent.core.logging import get_logger
from agent.models import open_store, resolve
from agent.models.engines import unresolved
from agent.wake.base import WakeEngine

if TYPE_CHECKING:
    from agent.wake.verify import WhisperVerifier

log = get_logger("wake")


def create_engine(config: Config, *, model_dir: Path | None = None) -> WakeEngine | None:
    """The configured engine, or None for `wake.engine: none` (push-to-talk only).

    `config.wake.engine` is a concrete name (agent.models.engines.resolved_config runs at wiring);
    `model_dir` is the vosk model directory (from the model manager) for the vosk engine.
    """
    wake = config.wake
    phrase = config.wake_phrase
    engine = str(wake.engine)
    if engine == "auto":
        raise unresolved("wake")
    if engine == "none":
        return None
    if engine == "pocketsphinx":
        from agent.wake.pocketsphinx import PocketsphinxWake

        verifier = load_verifier(config) if wake.verify else None
        if verifier is None:
            return PocketsphinxWake(phrase, threshold=wake.threshold)
        from agent.wake.pocketsphinx import VERIFIED_KWS_THRESHOLD, kws_threshold_for
        from agent.wake.verify import VerifiedWake

        # Permissive on purpose: the verifier, not the spotter, keeps false accepts down.
        first = PocketsphinxWake(
            phrase, kws_threshold=kws_threshold_for(wake.threshold, VERIFIED_KWS_THRESHOLD)
        )
        return VerifiedWake(first, verifier)
    if engine == "vosk":
        from agent.wake.vosk import VoskWake

        if model_dir is None:
            raise WakeError("the vosk wake engine needs a vosk model directory", code="wake-model-missing")
        return VoskWake(model_dir, phrase, threshold=wake.threshold)
    if engine == "openwakeword":
        from agent.wake.openwakeword import OpenWakeWordWake

        if wake.openwakeword_model is None:
            raise WakeError(
                "wake.openwakeword_model: a model file is required for openwakeword",
                code="wake-model-missing",
                key="wake.openwakeword_model",
            )
        return OpenWakeWordWake(wake.openwakeword_model, phrase, threshold=wake.threshold)
    raise WakeError(f"wake.engine: unknown engine {wake.engine!r}", code="wake-engine-unknown")


def load_verifier(config: Config) -> WhisperVerifier | None:
    """The whisper verifier for English wake phrases, or None (logged) when its model or library is missing:
    the spotter then runs alone at its standalone threshold."""
    if config.language != "en":
        return None
    try:
        from agent.wake.verify import WhisperVerifier  # numpy: loaded only when an English phrase is verified

        store = open_store(config)
        model_id = resolve(config, "asr", "en", engine="whisper", manifest=store.manifest)
        return WhisperVerifier(store.require(model_id), config.wake_phrase)
    except (CabinError, ImportError, ValueError, RuntimeError, OSError) as err:
        log.warning("wake-verify-unavailable", error=str(err))
        return None
