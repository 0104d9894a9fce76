"""The eval set format: a case is one JSON line `{"text": ..., "expect": {"tool": name | null, "args": ...}}`;
a session is one line `{"id": ..., "turns": [{"text", "expect"}, ...]}` whose turns run in order in one
conversation. Reading a set checks every line and names the file and line of what is wrong (docs/eval.md).
Keep names and JSON keys here stable: reports are compared across runs.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.core.errors import CabinError

CASE_KEYS = frozenset({"id", "lang", "text", "expect", "category", "note", "family", "style"})
SESSION_KEYS = frozenset({"id", "lang", "turns", "category", "note", "family"})
TURN_KEYS = frozenset({"text", "expect", "note"})
EXPECT_KEYS = frozenset({"tool", "args", "asks", "done"})
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


# ---------------------------------------------------------------- text as a case writes it

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

