"""Wake word stage: the engine Protocol, what a detection carries, and the engine factory.

Engines are synchronous and fed 16 kHz mono chunks; `WakeDetector` (agent.wake.detector) runs them off the event
loop and adds the refractory period, gating while the car speaks, push-to-talk and the follow-up window.
Only the backend modules import native libraries, so this module imports fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from agent.audio.chunk import AudioChunk
from agent.config import Config
from agent.errors import WakeError

if TYPE_CHECKING:
    from agent.wake.verify import WhisperVerifier

DetectionSource = Literal["engine", "push-to-talk", "follow-up"]


@dataclass(frozen=True)
class Detection:
    phrase: str
    engine: str
    timestamp_ms: float  # monotonic ms (agent.events.now_ms) of the chunk that completed the phrase
    score: float | None = None
    source: DetectionSource = "engine"
    during_playback: bool = False  # barge-in: the car was speaking
    # Audio already heard that belongs to the request (follow-up speech onset); feed it to the endpointer first.
    preroll: tuple[AudioChunk, ...] = field(default=(), repr=False)


@runtime_checkable
class WakeEngine(Protocol):
    name: str
    phrase: str
    rate_hz: int

    def process(self, chunk: AudioChunk) -> Detection | None:
        """Feed one chunk (any size); a Detection when the phrase has just been heard."""
        ...

    def reset(self) -> None:
        """Forget partial matches (after a detection, after playback gating)."""
        ...

    def close(self) -> None: ...


def create_engine(config: Config, *, model_dir: Path | None = None) -> WakeEngine | None:
    """The configured engine, or None for `wake.engine: none` (push-to-talk only).

    `model_dir` is the vosk model directory (from the model manager) for the vosk engine.
    """
    if config.wake.engine == "auto":  # the engine of the profile's default wake model for the language
        from agent.voice import resolved_config

        config = resolved_config(config)
    wake = config.wake
    phrase = config.wake_phrase
    engine = str(wake.engine)
    if engine == "auto":
        # Until the model manager names the profile's wake model: a vosk model if we were given one,
        # else pocketsphinx (its en-us model ships in the wheel) for English.
        if model_dir is not None:
            engine = "vosk"
        elif config.language == "en":
            engine = "pocketsphinx"
        else:
            raise WakeError(
                f"wake.engine auto: no wake model for language {config.language!r}; "
                "give the vosk model directory",
                code="wake-model-missing",
            )
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
    from agent.errors import CabinError
    from agent.logging import get_logger

    try:
        from agent.models import open_store, resolve
        from agent.wake.verify import WhisperVerifier

        store = open_store(config)
        model_id = resolve(config, "asr", "en", engine="whisper", manifest=store.manifest)
        return WhisperVerifier(store.require(model_id), config.wake_phrase)
    except (CabinError, ImportError, ValueError, RuntimeError, OSError) as err:
        get_logger("wake").warning("wake-verify-unavailable", error=str(err))
        return None
