"""`cabin-agent bench`: how fast the car answers, what it costs the head unit while it waits, and how often it
does the right thing, measured in one run and written to `bench/results/<date>.json`, `.md` and PNG plots.

Phases (docs/bench.md): spoken turns through the real voice loop (synthesised requests in road noise, the
wake phrase or push-to-talk before each, services on a loopback reference service); our layers against the
bare engines on the same inputs; first-token time cold / cached / after a restart (fresh processes); the
daemon's idle cost and start-up time (a subprocess fed cabin noise, read from /proc); the understanding eval.
The machine, its load average at start and end, the model profile and engine versions are part of every
report: absolute times move on a shared machine, ratios and breakdowns are what runs are compared by.

`python -m agent.devtools.bench probe|daemon ...` are the child processes the bench starts; they are not for people.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.events import TurnTimings, now_ms
from agent.core.logging import get_logger

log = get_logger("bench")

RATE = 16000
BLOCK_MS = 30
SPEECH_DBFS = -22.0  # the demo's level for the driver's voice in the cabin recording
SNR_DB = 20.0  # road noise this far below the speech (the demo's setting: pocketsphinx misses more at 15 dB)
REPORT_VERSION = 1
REPO = Path(__file__).resolve().parents[2]  # agent/devtools/bench.py -> the repository
DEFAULT_EVAL_SET = REPO / "tests" / "data" / "eval_car.jsonl"
ENGINE_PACKAGES = (
    "llama_cpp_python",
    "faster-whisper",
    "ctranslate2",
    "piper-tts",
    "onnxruntime",
    "pocketsphinx",
    "vosk",
    "webrtcvad-wheels",
    "numpy",
)

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
# commands are answered locally, service commands go to the (loopback) meals/deliveries service, a
# confirmation is the "yes" to the car's question (answered without the model), a question needs no tool.
SCRIPT: tuple[tuple[str, str, str, str], ...] = (
    ("vehicle", "piper", "set the temperature to twenty one degrees", "wake"),
    ("service", "espeak", "where is my package", "ptt"),
    ("vehicle", "espeak", "navigate to work", "wake"),
    ("vehicle", "piper", "play some jazz", "ptt"),
    ("service", "piper", "find a pizza place nearby", "wake"),
    ("vehicle", "espeak", "call mom", "ptt"),
    ("service", "piper", "order a large pepperoni pizza", "wake"),
    ("confirmation", "espeak", "yes", "follow-up"),
    ("vehicle", "piper", "make it nineteen degrees in here", "ptt"),
    ("service", "espeak", "what packages do I have coming", "wake"),
    ("vehicle", "piper", "take me home", "ptt"),
    ("no-tool", "espeak", "what is the capital of France", "wake"),
    ("vehicle", "piper", "call Sarah", "ptt"),
    ("service", "piper", "what is the status of my order", "wake"),
    ("vehicle", "espeak", "play the news", "ptt"),
    ("service", "piper", "has my shoe delivery shipped yet", "wake"),
)


# ======================================================================== pure helpers (tests/test_bench.py)


def summarize_ms(values: Iterable[float | None]) -> dict[str, Any]:
    """n, p50, p95, max and mean of the values (None ignored); percentiles as `cabin-agent eval` does."""
    from agent.devtools.eval_scoring import percentile

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


@dataclass(frozen=True)
class ProcSample:
    """One reading of /proc/<pid>: CPU ticks used so far (all threads), resident and peak memory."""

    at_s: float
    cpu_ticks: int
    rss_kb: int | None
    hwm_kb: int | None
    # RSS split: anonymous memory (heap, KV cache, repacked weights) vs file pages (the mmapped GGUF,
    # libraries); file pages are shared and reclaimable, so they say less about memory pressure.
    anon_kb: int | None = None
    file_kb: int | None = None


def parse_proc_stat(text: str) -> int:
    """utime + stime clock ticks from /proc/<pid>/stat (the command name may hold spaces and parentheses)."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]) + int(rest[12])


def parse_proc_status(text: str, key: str) -> int | None:
    """A `kB` value such as VmRSS or VmHWM from /proc/<pid>/status."""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def read_proc(pid: int | str = "self") -> ProcSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    status = Path(f"/proc/{pid}/status").read_text()
    return ProcSample(
        time.monotonic(),
        parse_proc_stat(stat),
        parse_proc_status(status, "VmRSS"),
        parse_proc_status(status, "VmHWM"),
        parse_proc_status(status, "RssAnon"),
        parse_proc_status(status, "RssFile"),
    )


def cpu_percent(first: ProcSample, last: ProcSample, ticks_per_s: int | None = None) -> float | None:
    """CPU used between two samples, in % of one core (200 % = both cores of this machine busy)."""
    hz = ticks_per_s or os.sysconf("SC_CLK_TCK")
    seconds = last.at_s - first.at_s
    if seconds <= 0:
        return None
    return round(100.0 * (last.cpu_ticks - first.cpu_ticks) / hz / seconds, 2)


def resource_summary(samples: Sequence[ProcSample]) -> dict[str, Any]:
    if len(samples) < 2:
        return {"samples": len(samples)}
    rss = [s.rss_kb / 1024 for s in samples if s.rss_kb is not None]
    return {
        "samples": len(samples),
        "seconds": round(samples[-1].at_s - samples[0].at_s, 1),
        "cpu_percent_one_core": cpu_percent(samples[0], samples[-1]),
        "rss_mb_mean": round(statistics.fmean(rss), 1) if rss else None,
        "rss_mb_max": round(max(rss), 1) if rss else None,
        "peak_rss_mb_process": round(samples[-1].hwm_kb / 1024, 1) if samples[-1].hwm_kb else None,
        "rss_anon_mb_max": _max_mb(s.anon_kb for s in samples),
        "rss_file_mb_max": _max_mb(s.file_kb for s in samples),
    }


def _max_mb(values: Iterable[int | None]) -> float | None:
    kb = [v for v in values if v is not None]
    return round(max(kb) / 1024, 1) if kb else None


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


def target_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against this run: name, target, measured value, met (None = not measured)."""
    lat = report.get("latency", {}).get("by_kind", {}).get("vehicle", {}).get("end_to_first_audio_ms", {})
    ft = report.get("first_token", {})
    idle = report.get("idle", {})
    rows: list[dict[str, Any]] = []

    def row(name: str, target: str, value: float | None, limit: float, unit: str) -> None:
        rows.append(
            {
                "name": name,
                "target": target,
                "value": value,
                "unit": unit,
                "met": None if value is None else value <= limit,
            }
        )

    row("vehicle: end of speech → first audio p50", "≤ 1000 ms", lat.get("p50"), 1000, "ms")
    row("vehicle: end of speech → first audio p95", "≤ 1800 ms", lat.get("p95"), 1800, "ms")
    row("first token, warm process (p50)", "≤ 300 ms", ft.get("cached_ms"), 300, "ms")
    row("first token, first turn after a restart", "≤ 300 ms", ft.get("after_restart_ms"), 300, "ms")
    row("idle listening CPU", "≤ 10 % of one core", idle.get("cpu_percent_one_core"), 10, "%")
    row("idle listening RSS", "≤ 1024 MB", idle.get("rss_mb_max"), 1024, "MB")
    for name, item in report.get("overhead", {}).items():
        cost = item.get("overhead") if isinstance(item, Mapping) else None
        rows.append(
            {
                "name": f"our overhead: {name}",
                "target": "≤ 10 %",
                "value": None if cost is None else round(100 * cost, 1),
                "unit": "%",
                "met": None if cost is None else cost <= 0.10,
            }
        )
    return rows


def _fmt(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        value = f"{value:.{digits}f}"
    return f"{value}{(' ' + unit) if unit else ''}"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def where_time_goes(by_kind: Mapping[str, Any], kind: str = "vehicle") -> list[str]:
    """Sentences naming the largest stages of a turn type (mean ms and share of the mean total)."""
    stages = by_kind.get(kind, {}).get("stages_ms", {})
    means = {s: v.get("mean") for s, v in stages.items() if v.get("mean")}
    total = sum(means.values())
    if not total:
        return []
    ranked = sorted(means.items(), key=lambda kv: kv[1], reverse=True)
    return [f"{STAGE_LABELS.get(s, s)}: {ms:.0f} ms mean ({100 * ms / total:.0f} %)" for s, ms in ranked]


# What would close each stage, for the closing note (issue 6 asks for one where a target is missed).
REMEDIES = {
    "endpoint_wait": "the endpoint waits `vad.silence_ms` of silence by design; a shorter silence for short "
    "commands, or starting recognition and the model on stable partial transcripts before the endpoint, "
    "takes most of it off",
    "transcript": "whisper decodes a 30 s window once the endpoint is reached, whatever the request's "
    "length; a streaming engine (vosk, final ready at the endpoint) or decoding speculatively during the "
    "silence hides it",
    "first_token": "the prefix cache already covers the system prompt; what is left is the request (and one "
    "turn of history) being prefilled: fewer history tokens, or prefilling on partial transcripts",
    "tool_call": "the call is decoded in two constrained steps (name, then grammar-bound arguments); a "
    "shorter call format or a smaller grammar shortens it",
    "tool_run": "network round trips to the service (vehicle tools are local and fast)",
    "first_audio": "Piper synthesises the whole first sentence before its first sample; a short templated "
    "first sentence (templated confirmations) or a smaller voice starts sooner",
}


def render_markdown(report: Mapping[str, Any]) -> str:
    """The human-readable report: machine, targets, latency breakdown, overhead, first token, idle, eval."""
    m = report.get("machine", {})
    prof = report.get("profile", {})
    lines = [f"# cabin-agent bench — {report.get('date', '?')}", ""]
    lines.append(
        f"`{report.get('command', 'cabin-agent bench')}`"
        + (" (quick: smoke settings, not comparable)" if report.get("settings", {}).get("quick") else "")
    )
    lines += ["", "## Machine", ""]
    load_start, load_end = m.get("load_avg_start"), m.get("load_avg_end")
    lines += [
        f"- CPU: {m.get('cpu_model', '?')}, {m.get('cores', '?')} cores; {m.get('platform', '?')}; "
        f"Python {m.get('python', '?')}",
        f"- load average (1/5/15 min) at start: {_loadavg(load_start)}; at end: {_loadavg(load_end)}"
        + (
            " — **busy machine: absolute times are inflated; compare ratios and breakdowns**"
            if load_start and max(load_start[0], (load_end or [0])[0]) > 1.5
            else ""
        ),
        f"- profile `{prof.get('profile', '?')}`: llm `{prof.get('llm', '?')}` ({prof.get('n_threads', '?')} "
        f"threads), asr `{prof.get('asr', '?')}`, wake `{prof.get('wake', '?')}`, "
        f"vad `{prof.get('vad', '?')}` "
        f"(silence {prof.get('silence_ms', '?')} ms), tts `{prof.get('tts', '?')}`",
        "- engines: " + ", ".join(f"{k} {v}" for k, v in report.get("engines", {}).items()),
    ]

    rows = report.get("targets") or target_rows(report)
    lines += ["", "## Targets (issue 6)", "", "| target | limit | this run | |", "|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['target']} | {_fmt(r['value'], r['unit'], 1 if r['unit'] == '%' else 0)}"
            f" | {_verdict(r['met'])} |"
        )

    lat = report.get("latency", {})
    by_kind = lat.get("by_kind", {})
    if by_kind:
        lines += ["", "## End of speech → first reply audio", ""]
        s = lat.get("settings", {})
        lines.append(
            f"{lat.get('turns_answered', 0)} of {lat.get('turns_spoken', 0)} spoken turns answered "
            f"through the real voice loop ({s.get('trigger', '?')} trigger, road noise at "
            f"{s.get('snr_db', '?')} dB SNR, {lat.get('wake_missed', 0)} wake phrases missed and replaced "
            f"by push-to-talk). End of speech is when the driver's last sample reached the microphone."
        )
        lines += [
            "",
            "| turn type | n | p50 | p95 | max | " + " | ".join(STAGE_LABELS[s] for s, _ in STAGES) + " |",
            "|---|---|---|---|---|" + "---|" * len(STAGES),
        ]
        for kind, item in by_kind.items():
            e2e = item.get("end_to_first_audio_ms", {})
            stages = item.get("stages_ms", {})
            lines.append(
                f"| {kind} | {e2e.get('n', 0)} | {_fmt(e2e.get('p50'))} | {_fmt(e2e.get('p95'))} | "
                f"{_fmt(e2e.get('max'))} | "
                + " | ".join(_fmt(stages.get(s, {}).get("p50")) for s, _ in STAGES)
                + " |"
            )
        lines.append("")
        lines.append(
            "Stage columns are p50 ms of each stage; `—` = the stage does not happen for that turn type."
        )
        reasons = lat.get("end_reasons", {})
        offset = lat.get("vad_speech_end_offset_ms", {})
        if reasons:
            lines.append("")
            lines.append(
                "How requests ended: "
                + ", ".join(f"{k} {v}" for k, v in reasons.items())
                + f". The VAD's end of speech came p50 {_fmt(offset.get('p50'))} / "
                f"max {_fmt(offset.get('max'))} ms after the true end (road noise it keeps hearing as "
                "speech delays the endpoint; `max-length` = only the utterance cap ended the request)."
            )
        dec = lat.get("decode", {})
        free, grammar = dec.get("free", {}), dec.get("grammar", {})
        if free.get("tokens") or grammar.get("tokens"):
            lines.append("")
            lines.append(
                "Model decoding during these turns: free text "
                f"{_fmt(free.get('ms_per_token'), 'ms/token', 1)} "
                f"({free.get('tokens', 0)} tokens), grammar-constrained tool arguments "
                f"{_fmt(grammar.get('ms_per_token'), 'ms/token', 1)} ({grammar.get('tokens', 0)} tokens, "
                f"{_fmt(grammar.get('mean_tokens_per_call'), '', 1)} per call)."
            )
        if report.get("plots"):
            lines += [""] + [f"![{name}]({path})" for name, path in report["plots"].items()]
        turns = lat.get("turns", [])
        if turns:
            lines += [
                "",
                "<details><summary>Every turn</summary>",
                "",
                "| # | type | trigger | said | heard | tools | outcome | ms |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for t in turns:
                trig = t["trigger"] + (" (missed → ptt)" if t.get("wake_missed") else "")
                lines.append(
                    f"| {t['n']} | {t['kind']} | {trig} | {t['said']} | {t.get('heard') or ''} | "
                    f"{', '.join(t.get('tools', [])) or '—'} | {t.get('outcome')} | "
                    f"{_fmt(t.get('end_to_first_audio_ms'))} |"
                )
            lines += ["", "</details>"]

    ov = report.get("overhead", {})
    if ov:
        lines += [
            "",
            "## Our layers vs the bare engines (same inputs, same run)",
            "",
            "| layer | ours | bare | ratio | our overhead (wall clock) | our overhead (CPU time) |",
            "|---|---|---|---|---|---|",
        ]
        for name, item in ov.items():
            unit = item.get("unit", "")
            cost = item.get("overhead")
            cpu = (item.get("cpu") or {}).get("overhead")
            cpu_text = (
                "—"
                if cpu is None
                else (
                    f"{100 * cpu:.1f} % ({_fmt(item['cpu'].get('ours'), '', 1)} vs "
                    f"{_fmt(item['cpu'].get('bare'), item['cpu'].get('unit', ''), 1)})"
                )
            )
            lines.append(
                f"| {name} | {_fmt(item.get('ours'), unit, 2)} | {_fmt(item.get('bare'), unit, 2)} | "
                f"{_fmt(item.get('ratio'), '', 3)} | {_fmt(None if cost is None else 100 * cost, '%', 1)} | "
                f"{cpu_text} |"
            )
        lines += [
            "",
            "Ratios are medians of alternating ours/bare pairs; CPU time is the process's CPU (all "
            "threads) for the same work, which other people's load on a shared machine does not move.",
        ]
        for name, item in ov.items():
            if item.get("note"):
                lines.append(f"- {name}: {item['note']}")

    ft = report.get("first_token", {})
    if ft:
        lines += [
            "",
            "## First model token (from the start of the turn, i.e. the final transcript)",
            "",
            "| case | first token |",
            "|---|---|",
            f"| cold (no prompt cache: fresh process, empty cache dir) | {_fmt(ft.get('cold_ms'), 'ms')} |",
            f"| computing the prompt cache at start-up (`warm`, {ft.get('prefix_tokens', '?')} tokens) | "
            f"{_fmt(ft.get('warm_computed_ms'), 'ms')} |",
            f"| first turn after a restart (cache restored from file in "
            f"{_fmt(ft.get('restore_ms'), 'ms', 1)})"
            f" | {_fmt(ft.get('after_restart_ms'), 'ms')} |",
            f"| cached, warm process (probe) | {_fmt(ft.get('cached_probe_ms'), 'ms')} |",
            f"| cached, warm process (spoken turns, p50 / p95) | {_fmt(ft.get('cached_ms'), 'ms')} / "
            f"{_fmt(ft.get('cached_p95_ms'), 'ms')} |",
        ]

    idle = report.get("idle", {})
    turns_res = report.get("turn_resources", {})
    if idle or turns_res:
        lines += ["", "## Start-up, idle listening, memory", ""]
    if idle:
        lines += [
            f"- start-up to ready (process start → READY=1 over NOTIFY_SOCKET, prompt cache on file): "
            f"{_fmt(idle.get('startup_to_ready_s'), 's', 2)}",
            f"- idle over {_fmt(idle.get('seconds'), 's')} of cabin noise, no wake phrase: CPU "
            f"{_fmt(idle.get('cpu_percent_one_core'), '% of one core', 1)}, RSS mean "
            f"{_fmt(idle.get('rss_mb_mean'), 'MB')} / max {_fmt(idle.get('rss_mb_max'), 'MB')} (of which "
            f"anonymous {_fmt(idle.get('rss_anon_mb_max'), 'MB')}, file-backed "
            f"{_fmt(idle.get('rss_file_mb_max'), 'MB')}: the mmapped model and libraries)",
            f"- shutdown after SIGTERM: {_fmt(idle.get('shutdown_s'), 's', 2)} "
            f"(exit {idle.get('exit_status')}); false wakes while idle: {idle.get('turns_started', '?')}",
        ]
    if turns_res:
        lines.append(
            f"- during the spoken turns (bench process running the same pipeline): CPU "
            f"{_fmt(turns_res.get('cpu_percent_one_core'), '% of one core', 1)}, peak RSS "
            f"{_fmt(turns_res.get('rss_mb_max'), 'MB')} "
            f"(anonymous {_fmt(turns_res.get('rss_anon_mb_max'), 'MB')})"
        )

    ev = report.get("understanding", {})
    if ev:
        lines += [
            "",
            "## Understanding (`cabin-agent eval` contract)",
            "",
            f"{ev.get('n', 0)} of {ev.get('set_size', '?')} cases from `{ev.get('set', '?')}` "
            f"({ev.get('selection', '')}):",
            "",
            "| correct | tool | args | no-tool | schema valid | latency p50 / p95 |",
            "|---|---|---|---|---|---|",
            f"| {_pct(ev.get('accuracy'))} | {_pct(ev.get('tool_accuracy'))} | "
            f"{_pct(ev.get('args_accuracy'))}"
            f" | {_pct(ev.get('no_tool_accuracy'))} | {_pct(ev.get('schema_valid_rate'))} | "
            f"{_fmt(ev.get('latency_p50_ms'), 'ms')} / {_fmt(ev.get('latency_p95_ms'), 'ms')} |",
        ]
        if ev.get("by_category"):
            lines.append("")
            lines.append(
                "By category: "
                + ", ".join(
                    f"{k} {_pct(v.get('accuracy'))} (n={v.get('n')})" for k, v in ev["by_category"].items()
                )
            )

    missed = [r for r in rows if r["met"] is False]
    if by_kind or missed:
        lines += ["", "## Where the time goes", ""]
    for kind in by_kind:
        parts = where_time_goes(by_kind, kind)
        if parts:
            lines.append(f"- **{kind}**: " + "; ".join(parts))
    explained = False
    if missed:
        lines += ["", "Missed targets and what would close them:"]
        vehicle = by_kind.get("vehicle", {}).get("stages_ms", {})
        ranked = sorted(
            ((s, v.get("mean") or 0) for s, v in vehicle.items()), key=lambda kv: kv[1], reverse=True
        )
        for r in missed:
            lines.append(
                f"- {r['name']}: {_fmt(r['value'], r['unit'], 1 if r['unit'] == '%' else 0)} "
                f"(target {r['target']})."
            )
            if "first audio" in r["name"] and not explained:
                explained = True
                grammar = lat.get("decode", {}).get("grammar", {})
                free = lat.get("decode", {}).get("free", {})
                for stage, ms in ranked[:3]:
                    detail = ""
                    if stage == "tool_call" and grammar.get("ms_per_token"):
                        detail = (
                            f" (measured: {grammar['mean_tokens_per_call']:.0f} argument tokens per call at "
                            f"{grammar['ms_per_token']:.0f} ms/token under the grammar; free text decodes at "
                            f"{_fmt(free.get('ms_per_token'), 'ms/token')})"
                        )
                    lines.append(f"  - {STAGE_LABELS[stage]} ({ms:.0f} ms mean): {REMEDIES[stage]}{detail}.")
            elif "first token" in r["name"]:
                new = _new_prompt_tokens(report)
                extra = (
                    f" (measured: {new:.0f} new prompt tokens per turn after the cached prefix)"
                    if new
                    else ""
                )
                lines.append(f"  - {REMEDIES['first_token']}{extra}.")
                after, cached = ft.get("after_restart_ms"), ft.get("cached_probe_ms")
                if "restart" in r["name"] and after and cached and after > 2 * cached:
                    lines.append(
                        f"  - the restarted process's second turn took {cached:.0f} ms to its first token: "
                        "the first turn pays a one-off cost after the cache is restored (weights not yet "
                        "paged in from the mmapped model, first-run buffers); one throw-away decode at "
                        "start-up would move it out of the driver's first request."
                    )
            elif r["name"] == "idle listening RSS":
                lines.append(
                    f"  - of the RSS, {_fmt(idle.get('rss_file_mb_max'), 'MB')} are file pages (the mmapped "
                    "GGUF and libraries: shared, and dropped by the kernel under memory pressure) and "
                    f"{_fmt(idle.get('rss_anon_mb_max'), 'MB')} anonymous (llama.cpp's context: KV cache for "
                    "`llm.n_ctx` tokens, compute and logits buffers, weights copied out of the mapping; "
                    "whisper, Piper and Python). The 0.5B model or a smaller `llm.n_ctx` is the lever."
                )
            elif r["name"] == "idle listening CPU":
                lines.append("  - the wake engine and the VAD run on every 30 ms block while idle.")
    for note in report.get("notes", []):
        lines.append(f"- {note}")
    if report.get("errors"):
        lines += ["", "## Phases that failed", ""]
        lines += [f"- {name}: {error}" for name, error in report["errors"].items()]
    lines.append("")
    return "\n".join(lines)


def _new_prompt_tokens(report: Mapping[str, Any]) -> float | None:
    """Mean prompt tokens the first model call of a spoken turn had beyond the cached system prefix."""
    prefix = report.get("first_token", {}).get("prefix_tokens")
    firsts = [
        t["model_calls"][0]["prompt_tokens"]
        for t in report.get("latency", {}).get("turns", [])
        if t.get("model_calls")
    ]
    if not prefix or not firsts:
        return None
    return statistics.fmean(firsts) - prefix


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def _loadavg(values: Sequence[float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "?"


# ======================================================================== the machine


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = None
    with contextlib.suppress(OSError):
        mem_kb = parse_proc_status(Path("/proc/meminfo").read_text(), "MemTotal")
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_mb": round(mem_kb / 1024) if mem_kb else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


def engine_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ENGINE_PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


# ======================================================================== config for the bench


def bench_config(base: Any, work: Path, service_url: str) -> Any:
    """The user's config with the services on the loopback reference service and every piece of state (outbox,
    control socket) in the bench's temp dir, so a run never touches a real daemon's files."""
    from agent.core.config import _merge, model_store_dir, validate

    data = base.model_dump(mode="json")
    endpoint = {"base_url": service_url, "api_key": None, "timeout_seconds": 2.0}
    data = _merge(
        data,
        {
            "models": {"store": str(model_store_dir(base))},
            "services": {"meals": endpoint, "deliveries": endpoint},
            "outbox": {"path": str(work / "outbox.sqlite3")},
            "control": {"socket_path": str(work / "control.sock")},
            "connectivity": {"use_networkmanager": False},
            "logging": {"format": "json", "log_transcripts": False},
        },
    )
    return validate(data)


def write_config(config: Any, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return path


# ======================================================================== the cabin microphone


@dataclass(eq=False)  # identity: the script repeats the same request, and arrays don't compare
class ScriptedTurn:
    kind: str
    voice: str
    text: str
    trigger: str  # wake, ptt, follow-up
    speech: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int16))
    wake: np.ndarray | None = field(repr=False, default=None)
    # filled while it is played
    turn_before: int = 0
    speech_end_ms: float | None = None  # when the driver's last sample reached the microphone (monotonic ms)
    wake_missed: bool = False
    load_1min: float | None = None  # the machine's load average as the driver stopped speaking


def trim_silence(audio: np.ndarray, threshold_dbfs: float = -50.0, frame: int = 160) -> np.ndarray:
    """Synthetic speech without its leading/trailing near-silence, so the clip ends where speech ends."""
    x = audio.astype(np.float64)
    n = len(x) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)) / 32768
    loud = np.nonzero(rms > 10 ** (threshold_dbfs / 20))[0]
    if len(loud) == 0:
        return audio
    return audio[loud[0] * frame : (loud[-1] + 1) * frame]


class BenchMic:
    """The cabin as an audio source paced like a real microphone (a block arrives when its last sample does).

    Before each turn it plays road noise until the car is ready (idle; for a confirmation, its question
    asked), then the trigger (wake phrase, or a push-to-talk press), the request, and a tail of road noise. A
    wake phrase the car did not hear is followed by a push-to-talk press, so every request is served and the
    miss is counted.
    """

    def __init__(
        self,
        turns: list[ScriptedTurn],
        pipeline: Callable[[], Any],
        *,
        seed: int = 3,
        snr_db: float = SNR_DB,
        max_wait_seconds: float = 300.0,
    ) -> None:
        from agent.devtools.road_noise import road_noise

        self.turns = turns
        self.pipeline = pipeline
        self.block = RATE * BLOCK_MS // 1000
        self.max_wait_seconds = max_wait_seconds
        level = 32768 * 10 ** ((SPEECH_DBFS - snr_db) / 20)
        self._noise = (road_noise(60.0, RATE, seed=seed) * level).astype(np.float32)
        self._noise_at = 0
        self._started = 0.0
        self._sent = 0

    def _noise_block(self, n: int) -> np.ndarray:
        idx = (self._noise_at + np.arange(n)) % len(self._noise)
        self._noise_at = (self._noise_at + n) % len(self._noise)
        return self._noise[idx]

    async def _emit(self, clean: np.ndarray) -> Any:
        from agent.audio.chunk import AudioChunk

        mixed = np.clip(np.round(clean.astype(np.float32) + self._noise_block(len(clean))), -32768, 32767)
        self._sent += len(clean)
        ahead = self._started + self._sent / RATE - time.monotonic()
        await asyncio.sleep(max(0.0, ahead))
        return AudioChunk(mixed.astype(np.int16).tobytes(), RATE, timestamp_ms=now_ms())

    async def _play(self, clean: np.ndarray) -> AsyncIterator[Any]:
        for start in range(0, len(clean), self.block):
            yield await self._emit(clean[start : start + self.block])

    async def _noise_for(self, seconds: float) -> AsyncIterator[Any]:
        async for chunk in self._play(np.zeros(int(seconds * RATE), np.int16)):
            yield chunk

    def _ready(self, gate: str) -> bool:
        from agent.loop.pipeline import State

        p = self.pipeline()
        if p is None or p.state != State.IDLE:
            return False
        return p.detector.in_follow_up if gate == "follow-up" else not p.detector.in_follow_up

    def _turn_count(self) -> int:
        return self.pipeline().status(last=1)["turns"]

    async def stream(self) -> AsyncIterator[Any]:
        self._started = time.monotonic()
        for number, turn in enumerate(self.turns, start=1):
            gate = "follow-up" if turn.trigger == "follow-up" else "idle"
            waited = 0.0
            while not self._ready(gate) and waited < self.max_wait_seconds:
                yield await self._emit(np.zeros(self.block, np.int16))
                waited += BLOCK_MS / 1000
            if waited >= self.max_wait_seconds:
                log.warning("bench-gate-timeout", text=turn.text, gate=gate)
            _say(f"  turn {number}/{len(self.turns)} ({turn.trigger}, waited {waited:.1f} s): {turn.text}")
            async for chunk in self._noise_for(0.6):
                yield chunk
            turn.turn_before = self._turn_count()
            if turn.trigger == "wake" and turn.wake is not None:
                async for chunk in self._play(turn.wake):
                    yield chunk
                async for chunk in self._noise_for(0.6):
                    yield chunk
                if self._turn_count() == turn.turn_before:
                    turn.wake_missed = True
            if turn.trigger == "ptt" or turn.wake_missed:
                self.pipeline().push_to_talk()
                async for chunk in self._noise_for(0.3):
                    yield chunk
            speech = turn.speech
            for start in range(0, len(speech), self.block):
                chunk = await self._emit(speech[start : start + self.block])
                if start + self.block >= len(speech):
                    # The block carrying the driver's last sample arrives now (it ends with that sample).
                    turn.speech_end_ms = chunk.timestamp_ms
                    turn.load_1min = round(os.getloadavg()[0], 2)
                yield chunk
            async for chunk in self._noise_for(1.5):
                yield chunk
        # Let the last reply finish before the source ends (the pipeline then finishes and returns).
        waited = 0.0
        while not self._ready("idle") and waited < self.max_wait_seconds:
            yield await self._emit(np.zeros(self.block, np.int16))
            waited += BLOCK_MS / 1000
        async for chunk in self._noise_for(0.5):
            yield chunk


def build_script(turns: int, trigger: str) -> list[ScriptedTurn]:
    """`turns` requests from SCRIPT, cycled; a confirmation always follows its order (never cut in half)."""
    out: list[ScriptedTurn] = []
    i = 0
    while len(out) < turns or (out and out[-1].text.startswith("order")):
        kind, voice, text, how = SCRIPT[i % len(SCRIPT)]
        if how != "follow-up" and trigger != "mixed":
            how = trigger
        out.append(ScriptedTurn(kind, voice, text, how))
        i += 1
    return out


def synthesise(script: list[ScriptedTurn], config: Any, cache: Path) -> float:
    """Speech for every turn (Piper and espeak-ng via the demo's cached voices); returns seconds spent."""
    from agent.devtools.demo import Voices

    started = time.monotonic()
    voices = Voices(config, cache=cache)
    wake = trim_silence(voices.say("piper", config.wake_phrase))
    for turn in script:
        turn.speech = trim_silence(voices.say(turn.voice, turn.text))
        turn.wake = wake
    return time.monotonic() - started


# ======================================================================== spoken turns


class TimedAssistant:
    """The real Assistant, keeping each turn's timings (the pipeline's record has no tool_call_complete) and
    each model call it made: tokens in, tokens out, time, and whether a grammar constrained it."""

    def __init__(self, assistant: Any) -> None:
        self._assistant = assistant
        self.timings: dict[str, tuple[float, dict[str, float]]] = {}
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self._current: list[dict[str, Any]] = []
        model = assistant.model
        original = model.generate

        def generate(tokens: Sequence[int], **kwargs: Any) -> Any:
            call = {
                "prompt_tokens": len(tokens),
                "generated": 0,
                "grammar": kwargs.get("json_schema") is not None,
            }
            self._current.append(call)
            started = time.perf_counter()
            for step in original(tokens, **kwargs):
                now = time.perf_counter()
                if not call["generated"]:
                    call["first_ms"] = round((now - started) * 1000, 1)
                call["generated"] += 1
                call["ms"] = round((now - started) * 1000, 1)
                yield step

        model.generate = generate  # instance attribute: the Assistant calls self.model.generate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._assistant, name)

    async def turn(self, text: str, *, on_text: Any = None, timings: TurnTimings | None = None) -> Any:
        timings = timings or TurnTimings()
        self._current = calls = []
        result = await self._assistant.turn(text, on_text=on_text, timings=timings)
        self.timings[result.turn_id] = (timings.start_ms, dict(timings.marks))
        self.calls[result.turn_id] = calls
        return result


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


class ProcSampler:
    """Samples /proc/<pid> every `interval_s` (a thread for another process, a task for our own)."""

    def __init__(self, pid: int | str = "self", interval_s: float = 0.5) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[ProcSample] = []

    def sample(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.samples.append(read_proc(self.pid))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)


async def spoken_turns(
    config: Any,
    script: list[ScriptedTurn],
    work: Path,
    snr_db: float,
) -> tuple[dict[str, Any], Any, Any]:
    """Run the script through the real voice loop. Returns (results, assistant, pipeline) for what follows."""
    from agent.app.wiring import build_assistant
    from agent.audio.sinks import WavSink
    from agent.core.events import EventBus
    from agent.loop.pipeline import VoicePipeline

    events = EventBus()
    assistant = await build_assistant(config, events=events)
    timed = TimedAssistant(assistant)
    holder: dict[str, Any] = {}
    mic = BenchMic(script, lambda: holder.get("p"), snr_db=snr_db)
    # Playback paced like a speaker: the driver hears the whole reply before speaking again.
    sink = WavSink(work / "replies", pace_realtime=True)
    pipeline = await VoicePipeline.from_config(config, timed, mic, sink, events=events)
    # Keep every record of the run (the pipeline keeps the last 50 by default).
    pipeline.records = collections.deque(maxlen=len(script) * 3 + 10)
    holder["p"] = pipeline
    sampler = ProcSampler("self", 0.5)
    sampler.sample()
    sampling = asyncio.create_task(sampler.run(), name="bench-proc-sampler")
    run_started = now_ms()
    try:
        await pipeline.run()
    finally:
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        sampler.sample()
    plugin_of = {tool.name: tool.plugin for tool in assistant.registry}
    records = {r.index: r for r in pipeline.records}
    turns_out = []
    for i, turn in enumerate(script):
        rec = records.get(turn.turn_before + 1)
        item: dict[str, Any] = {
            "n": i + 1,
            "kind": turn.kind,
            "voice": turn.voice,
            "said": turn.text,
            "trigger": turn.trigger,
            "wake_missed": turn.wake_missed,
        }
        if rec is None or turn.speech_end_ms is None:
            item["outcome"] = "not-started"
            turns_out.append(item)
            continue
        marks = dict(rec.marks)
        if rec.turn_id and rec.turn_id in timed.timings:
            start, tmarks = timed.timings[rec.turn_id]
            for name in ("prompt_ready", "tool_call_complete", "reply_first_text"):
                if name in tmarks:
                    marks[name] = start + tmarks[name]
        stages = stage_breakdown(marks, turn.speech_end_ms)
        total = marks["first_audio"] - turn.speech_end_ms if "first_audio" in marks else None
        item.update(
            {
                "outcome": rec.outcome,
                "heard": rec.transcript,
                "reply": rec.reply,
                "tools": [c["name"] for c in rec.tool_calls],
                "tool_plugins": sorted({plugin_of.get(c["name"], "?") for c in rec.tool_calls}),
                "end_reason": rec.end_reason,
                "at_s": round((turn.speech_end_ms - run_started) / 1000, 1),
                "load_1min": turn.load_1min,
                "end_to_first_audio_ms": None if total is None else round(total, 1),
                "vad_speech_end_offset_ms": round(marks["speech_end"] - turn.speech_end_ms, 1)
                if "speech_end" in marks
                else None,
                "stages_ms": stages,
                "model_calls": timed.calls.get(rec.turn_id or "", []),
            }
        )
        turns_out.append(item)
    answered = [t for t in turns_out if t.get("end_to_first_audio_ms") is not None]
    by_kind: dict[str, Any] = {}
    for kind in dict.fromkeys(t.kind for t in script):
        mine = [t for t in answered if t["kind"] == kind]
        if not mine:
            continue
        by_kind[kind] = {
            "end_to_first_audio_ms": summarize_ms(t["end_to_first_audio_ms"] for t in mine),
            "stages_ms": {
                s: summarize_ms(t["stages_ms"].get(s) for t in mine if s in t["stages_ms"])
                for s, _ in STAGES
                if any(s in t["stages_ms"] for t in mine)
            },
        }
    first_tokens = [t["stages_ms"].get("first_token") for t in answered if "first_token" in t["stages_ms"]]
    results = {
        "turns_spoken": len(script),
        "turns_answered": len(answered),
        "wake_missed": sum(t.wake_missed for t in script),
        "wake_tried": sum(t.trigger == "wake" for t in script),
        "all": summarize_ms(t["end_to_first_audio_ms"] for t in answered),
        "by_kind": by_kind,
        "first_token_after_transcript_ms": summarize_ms(first_tokens),
        "decode": decode_rates(c for t in answered for c in t.get("model_calls", [])),
        "vad_speech_end_offset_ms": summarize_ms(t.get("vad_speech_end_offset_ms") for t in answered),
        "end_reasons": dict(collections.Counter(t.get("end_reason") or "?" for t in answered)),
        "audio_lag": pipeline.status(last=0)["audio_lag"],
        "resources": resource_summary(sampler.samples),
        "turns": turns_out,
    }
    return results, assistant, pipeline


# ======================================================================== our layers vs the bare engines


async def llm_overhead(assistant: Any, text: str, reps: int) -> dict[str, Any]:
    """Decode tokens/s of a spoken answer through `Assistant.turn` vs a bare llama-cpp-python loop on the
    exact prompt tokens the turn used (greedy both ways, the same number of tokens), in alternating pairs.

    Also CPU ms per token (process CPU time, all threads): on a shared machine the wall-clock rate moves
    with other people's load, the CPU our layers add does not.
    """
    model = assistant.model
    original = model.generate
    seen: dict[str, Any] = {}

    def counting(tokens: Sequence[int], **kwargs: Any) -> Any:
        first_call = "tokens" not in seen
        if first_call:
            seen["tokens"], seen["steps"] = list(tokens), 0
        for step in original(tokens, **kwargs):
            if first_call:
                seen["steps"] += 1
            yield step

    ours: list[tuple[float, float]] = []  # (tokens/s, CPU ms per token)
    bare: list[tuple[float, float]] = []
    details = []
    model.generate = counting
    try:
        for _ in range(reps):
            seen.clear()
            assistant.reset()
            arrivals: list[tuple[float, float]] = []

            def arrived(_text: str, stamps: list[tuple[float, float]] = arrivals) -> None:
                stamps.append((time.perf_counter(), time.process_time()))

            result = await assistant.turn(text, on_text=arrived)
            n = seen.get("steps", 0)
            if result.tool_calls or n < 8 or len(arrivals) < 2:
                details.append({"skipped": "the model called a tool or answered too briefly", "tokens": n})
                continue
            # The first text callback can hold a few tokens back (tool-call detection): count from it.
            (w0, c0), (w1, c1) = arrivals[0], arrivals[-1]
            k = len(arrivals) - 1
            ours.append((k / (w1 - w0), 1000 * (c1 - c0) / k))
            bare.append(await asyncio.to_thread(_bare_decode, model, seen["tokens"], n))
            details.append(
                {
                    "tokens": n,
                    "ours": [round(x, 2) for x in ours[-1]],
                    "bare": [round(x, 2) for x in bare[-1]],
                    "load_avg_1min": round(os.getloadavg()[0], 2),
                }
            )
    finally:
        model.generate = original
        assistant.reset()
    measure = "decode tokens/s after the first reply text through Assistant.turn, median of alternating pairs"
    if not ours:
        # The model answered with a tool call (the turn stops at its first tokens): measure the layer the turn
        # streams every model call through (worker thread, event-loop queue) on the same prompt instead.
        measure = (
            "decode tokens/s through Assistant._stream (the turn's worker-thread/event-loop layer; the "
            "model answered this prompt with a tool call), median of alternating pairs"
        )
        prompt = await assistant._prompt(text)
        for _ in range(reps):
            stamps: list[tuple[float, float]] = []
            async with contextlib.aclosing(assistant._stream(prompt.tokens, max_tokens=48)) as steps:
                async for _step in steps:
                    stamps.append((time.perf_counter(), time.process_time()))
            if len(stamps) < 8:
                details.append({"skipped": "too few tokens", "tokens": len(stamps)})
                continue
            (w0, c0), (w1, c1) = stamps[0], stamps[-1]
            k = len(stamps) - 1
            ours.append((k / (w1 - w0), 1000 * (c1 - c0) / k))
            bare.append(await asyncio.to_thread(_bare_decode, model, list(prompt.tokens), len(stamps)))
            details.append(
                {
                    "tokens": len(stamps),
                    "ours": [round(x, 2) for x in ours[-1]],
                    "bare": [round(x, 2) for x in bare[-1]],
                    "load_avg_1min": round(os.getloadavg()[0], 2),
                }
            )
    out = paired_overhead([o[0] for o in ours], [b[0] for b in bare], higher_is_better=True)
    out.update(
        {
            "unit": "tok/s",
            "measure": measure,
            "cpu": {
                **paired_overhead([o[1] for o in ours], [b[1] for b in bare], higher_is_better=False),
                "unit": "CPU ms/token",
            },
            "prompt": text,
            "reps": details,
        }
    )
    return out


def _bare_decode(model: Any, tokens: list[int], n: int) -> tuple[float, float]:
    """A bare llama-cpp-python loop (generate, detokenize) for n tokens: (tokens/s, CPU ms per token)."""
    llm = model.llm
    ends = set(model.end_tokens)
    stamps: list[tuple[float, float]] = []
    for token in llm.generate(tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0):
        if token in ends:
            break
        llm.detokenize([token])
        stamps.append((time.perf_counter(), time.process_time()))
        if len(stamps) >= n:
            break
    if len(stamps) < 2:
        return 0.0, 0.0
    (w0, c0), (w1, c1) = stamps[0], stamps[-1]
    k = len(stamps) - 1
    return k / (w1 - w0), 1000 * (c1 - c0) / k


TTS_TEXT = (
    "It is twenty one degrees in the cabin now. The seats are warming up, and the fan is on low. "
    "Your next turn is in two kilometres."
)


def _bare_piper(path: Path) -> Any:
    """The voice loaded straight into piper, with the thread caps the pipeline gives its own."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # as agent.loop.stages.build_stages loads the pipeline's voice
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text(encoding="utf-8")))
    return PiperVoice(session=session, config=config)


async def tts_overhead(config: Any, tts: Any, reps: int) -> dict[str, Any]:
    """Piper through our sentence streamer (`speak_stream` over `PiperTts`) vs bare Piper (`PiperVoice`
    with the same voice, thread count and normalised text): time to the first audio and to the last."""
    from piper.config import SynthesisConfig

    from agent.tts.normalize import normalize
    from agent.tts.sentences import speak_stream

    voice = await asyncio.to_thread(_bare_piper, Path(tts.model_path))
    syn = SynthesisConfig(length_scale=config.tts.length_scale)
    spoken = normalize(TTS_TEXT, tts.language)
    list(voice.synthesize("Ready.", syn))  # onnxruntime's first run plans; ours was warmed at load

    def bare_once() -> tuple[float, float, float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        first, samples = None, 0
        for piece in voice.synthesize(spoken, syn):
            first = first or time.perf_counter()
            samples += len(piece.audio_int16_bytes) // 2
        return (
            (first - started) * 1000,
            (time.perf_counter() - started) * 1000,
            samples / voice.config.sample_rate,
            (time.process_time() - cpu) * 1000,
        )

    async def ours_once() -> tuple[float, float, float, float]:
        async def reply() -> AsyncIterator[str]:
            for word in TTS_TEXT.split(" "):  # as the model streams it: a word at a time
                yield word + " "

        started, cpu = time.perf_counter(), time.process_time()
        first, samples = None, 0
        async for chunk in speak_stream(reply(), tts):
            first = first or time.perf_counter()
            samples += chunk.samples
        return (
            (first - started) * 1000,
            (time.perf_counter() - started) * 1000,
            samples / tts.sample_rate_hz,
            (time.process_time() - cpu) * 1000,
        )

    ours, bare = [], []
    for _ in range(reps):
        ours.append(await ours_once())
        bare.append(bare_once())
    total = paired_overhead([o[1] for o in ours], [b[1] for b in bare], higher_is_better=False)
    first = paired_overhead([o[0] for o in ours], [b[0] for b in bare], higher_is_better=False)
    cpu = paired_overhead([o[3] for o in ours], [b[3] for b in bare], higher_is_better=False)
    audio_s = statistics.median(o[2] for o in ours)
    return {
        "tts: whole reply": {
            **total,
            "unit": "ms",
            "cpu": {**cpu, "unit": "CPU ms"},
            "audio_seconds": round(audio_s, 2),
            "real_time_factor_ours": round(total["ours"] / 1000 / audio_s, 3) if audio_s else None,
            "note": "three sentences synthesised sentence by sentence (ours) vs in one call "
            "(bare Piper splits them itself)",
        },
        "tts: first audio": {**first, "unit": "ms"},
    }


async def asr_overhead(recognizer: Any, clips: list[np.ndarray], reps: int) -> dict[str, Any]:
    """Recognition through our stage (`WhisperRecognizer.transcribe` over 30 ms chunks) vs the bare
    faster-whisper model (loaded separately, same options and prompt) on the same noisy requests."""
    from agent.audio.chunk import AudioChunk

    if getattr(recognizer, "name", "") != "whisper":
        return {
            "ours": None,
            "bare": None,
            "ratio": None,
            "overhead": None,
            "unit": "ms",
            "note": f"only the whisper engine has a bare baseline here (asr is {recognizer.name})",
        }
    from faster_whisper import WhisperModel

    # The options agent.asr.factory gives the pipeline's recognizer (int8, 2 threads).
    bare_model = WhisperModel(
        str(recognizer.model_dir), device="cpu", compute_type="int8", cpu_threads=2, local_files_only=True
    )
    prompt = recognizer.prompt or None
    list(
        bare_model.transcribe(np.zeros(8000, np.float32), language=recognizer.language)[0]
    )  # first-run set-up

    def bare_once(audio: np.ndarray) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        segments, _ = bare_model.transcribe(
            audio.astype(np.float32) / 32768.0,
            language=recognizer.language,
            beam_size=recognizer.beam_size,
            condition_on_previous_text=False,
            temperature=0.0,
            without_timestamps=False,
            initial_prompt=prompt,
        )
        " ".join(s.text for s in segments)
        return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000

    async def ours_once(audio: np.ndarray) -> tuple[float, float]:
        block = RATE * BLOCK_MS // 1000

        async def chunks() -> AsyncIterator[AudioChunk]:
            for start in range(0, len(audio), block):
                yield AudioChunk(audio[start : start + block].astype(np.int16).tobytes(), RATE)

        started, cpu = time.perf_counter(), time.process_time()
        async for _ in recognizer.transcribe(chunks()):
            pass
        return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000

    ours, bare = [], []
    for _ in range(reps):
        for audio in clips:
            ours.append(await ours_once(audio))
            bare.append(bare_once(audio))
    out = paired_overhead([o[0] for o in ours], [b[0] for b in bare], higher_is_better=False)
    out.update(
        {
            "unit": "ms",
            "cpu": {
                **paired_overhead([o[1] for o in ours], [b[1] for b in bare], higher_is_better=False),
                "unit": "CPU ms",
            },
            "clips": len(clips),
            "note": "median ms per request clip, the same clips both ways",
        }
    )
    return out


# ==================================================================== first token, start-up, idle (children)


def _child_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CACHE_DIRECTORY"] = str(cache)  # the prompt cache lives here (the model store is set in the config)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    return env


def run_probe(config_path: Path, cache: Path, mode: str, timeout_s: float = 600) -> dict[str, Any]:
    """A fresh process: `cold` (no prompt cache) or `restart` (the cache file a previous process left)."""
    out = cache.parent / f"probe-{mode}.json"
    cmd = [
        sys.executable,
        "-m",
        "agent.devtools.bench",
        "probe",
        "--config",
        str(config_path),
        "--mode",
        mode,
        "--out",
        str(out),
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=_child_env(cache), capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"first-token probe ({mode}) failed: {proc.stderr.strip()[-800:]}")
    data = json.loads(out.read_text())
    data["process_s"] = round(time.monotonic() - started, 2)
    return data


async def _probe(config: Any, mode: str, text: str, second_text: str) -> dict[str, Any]:
    from agent.app.wiring import build_assistant

    assistant = await build_assistant(config, warm=(mode == "restart"))
    out: dict[str, Any] = {
        "mode": mode,
        "load_ms": round(assistant.model.load_ms, 1),
        "warm": assistant.warm_info or None,
    }
    try:
        first = await assistant.turn(text)
        out["first_turn"] = first.timings_ms
        if mode == "cold":
            # The same process then computes and saves the cache, as the daemon does at start-up.
            assistant.reset()
            assistant.model.llm.reset()
            out["warm_computed"] = await assistant.warm()
        else:
            assistant.reset()
            out["cached_turn"] = (await assistant.turn(second_text)).timings_ms
    finally:
        await assistant.close()
    return out


def run_daemon_idle(
    config_path: Path, cache: Path, work: Path, noise_wav: Path, idle_s: float, settle_s: float = 3.0
) -> dict[str, Any]:
    """`serve()` in a child process with cabin noise as its microphone: start-up to READY=1, then CPU and RSS
    from /proc/<pid> while it listens, then SIGTERM."""
    notify_path = work / "notify.sock"
    notify_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    env = _child_env(cache)
    env["NOTIFY_SOCKET"] = str(notify_path)
    cmd = [
        sys.executable,
        "-m",
        "agent.devtools.bench",
        "daemon",
        "--config",
        str(config_path),
        "--noise",
        str(noise_wav),
        "--sink-dir",
        str(work / "daemon-replies"),
    ]
    log_file = (work / "daemon.log").open("w")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    out: dict[str, Any] = {"pid": proc.pid}
    try:
        ready_s = None
        notify.settimeout(1.0)
        while time.monotonic() - started < 300 and proc.poll() is None:
            try:
                msg = notify.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            if "READY=1" in msg.split("\n"):
                ready_s = time.monotonic() - started
                break
        if ready_s is None:
            raise RuntimeError(f"daemon never became ready (exit {proc.poll()}); see {work / 'daemon.log'}")
        out["startup_to_ready_s"] = round(ready_s, 2)
        time.sleep(settle_s)
        sampler = ProcSampler(proc.pid, 1.0)
        end = time.monotonic() + idle_s
        while time.monotonic() < end and proc.poll() is None:
            sampler.sample()
            time.sleep(1.0)
        sampler.sample()
        out.update(resource_summary(sampler.samples))
        out["rss_mb_series"] = [round(s.rss_kb / 1024, 1) for s in sampler.samples if s.rss_kb]
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            out["exit_status"] = proc.wait(timeout=30)
            out["shutdown_s"] = round(time.monotonic() - stopping, 2)
        except subprocess.TimeoutExpired:
            proc.kill()
            out["exit_status"] = "killed after 30 s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        log_file.close()
    out["turns_started"] = _daemon_turns(work / "daemon.log")
    return out


def _daemon_turns(log_path: Path) -> int:
    """Requests the idle daemon started (a false wake on road noise), from its JSON log lines."""
    with contextlib.suppress(OSError):
        return sum('"turn-record"' in line for line in log_path.read_text(errors="replace").splitlines())
    return 0


async def _daemon(config: Any, noise: Path, sink_dir: Path) -> int:
    from agent.app.daemon import serve
    from agent.audio.sinks import WavSink
    from agent.audio.sources import WavSource

    return await serve(config, source=WavSource(noise, pace_realtime=True), sink=WavSink(sink_dir))


def write_noise_wav(path: Path, seconds: float, snr_db: float = SNR_DB, seed: int = 11) -> Path:
    from agent.devtools.road_noise import road_noise

    level = 32768 * 10 ** ((SPEECH_DBFS - snr_db) / 20)
    pcm = np.clip(np.round(road_noise(seconds, RATE, seed=seed) * level), -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm.tobytes())
    return path


# ======================================================================== understanding


def pick_cases(cases: Sequence[Any], limit: int) -> list[Any]:
    """`limit` cases spread evenly over the set (it is ordered by tool and language), all when limit <= 0."""
    if limit <= 0 or limit >= len(cases):
        return list(cases)
    step = len(cases) / limit
    return [cases[int(i * step)] for i in range(limit)]


async def understanding(assistant: Any, path: Path, limit: int) -> dict[str, Any]:
    from agent.devtools.eval_cases import load_cases
    from agent.devtools.evaluation import run_eval

    cases = load_cases(path)
    chosen = pick_cases(cases, limit)

    async def run_turn(case: Any) -> dict[str, Any]:
        assistant.reset()  # every case is a fresh conversation, as `cabin-agent eval` runs them
        return (await assistant.turn(case.text)).as_dict()

    def progress(done: int, total: int, _score: Any = None) -> None:
        print(f"\r  eval {done}/{total}", end="", file=sys.stderr, flush=True)

    report = await run_eval(chosen, run_turn, progress=progress)
    print(file=sys.stderr)
    s = report.summary
    shown = str(path).replace(str(REPO) + os.sep, "")
    return {
        "set": shown,
        "set_size": len(cases),
        "selection": "all cases"
        if len(chosen) == len(cases)
        else f"every {len(cases) / len(chosen):.1f}th case",
        **{
            k: s[k]
            for k in (
                "n",
                "accuracy",
                "tool_accuracy",
                "args_accuracy",
                "no_tool_accuracy",
                "schema_valid_rate",
                "by_language",
                "by_category",
                "confusion",
            )
        },
        "latency_p50_ms": s["latency_ms"]["total"]["p50"],
        "latency_p95_ms": s["latency_ms"]["total"]["p95"],
        "wall_seconds": round(report.wall_seconds, 1),
        "misses": [
            {"id": c.case.id, "text": c.case.text, "expected": c.case.expect.tool, "got": c.actual_tool}
            for c in report.scores
            if not c.correct
        ][:30],
    }


# ======================================================================== plots


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


# ======================================================================== the whole run


@dataclass
class BenchOptions:
    turns: int = 32
    quick: bool = False
    out: Path = Path("bench/results")
    eval_limit: int = 40
    eval_set: Path = DEFAULT_EVAL_SET
    idle_seconds: float = 60.0
    trigger: str = "mixed"
    snr_db: float = SNR_DB
    reps: int = 3
    skip: frozenset[str] = frozenset()
    command: str = "cabin-agent bench"


PHASES = ("first-token", "idle", "turns", "overhead", "eval")


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run_bench(base_config: Any, opts: BenchOptions) -> dict[str, Any]:
    from agent.devtools.demo import demo_cache_dir
    from agent.devtools.reference_service import ReferenceService
    from agent.models.engines import resolved_config

    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": opts.command,
        "machine": machine_info(),
        "engines": engine_versions(),
        "settings": {
            "turns": opts.turns,
            "quick": opts.quick,
            "eval_limit": opts.eval_limit,
            "idle_seconds": opts.idle_seconds,
            "trigger": opts.trigger,
            "snr_db": opts.snr_db,
            "reps": opts.reps,
            "skipped": sorted(opts.skip),
        },
        "notes": [],
    }
    _say(f"load average {report['machine']['load_avg_start']} on {report['machine']['cores']} cores")
    voices_cache = demo_cache_dir()
    service = ReferenceService().start()
    previous_cache = os.environ.get("CACHE_DIRECTORY")
    with tempfile.TemporaryDirectory(prefix="cabin-bench-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        cache.mkdir()
        config = bench_config(base_config, work, service.url)
        config_path = write_config(config, work / "config.yaml")
        concrete = resolved_config(config)
        from agent.app.wiring import llm_model

        report["profile"] = {
            "profile": config.models.profile,
            "llm": llm_model(config)[0],
            # None = agent.app.wiring's default: all cores but one
            "n_threads": config.llm.n_threads or f"auto: {max(1, (os.cpu_count() or 2) - 1)}",
            "asr": concrete.asr.engine,
            "wake": concrete.wake.engine,
            "vad": config.vad.engine,
            "silence_ms": config.vad.silence_ms,
            "tts": config.tts.voice or "profile default (piper)",
            "language": config.language,
            "history_turns": config.llm.history_turns,
        }
        try:
            with _phase(report, "first-token", opts):
                _unless_skipped("first-token", opts)
                _say("first token: cold (fresh process, empty prompt cache)…")
                cold = await asyncio.to_thread(run_probe, config_path, cache, "cold")
                _say("first token: after a restart (fresh process, cache file from the cold run)…")
                restart = await asyncio.to_thread(run_probe, config_path, cache, "restart")
                report["first_token"] = {
                    "cold_ms": cold["first_turn"].get("first_token"),
                    "warm_computed_ms": round(cold["warm_computed"]["ms"], 1),
                    "prefix_tokens": cold["warm_computed"].get("tokens"),
                    "after_restart_ms": restart["first_turn"].get("first_token"),
                    "restore_ms": round(restart["warm"]["ms"], 1) if restart.get("warm") else None,
                    "restore_source": (restart.get("warm") or {}).get("source"),
                    "cached_probe_ms": restart["cached_turn"].get("first_token"),
                    "model_load_ms": restart["load_ms"],
                    "probes": {"cold": cold, "restart": restart},
                }
            with _phase(report, "idle", opts):
                _unless_skipped("idle", opts)
                noise = write_noise_wav(work / "cabin-noise.wav", opts.idle_seconds + 30, opts.snr_db)
                _say(f"daemon: start-up to ready, then {opts.idle_seconds:.0f} s idle in cabin noise…")
                report["idle"] = await asyncio.to_thread(
                    run_daemon_idle, config_path, cache, work, noise, opts.idle_seconds
                )
            # The parent's own model uses the bench's prompt cache too (restored from the probes' file).
            os.environ["CACHE_DIRECTORY"] = str(cache)
            assistant = pipeline = None
            with _phase(report, "turns", opts):
                _unless_skipped("turns", opts)
                script = build_script(opts.turns, opts.trigger)
                _say(f"synthesising {len(script)} requests (Piper, espeak-ng; cached)…")
                await asyncio.to_thread(synthesise, script, config, voices_cache)
                _say(f"{len(script)} spoken turns through the voice loop (real time)…")
                results, assistant, pipeline = await spoken_turns(config, script, work, opts.snr_db)
                report["latency"] = {k: v for k, v in results.items() if k != "resources"}
                report["latency"]["settings"] = {"trigger": opts.trigger, "snr_db": opts.snr_db}
                report["turn_resources"] = results["resources"]
                ft = results["first_token_after_transcript_ms"]
                report.setdefault("first_token", {}).update(
                    {"cached_ms": ft["p50"], "cached_p95_ms": ft["p95"]}
                )
            if assistant is None and ({"overhead", "eval"} - opts.skip):
                from agent.app.wiring import build_assistant

                assistant = await build_assistant(config)
            with _phase(report, "overhead", opts):
                _unless_skipped("overhead", opts)
                _say("our layers vs the bare engines…")
                from agent.loop.stages import build_stages

                stages = None
                if pipeline is None:
                    stages = await build_stages(concrete, assistant.registry)
                tts = pipeline.tts if pipeline is not None else stages.tts
                recognizer = pipeline.recognizer if pipeline is not None else stages.recognizer
                ov: dict[str, Any] = {}
                ov["llm: decode tokens/s"] = await llm_overhead(
                    assistant, "tell me three interesting facts about electric cars", opts.reps
                )
                ov.update(await tts_overhead(config, tts, opts.reps))
                clip_script = build_script(6, "ptt")
                await asyncio.to_thread(synthesise, clip_script, config, voices_cache)
                clips = [_noisy(t.speech, opts.snr_db, seed=i) for i, t in enumerate(clip_script)]
                ov["asr: recognition per request"] = await asr_overhead(
                    recognizer, clips, max(1, opts.reps - 1)
                )
                report["overhead"] = ov
                if stages is not None:
                    await stages.aclose()
            with _phase(report, "eval", opts):
                _unless_skipped("eval", opts)
                _say(f"understanding: {opts.eval_limit or 'all'} eval cases…")
                report["understanding"] = await understanding(assistant, opts.eval_set, opts.eval_limit)
            if pipeline is not None:
                await pipeline.aclose()
            if assistant is not None:
                await assistant.close()
        finally:
            if previous_cache is None:
                os.environ.pop("CACHE_DIRECTORY", None)
            else:
                os.environ["CACHE_DIRECTORY"] = previous_cache
            service.close()
    report["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["targets"] = target_rows(report)
    return report


class _Skipped(Exception):
    pass


@contextlib.contextmanager
def _phase(report: dict[str, Any], name: str, opts: BenchOptions) -> Any:
    """One phase: skipped when asked (its body starts with `_unless_skipped`); a phase that fails is
    reported and the others still run."""
    try:
        yield
    except _Skipped:
        pass
    except Exception as err:  # one broken phase must not cost the whole run's measurements
        import traceback

        traceback.print_exc()
        report.setdefault("errors", {})[name] = f"{type(err).__name__}: {err}"
        _say(f"phase {name} failed: {type(err).__name__}: {err}")


def _unless_skipped(name: str, opts: BenchOptions) -> None:
    if name in opts.skip:
        raise _Skipped


def _noisy(speech: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    from agent.devtools.road_noise import road_noise

    pad = np.zeros(RATE // 2, np.int16)
    clean = np.concatenate([pad, speech, pad]).astype(np.float32)
    level = 32768 * 10 ** ((SPEECH_DBFS - snr_db) / 20)
    noisy = clean + road_noise(len(clean) / RATE, RATE, seed=seed)[: len(clean)] * level
    return np.clip(np.round(noisy), -32768, 32767).astype(np.int16)


def write_report(report: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    report["plots"] = plot(report, out_dir, stem)
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(
        json.dumps(report, ensure_ascii=False, indent=1, default=str) + "\n", encoding="utf-8"
    )
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, md_path


# ======================================================================== child processes


def _child_main(argv: list[str] | None = None) -> int:
    from agent.core.config import load_config
    from agent.core.logging import setup_logging

    parser = argparse.ArgumentParser(prog="python -m agent.devtools.bench", description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    probe = sub.add_parser("probe", help="first-token probe in a fresh process")
    probe.add_argument("--config", type=Path, required=True)
    probe.add_argument("--mode", choices=("cold", "restart"), required=True)
    probe.add_argument("--out", type=Path, required=True)
    daemon = sub.add_parser("daemon", help="the daemon with a WAV file as its microphone")
    daemon.add_argument("--config", type=Path, required=True)
    daemon.add_argument("--noise", type=Path, required=True)
    daemon.add_argument("--sink-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    setup_logging("info" if args.role == "daemon" else "warning", "json")
    if args.role == "probe":
        out = asyncio.run(
            _probe(config, args.mode, "set the temperature to twenty one degrees", "navigate to work")
        )
        args.out.write_text(json.dumps(out, default=str))
        return 0
    return asyncio.run(_daemon(config, args.noise, args.sink_dir))


if __name__ == "__main__":
    sys.exit(_child_main())
