"""The English wake loop through the real audio path: "hey cabin" (Piper voice, road noise) goes into the fake
ALSA card, MicSource captures it through PortAudio, WakeDetector + pocketsphinx fire once, in time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.fakecard import last_json, run_on_card

from agent.devtools.fakecard import FakeCard
from agent.devtools.road_noise import mix_at_snr, road_noise

pytestmark = pytest.mark.slow
RATE = 16000


def test_wake_fires_on_hey_cabin_through_the_fake_card(tmp_path: Path, piper_hey_cabin: list) -> None:
    phrase = piper_hey_cabin[1]
    lead = np.zeros(int(1.5 * RATE), np.int16)
    clip = np.concatenate([lead, phrase, np.zeros(RATE, np.int16)])
    clip = mix_at_snr(clip, road_noise(len(clip) / RATE, seed=11), 15.0)
    card = FakeCard(tmp_path / "card")
    card.write()
    card.write_input(clip, pad_seconds=2.0)
    phrase_end_s = (len(lead) + len(phrase)) / RATE
    code = """
        import asyncio, json, time
        from agent.audio.sources import MicSource
        from agent.core.config import WakeConfig
        from agent.wake.detector import WakeDetector
        from agent.wake.pocketsphinx import PocketsphinxWake
        async def main():
            mic = MicSource(device="card_in", block_ms=30, pace_realtime=True)
            stream = mic.stream()
            detector = WakeDetector(PocketsphinxWake("hey cabin"), WakeConfig(engine="pocketsphinx"))
            t0 = time.monotonic()
            found = await asyncio.wait_for(detector.wait(stream), timeout=15)
            at = time.monotonic() - t0
            again = None
            try:  # nothing more in the rest of the clip
                again = await asyncio.wait_for(detector.wait(stream), timeout=2.0)
            except TimeoutError:
                pass
            await asyncio.wait_for(stream.aclose(), timeout=5)
            detector.close()
            print(json.dumps({"at": at, "engine": found.engine, "again": again is not None,
                              "rtf": detector.stats.real_time_factor, "lag_ms": detector.stats.max_lag_ms}))
        asyncio.run(main())
    """
    info = last_json(run_on_card(card, code, timeout=120))
    assert info["engine"] == "pocketsphinx"
    # Paced capture: the wake comes right after the phrase ends in real time.
    assert phrase_end_s - 0.3 <= info["at"] <= phrase_end_s + 1.0
    assert not info["again"]
    assert info["rtf"] < 0.25
