"""`cabin-agent bench`: latency, overhead over the bare engines, first token, idle cost, understanding."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.context import cli_context
from agent.core.logging import setup_logging
from agent.devtools.bench.options import DEFAULT_EVAL_SET, PHASES, BenchOptions


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        ctx: typer.Context,
        turns: Annotated[
            int, typer.Option("--turns", min=1, help="Spoken turns through the voice loop.")
        ] = 32,
        quick: Annotated[
            bool,
            typer.Option(
                "--quick", help="Smoke settings: 4 turns, 10 s idle, 4 eval cases, 1 rep (not comparable)."
            ),
        ] = False,
        out: Annotated[Path, typer.Option("--out", help="Where <date>.json/.md/.png go.")] = Path(
            "bench/results"
        ),
        eval_limit: Annotated[
            int, typer.Option("--eval-limit", help="Eval cases spread over the set (0 = all, ~10 min).")
        ] = 40,
        eval_set: Annotated[Path, typer.Option("--eval-set", help="JSONL eval set.")] = DEFAULT_EVAL_SET,
        idle_seconds: Annotated[
            float, typer.Option("--idle-seconds", min=5.0, help="Idle listening window.")
        ] = 60.0,
        trigger: Annotated[
            str, typer.Option("--trigger", help="wake, ptt or mixed (alternating).")
        ] = "mixed",
        skip: Annotated[
            str, typer.Option("--skip", help=f"Comma-separated phases to skip: {', '.join(PHASES)}.")
        ] = "",
    ) -> None:
        """Measure latency, our overhead over the bare engines, first-token time, idle cost, understanding."""
        root = cli_context(ctx)
        config = root.config()
        if root.log_level is None:
            setup_logging("warning", config.logging.format)  # the per-turn log lines would drown the progress
        skipped = frozenset(p.strip() for p in skip.split(",") if p.strip())
        unknown = skipped - set(PHASES)
        if unknown or trigger not in ("wake", "ptt", "mixed"):
            raise typer.BadParameter(f"--skip takes {', '.join(PHASES)}; --trigger wake, ptt or mixed")
        opts = BenchOptions(
            turns=turns,
            out=out,
            eval_limit=eval_limit,
            eval_set=eval_set,
            idle_seconds=idle_seconds,
            trigger=trigger,
            skip=skipped,
            quick=quick,
            command="cabin-agent " + " ".join(sys.argv[1:]),
        )
        if quick:
            opts.turns, opts.idle_seconds, opts.eval_limit, opts.reps = min(turns, 4), 10.0, 4, 1
        # The bench itself (the voice loop, the services, the engines) loads only when it runs.
        from agent.devtools.bench.report import render_markdown, write_report
        from agent.devtools.bench.runner import run_bench

        report = asyncio.run(run_bench(config, opts))
        stem = dt.date.today().isoformat() + ("-quick" if quick else "")
        json_path, md_path = write_report(report, out, stem)
        print(render_markdown(report))
        print(f"\nwrote {json_path}, {md_path}" + "".join(f", {out / p}" for p in report["plots"].values()))
