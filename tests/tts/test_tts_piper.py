"""Piper with the real en_US-joe-medium voice: audio that is speech-like, streamed sentence by sentence,
and stopped at once on barge-in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from helpers.real import store_model

from agent.audio.chunk import AudioChunk
from agent.tts.base import Synthesizer, TtsError
from agent.tts.sentences import speak_stream

MODEL_ID = "piper-en_US-joe-medium"




@pytest.fixture(scope="session")
def joe_dir() -> Path:
    return store_model(MODEL_ID)


@pytest.fixture(scope="module")
def joe(joe_dir: Path):  # type: ignore[no-untyped-def]
    # Synchronous: loaded once per module, outside any test's event loop (the engine thread needs none).
    from agent.tts.piper import PiperTts

    tts = PiperTts(joe_dir)
    yield tts
    asyncio.run(tts.aclose())


def rms(chunks: list[AudioChunk]) -> float:
    samples = np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


async def collect(stream: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    return [chunk async for chunk in stream]


@pytest.mark.model
async def test_sentence_is_speech_at_the_voice_rate(joe) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(joe, Synthesizer)
    assert joe.sample_rate_hz == 22050 and joe.language == "en"
    started = time.perf_counter()
    chunks = await asyncio.wait_for(collect(joe.synthesize("Set the temperature to 21°C.")), 60)
    elapsed = time.perf_counter() - started
    seconds = sum(c.duration_ms for c in chunks) / 1000
    assert all(c.rate == 22050 and c.channels == 1 and c.width == 2 for c in chunks)
    # "Set the temperature to twenty-one degrees" spoken: about two seconds, clearly not silence.
    assert 1.2 < seconds < 4.5
    assert rms(chunks) > 1000
    print(
        f"\npiper joe: {seconds:.2f} s of speech in {elapsed:.2f} s, real-time factor {elapsed / seconds:.3f}"
    )


@pytest.mark.model
async def test_first_sentence_arrives_before_the_rest_is_synthesised(joe) -> None:  # type: ignore[no-untyped-def]
    text = (
        "Your cappuccino is on its way. It should arrive in about 25 minutes, and the total is 26 yuan. "
        "I will let you know when the driver is close. Is there anything else I can do for you?"
    )
    started = time.perf_counter()
    first: float | None = None
    chunks: list[AudioChunk] = []
    async for chunk in joe.synthesize(text):
        if first is None:
            first = time.perf_counter() - started
        chunks.append(chunk)
    total = time.perf_counter() - started
    assert first is not None
    print(f"\npiper joe: first chunk after {first:.2f} s, all {len(chunks)} chunks after {total:.2f} s")
    assert first < total / 2


@pytest.mark.model
async def test_speak_stream_plays_while_the_reply_is_still_written(joe) -> None:  # type: ignore[no-untyped-def]
    reply = (
        "Okay, setting the temperature to 21 degrees. The seats are heating too, and the fan is on low. "
        "Traffic on the way home looks light, so you should be there in about 25 minutes. Anything else?"
    )
    done_writing: float | None = None

    async def llm_deltas() -> AsyncIterator[str]:
        nonlocal done_writing
        for word in reply.split(" "):
            await asyncio.sleep(0.08)  # ~12 tokens/s, a 1.5B model on 2 cores
            yield word + " "
        done_writing = time.perf_counter()

    started = time.perf_counter()
    first_audio: float | None = None
    chunks: list[AudioChunk] = []

    async def run() -> None:
        nonlocal first_audio
        async for chunk in speak_stream(llm_deltas(), joe):
            if first_audio is None:
                first_audio = time.perf_counter()
            chunks.append(chunk)

    await asyncio.wait_for(run(), 60)
    assert first_audio is not None and done_writing is not None
    assert first_audio < done_writing, "the first sentence must sound before the reply is complete"
    print(
        f"\nspeak_stream: first audio {first_audio - started:.2f} s, "
        f"reply written {done_writing - started:.2f} s"
    )
    assert sum(c.duration_ms for c in chunks) > 3000


@pytest.mark.model
async def test_barge_in_stops_synthesis_at_once(joe) -> None:  # type: ignore[no-untyped-def]
    reply = " ".join(f"This is sentence number {i} of a long answer." for i in range(1, 30))

    async def deltas() -> AsyncIterator[str]:
        yield reply

    stream = speak_stream(deltas(), joe)
    got = [await asyncio.wait_for(anext(stream), 30)]
    started = time.perf_counter()
    await asyncio.wait_for(stream.aclose(), 5)
    stop_seconds = time.perf_counter() - started
    assert stop_seconds < 0.05, "closing the stream must not wait for the rest of the reply"
    # The engine is free again within one sentence: the next request is served promptly.
    started = time.perf_counter()
    after = await asyncio.wait_for(collect(joe.synthesize("Yes?")), 30)
    assert after and got
    assert time.perf_counter() - started < 3.0


def test_missing_voice_is_a_typed_error(tmp_path: Path) -> None:
    pytest.importorskip("piper")
    from agent.tts.piper import PiperTts

    with pytest.raises(TtsError) as info:
        PiperTts(tmp_path / "nope.onnx")
    assert info.value.code == "tts-voice-missing"
