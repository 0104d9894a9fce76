"""The bench's understanding phase: a spread of the eval set through the bench's loaded assistant, scored as
`cabin-agent eval` scores it."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.devtools.bench.options import REPO
from agent.devtools.eval_cases import load_cases
from agent.devtools.evaluation import run_eval


def pick_cases(cases: Sequence[Any], limit: int) -> list[Any]:
    """`limit` cases spread evenly over the set (it is ordered by tool and language), all when limit <= 0."""
    if limit <= 0 or limit >= len(cases):
        return list(cases)
    step = len(cases) / limit
    return [cases[int(i * step)] for i in range(limit)]


async def understanding(assistant: Any, path: Path, limit: int) -> dict[str, Any]:
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
