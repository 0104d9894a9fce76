"""The whisper wake verifier: the fuzzy phrase match, the real tiny.en model on Piper speech, and the
two-stage engine inside WakeDetector (verification runs on the wake worker thread, the loop keeps ticking)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from helpers.audio import aiter_of
from helpers.real import store_model
from helpers.wake import chunks, in_cabin

from agent.core.config import WakeConfig, validate
from agent.wake.base import WakeEngine
from agent.wake.factory import create_engine
from agent.wake.verify import DEFAULT_MIN_SIMILARITY, phrase_similarity


@pytest.mark.parametrize(
    "heard", ["Hey cabin.", "Hey, cabin!", "hey cab in", "Okay. Hey cabin, open the window.", "Haycabin"]
)
def test_phrase_heard(heard: str) -> None:
    assert phrase_similarity(heard, "hey cabin") >= DEFAULT_MIN_SIMILARITY


@pytest.mark.parametrize(
    "heard",
    [
        "Hey, Kevin.",
        "a cabin in the woods",
        "the cabinet is full",
        "hey captain",
        "Hey.",
        "",
        "Hey, copy it.",
    ],
)
def test_confusables_rejected(heard: str) -> None:
    assert phrase_similarity(heard, "hey cabin") < DEFAULT_MIN_SIMILARITY


@pytest.fixture(scope="module")
def verifier():  # type: ignore[no-untyped-def]
    from agent.wake.verify import WhisperVerifier

    return WhisperVerifier(store_model("whisper-tiny.en"), "hey cabin")


@pytest.mark.model
def test_whisper_confirms_the_phrase_and_rejects_a_confusable(verifier, testset, piper_hey_cabin) -> None:
    verdict = verifier.verify(in_cabin(piper_hey_cabin[1]))
    assert verdict.accepted, verdict
    piper = testset.Piper(testset.default_cache_dir())
    # "Hey Kevin" is not here: with the phrase as its prompt tiny.en hears it as "hey cabin" (docs/audio.md).
    for text in ("Hey captain.", "The cabinet is full."):
        verdict = verifier.verify(in_cabin(piper.say(text)))
        assert not verdict.accepted, verdict


@pytest.mark.model
def test_factory_builds_the_two_stage_engine_for_english() -> None:
    from agent.wake.pocketsphinx import PocketsphinxWake
    from agent.wake.verify import VerifiedWake

    store_model("whisper-tiny.en")
    engine = create_engine(validate({"language": "en", "wake": {"engine": "pocketsphinx"}}))
    assert isinstance(engine, VerifiedWake) and isinstance(engine, WakeEngine)
    assert isinstance(engine.first_stage, PocketsphinxWake) and engine.name == "pocketsphinx+whisper"
    plain = create_engine(validate({"wake": {"engine": "pocketsphinx", "verify": False}}))
    assert isinstance(plain, PocketsphinxWake)
    assert plain.kws_threshold > engine.first_stage.kws_threshold  # the first stage is the permissive one


@pytest.mark.model
async def test_detector_verifies_off_the_event_loop(verifier, piper_hey_cabin) -> None:
    from agent.wake.detector import WakeDetector
    from agent.wake.pocketsphinx import VERIFIED_KWS_THRESHOLD, PocketsphinxWake
    from agent.wake.verify import VerifiedWake

    engine = VerifiedWake(PocketsphinxWake("hey cabin", kws_threshold=VERIFIED_KWS_THRESHOLD), verifier)
    detector = WakeDetector(engine, WakeConfig(barge_in=False))
    ticks = 0
    gaps: list[float] = []

    async def ticker() -> None:
        nonlocal ticks
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now
            ticks += 1

    audio = np.concatenate([in_cabin(piper_hey_cabin[1]), np.zeros(16000, np.int16)])
    task = asyncio.create_task(ticker())
    try:
        found = [d async for d in detector.detections(aiter_of(chunks(audio)))]
    finally:
        task.cancel()
        detector.close()
    assert len(found) == 1 and found[0].engine == "pocketsphinx+whisper"
    assert engine.stats.candidates >= 1 and engine.stats.verify_seconds
    # Whisper took ~0.5 s on the worker thread; the loop never stalled for anything like that.
    assert max(gaps) < 0.25, max(gaps)
