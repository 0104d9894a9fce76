"""The bench's plots: where the time of a turn goes per turn type, and every turn's latency over the run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.logging import get_logger
from agent.devtools.bench.stats import STAGE_LABELS, STAGES

log = get_logger("bench")


def plot(report: Mapping[str, Any], out_dir: Path, stem: str) -> dict[str, str]:
    """A stacked bar of the mean stage times per turn type, and every turn's latency over the run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("bench-no-matplotlib", fix="pip install matplotlib (the `bench` extra)")
        return {}
    lat = report.get("latency", {})
    by_kind = lat.get("by_kind", {})
    turns = [t for t in lat.get("turns", []) if t.get("end_to_first_audio_ms") is not None]
    if not by_kind:
        return {}
    paths: dict[str, str] = {}
    machine = report.get("machine", {})
    loads = [x[0] for x in (machine.get("load_avg_start"), machine.get("load_avg_end")) if x]
    load = f"\n(load average {max(loads):.2f} on {machine.get('cores', '?')} cores)" if loads else ""
    colors = dict(zip([s for s, _ in STAGES], plt.get_cmap("tab10").colors, strict=False))

    fig, ax = plt.subplots(figsize=(10, 4.8))
    kinds = list(by_kind)
    bottoms = np.zeros(len(kinds))
    for stage, _ in STAGES:
        heights = np.array([by_kind[k]["stages_ms"].get(stage, {}).get("mean") or 0.0 for k in kinds])
        if heights.any():
            ax.bar(kinds, heights, bottom=bottoms, label=STAGE_LABELS[stage], color=colors[stage])
            bottoms += heights
    for i, k in enumerate(kinds):
        e2e = by_kind[k]["end_to_first_audio_ms"]
        ax.text(
            i,
            bottoms[i] + 0.01 * max(bottoms),
            f"mean {e2e['mean']:.0f} · p50 {e2e['p50']:.0f} ms\nn={e2e['n']}",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.axhline(1000, color="grey", linestyle="--", linewidth=1)
    ax.text(len(kinds) - 0.5, 1010, "vehicle p50 target", fontsize=7, color="grey", ha="right", va="bottom")
    ax.set_ylabel("ms after the end of speech (mean per stage)")
    ax.set_title(f"Where the time goes: end of speech → first reply audio{load}", fontsize=10)
    ax.set_ylim(0, max(bottoms) * 1.15)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = out_dir / f"{stem}-breakdown.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths["stage breakdown per turn type"] = path.name

    fig, ax = plt.subplots(figsize=(10, 4.2))
    for k in kinds:
        xs = [t["at_s"] for t in turns if t["kind"] == k]
        ys = [t["end_to_first_audio_ms"] for t in turns if t["kind"] == k]
        ax.plot(xs, ys, "o", label=k, markersize=5)
    if turns:
        p50 = lat.get("all", {}).get("p50")
        if p50:
            ax.axhline(p50, color="black", linewidth=0.8, linestyle=":", label=f"p50 all ({p50:.0f} ms)")
    ax.axhline(1000, color="grey", linestyle="--", linewidth=1, label="vehicle p50 target")
    loads = [(t["at_s"], t["load_1min"]) for t in turns if t.get("load_1min") is not None]
    if loads:
        twin = ax.twinx()
        twin.plot(*zip(*loads, strict=True), color="grey", linewidth=0.8, alpha=0.6)
        twin.set_ylabel("load average (1 min), grey line", fontsize=8, color="grey")
        twin.set_ylim(bottom=0)
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("end of speech → first audio (ms)")
    ax.set_title(f"Latency over the run{load}", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.08 if loads else 1.01, 1.0))
    fig.tight_layout()
    path = out_dir / f"{stem}-over-time.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths["latency over the run"] = path.name
    return paths
