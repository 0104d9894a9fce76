"""The eval contract: case loading, lenient argument matching, scoring, summary math, and the car eval set."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from helpers.evalsets import ADDED_LATER, DATA, alternatives, assert_args_fit_schemas

from agent.core.config import Config
from agent.devtools.eval_cases import ANY_OF, EvalCase, EvalSetError, Expectation, load_cases, normalize_text
from agent.devtools.eval_scoring import args_match, percentile, score_case, summarize
from agent.devtools.evaluation import format_report, run_eval
from agent.devtools.reference_service import load_catalogue
from agent.plugins.loader import load_registry
from agent.plugins.meals.catalogue import Catalogue
from agent.plugins.vehicle.state import match_name

EVAL_SET = DATA / "eval_car.jsonl"
TIMEOUT_S = 5


def case(tool: str | None, args: dict | None = None, *, id: str = "c", lang: str = "en",
         category: str | None = None) -> EvalCase:
    return EvalCase(id=id, text="...", expect=Expectation(tool, args or {}), lang=lang, category=category)


def outcome(*calls: tuple, total: float | None = 100.0, first_token: float | None = None) -> dict:
    """A `say --json`-shaped outcome; each call is (name, arguments) or (name, arguments, valid)."""
    timings = {} if total is None else {"total": total}
    if first_token is not None:
        timings["first_token"] = first_token
    return {
        "text": "...",
        "tool_calls": [{"name": c[0], "arguments": c[1], "result": {}, "valid": c[2] if len(c) > 2 else True}
                       for c in calls],
        "reply": "ok",
        "timings_ms": timings,
    }


# ---------------------------------------------------------------- args_match


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ({"temperature_c": 21}, {"temperature_c": 21.0}),
        ({"temperature_c": 21}, {"temperature_c": "21"}),
        ({"temperature_c": 21.5}, {"temperature_c": " 21.50 "}),
        ({"temperature_c": "21"}, {"temperature_c": 21}),
        ({"destination": "home"}, {"destination": "  HOME "}),
        ({"destination": "home"}, {"destination": "home."}),
        ({"item": "pepperoni"}, {"item": "Large Pepperoni   Pizza"}),
        ({"item": "iced mocha"}, {"item": "iced\tmocha"}),
        ({"restaurant": "luigi's"}, {"restaurant": "Luigi’s Pizzeria"}),  # curly apostrophe from a model
        ({"item": "牛肉面"}, {"item": "一碗牛肉面。"}),
        ({"item": "ＬＡＴＴＥ"}, {"item": "latte"}),  # full-width letters from a Chinese IME (NFKC)
        ({"ac": True}, {"ac": True, "zone": "all"}),
        ({}, {"anything": 1}),
        ({"zone": None}, {"temperature_c": 20}),  # expected null: absent is fine
        ({"tags": ["jazz"]}, {"tags": ["Smooth Jazz", "live"]}),
        ({"opts": {"kind": "radio"}}, {"opts": {"kind": "Radio", "x": 1}}),
        ({"name": {ANY_OF: ["Mom", "妈妈"]}}, {"name": "妈妈"}),
        ({"name": {ANY_OF: ["Mom", "妈妈"]}}, {"name": "mom"}),
    ],
)
def test_args_match_accepts(expected: dict, actual: dict) -> None:
    assert args_match(expected, actual)


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ({"temperature_c": 21}, {"temperature_c": 22}),
        ({"temperature_c": 21}, {}),  # a listed arg must be present
        ({"temperature_c": 21}, {"temperature_c": "twenty one"}),
        ({"temperature_c": 1}, {"temperature_c": True}),  # booleans are not numbers
        ({"temperature_c": "2"}, {"temperature_c": 21}),  # numbers never match as substrings
        ({"ac": True}, {"ac": 1}),
        ({"ac": True}, {"ac": "true"}),
        ({"ac": False}, {"ac": None}),
        ({"item": "pepperoni pizza"}, {"item": "pepperoni"}),  # actual must contain expected, not the reverse
        ({"item": "latte"}, {"item": ["latte"]}),
        ({"zone": None}, {"zone": "driver"}),
        ({"tags": ["jazz", "rock"]}, {"tags": ["jazz"]}),
        ({"tags": ["jazz"]}, {"tags": "jazz"}),
        ({"opts": {"kind": "radio"}}, {"opts": {"kind": "music"}}),
        ({"name": {ANY_OF: ["Mom", "妈妈"]}}, {"name": "Sarah"}),
        ({"destination": "home"}, "home"),  # arguments that are not an object
        ({"destination": "home"}, None),
    ],
)
def test_args_match_rejects(expected: dict, actual: object) -> None:
    assert not args_match(expected, actual)


def test_normalize_text_keeps_inner_punctuation() -> None:
    assert normalize_text("  «Luigi's  Pizzeria!» ") == "luigi's pizzeria"
    assert normalize_text("《青花瓷》") == "青花瓷"
    assert normalize_text("?!") == ""


# ---------------------------------------------------------------- score_case


def test_right_tool_and_args() -> None:
    want = case("set_climate", {"temperature_c": 21})
    s = score_case(want, outcome(("set_climate", {"temperature_c": 21.0})))
    assert (s.tool_correct, s.args_correct, s.correct) == (True, True, True)
    assert s.actual_tool == "set_climate" and s.total_ms == 100.0


def test_right_tool_wrong_args() -> None:
    want = case("set_climate", {"temperature_c": 21})
    s = score_case(want, outcome(("set_climate", {"temperature_c": 24})))
    assert (s.tool_correct, s.args_correct, s.correct) == (True, False, False)


def test_expected_tool_found_after_another_call() -> None:
    s = score_case(case("order_meal", {"item": "latte"}),
                   outcome(("play_media", {"query": "latte"}), ("order_meal", {"item": "Latte"})))
    assert s.tool_correct and s.args_correct and s.matched_call == 1


def test_first_matching_call_is_the_one_scored() -> None:
    s = score_case(case("set_climate", {"temperature_c": 21}),
                   outcome(("set_climate", {"temperature_c": 25}), ("set_climate", {"temperature_c": 21})))
    assert s.tool_correct and not s.args_correct and s.matched_call == 0


def test_invalid_call_is_never_args_correct() -> None:
    s = score_case(case("set_climate", {"temperature_c": 21}),
                   outcome(("set_climate", {"temperature_c": 21, "colour": "red"}, False)))
    assert s.tool_correct and not s.args_correct


def test_wrong_tool_and_no_call() -> None:
    want = case("order_meal", {"item": "mocha"})
    wrong = score_case(want, outcome(("play_media", {"query": "iced mocha"})))
    assert (wrong.tool_correct, wrong.correct, wrong.actual_tool) == (False, False, "play_media")
    silent = score_case(case("order_meal", {"item": "mocha"}), outcome())
    assert not silent.tool_correct and silent.actual_tool is None


def test_no_tool_case() -> None:
    assert score_case(case(None), outcome()).correct
    s = score_case(case(None), outcome(("play_media", {"query": "a joke"})))
    assert not s.correct and s.actual_tool == "play_media"


def test_arguments_as_json_string_are_decoded() -> None:
    out = {"tool_calls": [{"name": "navigate_to", "arguments": '{"destination": "Home"}'}], "timings_ms": {}}
    s = score_case(case("navigate_to", {"destination": "home"}), out)
    assert s.correct and s.calls[0]["valid"] is True  # no "valid" reported: the registry validated it


def test_outcome_error_is_a_failed_case() -> None:
    s = score_case(case(None), {"error": "llm crashed"})
    assert not s.correct and s.error == "llm crashed"


# ---------------------------------------------------------------- summarize


def _six_scores() -> list:
    """Hand-built run: 4 tool cases (1 right, 2 wrong args, 1 wrong tool), 2 no-tool cases (1 right)."""
    return [
        score_case(case("set_climate", {"temperature_c": 21}, id="a", lang="en", category="vehicle"),
                   outcome(("set_climate", {"temperature_c": 21}), total=100, first_token=10)),
        score_case(case("navigate_to", {"destination": "home"}, id="b", lang="zh", category="vehicle"),
                   outcome(("navigate_to", {"destination": "家"}), total=200, first_token=20)),
        score_case(case("order_meal", {"item": "latte"}, id="c", lang="en", category="service"),
                   outcome(("order_meal", {"item": "latte"}, False), total=300)),
        score_case(case("order_meal", {"item": "mocha"}, id="d", lang="en", category="service"),
                   outcome(("play_media", {"query": "mocha"}), total=400)),
        score_case(case(None, id="e", lang="zh", category="none"), outcome(total=1000)),
        score_case(case(None, id="f", lang="zh", category="none"),
                   outcome(("set_climate", {"temperature_c": 22}), total=None)),
    ]


def test_summary_math() -> None:
    s = summarize(_six_scores())
    assert s["n"] == 6 and s["n_tool_cases"] == 4 and s["n_no_tool_cases"] == 2
    # a: right; b: tool right, "家" does not contain "home"; c: tool right, call invalid; d: wrong tool
    assert s["tool_accuracy"] == pytest.approx(3 / 4)
    assert s["args_accuracy"] == pytest.approx(1 / 4)
    assert s["no_tool_accuracy"] == pytest.approx(1 / 2)
    assert s["accuracy"] == pytest.approx(2 / 6)  # a and e
    assert s["schema_valid_rate"] == pytest.approx(4 / 5)  # 5 calls, c's is invalid
    assert s["counts"] == {"correct": 2, "tool_correct": 3, "args_correct": 1, "no_tool_correct": 1,
                           "calls": 5, "valid_calls": 4, "errors": 0}
    assert s["by_language"]["en"] == {"n": 3, "accuracy": pytest.approx(1 / 3),
                                      "tool_accuracy": pytest.approx(2 / 3),
                                      "args_accuracy": pytest.approx(1 / 3), "no_tool_accuracy": None}
    assert s["by_language"]["zh"]["accuracy"] == pytest.approx(1 / 3)
    assert s["by_category"]["vehicle"]["accuracy"] == 0.5
    assert s["by_category"]["service"]["tool_accuracy"] == 0.5
    assert s["by_category"]["none"]["no_tool_accuracy"] == 0.5
    # totals 100, 200, 300, 400, 1000 (f has none): linear interpolation between ranks
    total = s["latency_ms"]["total"]
    assert total == {"n": 5, "p50": 300, "p90": pytest.approx(760), "p95": pytest.approx(880), "max": 1000}
    assert s["latency_ms"]["first_token"] == {"n": 2, "p50": 15, "p90": pytest.approx(19),
                                              "p95": pytest.approx(19.5), "max": 20}
    assert s["confusion"] == {"order_meal": {"play_media": 1}, "none": {"set_climate": 1}}
    json.dumps(s)  # the summary must serialize as-is for --json


def test_summary_edge_cases() -> None:
    empty = summarize([])
    assert empty["n"] == 0 and empty["tool_accuracy"] is None and empty["schema_valid_rate"] == 1.0
    assert empty["latency_ms"] == {"total": {"n": 0, "p50": None, "p90": None, "p95": None, "max": None}}
    only_none = summarize([score_case(case(None), outcome())])
    assert only_none["schema_valid_rate"] == 1.0 and only_none["no_tool_accuracy"] == 1.0
    assert only_none["tool_accuracy"] is None and "first_token" not in only_none["latency_ms"]
    assert only_none["by_category"] == {"uncategorized": {"n": 1, "accuracy": 1.0, "tool_accuracy": None,
                                                          "args_accuracy": None, "no_tool_accuracy": 1.0}}


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7], 0.95) == 7
    assert percentile([4, 1, 3, 2], 0.5) == 2.5


# ---------------------------------------------------------------- run_eval and the report


async def test_run_eval_records_errors_and_keeps_going() -> None:
    cases = [case("call_contact", {"name": "mom"}, id="ok"), case(None, id="boom"), case(None, id="odd")]
    seen: list[tuple[int, int, str]] = []

    async def run_turn(c: EvalCase) -> dict:
        if c.id == "boom":
            raise RuntimeError("model fell over")
        if c.id == "odd":
            return "not a dict"  # type: ignore[return-value]
        return outcome(("call_contact", {"name": "Mom"}), total=None)

    def progress(done: int, total: int, s) -> None:
        seen.append((done, total, s.case.id))

    report = await asyncio.wait_for(run_eval(cases, run_turn, progress=progress), TIMEOUT_S)
    ok, boom, odd = report.scores
    assert ok.correct and ok.total_ms is not None  # no timings reported: wall time measured instead
    assert not boom.correct and boom.error == "RuntimeError: model fell over" and boom.total_ms is None
    assert not odd.correct and "not an outcome" in odd.error
    assert seen == [(1, 3, "ok"), (2, 3, "boom"), (3, 3, "odd")]
    assert report.summary["counts"]["errors"] == 2

    data = json.loads(report.to_json())
    assert set(data) >= {"cases", "summary"}
    assert data["cases"][1]["error"] == "RuntimeError: model fell over"
    assert data["cases"][0]["expected"] == {"tool": "call_contact", "args": {"name": "mom"}}
    assert data["cases"][0]["actual"] == {"tool": "call_contact", "args": {"name": "Mom"}}


async def test_run_eval_timeout_and_async_progress() -> None:
    calls = []

    async def slow(c: EvalCase) -> dict:
        await asyncio.sleep(10)
        return outcome()

    async def progress(done: int, total: int, s) -> None:
        calls.append(done)

    report = await asyncio.wait_for(run_eval([case(None)], slow, progress, timeout_s=0.05), TIMEOUT_S)
    assert report.scores[0].error == "timed out after 0.05 s" and calls == [1]


async def test_run_eval_lets_cancellation_through() -> None:
    async def cancelled(c: EvalCase) -> dict:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run_eval([case(None)], cancelled), TIMEOUT_S)


def test_format_report() -> None:
    from agent.devtools.evaluation import EvalReport

    scores = _six_scores()
    text = format_report(EvalReport(scores, summarize(scores)), verbose=True)
    lines = text.splitlines()
    assert lines[0].startswith("✓ a") and "set_climate(temperature_c=21)" in lines[0] and "100 ms" in lines[0]
    assert any(line.startswith("✗ c") and "[invalid]" in line and "(args)" in line for line in lines)
    assert any(line.startswith("✗ d") and "→  play_media" in line for line in lines)
    assert "    said: ..." in lines
    assert "tool accuracy    75.0% (3/4)" in text
    assert "schema valid     80.0% (4/5 calls)" in text
    assert "latency          p50 300  p90 760  p95 880  max 1000 ms (n=5)" in text
    assert "  order_meal → play_media ×1" in text


# ---------------------------------------------------------------- loader


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = '{"id": "x", "text": "call mom", "expect": {"tool": "call_contact", "args": {"name": "Mom"}}}'


def test_loader_minimal_lines_and_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD, "", '{"text": "给妈妈打电话", "expect": {"tool": null}}')
    first, second = load_cases(path)
    assert first.expect == Expectation("call_contact", {"name": "Mom"})
    assert (first.lang, first.line) == ("en", 1)
    assert (second.id, second.lang, second.expect.tool, second.category) == ("line-3", "zh", None, None)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"text": "call mom", "expect": {"tool": "call_contact"}', "invalid JSON"),
        ('{"expect": {"tool": null}}', '"text" is missing'),
        ('{"text": "  ", "expect": {"tool": null}}', '"text" is missing'),
        ('{"text": "hi"}', '"expect" is missing'),
        ('{"text": "hi", "expect": {"args": {}}}', "expect.tool is missing"),
        ('{"text": "hi", "expect": {"tool": null}, "expected": 1}', "unknown key(s) expected"),
        ('{"text": "hi", "expect": {"tool": null, "arg": {}}}', "unknown key(s) in expect: arg"),
        ('{"text": "hi", "expect": {"tool": null, "args": {"a": 1}}}', "expect.tool is null"),
        ('{"text": "hi", "expect": {"tool": "x", "args": []}}', "expect.args must be an object"),
        ('{"text": "hi", "expect": {"tool": "x", "args": {"item": " "}}}', "expect.args.item: an empty"),
        ('{"text": "hi", "expect": {"tool": "x", "args": {"n": {"$any": []}}}}', "non-empty list"),
        ('{"text": "hi", "expect": {"tool": 3}}', "expect.tool must be a tool name"),
        ('["text", "expect"]', "must be a JSON object"),
        ('{"id": "x", "text": "hi", "expect": {"tool": null}}', "duplicate id 'x' (first on line 1)"),
    ],
)
def test_loader_errors_name_the_line(tmp_path: Path, bad_line: str, message: str) -> None:
    path = _write(tmp_path, GOOD, bad_line)
    with pytest.raises(EvalSetError) as err:
        load_cases(path)
    assert f"{path}:2: " in str(err.value) and message in str(err.value)
    assert err.value.context["line"] == 2


def test_loader_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match="not found"):
        load_cases(tmp_path / "nope.jsonl")
    with pytest.raises(EvalSetError, match="no cases"):
        load_cases(_write(tmp_path, "", "  "))


# ---------------------------------------------------------------- the car eval set


@pytest.fixture(scope="module")
def eval_set() -> list[EvalCase]:
    return load_cases(EVAL_SET)


@pytest.fixture(scope="module")
def registry():
    return load_registry(Config())


def test_eval_set_size_and_balance(eval_set: list[EvalCase]) -> None:
    langs = Counter(c.lang for c in eval_set)
    assert len(eval_set) >= 150
    assert set(langs) == {"en", "zh"}
    assert 0.45 <= langs["en"] / len(eval_set) <= 0.65
    assert sum(not c.expects_tool for c in eval_set) >= 30
    assert len({c.text for c in eval_set}) == len(eval_set), "duplicate utterances"


def test_eval_set_ids_and_labels(eval_set: list[EvalCase], registry) -> None:
    assert len({c.id for c in eval_set}) == len(eval_set)
    for c in eval_set:
        assert c.id.startswith(f"{c.lang}-"), c.id
        if c.expect.tool is None:
            assert c.category == "none", c.id
        else:
            want = "vehicle" if registry.get(c.expect.tool).plugin == "vehicle" else "service"
            assert c.category == want, c.id


def test_eval_set_covers_every_tool_in_both_languages(eval_set: list[EvalCase], registry) -> None:
    for tool in (t for t in registry if t.name not in ADDED_LATER):
        for lang in ("en", "zh"):
            n = sum(c.expect.tool == tool.name and c.lang == lang for c in eval_set)
            assert n >= 3, f"{tool.name} has {n} {lang} cases"
    for lang in ("en", "zh"):
        assert sum(c.expect.tool is None and c.lang == lang for c in eval_set) >= 15


def test_eval_set_args_fit_the_tool_schemas(eval_set: list[EvalCase], registry) -> None:
    assert_args_fit_schemas(eval_set, registry)


def test_eval_set_orders_are_on_the_menu(eval_set: list[EvalCase]) -> None:
    """Every expected item, in every language given, is something the meals plugin can actually order."""
    for c in eval_set:
        if c.expect.tool == "order_meal":
            for item in alternatives(c.expect.args["item"]):
                assert Catalogue.from_json(load_catalogue()).best(item), f"{c.id}: {item!r} is not on the menu"


def test_eval_set_contacts_exist(eval_set: list[EvalCase]) -> None:
    contacts = Config().vehicle.contacts
    for c in eval_set:
        if c.expect.tool == "call_contact":
            for name in alternatives(c.expect.args["name"]):
                found = match_name(name, [(p.name, [p.name, *p.aliases], p) for p in contacts])
                assert found is not None, f"{c.id}: {name!r} is not in the address book"
