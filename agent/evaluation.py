"""Scoring turns against expected tool calls: the contract `cabin-agent eval`, benchmarks and test sets use.

A case is one JSON line `{"text": ..., "expect": {"tool": name | null, "args": {...}}}`; matching rules and
metrics are described in docs/eval.md. Keep names and JSON keys here stable: reports are compared across runs.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import CabinError

CASE_KEYS = frozenset({"id", "lang", "text", "expect", "category", "note"})
EXPECT_KEYS = frozenset({"tool", "args"})
# An expected value written as {"$any": [a, b]} matches when any alternative matches: "回家" may correctly
# become destination "家" or "home", and a dataset must not fail a call the plugin would handle correctly.
ANY_OF = "$any"
NO_TOOL = "none"  # label for "no tool call" in the confusion table; no real tool may be called this
UNCATEGORIZED = "uncategorized"


class EvalSetError(CabinError, ValueError):
    """An eval set cannot be read; the message names the file and line."""

    code = "eval-set-invalid"
    exit_status = 65  # EX_DATAERR


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class Expectation:
    tool: str | None  # None: the right answer calls no tool
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalCase:
    id: str
    text: str
    expect: Expectation
    lang: str = "en"
    category: str | None = None
    note: str | None = None
    line: int = 0  # 1-based line in the source file, 0 when built in code

    @property
    def expects_tool(self) -> bool:
        return self.expect.tool is not None


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text)


def _check_expected_value(value: Any, where: str) -> None:
    """Reject expected values that would check nothing or can never match (empty strings, empty $any)."""
    if isinstance(value, str):
        if not normalize_text(value):
            raise ValueError(f"{where}: an empty expected string checks nothing; leave the arg out instead")
    elif isinstance(value, dict):
        if ANY_OF in value:
            alternatives = value[ANY_OF]
            if len(value) != 1 or not isinstance(alternatives, list) or not alternatives:
                raise ValueError(f'{where}: {{"{ANY_OF}": [...]}} takes one non-empty list and nothing else')
            for i, alt in enumerate(alternatives):
                _check_expected_value(alt, f"{where}.{ANY_OF}[{i}]")
        else:
            for key, inner in value.items():
                _check_expected_value(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _check_expected_value(inner, f"{where}[{i}]")


def parse_case(obj: Any, line: int = 0, default_id: str | None = None) -> EvalCase:
    """One case from its JSON object; raises ValueError with a readable reason (without the line number)."""
    if not isinstance(obj, dict):
        raise ValueError(f"a case must be a JSON object (got {type(obj).__name__})")
    unknown = sorted(set(obj) - CASE_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(CASE_KEYS))})")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError('"text" is missing or not a non-empty string')
    if "expect" not in obj:
        raise ValueError('"expect" is missing (use {"tool": null} for "no tool should be called")')
    expect = obj["expect"]
    if not isinstance(expect, dict):
        raise ValueError('"expect" must be an object like {"tool": "set_climate", "args": {...}}')
    unknown = sorted(set(expect) - EXPECT_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) in expect: {', '.join(unknown)} (allowed: args, tool)")
    if "tool" not in expect:
        raise ValueError('expect.tool is missing (a tool name, or null for "no tool should be called")')
    tool = expect["tool"]
    if tool is not None and (not isinstance(tool, str) or not tool.strip() or tool == NO_TOOL):
        raise ValueError(f"expect.tool must be a tool name or null (got {tool!r})")
    args = expect.get("args", {})
    if not isinstance(args, dict):
        raise ValueError(f"expect.args must be an object (got {type(args).__name__})")
    if tool is None and args:
        raise ValueError("expect.args given but expect.tool is null")
    _check_expected_value(args, "expect.args")
    case_id = obj.get("id", default_id or f"line-{line}")
    if not isinstance(case_id, str) or not case_id.strip():
        raise ValueError(f'"id" must be a non-empty string (got {case_id!r})')
    lang = obj.get("lang")
    if lang is None:
        lang = "zh" if _has_cjk(text) else "en"
    if not isinstance(lang, str) or not lang.strip():
        raise ValueError(f'"lang" must be a language code such as "en" or "zh" (got {lang!r})')
    category = obj.get("category")
    if category is not None and (not isinstance(category, str) or not category.strip()):
        raise ValueError(f'"category" must be a non-empty string (got {category!r})')
    note = obj.get("note")
    if note is not None and not isinstance(note, str):
        raise ValueError('"note" must be a string')
    return EvalCase(
        id=case_id, text=text, expect=Expectation(tool, dict(args)),
        lang=lang, category=category, note=note, line=line,
    )


def load_cases(path: str | Path) -> list[EvalCase]:
    """Read a JSONL eval set. Blank lines are skipped; any bad line raises EvalSetError naming `path:line`."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise EvalSetError(f"{path}: eval set not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise EvalSetError(f"{path}: cannot be read ({err})", path=str(path)) from err
    cases: list[EvalCase] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalSetError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno})",
                               path=str(path), line=number) from None
        try:
            case = parse_case(obj, line=number)
        except ValueError as err:
            raise EvalSetError(f"{path}:{number}: {err}", path=str(path), line=number) from None
        if case.id in first_line:
            first = first_line[case.id]
            raise EvalSetError(f"{path}:{number}: duplicate id {case.id!r} (first on line {first})",
                               path=str(path), line=number)
        first_line[case.id] = number
        cases.append(case)
    if not cases:
        raise EvalSetError(f"{path}: no cases", path=str(path))
    return cases


# ---------------------------------------------------------------- matching

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def _is_edge_junk(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch)[0] in "PS"


def normalize_text(value: str) -> str:
    """NFKC, casefold, curly quotes made straight, whitespace collapsed, punctuation at both ends dropped."""
    text = unicodedata.normalize("NFKC", value).casefold().translate(_QUOTES)
    text = " ".join(text.split())
    start, end = 0, len(text)
    while start < end and _is_edge_junk(text[start]):
        start += 1
    while end > start and _is_edge_junk(text[end - 1]):
        end -= 1
    return text[start:end]


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _as_number(value: Any) -> float | None:
    """A number from a number or numeric string ("21", " 21.0 "), else None. Booleans are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = unicodedata.normalize("NFKC", value).strip()
        if _NUMBER.fullmatch(text):
            return float(text)
    return None


def _numbers_equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def value_matches(expected: Any, actual: Any) -> bool:
    """Whether one actual argument value satisfies an expected one (the rules of args_match)."""
    if isinstance(expected, dict) and ANY_OF in expected and len(expected) == 1:
        return any(value_matches(alt, actual) for alt in expected[ANY_OF])
    if expected is None:
        return actual is None
    if isinstance(expected, bool):
        return isinstance(actual, bool) and actual is expected
    if isinstance(expected, int | float):
        number = _as_number(actual)
        return number is not None and _numbers_equal(float(expected), number)
    if isinstance(expected, str):
        if isinstance(actual, bool) or actual is None:
            return False
        if isinstance(actual, int | float):
            # "21" expected and 21 sent: compare as numbers, never as text ("2" must not match 21).
            number = _as_number(expected)
            return number is not None and _numbers_equal(number, float(actual))
        if isinstance(actual, str):
            return normalize_text(expected) in normalize_text(actual)
        return False
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return False
        return all(any(value_matches(e, a) for a in actual) for e in expected)
    if isinstance(expected, dict):
        return isinstance(actual, dict) and args_match(expected, actual)
    return expected == actual


def args_match(expected: Mapping[str, Any], actual: Any) -> bool:
    """Whether a call's arguments satisfy the expected ones. Only the listed args are checked.

    Strings: normalized (see normalize_text) and the expected text contained in the actual one.
    Numbers: as numbers (21 == 21.0 == "21"). Booleans: strictly. Lists: each expected element matches some
    actual element. Dicts: recursively. An expected null means the arg is absent or null.
    {"$any": [...]}: any alternative matches.
    """
    if not isinstance(actual, Mapping):
        return False
    for key, want in expected.items():
        if key not in actual:
            if want is None:
                continue
            return False
        if not value_matches(want, actual[key]):
            return False
    return True


# ---------------------------------------------------------------- scoring


@dataclass
class CaseScore:
    """How one case went. `correct` is the headline: right tool and args, or no call when none was wanted."""

    case: EvalCase
    tool_correct: bool
    args_correct: bool
    correct: bool
    calls: list[dict[str, Any]] = field(default_factory=list)  # name, arguments, valid (as the turn reported)
    matched_call: int | None = None  # index in `calls` of the call that was scored
    reply: str | None = None
    total_ms: float | None = None
    first_token_ms: float | None = None
    error: str | None = None  # run_turn raised or returned something unusable

    @property
    def actual_tool(self) -> str | None:
        """The scored call's tool, else the first call's, else None (no call)."""
        if self.matched_call is not None:
            return self.calls[self.matched_call]["name"]
        return self.calls[0]["name"] if self.calls else None

    @property
    def actual_args(self) -> dict[str, Any] | None:
        if self.matched_call is not None:
            return self.calls[self.matched_call]["arguments"]
        return self.calls[0]["arguments"] if self.calls else None

    def to_dict(self) -> dict[str, Any]:
        c = self.case
        return {
            "id": c.id,
            "lang": c.lang,
            "category": c.category,
            "text": c.text,
            "expected": {"tool": c.expect.tool, "args": c.expect.args},
            "actual": {"tool": self.actual_tool, "args": self.actual_args},
            "calls": self.calls,
            "tool_correct": self.tool_correct,
            "args_correct": self.args_correct,
            "correct": self.correct,
            "reply": self.reply,
            "total_ms": self.total_ms,
            "first_token_ms": self.first_token_ms,
            "error": self.error,
        }


def _number_or_none(value: Any) -> float | None:
    number = _as_number(value) if not isinstance(value, str) else None
    return number if number is not None and math.isfinite(number) else None


def _normalize_calls(raw: Any) -> list[dict[str, Any]]:
    """Calls as {name, arguments, valid}; arguments given as a JSON string (OpenAI style) are decoded."""
    calls: list[dict[str, Any]] = []
    for item in raw or []:
        if not isinstance(item, Mapping):
            calls.append({"name": None, "arguments": None, "valid": False})
            continue
        arguments = item.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass
        name = item.get("name")
        # A turn that does not report validity ran the call through the registry, which rejects invalid ones.
        valid = item.get("valid", True)
        name = name if isinstance(name, str) else None
        calls.append({"name": name, "arguments": arguments, "valid": valid is True})
    return calls


def score_case(case: EvalCase, outcome: Mapping[str, Any]) -> CaseScore:
    """Score one turn's outcome (the `cabin-agent say --json` object) against its case.

    Expecting a tool: tool-correct when any call has that name (the first such call is scored), args-correct
    when that call is valid and its args match. Expecting no tool: correct when there are no calls.
    """
    timings = outcome.get("timings_ms") or {}
    if not isinstance(timings, Mapping):
        timings = {}
    error = outcome.get("error")
    raw_calls = outcome.get("tool_calls")
    if raw_calls is not None and not isinstance(raw_calls, list):
        error = error or f"tool_calls must be a list (got {type(raw_calls).__name__})"
        raw_calls = []
    calls = _normalize_calls(raw_calls)
    reply = outcome.get("reply")
    base = {
        "calls": calls,
        "reply": reply if isinstance(reply, str) else None,
        "total_ms": _number_or_none(timings.get("total")),
        "first_token_ms": _number_or_none(timings.get("first_token")),
        "error": str(error) if error else None,
    }
    want = case.expect.tool
    if error:
        return CaseScore(case, tool_correct=False, args_correct=False, correct=False, **base)
    if want is None:
        ok = not calls
        return CaseScore(case, tool_correct=ok, args_correct=ok, correct=ok, **base)
    index = next((i for i, call in enumerate(calls) if call["name"] == want), None)
    if index is None:
        return CaseScore(case, tool_correct=False, args_correct=False, correct=False, **base)
    call = calls[index]
    args_ok = call["valid"] and args_match(case.expect.args, call["arguments"])
    return CaseScore(case, tool_correct=True, args_correct=args_ok, correct=args_ok, matched_call=index,
                     **base)


# ---------------------------------------------------------------- summary


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(xs) - 1)
    return xs[low] + (xs[high] - xs[low]) * (pos - low)


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _latency(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": percentile(values, 0.50),
        "p90": percentile(values, 0.90),
        "p95": percentile(values, 0.95),
        "max": max(values) if values else None,
    }


def _group(scores: list[CaseScore]) -> dict[str, Any]:
    tool_cases = [s for s in scores if s.case.expects_tool]
    none_cases = [s for s in scores if not s.case.expects_tool]
    return {
        "n": len(scores),
        "accuracy": _rate(sum(s.correct for s in scores), len(scores)),
        "tool_accuracy": _rate(sum(s.tool_correct for s in tool_cases), len(tool_cases)),
        "args_accuracy": _rate(sum(s.args_correct for s in tool_cases), len(tool_cases)),
        "no_tool_accuracy": _rate(sum(s.correct for s in none_cases), len(none_cases)),
    }


def summarize(scores: Iterable[CaseScore]) -> dict[str, Any]:
    """The metrics of a run. Rates are fractions in [0, 1], or None when no case counts toward them."""
    scores = list(scores)
    tool_cases = [s for s in scores if s.case.expects_tool]
    none_cases = [s for s in scores if not s.case.expects_tool]
    all_calls = [c for s in scores for c in s.calls]
    valid_calls = sum(c["valid"] for c in all_calls)
    confusion: dict[str, Counter[str]] = {}
    for s in scores:
        missed = (s.case.expects_tool and not s.tool_correct) or (not s.case.expects_tool and not s.correct)
        if missed:
            got = s.actual_tool or NO_TOOL
            confusion.setdefault(s.case.expect.tool or NO_TOOL, Counter())[got] += 1
    latency: dict[str, Any] = {"total": _latency([s.total_ms for s in scores if s.total_ms is not None])}
    first_tokens = [s.first_token_ms for s in scores if s.first_token_ms is not None]
    if first_tokens:
        latency["first_token"] = _latency(first_tokens)
    headline = _group(scores)
    return {
        "n": len(scores),
        "n_tool_cases": len(tool_cases),
        "n_no_tool_cases": len(none_cases),
        "accuracy": headline["accuracy"],
        "tool_accuracy": headline["tool_accuracy"],
        "args_accuracy": headline["args_accuracy"],
        "schema_valid_rate": valid_calls / len(all_calls) if all_calls else 1.0,
        "no_tool_accuracy": headline["no_tool_accuracy"],
        "counts": {
            "correct": sum(s.correct for s in scores),
            "tool_correct": sum(s.tool_correct for s in tool_cases),
            "args_correct": sum(s.args_correct for s in tool_cases),
            "no_tool_correct": sum(s.correct for s in none_cases),
            "calls": len(all_calls),
            "valid_calls": valid_calls,
            "errors": sum(s.error is not None for s in scores),
        },
        "by_language": {
            lang: _group([s for s in scores if s.case.lang == lang])
            for lang in sorted({s.case.lang for s in scores})
        },
        "by_category": {
            cat: _group([s for s in scores if (s.case.category or UNCATEGORIZED) == cat])
            for cat in sorted({s.case.category or UNCATEGORIZED for s in scores})
        },
        "latency_ms": latency,
        "confusion": {want: dict(sorted(got.items())) for want, got in sorted(confusion.items())},
    }


# ---------------------------------------------------------------- running


@dataclass
class EvalReport:
    scores: list[CaseScore]
    summary: dict[str, Any]
    wall_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cases": [s.to_dict() for s in self.scores],
            "summary": self.summary,
            "wall_seconds": round(self.wall_seconds, 3),
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent, default=str)


RunTurn = Callable[[EvalCase], Awaitable[Mapping[str, Any]]]
Progress = Callable[[int, int, CaseScore], Any]


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
    if report.wall_seconds:
        lines.append(f"wall time        {report.wall_seconds:.1f} s")
    return "\n".join(lines)
