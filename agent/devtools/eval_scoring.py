"""Scoring a turn against its case: which call matches, whether its arguments do (numbers, text and `$any`
alternatives compared the way docs/eval.md says), and the summaries over cases, families, languages and
sessions."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.devtools.eval_cases import ANY_OF, NO_TOOL, UNCATEGORIZED, EvalCase, EvalSession, normalize_text

# Statuses of a call that was made this turn (ran, or waits for the driver's yes or a missing value).
# "cancelled" (the driver said no) is not a call; calls that never reached a plugin are listed apart.
RAN = frozenset({"ok", "failed"})
COUNTED = frozenset({"ok", "failed", "awaiting-confirmation", "asking", "declined"})


# ---------------------------------------------------------------- matching

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


# ---------------------------------------------------------------- sessions

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

