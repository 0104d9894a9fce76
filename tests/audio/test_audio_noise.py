"""Road noise looks like a car (rumble-heavy) and mixes at the SNR asked for."""

from __future__ import annotations

import numpy as np
import pytest

from agent.devtools.road_noise import active_rms, mix_at_snr, noise_int16, road_noise


def band_power(x: np.ndarray, low: float, high: float, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_road_noise_is_rumble_heavy_with_some_hiss() -> None:
    x = road_noise(5.0, seed=1)
    assert x.dtype == np.float32 and len(x) == 80000
    assert np.sqrt(np.mean(x.astype(float) ** 2)) == pytest.approx(1.0, rel=0.01)
    low, mid, high = band_power(x, 20, 300), band_power(x, 300, 2000), band_power(x, 2000, 6000)
    assert low > 5 * mid > 0 and high > 0
    assert not np.array_equal(road_noise(1.0, seed=1), road_noise(1.0, seed=2))
    assert np.array_equal(road_noise(1.0, seed=3), road_noise(1.0, seed=3))


@pytest.mark.parametrize("snr_db", [20.0, 10.0, 0.0])
def test_mix_at_snr(snr_db: float) -> None:
    t = np.arange(32000) / 16000
    speech = (6000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    noise = road_noise(2.0, seed=4)
    mixed = mix_at_snr(speech, noise, snr_db).astype(float)
    residual = mixed - speech * (np.max(np.abs(mixed)) and (mixed @ speech) / (speech.astype(float) @ speech))
    measured = 20 * np.log10(active_rms(mixed - residual) / np.sqrt(np.mean(residual**2)))
    assert measured == pytest.approx(snr_db, abs=0.5)
    assert mixed.max() <= 32767 * 0.95 + 1


def test_noise_level_and_clean_passthrough() -> None:
    x = noise_int16(2.0, level_dbfs=-30, seed=0).astype(float)
    assert 20 * np.log10(np.sqrt(np.mean(x**2)) / 32767) == pytest.approx(-30, abs=0.3)
    speech = np.arange(100, dtype=np.int16)
    assert np.array_equal(mix_at_snr(speech, np.zeros(10), None), speech)
