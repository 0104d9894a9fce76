"""Running an eval: each case (or session) through a turn function, one at a time, scored, into an EvalReport;
and the report as terminal text. The contract `cabin-agent eval`, the bench and the test sets use; the set
format is in eval_cases.py, the scoring in eval_scoring.py, the rules in docs/eval.md.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.devtools.eval_cases import EvalCase, EvalSession
from agent.devtools.eval_scoring import CaseScore, SessionScore, score_case, summarize, summarize_sessions


@dataclass
class EvalReport:
    scores: list[CaseScore]
    summary: dict[str, Any]
    wall_seconds: float = 0.0
    sessions: list[SessionScore] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "cases": [s.to_dict() for s in self.scores],
            "summary": self.summary,
            "wall_seconds": round(self.wall_seconds, 3),
        }
        if self.sessions:
            out["sessions"] = [s.to_dict() for s in self.sessions]
        return out

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent, default=str)


RunTurn = Callable[[EvalCase], Awaitable[Mapping[str, Any]]]
Progress = Callable[[int, int, CaseScore], Any]
# A session runner opens a fresh conversation for the session and returns its turn function (text -> outcome)
# and an async close.
SessionTurn = Callable[[str], Awaitable[Mapping[str, Any]]]
StartSession = Callable[[EvalSession], Awaitable[tuple[SessionTurn, Callable[[], Awaitable[None]]]]]


async def run_eval(
    cases: Sequence[EvalCase],
    run_turn: RunTurn,
    progress: Progress | None = None,
    *,
    timeout_s: float | None = None,
) -> EvalReport:
    """Run each case through `run_turn`, one at a time, and score it.

    One at a time on purpose: turns share one model, and concurrent turns would distort the latency figures.
    A run_turn that raises (or exceeds `timeout_s`) becomes a failed case carrying the error; the run goes on.
    When the outcome has no timings_ms.total, the measured wall time of run_turn is used instead.
    `progress(done, total, score)` is called after each case; it may be a coroutine function.
    """
    started = time.perf_counter()
    scores: list[CaseScore] = []
    for done, case in enumerate(cases, start=1):
        t0 = time.perf_counter()
        try:
            pending = run_turn(case)
            outcome = await (asyncio.wait_for(pending, timeout_s) if timeout_s else pending)
            if not isinstance(outcome, Mapping):
                outcome = {"error": f"run_turn returned {type(outcome).__name__}, not an outcome object"}
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            outcome = {"error": f"timed out after {timeout_s:g} s"}
        except Exception as err:  # a broken turn is a failed case, not a failed run
            outcome = {"error": f"{type(err).__name__}: {err}"}
        wall_ms = (time.perf_counter() - t0) * 1000
        score = score_case(case, outcome)
        if score.total_ms is None and score.error is None:
            score.total_ms = wall_ms
        scores.append(score)
        if progress is not None:
            maybe = progress(done, len(cases), score)
            if asyncio.iscoroutine(maybe):
                await maybe
    return EvalReport(scores=scores, summary=summarize(scores), wall_seconds=time.perf_counter() - started)


async def _outcome(pending: Awaitable[Any], timeout_s: float | None) -> Mapping[str, Any]:
    try:
        outcome = await (asyncio.wait_for(pending, timeout_s) if timeout_s else pending)
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        return {"error": f"timed out after {timeout_s:g} s"}
    except Exception as err:  # a broken turn is a failed case, not a failed run
        return {"error": f"{type(err).__name__}: {err}"}
    if not isinstance(outcome, Mapping):
        return {"error": f"the turn returned {type(outcome).__name__}, not an outcome object"}
    return outcome


async def run_sessions(
    sessions: Sequence[EvalSession],
    start_session: StartSession,
    progress: Progress | None = None,
    *,
    timeout_s: float | None = None,
) -> list[SessionScore]:
    """Run each session's turns in order in one fresh conversation, and score every turn."""
    results: list[SessionScore] = []
    done = 0
    total = sum(len(s.turns) for s in sessions)
    for session in sessions:
        turn, close = await start_session(session)
        scored: list[CaseScore] = []
        try:
            for case in session.turns:
                t0 = time.perf_counter()
                score = score_case(case, await _outcome(turn(case.text), timeout_s))
                if score.total_ms is None and score.error is None:
                    score.total_ms = (time.perf_counter() - t0) * 1000
                scored.append(score)
                done += 1
                if progress is not None:
                    maybe = progress(done, total, score)
                    if asyncio.iscoroutine(maybe):
                        await maybe
        finally:
            await close()
        results.append(SessionScore(session, scored))
    return results


# ---------------------------------------------------------------- terminal report


def _compact(args: Any) -> str:
    if args is None:
        return ""
    if isinstance(args, Mapping):
        return "(" + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items()) + ")"
    return "(" + json.dumps(args, ensure_ascii=False, default=str) + ")"


def _describe_expected(case: EvalCase) -> str:
    if case.expect.tool is None:
        return "no tool"
    return case.expect.tool + (_compact(case.expect.args) if case.expect.args else "")


def _describe_actual(score: CaseScore) -> str:
    if score.error:
        return f"error: {score.error}"
    if not score.calls:
        return "no tool"
    shown = _describe_call(score.calls[score.matched_call if score.matched_call is not None else 0])
    extra = len(score.calls) - 1
    return shown + (f" +{extra} more" if extra > 0 else "")


def _describe_call(call: Mapping[str, Any]) -> str:
    text = f"{call['name']}{_compact(call['arguments'])}"
    return text if call["valid"] else text + " [invalid]"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_report(report: EvalReport, verbose: bool = False) -> str:
    """Terminal text: one line per case (✓/✗, id, expected, got, ms), then the summary.

    `verbose` adds the utterance and the reply under each case.
    """
    lines: list[str] = []
    width = max((len(s.case.id) for s in report.scores), default=0)
    for s in report.scores:
        mark = "✓" if s.correct else "✗"
        why = ""
        if not s.correct and s.tool_correct and s.case.expects_tool:
            why = "  (args)"
        lines.append(
            f"{mark} {s.case.id:<{width}}  {_describe_expected(s.case)}  →  {_describe_actual(s)}{why}"
            f"  {_ms(s.total_ms)} ms"
        )
        if verbose:
            lines.append(f"    said: {s.case.text}")
            if s.reply:
                lines.append(f"    reply: {s.reply}")
            if s.case.note:
                lines.append(f"    note: {s.case.note}")
    summary = report.summary
    counts = summary["counts"]
    n_tool, n_none = summary["n_tool_cases"], summary["n_no_tool_cases"]
    lines += [
        "",
        f"cases            {summary['n']} ({n_tool} expecting a tool, {n_none} expecting none)"
        + (f", {counts['errors']} errors" if counts["errors"] else ""),
        f"correct          {_pct(summary['accuracy'])} ({counts['correct']}/{summary['n']})",
        f"tool accuracy    {_pct(summary['tool_accuracy'])} ({counts['tool_correct']}/{n_tool})",
        f"args accuracy    {_pct(summary['args_accuracy'])} ({counts['args_correct']}/{n_tool})",
        f"schema valid     {_pct(summary['schema_valid_rate'])} "
        f"({counts['valid_calls']}/{counts['calls']} calls)",
        f"no-tool accuracy {_pct(summary['no_tool_accuracy'])} ({counts['no_tool_correct']}/{n_none})",
    ]
    for title, key in (("by language", "by_language"), ("by category", "by_category")):
        groups = summary[key]
        if groups:
            lines.append(f"{title:<16} " + "  ".join(f"{name} {_pct(g['accuracy'])} (n={g['n']})"
                                                     for name, g in groups.items()))
    for name, stats in summary["latency_ms"].items():
        if stats["n"]:
            label = {"total": "latency", "first_token": "first token"}.get(name, name)
            lines.append(f"{label:<16} p50 {_ms(stats['p50'])}  p90 {_ms(stats['p90'])}  "
                         f"p95 {_ms(stats['p95'])}  max {_ms(stats['max'])} ms (n={stats['n']})")
    if summary["confusion"]:
        lines.append("misses (expected → got):")
        for want, got in summary["confusion"].items():
            lines.append(f"  {want} → " + ", ".join(f"{name} ×{count}" for name, count in got.items()))
    families = summary.get("by_family") or {}
    if families:
        lines.append("by family        tool / tool+args / no-tool")
        for name, g in families.items():
            lines.append(f"  {name:<14} {_pct(g['tool_accuracy'])} / {_pct(g['args_accuracy'])} / "
                         f"{_pct(g['no_tool_accuracy'])}  (n={g['n']})")
    if report.sessions:
        sess = summary.get("sessions") or summarize_sessions(report.sessions)
        lines += ["", f"sessions         {sess['n_sessions']} ({sess['n_turns']} turns)",
                  f"turns right      {_pct(sess['turn_accuracy'])}",
                  f"sessions right   {_pct(sess['sessions_correct'])}",
                  f"after a refusal  {_pct(sess['after_refusal']['accuracy'])} (n={sess['after_refusal']['n']})"]
        for lang, g in sess["by_language"].items():
            lines.append(f"  {lang}: turns {_pct(g['turn_accuracy'])}, sessions {_pct(g['sessions_correct'])}, "
                         f"after a refusal {_pct(g['after_refusal'])}")
        for s in report.sessions:
            for t in s.turns:
                if not t.correct:
                    lines.append(f"  ✗ {t.case.id}  {t.case.text!r}: {_describe_expected(t.case)}  →  "
                                 f"{_describe_actual(t)}")
    if report.wall_seconds:
        lines.append(f"wall time        {report.wall_seconds:.1f} s")
    return "\n".join(lines)
