"""The bench's report: the issue's targets against a run, the markdown a person reads, and the JSON, markdown
and plots written to `bench/results/`."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.devtools.bench.plots import plot
from agent.devtools.bench.stats import STAGE_LABELS, STAGES


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
                new = _tokens_after_prefix(report)
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


def _tokens_after_prefix(report: Mapping[str, Any]) -> float | None:
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
