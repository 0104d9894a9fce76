"""`cabin-agent demo` through the real voice loop (real wake, VAD, whisper and Piper; the model replaced by a
scripted Assistant so this stays short): requests are heard in order, the "yes" goes through the follow-up window,
each reply lands in its own WAV, and the summary has end-of-speech → first-audio latencies."""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path

import pytest
from helpers.pipeline import FakeAssistant
from helpers.real import require_voice_models

from agent.core.config import Config

pytestmark = [pytest.mark.slow, pytest.mark.model]


async def test_demo_drive_through_the_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.devtools.demo.drive import spoken_drive

    config = Config()
    require_voice_models(config)
    drive = [
        ("piper", "play some jazz", True),
        ("espeak", "order a large pepperoni pizza", True),
        ("espeak", "yes", False),
    ]
    assistant = FakeAssistant(
        config, replies=["Playing jazz.", "A large pepperoni pizza, 89 yuan. Shall I order it?", "Ordered."]
    )
    out = tmp_path / "demo-out"
    result = await asyncio.wait_for(
        spoken_drive(config, out, speed=2.0, as_json=True, drive=drive, assistant=assistant), timeout=180
    )
    records = result["records"]
    assert [r["outcome"] for r in records] == ["replied"] * 3, records
    assert [r["trigger"] for r in records] == ["wake", "wake", "follow-up"]
    assert "jazz" in records[0]["transcript"].lower() and "yes" in records[2]["transcript"].lower()
    assert len(assistant.calls) == 3
    for i, record in enumerate(records, 1):
        wav_path = out / f"turn{i:02d}-reply.wav"
        assert record["reply_wav"] == str(wav_path)
        with wave.open(str(wav_path)) as wav:
            assert wav.getnframes() > 0.3 * wav.getframerate()
    assert (out / "cabin-mic.wav").exists()
    summary = result["summary"]
    assert summary["median_speech_end_to_first_audio_ms"] is not None
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines[-1]["summary"]["turns"] == 3
