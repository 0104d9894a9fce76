"""Car-cabin road noise (engine/road rumble, brown and pink noise, tyre hiss) and mixing at a chosen SNR.

Used by the demo (the simulated drive) and the wake test set; numpy only, deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np


def _shaped(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    spectrum *= freqs ** (-exponent / 2)
    x = np.fft.irfft(spectrum, n)
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def _bandpass(x: np.ndarray, rate_hz: int, low_hz: float, high_hz: float) -> np.ndarray:
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate_hz)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    y = np.fft.irfft(spectrum, len(x))
    return y / (np.sqrt(np.mean(y * y)) + 1e-12)


def road_noise(seconds: float, rate_hz: int = 16000, *, seed: int = 0, speed_kmh: float = 80.0) -> np.ndarray:
    """Float32 cabin noise at unit RMS: rumble below ~200 Hz dominates, a little hiss above 2 kHz.

    Faster driving means more tyre hiss and a higher engine tone; amplitude wobbles slowly like a real road.
    """
    n = max(2, int(seconds * rate_hz))
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate_hz
    brown = _shaped(n, rng, 2.0)
    pink = _shaped(n, rng, 1.0)
    rumble = _bandpass(rng.standard_normal(n), rate_hz, 20.0, 180.0)
    hiss = _bandpass(rng.standard_normal(n), rate_hz, 2000.0, min(6000.0, rate_hz / 2 - 1))
    engine_hz = 25.0 + speed_kmh * 0.35
    engine = np.sin(2 * np.pi * engine_hz * t) + 0.5 * np.sin(2 * np.pi * 2 * engine_hz * t + 1.0)
    hiss_level = 0.08 + 0.12 * min(speed_kmh, 130.0) / 130.0
    x = 1.0 * brown + 0.35 * pink + 0.8 * rumble + hiss_level * hiss + 0.15 * engine
    # Road surface changes: a slow random gain wobble of a few dB.
    wobble = np.interp(
        t,
        np.linspace(0, t[-1] + 1e-9, max(2, int(seconds / 2) + 2)),
        rng.uniform(0.8, 1.2, max(2, int(seconds / 2) + 2)),
    )
    x *= wobble
    return (x / (np.sqrt(np.mean(x * x)) + 1e-12)).astype(np.float32)


def active_rms(x: np.ndarray, rate_hz: int = 16000, frame_ms: int = 20, top_fraction: float = 0.5) -> float:
    """RMS over the louder frames only, so the silence around a phrase doesn't inflate the SNR."""
    x = np.asarray(x, dtype=np.float64)
    frame = max(1, rate_hz * frame_ms // 1000)
    n = len(x) // frame
    if n == 0:
        return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
    energies = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    keep = max(1, int(n * top_fraction))
    return float(np.sqrt(np.mean(np.sort(energies)[-keep:])))


def mix_at_snr(
    speech: np.ndarray, noise: np.ndarray, snr_db: float | None, rate_hz: int = 16000, *, peak: float = 0.95
) -> np.ndarray:
    """Speech (int16 or float) plus noise scaled to `snr_db` below the speech's active level; int16 out.

    `snr_db=None` returns the speech alone. Noise is looped if shorter than the speech. If the mix would clip,
    both are scaled down together (the SNR is kept).
    """
    s = np.asarray(speech, dtype=np.float64)
    if snr_db is None:
        mixed = s
    else:
        nz = np.asarray(noise, dtype=np.float64)
        if len(nz) < len(s):
            nz = np.tile(nz, int(np.ceil(len(s) / max(1, len(nz)))))
        nz = nz[: len(s)]
        speech_rms = active_rms(s, rate_hz)
        noise_rms = float(np.sqrt(np.mean(nz * nz))) + 1e-12
        mixed = s + nz * (speech_rms / noise_rms) * 10 ** (-snr_db / 20)
    limit = peak * 32767
    top = float(np.max(np.abs(mixed))) if len(mixed) else 0.0
    if top > limit:
        mixed = mixed * (limit / top)
    return np.round(mixed).astype(np.int16)


def noise_int16(
    seconds: float, rate_hz: int = 16000, *, level_dbfs: float = -35.0, seed: int = 0
) -> np.ndarray:
    """Road noise alone at a given RMS level (for negative audio and "nobody speaks" tests)."""
    x = road_noise(seconds, rate_hz, seed=seed) * (32767 * 10 ** (level_dbfs / 20))
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)
