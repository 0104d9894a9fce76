"""Understanding floors in CI: a fixed, stratified sample of the held-out split (never tuned on) and of the
development sessions, through the real model and the reference service, must stay above what was measured.

The sample is every k-th case of each language, so it is the same on every run; greedy decoding makes the
outcome repeatable on one machine. The floors sit a few points under the measured numbers (bench/results/eval/)
so that a different CPU's arithmetic does not fail the build, while a real regression does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers.evalsets import EVAL_DATA
from helpers.real import require

from agent.core.config import Config
from agent.core.errors import ModelError
from agent.devtools.eval_cases import EvalCase, EvalSession, load_eval
from agent.devtools.evaluation import format_report

pytestmark = [pytest.mark.model, pytest.mark.slow]

SINGLES_PER_LANGUAGE = 60
SESSIONS = 12
# Measured on this sample (2026-12-02, bench/results/eval/2026-12-02-holdout-understanding.json and the dev
# sessions run): tool 95.5 %, args 87.6 %, no-tool 90.3 % (31 cases: one is 3 points), schema 100 %, session
# turns about 85-90 %, after a refusal about 89 %.
FLOORS = {
    "tool_accuracy": 0.90,
    "args_accuracy": 0.80,
    "no_tool_accuracy": 0.83,
    "schema_valid_rate": 1.0,
    "session_turns": 0.80,
    "after_refusal": 0.78,
}


def every_kth(items: list, n: int) -> list:
    return [items[i * len(items) // n] for i in range(min(n, len(items)))]


def sample() -> tuple[list[EvalCase], list[EvalSession]]:
    cases: list[EvalCase] = []
    for lang in ("en", "zh"):
        found, _ = load_eval(EVAL_DATA / f"holdout_{lang}.jsonl")
        cases += every_kth(found, SINGLES_PER_LANGUAGE)
    sessions: list[EvalSession] = []
    for name in ("holdout_sessions", "dev_en_sessions", "dev_zh_sessions"):
        _, found = load_eval(EVAL_DATA / f"{name}.jsonl")
        sessions += every_kth(found, SESSIONS // 3)
    return cases, sessions


@pytest.mark.timeout(1800)  # ~8 minutes alone on 2 cores; more when the machine is shared
def test_the_held_out_sample_stays_above_its_floors(tmp_path: Path) -> None:
    from agent.app.wiring import build_assistant
    from agent.devtools.eval_run import eval_world, evaluate

    # Two threads: nothing else runs during this test, and it halves its share of CI's time.
    config = Config(llm={"n_threads": 2})
    cases, sessions = sample()

    async def run():
        try:
            first = await asyncio.wait_for(build_assistant(config), 900)
        except ModelError as err:
            require(False, f"dev LLM not fetched ({err})")
        try:
            async with eval_world(config, first.model) as world:
                return await evaluate(world, cases, sessions)
        finally:
            await first.close()

    report = asyncio.run(run())
    print("\n" + format_report(report))
    summary, turns = report.summary, report.summary["sessions"]
    measured = {
        "tool_accuracy": summary["tool_accuracy"],
        "args_accuracy": summary["args_accuracy"],
        "no_tool_accuracy": summary["no_tool_accuracy"],
        "schema_valid_rate": summary["schema_valid_rate"],
        "session_turns": turns["turn_accuracy"],
        "after_refusal": turns["after_refusal"]["accuracy"],
    }
    low = {k: round(v, 3) for k, v in measured.items() if v is None or v < FLOORS[k]}
    assert not low, f"below the floor: {low} (floors {FLOORS})"
    for lang, group in summary["by_language"].items():
        assert group["tool_accuracy"] >= FLOORS["tool_accuracy"] - 0.05, (lang, group)
