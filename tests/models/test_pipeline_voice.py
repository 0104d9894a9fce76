"""Voice stages from the config: which engines "auto" picks per profile and language, and `transcribe_file`
(`cabin-agent say --audio`) on a real recording."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from helpers.real import require

from agent.core.config import Config
from agent.models.engines import effective_engine, resolved_config


def test_auto_engines_follow_the_profile_default_models() -> None:
    dev = Config()
    assert (dev.asr.engine, dev.wake.engine) == ("auto", "auto")
    assert effective_engine(dev, "asr") == "whisper" and effective_engine(dev, "wake") == "pocketsphinx"
    pi5 = Config.model_validate({"models": {"profile": "pi5"}})
    assert effective_engine(pi5, "asr") == "vosk" and effective_engine(pi5, "wake") == "vosk"
    pi5_zh = Config.model_validate({"models": {"profile": "pi5"}, "language": "zh"})
    assert resolved_config(pi5_zh).asr.engine == "vosk"


def test_explicit_engines_are_kept_and_a_profile_without_a_wake_model_means_push_to_talk() -> None:
    explicit = Config.model_validate({"asr": {"engine": "vosk"}, "wake": {"engine": "none"}})
    assert resolved_config(explicit).asr.engine == "vosk" and resolved_config(explicit).wake.engine == "none"
    dev_zh = Config.model_validate({"language": "zh"})
    assert effective_engine(dev_zh, "wake") == "none"


@pytest.mark.model
async def test_transcribe_file_reads_a_wav_request(tmp_path: Path) -> None:
    try:
        from agent.devtools.voices import Voices

        audio = Voices(Config()).say("piper", "play some jazz")
    except Exception as err:  # noqa: BLE001
        require(False, f"Piper voice unavailable: {err}")
    path = tmp_path / "request.wav"
    with wave.open(str(path), "wb") as wav:  # 44.1 kHz stereo: converted at the edge
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(44100)
        from agent.audio.chunk import AudioChunk

        up = AudioChunk(audio.tobytes(), 16000).to_format(44100, 2)
        wav.writeframes(np.concatenate([np.zeros(8000, np.int16), up.as_int16().ravel()]).tobytes())
    from agent.cli.turns import transcribe_file

    text = await transcribe_file(Config(), path)
    assert "jazz" in text.lower()
