"""Which engine runs each voice role: "auto" resolved once, at wiring, to the engine of the profile's default model,
and a typed error naming the extra to install when that engine's library is missing."""

from __future__ import annotations

import importlib.util
from typing import Literal

from agent.core.config import Config
from agent.core.errors import CabinError, ModelError
from agent.core.logging import get_logger

log = get_logger("pipeline")

Role = Literal["asr", "wake"]

# Engines that can serve each role; a profile default of another engine (e.g. silero for vad) is not ours.
ENGINES: dict[str, tuple[str, ...]] = {"asr": ("vosk", "whisper"), "wake": ("vosk", "pocketsphinx", "openwakeword")}

# engine -> (the module it imports, the pyproject extra that installs it; None = a base dependency)
_LIBRARIES: dict[str, tuple[str, str | None]] = {
    "vosk": ("vosk", None),
    "whisper": ("faster_whisper", "whisper"),
    "pocketsphinx": ("pocketsphinx", "pocketsphinx"),
    "openwakeword": ("openwakeword", "openwakeword"),
}


class EngineNotInstalled(CabinError):
    """An optional engine the config selects is not installed; the message names the extra that installs it."""

    code = "engine-not-installed"


def require_installed(engine: str, role: str) -> None:
    """Raise EngineNotInstalled when `engine`'s library cannot be found (found, not imported: imports stay lazy)."""
    module, extra = _LIBRARIES.get(engine, (None, None))
    if module is None or importlib.util.find_spec(module) is not None:
        return
    fix = f"pip install 'cabin-agent[{extra}]'" if extra else f"pip install {module}"
    raise EngineNotInstalled(
        f"{role}.engine {engine}: {module} is not installed; fix: {fix}",
        role=role,
        engine=engine,
        extra=extra,
    )


def effective_engine(config: Config, role: Role, language: str | None = None) -> str:
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
    if engine not in ENGINES[role]:
        raise ModelError(
            f"{role}.engine: auto picked a {engine} model, which no {role} engine loads; set {role}.engine",
            code="model-unresolved",
            role=role,
        )
    return engine


def resolved_config(config: Config, language: str | None = None) -> Config:
    """The config with "auto" engines replaced by the ones that will run; stage factories take only these.

    An engine whose library is missing fails here, naming the extra, before any model is loaded.
    """
    asr = effective_engine(config, "asr", language)
    wake = effective_engine(config, "wake", language)
    require_installed(asr, "asr")
    require_installed(wake, "wake")
    if (asr, wake) == (config.asr.engine, config.wake.engine):
        return config
    return config.model_copy(
        update={
            "asr": config.asr.model_copy(update={"engine": asr}),
            "wake": config.wake.model_copy(update={"engine": wake}),
        }
    )


def unresolved(role: str) -> ModelError:
    """What a factory raises when handed "auto": engines are resolved at wiring, not inside stages."""
    return ModelError(
        f"{role}.engine is 'auto': resolve engines once at wiring (agent.models.engines.resolved_config)",
        code="engine-unresolved",
        role=role,
    )
