"""Wake quality on the small cached subset of the generated test set (scripts/wake_testset.py --subset small).

The full set (>= 1 hour of negatives) is measured by the script; its numbers are in docs/audio.md.
"""

from __future__ import annotations

import pytest
from test_wake_engines import piper_hey_cabin, testset  # noqa: F401 - session fixtures

pytestmark = [pytest.mark.slow, pytest.mark.model]


def test_small_subset_detection_and_false_accepts(testset, piper_hey_cabin) -> None:  # noqa: F811
    from agent.wake.pocketsphinx import DEFAULT_KWS_THRESHOLD

    report = testset.measure(
        testset.pocketsphinx_engine(DEFAULT_KWS_THRESHOLD), testset.default_cache_dir(), "small"
    )
    # The Piper voice (what a natural voice sounds like here): clean and 10 dB SNR road noise.
    assert report["by_voice"]["piper-joe"] >= 0.66, report
    # 4 minutes of speech, music and road noise. At the tuned default this subset has 2 false wakes (one in the
    # Piper voice, one in the chords) - a regression guard, not a target: see "What is weak" in docs/audio.md.
    assert sum(report["false_accepts"].values()) <= 2, report
    assert report["negative_hours"] >= 0.06
    assert report["real_time_factor"] < 0.25
