"""The wake test set (scripts/wake_testset.py) as session fixtures, and its clips as the cabin hears them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.audio.chunk import AudioChunk
from agent.devtools.road_noise import noise_int16
from helpers.real import store_model

ROOT = Path(__file__).resolve().parents[2]  # the repository
RATE = 16000


def load_testset():
    """scripts/wake_testset.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("wake_testset", ROOT / "scripts" / "wake_testset.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["wake_testset"] = module  # dataclasses look their module up there
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


# Registered for the whole suite by the root conftest (`pytest_plugins`), so each is built once a session.
@pytest.fixture(scope="session")
def testset():
    return load_testset()


@pytest.fixture(scope="session")
def piper_hey_cabin(testset) -> list[np.ndarray]:
    cache = testset.default_cache_dir()
    store_model(testset.VOICE_ID)  # synthesises the clips the cache does not hold yet
    return [p.audio for p in testset.positives(cache, "small") if p.voice == "piper-joe"]


def chunks(audio: np.ndarray, block_ms: int = 30) -> list[AudioChunk]:
    """16 kHz samples as the microphone's blocks, each stamped with its time in the clip."""
    step = RATE * block_ms // 1000
    return [
        AudioChunk(audio[i : i + step].tobytes(), RATE, timestamp_ms=1000 * i / RATE)
        for i in range(0, len(audio), step)
    ]


def in_cabin(audio: np.ndarray, seed: int = 0) -> np.ndarray:
    """A clip as the cabin microphone hears it: a second of quiet each side, faint noise under it all."""
    pad = np.zeros(RATE, np.int16)
    clip = np.concatenate([pad, audio, pad])
    return (clip + noise_int16(len(clip) / RATE, level_dbfs=-55, seed=seed)).astype(np.int16)
