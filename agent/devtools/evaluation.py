"""Scoring turns against expected tool calls: the contract `cabin-agent eval`, benchmarks and test sets use.

A case is one JSON line `{"text": ..., "expect": {"tool": name | null, "args": {...}}}`; a session is one line
`{"id": ..., "turns": [{"text", "expect"}, ...]}` whose turns run in order in one conversation. Matching rules and
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

from agent.core.errors import CabinError

CASE_KEYS = frozenset({"id", "lang", "text", "expect", "category", "note", "family", "style"})
SESSION_KEYS = frozenset({"id", "lang", "turns", "category", "note", "family"})
TURN_KEYS = frozenset({"text", "expect", "note"})
EXPECT_KEYS = frozenset({"tool", "args", "asks", "done"})
# Statuses of a call that was made this turn (ran, or waits for the driver's yes or a missing value).
# "cancelled" (the driver said no) is not a call; calls that never reached a plugin are listed apart.
RAN = frozenset({"ok", "failed"})
COUNTED = frozenset({"ok", "failed", "awaiting-confirmation", "asking", "declined"})
# Which family a tool belongs to, for per-family reports of sets that do not label it.
TOOL_FAMILY = {
    "set_climate": "climate", "navigate_to": "navigation", "play_media": "media", "media_control": "media",
    "call_contact": "phone", "search_restaurants": "meals", "order_meal": "meals", "repeat_last_order": "meals",
    "order_status": "meals", "cancel_order": "meals", "list_deliveries": "deliveries",
    "track_package": "deliveries", "reschedule_delivery": "deliveries", "redirect_delivery": "deliveries",
    "hold_at_locker": "deliveries",
}
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
    asks: bool | None = None  # True: the car must ask for a missing value; None: either way
    done: bool = False  # True: the tool must have run this turn (after the driver's yes)


@dataclass(frozen=True)
class EvalCase:
    id: str
    text: str
    expect: Expectation
    lang: str = "en"
    category: str | None = None
    note: str | None = None
    line: int = 0  # 1-based line in the source file, 0 when built in code
    family: str | None = None
    style: str | None = None

    @property
    def expects_tool(self) -> bool:
        return self.expect.tool is not None

    @property
    def family_name(self) -> str:
        """The labelled family, else the expected tool's, else "none"."""
        if self.family:
            return self.family
        return TOOL_FAMILY.get(self.expect.tool or "", "other") if self.expect.tool else "none"


@dataclass(frozen=True)
class EvalSession:
    """Turns that run in order in one conversation, from a fresh car."""

    id: str
    turns: tuple[EvalCase, ...]
    lang: str = "en"
    family: str | None = None
    note: str | None = None
    line: int = 0


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
    asks, done = expect.get("asks"), expect.get("done", False)
    if asks is not None and not isinstance(asks, bool):
        raise ValueError(f"expect.asks must be true or false (got {asks!r})")
    if not isinstance(done, bool):
        raise ValueError(f"expect.done must be true or false (got {done!r})")
    if tool is None and (asks or done):
        raise ValueError("expect.asks/done need a tool (what is asked for, or what ran)")
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
    labels = {}
    for key in ("family", "style"):
        value = obj.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f'"{key}" must be a non-empty string (got {value!r})')
        labels[key] = value
    return EvalCase(
        id=case_id, text=text, expect=Expectation(tool, dict(args), asks=asks, done=done),
        lang=lang, category=category, note=note, line=line, **labels,
    )


def parse_session(obj: dict[str, Any], line: int = 0) -> EvalSession:
    """One session from its JSON object; raises ValueError naming the turn that is wrong."""
    unknown = sorted(set(obj) - SESSION_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(SESSION_KEYS))})")
    session_id = obj.get("id")
    if not isinstance(session_id, str) or not session_id.strip():
        raise ValueError('a session needs an "id"')
    turns = obj.get("turns")
    if not isinstance(turns, list) or not turns:
        raise ValueError('"turns" must be a non-empty list')
    lang = obj.get("lang")
    parsed = []
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise ValueError(f"turn {i}: must be an object")
        extra = sorted(set(turn) - TURN_KEYS)
        if extra:
            raise ValueError(f"turn {i}: unknown key(s) {', '.join(extra)} (allowed: expect, note, text)")
        try:
            parsed.append(parse_case({**turn, "id": f"{session_id}#{i}", **({"lang": lang} if lang else {}),
                                      **({"family": obj["family"]} if obj.get("family") else {})}, line=line))
        except ValueError as err:
            raise ValueError(f"turn {i}: {err}") from None
    return EvalSession(id=session_id, turns=tuple(parsed), lang=lang or parsed[0].lang,
                       family=obj.get("family"), note=obj.get("note"), line=line)


def load_cases(path: str | Path) -> list[EvalCase]:
    """Read a JSONL set of single-turn cases (see load_eval for sets that hold sessions too)."""
    cases, sessions = load_eval(path)
    if sessions:
        raise EvalSetError(f"{path}: holds sessions; use load_eval", path=str(path))
    return cases


def load_eval(path: str | Path) -> tuple[list[EvalCase], list[EvalSession]]:
    """Read a JSONL eval set of cases and sessions (a line with "turns" is a session).

    Blank lines are skipped; any bad line raises EvalSetError naming `path:line`.
    """
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise EvalSetError(f"{path}: eval set not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise EvalSetError(f"{path}: cannot be read ({err})", path=str(path)) from err
    cases: list[EvalCase] = []
    sessions: list[EvalSession] = []
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
            item: EvalCase | EvalSession = (
                parse_session(obj, line=number) if isinstance(obj, dict) and "turns" in obj
                else parse_case(obj, line=number)
            )
        except ValueError as err:
            raise EvalSetError(f"{path}:{number}: {err}", path=str(path), line=number) from None
        if item.id in first_line:
            first = first_line[item.id]
            raise EvalSetError(f"{path}:{number}: duplicate id {item.id!r} (first on line {first})",
                               path=str(path), line=number)
        first_line[item.id] = number
        (sessions if isinstance(item, EvalSession) else cases).append(item)  # type: ignore[arg-type]
    if not cases and not sessions:
        raise EvalSetError(f"{path}: no cases", path=str(path))
    return cases, sessions


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
        if any(isinstance(e, dict) and ANY_OF not in e for e in expected) and len(actual) != len(expected):
            return False  # order lines: an extra or a missing line is a different order
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
    decision: dict[str, Any] | None = None  # what the model weighed (labels and probabilities), when reported

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
            **({"decision": self.decision} if self.decision else {}),
        }


def _number_or_none(value: Any) -> float | None:
    number = _as_number(value) if not isinstance(value, str) else None
    return number if number is not None and math.isfinite(number) else None


def _normalize_calls(raw: Any) -> list[dict[str, Any]]:
    """Calls as {name, arguments, valid, status, needs_confirmation}; JSON-string arguments are decoded.

    Calls the driver turned down (status "cancelled") are not calls: nothing was done or is waiting.
    """
    calls: list[dict[str, Any]] = []
    for item in raw or []:
        if not isinstance(item, Mapping):
            calls.append({"name": None, "arguments": None, "valid": False, "status": "ok",
                          "needs_confirmation": False})
            continue
        status = item.get("status", "ok")
        if status not in COUNTED:
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
        calls.append({"name": name, "arguments": arguments, "valid": valid is True, "status": status,
                      "needs_confirmation": item.get("needs_confirmation") is True})
    return calls


def score_case(case: EvalCase, outcome: Mapping[str, Any]) -> CaseScore:
    """Score one turn's outcome (the `cabin-agent say --json` object) against its case.

    Expecting a tool: tool-correct when any call has that name (the first such call is scored), args-correct
    when that call is valid, its args match, it asked for a missing value exactly when the case says so, it ran
    when the case says `done`, and a call that needs the driver's yes did not run without one. Expecting no
    tool: correct when there are no calls.
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
        "decision": outcome.get("decision") if isinstance(outcome.get("decision"), Mapping) else None,
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
    ran = call["status"] in RAN
    asked = call["status"] == "asking"
    behaved = (
        (case.expect.asks is None or case.expect.asks == asked)
        and (ran if case.expect.done else not (ran and call["needs_confirmation"]))
    )
    args_ok = call["valid"] and behaved and args_match(case.expect.args, call["arguments"])
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
        "by_family": {
            fam: _group([s for s in scores if s.case.family_name == fam])
            for fam in sorted({s.case.family_name for s in scores})
        },
        "by_family_language": {
            f"{fam}/{lang}": _group([s for s in scores if s.case.family_name == fam and s.case.lang == lang])
            for fam, lang in sorted({(s.case.family_name, s.case.lang) for s in scores})
        },
        "latency_ms": latency,
        "confusion": {want: dict(sorted(got.items())) for want, got in sorted(confusion.items())},
    }


# ---------------------------------------------------------------- running


@dataclass
class SessionScore:
    session: EvalSession
    turns: list[CaseScore]

    @property
    def correct(self) -> bool:
        return all(t.correct for t in self.turns)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.session.id, "lang": self.session.lang, "family": self.session.family,
                "correct": self.correct, "turns": [t.to_dict() for t in self.turns]}


def after_refusal(score: SessionScore) -> list[CaseScore]:
    """Turns asking for a tool that come after a turn the car had to answer without one (a refused, misheard
    or unsupported request, a question): the requests one refusal must not poison."""
    out, refused = [], False
    for turn in score.turns:
        if refused and turn.case.expects_tool:
            out.append(turn)
        refused = refused or not turn.case.expects_tool
    return out


def summarize_sessions(scores: Sequence[SessionScore]) -> dict[str, Any]:
    """Turn-level metrics over every session turn, and how whole sessions and post-refusal turns went."""
    turns = [t for s in scores for t in s.turns]
    later = [t for s in scores for t in after_refusal(s)]
    return {
        "n_sessions": len(scores),
        "n_turns": len(turns),
        "turn_accuracy": _rate(sum(t.correct for t in turns), len(turns)),
        "sessions_correct": _rate(sum(s.correct for s in scores), len(scores)),
        "after_refusal": {"n": len(later), "accuracy": _rate(sum(t.correct for t in later), len(later))},
        "by_language": {
            lang: {
                "n_sessions": len(group),
                "turn_accuracy": _rate(sum(t.correct for s in group for t in s.turns),
                                       sum(len(s.turns) for s in group)),
                "sessions_correct": _rate(sum(s.correct for s in group), len(group)),
                "after_refusal": _rate(sum(t.correct for s in group for t in after_refusal(s)),
                                       sum(len(after_refusal(s)) for s in group)),
            }
            for lang in sorted({s.session.lang for s in scores})
            for group in [[s for s in scores if s.session.lang == lang]]
        },
        "turns": summarize(turns),
    }


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
