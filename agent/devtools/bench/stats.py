"""The bench's arithmetic: percentiles and summaries, the stages of a spoken turn after the end of speech, our
cost over a bare engine, decode rates."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent.devtools.eval_scoring import percentile

# Stages after the driver stops speaking, in the order they happen. Each stage is the time since the previous
# stage that happened in this turn (a confirmation "yes" has no model token; a spoken answer no tool call).
STAGES: tuple[tuple[str, str], ...] = (
    ("endpoint_wait", "endpoint"),
    ("transcript", "transcript_final"),
    ("first_token", "first_token"),
    ("tool_call", "tool_call_complete"),
    ("tool_run", "tool_done"),
    ("first_audio", "first_audio"),
)
STAGE_LABELS = {
    "endpoint_wait": "endpoint wait (VAD silence)",
    "transcript": "final transcript (ASR)",
    "first_token": "first model token",
    "tool_call": "tool call decoded",
    "tool_run": "tool done",
    "first_audio": "first reply audio (TTS)",
}

# What the simulated driver says: (kind, voice, text, trigger). Kinds are compared separately: vehicle


def summarize_ms(values: Iterable[float | None]) -> dict[str, Any]:
    """n, p50, p95, max and mean of the values (None ignored); percentiles as `cabin-agent eval` does."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return {"n": 0, "p50": None, "p95": None, "max": None, "mean": None}
    return {
        "n": len(xs),
        "p50": round(percentile(xs, 0.50), 1),
        "p95": round(percentile(xs, 0.95), 1),
        "max": round(max(xs), 1),
        "mean": round(statistics.fmean(xs), 1),
    }


def stage_breakdown(marks_ms: Mapping[str, float], speech_end_ms: float) -> dict[str, float]:
    """Milliseconds spent in each stage after the end of speech; the stages sum to the last mark's latency.

    `marks_ms` are absolute (monotonic) times of the pipeline's marks; a missing mark adds its time to the
    next stage that happened, so the parts always add up.
    """
    out: dict[str, float] = {}
    previous = speech_end_ms
    for stage, mark in STAGES:
        at = marks_ms.get(mark)
        if at is None:
            continue
        at = max(at, previous)  # marks taken on different threads may be a hair out of order
        out[stage] = round(at - previous, 1)
        previous = at
    return out


def overhead(ours: float | None, bare: float | None, *, higher_is_better: bool) -> dict[str, Any]:
    """Our cost over the bare engine as a fraction (0.05 = 5 % slower); negative means we were faster."""
    if not ours or not bare:
        return {"ours": ours, "bare": bare, "ratio": None, "overhead": None}
    ratio = ours / bare
    cost = (bare / ours - 1.0) if higher_is_better else (ratio - 1.0)
    return {
        "ours": round(ours, 3),
        "bare": round(bare, 3),
        "ratio": round(ratio, 3),
        "overhead": round(cost, 3),
    }


def paired_overhead(
    ours: Sequence[float], bare: Sequence[float], *, higher_is_better: bool
) -> dict[str, Any]:
    """`overhead()` over alternating measurements: the ratio is the median of the per-pair ratios, so a
    change in the machine's load between pairs moves both sides of a pair, not the result."""
    pairs = [(o, b) for o, b in zip(ours, bare, strict=False) if o and b]
    if not pairs:
        return overhead(None, None, higher_is_better=higher_is_better)
    out = overhead(
        statistics.median(o for o, _ in pairs),
        statistics.median(b for _, b in pairs),
        higher_is_better=higher_is_better,
    )
    ratio = statistics.median(o / b for o, b in pairs)
    out["ratio"] = round(ratio, 3)
    out["overhead"] = round((1 / ratio - 1.0) if higher_is_better else (ratio - 1.0), 3)
    out["pairs"] = len(pairs)
    return out


def decode_rates(calls: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """ms per generated token after the first, for free and for grammar-constrained model calls."""
    calls = list(calls)
    out: dict[str, Any] = {}
    for label, constrained in (("free", False), ("grammar", True)):
        mine = [c for c in calls if bool(c.get("grammar")) == constrained and c.get("generated", 0) >= 2]
        tokens = sum(c["generated"] - 1 for c in mine)
        ms = sum(c["ms"] - c.get("first_ms", 0.0) for c in mine)
        out[label] = {
            "calls": len(mine),
            "tokens": tokens,
            "ms_per_token": round(ms / tokens, 1) if tokens else None,
            "mean_tokens_per_call": round(sum(c["generated"] for c in mine) / len(mine), 1) if mine else None,
        }
    return out
