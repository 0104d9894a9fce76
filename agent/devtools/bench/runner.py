"""`cabin-agent bench`: how fast the car answers, what it costs the head unit while it waits, and how often it
does the right thing, measured in one run and written to `bench/results/<date>.json`, `.md` and PNG plots.

Phases (docs/bench.md): spoken turns through the real voice loop (synthesised requests in road noise, the
wake phrase or push-to-talk before each, services on a loopback reference service); our layers against the
bare engines on the same inputs; first-token time cold / cached / after a restart (fresh processes); the
daemon's idle cost and start-up time (a subprocess fed cabin noise, read from /proc); the understanding eval.
The machine, its load average at start and end, the model profile and engine versions are part of every
report: absolute times move on a shared machine, ratios and breakdowns are what runs are compared by.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import tempfile
import traceback
from pathlib import Path
from typing import Any

import yaml

from agent.app.wiring import llm_model
from agent.core.config import default_llm_threads, model_store_dir
from agent.devtools.bench.children import run_daemon_idle, run_probe, write_noise_wav
from agent.devtools.bench.machine import engine_versions, machine_info
from agent.devtools.bench.options import BenchOptions
from agent.devtools.bench.overhead import asr_overhead, llm_overhead, tts_overhead
from agent.devtools.bench.progress import say
from agent.devtools.bench.report import target_rows
from agent.devtools.bench.script import build_script, noisy, synthesise
from agent.devtools.bench.turns import bench_assistant, spoken_turns
from agent.devtools.bench.understanding import understanding
from agent.devtools.reference_service import ReferenceService, loopback_config
from agent.devtools.voices import demo_cache_dir
from agent.loop.stages import build_stages
from agent.models.engines import resolved_config

REPORT_VERSION = 1


def bench_config(base: Any, work: Path, service_url: str) -> Any:
    """The user's config with the services on the loopback reference service and every piece of state (outbox,
    control socket) in the bench's temp dir, so a run never touches a real daemon's files."""
    return loopback_config(
        service_url, work / "outbox.sqlite3", base, timeout_seconds=2.0,
        probe_interval_seconds=None, probe_timeout_seconds=None,
        models={"store": str(model_store_dir(base))},
        control={"socket_path": str(work / "control.sock")},
        logging={"format": "json", "log_transcripts": False},
    )


def write_config(config: Any, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return path


async def run_bench(base_config: Any, opts: BenchOptions) -> dict[str, Any]:
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
    say(f"load average {report['machine']['load_avg_start']} on {report['machine']['cores']} cores")
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
        report["profile"] = {
            "profile": config.models.profile,
            "llm": llm_model(config)[0],
            # None = agent.app.wiring's default: all cores but one
            "n_threads": config.llm.n_threads or f"auto: {default_llm_threads()}",
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
                say("first token: cold (fresh process, empty prompt cache)…")
                cold = await asyncio.to_thread(run_probe, config_path, cache, "cold")
                say("first token: after a restart (fresh process, cache file from the cold run)…")
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
                say(f"daemon: start-up to ready, then {opts.idle_seconds:.0f} s idle in cabin noise…")
                report["idle"] = await asyncio.to_thread(
                    run_daemon_idle, config_path, cache, work, noise, opts.idle_seconds
                )
            # The parent's own model uses the bench's prompt cache too (restored from the probes' file).
            os.environ["CACHE_DIRECTORY"] = str(cache)
            assistant = pipeline = None
            with _phase(report, "turns", opts):
                _unless_skipped("turns", opts)
                script = build_script(opts.turns, opts.trigger)
                say(f"synthesising {len(script)} requests (Piper, espeak-ng; cached)…")
                await asyncio.to_thread(synthesise, script, config, voices_cache)
                say(f"{len(script)} spoken turns through the voice loop (real time)…")
                results, assistant, pipeline = await spoken_turns(config, script, work, opts.snr_db)
                report["latency"] = {k: v for k, v in results.items() if k != "resources"}
                report["latency"]["settings"] = {"trigger": opts.trigger, "snr_db": opts.snr_db}
                report["turn_resources"] = results["resources"]
                ft = results["first_token_after_transcript_ms"]
                report.setdefault("first_token", {}).update(
                    {"cached_ms": ft["p50"], "cached_p95_ms": ft["p95"]}
                )
            if assistant is None and ({"overhead", "eval"} - opts.skip):
                assistant = await bench_assistant(config)
            with _phase(report, "overhead", opts):
                _unless_skipped("overhead", opts)
                say("our layers vs the bare engines…")
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
                clips = [noisy(t.speech, opts.snr_db, seed=i) for i, t in enumerate(clip_script)]
                ov["asr: recognition per request"] = await asr_overhead(
                    recognizer, clips, max(1, opts.reps - 1)
                )
                report["overhead"] = ov
                if stages is not None:
                    await stages.aclose()
            with _phase(report, "eval", opts):
                _unless_skipped("eval", opts)
                say(f"understanding: {opts.eval_limit or 'all'} eval cases…")
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
        traceback.print_exc()
        report.setdefault("errors", {})[name] = f"{type(err).__name__}: {err}"
        say(f"phase {name} failed: {type(err).__name__}: {err}")


def _unless_skipped(name: str, opts: BenchOptions) -> None:
    if name in opts.skip:
        raise _Skipped
