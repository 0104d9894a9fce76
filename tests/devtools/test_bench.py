"""The bench's pure parts: percentiles, stage breakdown, /proc parsing, targets, the rendered report."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from agent.devtools.bench.machine import (
    ProcSample,
    cpu_percent,
    parse_proc_stat,
    parse_proc_status,
    read_proc,
    resource_summary,
)
from agent.devtools.bench.report import render_markdown, target_rows
from agent.devtools.bench.script import build_script, trim_silence
from agent.devtools.bench.stats import decode_rates, overhead, paired_overhead, stage_breakdown, summarize_ms
from agent.devtools.bench.understanding import pick_cases


def test_summarize_ms_matches_eval_percentiles() -> None:
    out = summarize_ms([100.0, 200.0, 300.0, 400.0, None, 500.0])
    assert out == {"n": 5, "p50": 300.0, "p95": 480.0, "max": 500.0, "mean": 300.0}
    assert summarize_ms([])["p50"] is None
    assert summarize_ms([None, float("nan")])["n"] == 0


def test_stage_breakdown_sums_to_first_audio() -> None:
    end = 1000.0
    marks = {
        "speech_end": 990.0,
        "endpoint": 1700.0,
        "transcript_final": 2300.0,
        "first_token": 2500.0,
        "tool_call_complete": 3100.0,
        "tool_done": 3105.0,
        "first_audio": 3400.0,
    }
    stages = stage_breakdown(marks, end)
    assert stages == {
        "endpoint_wait": 700.0,
        "transcript": 600.0,
        "first_token": 200.0,
        "tool_call": 600.0,
        "tool_run": 5.0,
        "first_audio": 295.0,
    }
    assert sum(stages.values()) == pytest.approx(marks["first_audio"] - end)


def test_stage_breakdown_without_model_or_tool() -> None:
    # A confirmation "yes": no model token, no decoded call; the tool's time starts at the transcript.
    marks = {"endpoint": 1700.0, "transcript_final": 2300.0, "tool_done": 2800.0, "first_audio": 3000.0}
    assert stage_breakdown(marks, 1000.0) == {
        "endpoint_wait": 700.0,
        "transcript": 600.0,
        "tool_run": 500.0,
        "first_audio": 200.0,
    }
    # Marks taken on other threads a hair before the previous one never give negative stages.
    assert stage_breakdown({"endpoint": 1700.0, "transcript_final": 1699.5}, 1000.0)["transcript"] == 0.0


STAT = (
    "4242 (python -m (agent) x) S 1 4242 4242 0 -1 4194304 120000 0 12 0 "
    "1500 250 0 0 20 0 9 0 12345 2900000000 250000 18446744073709551615 1 1 0 0 0 0 0 16781312 17642 0 0 0 "
    "17 1 0 0 0 0 0"
)
STATUS = "Name:\tpython\nVmPeak:\t 3000000 kB\nVmHWM:\t  900000 kB\nVmRSS:\t  850000 kB\nThreads:\t9\n"


def test_proc_parsing() -> None:
    assert parse_proc_stat(STAT) == 1750  # utime 1500 + stime 250, despite ") " inside the name
    assert parse_proc_status(STATUS, "VmRSS") == 850000
    assert parse_proc_status(STATUS, "VmHWM") == 900000
    assert parse_proc_status(STATUS, "VmSwap") is None


def test_cpu_percent_of_one_core() -> None:
    first = ProcSample(10.0, 1000, 850000, 900000)
    last = ProcSample(70.0, 1600, 860000, 900000)
    assert cpu_percent(first, last, ticks_per_s=100) == 10.0  # 6 s of CPU in 60 s
    assert cpu_percent(first, first, ticks_per_s=100) is None
    summary = resource_summary([first, last])
    assert summary["seconds"] == 60.0
    assert summary["rss_mb_max"] == pytest.approx(839.8, abs=0.1)


def test_read_proc_self() -> None:
    sample = read_proc(os.getpid())
    assert sample.cpu_ticks >= 0 and sample.rss_kb and sample.rss_kb > 1000


def test_overhead_direction() -> None:
    # Rates: higher is better; 90 tok/s through our turn vs 100 bare is 11 % more time per token.
    rate = overhead(90.0, 100.0, higher_is_better=True)
    assert rate["ratio"] == 0.9 and rate["overhead"] == pytest.approx(0.111, abs=0.001)
    # Times: lower is better.
    assert overhead(105.0, 100.0, higher_is_better=False)["overhead"] == pytest.approx(0.05)
    assert overhead(None, 100.0, higher_is_better=False)["overhead"] is None


def test_pick_cases_spreads_over_the_set() -> None:
    cases = list(range(100))
    assert pick_cases(cases, 4) == [0, 25, 50, 75]
    assert pick_cases(cases, 0) == cases
    assert pick_cases(cases, 500) == cases


def test_build_script_keeps_a_confirmation_with_its_order() -> None:
    script = build_script(7, "mixed")
    assert [t.text for t in script][-2:] == ["order a large pepperoni pizza", "yes"]
    assert script[-1].trigger == "follow-up"
    assert all(t.trigger == "ptt" for t in build_script(5, "ptt"))


def _report() -> dict:
    turn = {
        "n": 1,
        "kind": "vehicle",
        "voice": "piper",
        "said": "call mom",
        "trigger": "wake",
        "wake_missed": False,
        "outcome": "replied",
        "heard": "Call mom.",
        "tools": ["call_contact"],
        "at_s": 3.0,
        "end_to_first_audio_ms": 2400.0,
        "stages_ms": {
            "endpoint_wait": 700.0,
            "transcript": 600.0,
            "first_token": 300.0,
            "tool_call": 600.0,
            "tool_run": 1.0,
            "first_audio": 199.0,
        },
    }
    stages = {s: summarize_ms([v]) for s, v in turn["stages_ms"].items()}
    return {
        "date": "2026-01-01T00:00:00+00:00",
        "command": "cabin-agent bench",
        "machine": {
            "cpu_model": "Test CPU",
            "cores": 2,
            "load_avg_start": [0.5, 0.6, 0.7],
            "load_avg_end": [0.9, 0.7, 0.7],
        },
        "profile": {"profile": "dev", "llm": "qwen", "asr": "whisper"},
        "engines": {"llama_cpp_python": "0.3.36"},
        "settings": {"quick": False},
        "latency": {
            "turns_spoken": 1,
            "turns_answered": 1,
            "wake_missed": 0,
            "all": summarize_ms([2400.0]),
            "settings": {"trigger": "mixed", "snr_db": 20.0},
            "by_kind": {"vehicle": {"end_to_first_audio_ms": summarize_ms([2400.0]), "stages_ms": stages}},
            "turns": [turn],
        },
        "first_token": {"cached_ms": 300.0, "after_restart_ms": 250.0, "cold_ms": 9000.0},
        "idle": {
            "cpu_percent_one_core": 4.2,
            "rss_mb_max": 1500.0,
            "seconds": 60.0,
            "startup_to_ready_s": 5.0,
        },
        "overhead": {
            "tts: whole reply": {"ours": 105.0, "bare": 100.0, "ratio": 1.05, "overhead": 0.05, "unit": "ms"}
        },
        "understanding": {
            "n": 10,
            "set_size": 227,
            "set": "tests/data/eval_car.jsonl",
            "accuracy": 0.8,
            "tool_accuracy": 0.9,
            "args_accuracy": 0.85,
            "no_tool_accuracy": 0.5,
            "schema_valid_rate": 1.0,
            "latency_p50_ms": 2000.0,
            "latency_p95_ms": 3000.0,
        },
    }


def test_targets_from_a_report() -> None:
    rows = {r["name"]: r for r in target_rows(_report())}
    assert rows["vehicle: end of speech → first audio p50"]["met"] is False
    assert rows["first token, first turn after a restart"]["met"] is True
    assert rows["first token, warm process (p50)"]["met"] is True  # 300 ms is within "<= 0.3 s"
    assert rows["idle listening CPU"]["met"] is True
    assert rows["idle listening RSS"]["met"] is False
    assert rows["our overhead: tts: whole reply"]["value"] == 5.0


def test_render_markdown_names_the_machine_targets_and_where_time_goes() -> None:
    text = render_markdown(_report())
    assert "Test CPU, 2 cores" in text
    assert "0.50 / 0.60 / 0.70" in text and "busy machine" not in text
    assert "| vehicle: end of speech → first audio p50 | ≤ 1000 ms | 2400 ms | **missed** |" in text
    assert "| vehicle | 1 | 2400 | 2400 | 2400 | 700 | 600 | 300 | 600 | 1 | 199 |" in text
    assert "endpoint wait (VAD silence): 700 ms mean (29 %)" in text
    # the closing note names the largest stages of a missed latency target once, with what would close them
    assert text.count("vad.silence_ms") == 1
    assert "80.0 %" in text and "5.0 %" in text


def test_render_markdown_flags_a_busy_machine() -> None:
    report = _report()
    report["machine"]["load_avg_start"] = [3.9, 4.0, 3.5]
    assert "busy machine" in render_markdown(report)


def test_trim_silence() -> None:
    import numpy as np

    audio = np.concatenate([np.zeros(1600), np.full(3200, 8000.0), np.zeros(800)]).astype(np.int16)
    trimmed = trim_silence(audio)
    assert len(trimmed) == 3200 and trimmed.min() == 8000


def test_paired_overhead_uses_the_pairs() -> None:
    # The machine got twice as slow between the pairs: each pair still shows a 10 % cost.
    out = paired_overhead([110.0, 220.0], [100.0, 200.0], higher_is_better=False)
    assert out["ratio"] == 1.1 and out["overhead"] == pytest.approx(0.1) and out["pairs"] == 2
    rates = paired_overhead([9.0, 4.5], [10.0, 5.0], higher_is_better=True)
    assert rates["ratio"] == 0.9 and rates["overhead"] == pytest.approx(0.111, abs=0.001)
    assert paired_overhead([], [], higher_is_better=True)["overhead"] is None


def test_decode_rates_separates_grammar_calls() -> None:
    calls = [
        {"generated": 11, "first_ms": 100.0, "ms": 600.0, "grammar": False},
        {"generated": 1, "first_ms": 90.0, "ms": 90.0, "grammar": False},  # one token: no rate
        {"generated": 21, "first_ms": 50.0, "ms": 2050.0, "grammar": True},
    ]
    rates = decode_rates(iter(calls))
    assert rates["free"] == {"calls": 1, "tokens": 10, "ms_per_token": 50.0, "mean_tokens_per_call": 11.0}
    assert rates["grammar"]["ms_per_token"] == 100.0


def test_recorded_model_records_only_inside_a_recording() -> None:
    from agent.devtools.bench.turns import RecordedModel

    class Model:
        model_id = "stub"

        def generate(self, tokens: list[int], **kwargs: object) -> Iterator[int]:
            yield from range(3)

    model = RecordedModel(Model())
    assert model.model_id == "stub" and list(model.generate([1, 2])) == [0, 1, 2]
    with model.recording() as calls:
        list(model.generate([1, 2, 3], json_schema={"type": "object"}))
        list(model.generate([4]))
    list(model.generate([5]))
    assert [(c.prompt, c.grammar, c.generated) for c in calls] == [((1, 2, 3), True, 3), ((4,), False, 3)]
    assert list(calls[0].as_dict()) == ["prompt_tokens", "generated", "grammar", "first_ms", "ms"]
    assert calls[0].as_dict()["prompt_tokens"] == 3


async def test_spoken_turns_press_push_to_talk_after_an_unheard_wake_phrase() -> None:
    import asyncio

    import numpy as np

    from agent.devtools.bench.script import ScriptedTurn, SpokenTurns
    from agent.devtools.scripted_mic import ScriptedMic
    from agent.loop.pipeline import State

    class Car:  # a car that never hears the wake phrase and starts a request at each press
        state = State.IDLE
        in_follow_up = False
        turns_started = 0
        presses = 0

        def push_to_talk(self) -> None:
            self.presses += 1
            self.turns_started += 1

    car = Car()
    speech = np.full(1000, 4000, np.int16)
    turns = [
        ScriptedTurn("vehicle", "piper", "call mom", "wake", speech=speech, wake=speech),
        ScriptedTurn("vehicle", "piper", "play some jazz", "ptt", speech=speech),
    ]
    mic = ScriptedMic(SpokenTurns(turns, lambda: car), seed=3, speed=10.0)

    async def play() -> int:
        return sum([1 async for _ in mic.stream()])

    assert await asyncio.wait_for(play(), timeout=20) > 0
    assert [t.wake_missed for t in turns] == [True, False] and car.presses == 2
    assert all(t.speech_end_ms is not None and t.load_1min is not None for t in turns)
    assert [t.turn_before for t in turns] == [0, 1]
