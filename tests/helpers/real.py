"""Real models and devices in tests: missing ones skip a test locally and fail it in CI (`require`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from agent.core.config import Config

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally when a real model or device is missing, but fail in CI: CI must prove the real thing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def store_model(model_id: str) -> Path:
    """The verified directory of a dev-profile model from the model store (`agent.models`), under `require()`:
    skipped locally, failed in CI when `cabin-agent models fetch <id>` has not been run."""
    from agent.core.config import Config
    from agent.core.errors import ModelError
    from agent.models import open_store

    try:
        return open_store(Config()).require(model_id)
    except ModelError as err:
        require(False, f"model {model_id} missing: {err}")
        raise  # unreachable: require() skipped or failed


def require_voice_models(config: Config) -> None:
    """The English Piper voice and whisper model the spoken drives use, under `require()`."""
    try:
        from agent.models import model_file, model_path

        model_file(config, "tts", "en", engine="piper")
        model_path(config, "asr", "en", engine="whisper")
    except Exception as err:  # noqa: BLE001
        require(False, f"voice models missing: {err}")
