"""Shared fixtures. Tests marked `model` need real models: they fail (never skip) when CI=true and one is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
