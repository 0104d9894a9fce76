"""faster-whisper tiny.en with the real model, on requests spoken by the real Piper voice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers.audio import collect, mic_blocks
from helpers.real import store_model

from agent.asr.base import AsrError, usable
from agent.audio.chunk import AudioChunk

WHISPER_ID = "whisper-tiny.en"
VOICE_ID = "piper-en_US-joe-medium"




@pytest.fixture(scope="session")
def whisper_dir() -> Path:
    return store_model(WHISPER_ID)


@pytest.fixture(scope="session")
def voice_dir() -> Path:
    return store_model(VOICE_ID)


@pytest.fixture(scope="module")
def whisper(whisper_dir: Path):  # type: ignore[no-untyped-def]
    # Synchronous: loaded once per module, outside any test's event loop (the engine thread needs none).
    from agent.asr.whisper import WhisperRecognizer

    asr = WhisperRecognizer(whisper_dir, beam_size=1)
    yield asr
    asyncio.run(asr.aclose())


@pytest.fixture(scope="module")
def joe(voice_dir: Path):  # type: ignore[no-untyped-def]
    from agent.tts.piper import PiperTts

    tts = PiperTts(voice_dir)
    yield tts
    asyncio.run(tts.aclose())


async def spoken(tts, text: str) -> AudioChunk:  # type: ignore[no-untyped-def]
    chunks = [c async for c in tts.synthesize(text)]
    silence = b"\0\0" * (chunks[0].rate // 4)
    return AudioChunk(silence + b"".join(c.pcm for c in chunks) + silence, rate=chunks[0].rate)


async def final_of(asr, audio: AudioChunk):  # type: ignore[no-untyped-def]
    results = await asyncio.wait_for(collect(asr.transcribe(mic_blocks(audio))), 60)
    assert [t.is_final for t in results] == [True]  # final only: no pseudo-partials
    return results[0]


@pytest.mark.model
async def test_temperature_request_is_transcribed(whisper, joe) -> None:  # type: ignore[no-untyped-def]
    audio = await spoken(joe, "Set the temperature to twenty one degrees.")
    whisper.set_vocabulary([])
    started = time.perf_counter()
    final = await final_of(whisper, audio)
    elapsed = time.perf_counter() - started
    text = final.text.lower()
    print(
        f"\nwhisper tiny.en: {final.text!r} in {elapsed:.2f} s for {audio.duration_ms / 1000:.2f} s of audio "
        f"(real-time factor {elapsed / (audio.duration_ms / 1000):.2f})"
    )
    assert "temperature" in text
    assert "21" in text or "twenty-one" in text or "twenty one" in text
    assert "degree" in text
    assert final.confidence is not None and 0 < final.confidence <= 1
    assert usable(final.text)


@pytest.mark.model
async def test_vocabulary_goes_into_the_prompt_and_keeps_menu_words(whisper, joe) -> None:  # type: ignore[no-untyped-def]
    from agent.devtools.reference_service import load_catalogue
    from agent.plugins.meals.catalogue import Catalogue

    whisper.set_vocabulary([*Catalogue.from_json(load_catalogue()).vocabulary(), "Li Wei", "Sarah"])
    assert "cappuccino" in whisper.prompt and "拿铁" not in whisper.prompt  # tiny.en: Latin script only
    final = await final_of(whisper, await spoken(joe, "Order a large cappuccino from Bean There Coffee."))
    assert "cappuccino" in final.text.lower()
    whisper.set_vocabulary([])
    assert whisper.prompt == ""


@pytest.mark.model
async def test_silence_and_empty_input_give_unusable_finals(whisper) -> None:  # type: ignore[no-untyped-def]
    final = await final_of(whisper, AudioChunk(b"\0\0" * 16000))
    assert not usable(final.text), final.text

    async def nothing() -> AsyncIterator[AudioChunk]:
        return
        yield

    results = await asyncio.wait_for(collect(whisper.transcribe(nothing())), 10)
    assert len(results) == 1 and results[0].is_final and results[0].text == ""


def test_missing_model_is_a_typed_error(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    from agent.asr.whisper import WhisperRecognizer

    with pytest.raises(AsrError) as info:
        WhisperRecognizer(tmp_path)
    assert info.value.code == "asr-model-missing"


@pytest.mark.model
def test_speak_then_transcribe_commands(tmp_path: Path, whisper_dir: Path, voice_dir: Path) -> None:
    import json
    import subprocess
    import sys

    wav = tmp_path / "reply.wav"
    voice = next(voice_dir.glob("*.onnx"))
    spoken = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "speak",
            "Navigate to 88 Century Avenue.",
            "--wav",
            str(wav),
            "--voice",
            str(voice),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert spoken.returncode == 0, spoken.stderr
    assert wav.stat().st_size > 22050  # more than half a second of 22,050 Hz audio
    heard = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "transcribe",
            str(wav),
            "--engine",
            "whisper",
            "--model",
            str(whisper_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert heard.returncode == 0, heard.stderr
    result = json.loads(heard.stdout)
    assert result["usable"] and result["engine"] == "whisper"
    assert "century avenue" in result["text"].lower()
    assert 0 < result["real_time_factor"] < 3
