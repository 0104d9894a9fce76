"""The eval sets under tests/data/eval: large enough, well-formed, fitting the tools, the catalogue and the
address book, and the held-out split apart from the development set."""

from __future__ import annotations

import pytest
from helpers.evalsets import EVAL_DATA, alternatives

from agent.core.config import Config
from agent.devtools.eval_cases import TOOL_FAMILY, EvalCase, load_eval, normalize_text
from agent.devtools.reference_service import load_catalogue
from agent.plugins.loader import load_registry
from agent.plugins.meals.catalogue import Catalogue
from agent.plugins.vehicle.state import match_name

FAMILIES = {"climate", "navigation", "media", "phone", "meals", "deliveries", "none"}


def cases_of(*names: str) -> list[EvalCase]:
    out: list[EvalCase] = []
    for name in names:
        cases, sessions = load_eval(EVAL_DATA / f"{name}.jsonl")
        out += cases + [t for s in sessions for t in s.turns]
    return out


@pytest.fixture(scope="module")
def registry():
    return load_registry(Config())


def test_sizes_the_issue_asks_for():
    dev, dev_sessions = [], []
    for name in ("dev_en", "dev_zh", "dev_en_sessions", "dev_zh_sessions"):
        cases, sessions = load_eval(EVAL_DATA / f"{name}.jsonl")
        dev += cases
        dev_sessions += sessions
    assert len(dev) >= 600 and len(dev_sessions) >= 60
    assert {c.lang for c in dev} == {"en", "zh"}
    held, held_sessions = [], []
    for name in ("holdout_en", "holdout_zh", "holdout_sessions"):
        cases, sessions = load_eval(EVAL_DATA / f"{name}.jsonl")
        held += cases
        held_sessions += sessions
    assert len(held) >= 400 and len(held_sessions) >= 40
    for cases in (dev, held):
        for lang in ("en", "zh"):
            mine = [c for c in cases if c.lang == lang]
            assert sum(not c.expects_tool for c in mine) >= 0.2 * len(mine), lang
            for family in FAMILIES - {"none"}:
                assert sum(c.family_name == family for c in mine) >= 15, (lang, family)


def _first(value):
    """An expected value with every {"$any": [...]} replaced by its first alternative (for a schema check)."""
    if isinstance(value, dict):
        if set(value) == {"$any"}:
            return _first(value["$any"][0])
        return {k: _first(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_first(v) for v in value]
    return value


def test_every_case_fits_the_tools_and_its_family(registry):
    from jsonschema import Draft202012Validator

    cases = cases_of("dev_en", "dev_zh", "dev_en_sessions", "dev_zh_sessions", "holdout_en", "holdout_zh",
                     "holdout_sessions")
    for c in cases:
        if c.expect.tool is None:
            continue
        assert c.expect.tool in registry, f"{c.id}: unknown tool {c.expect.tool}"
        schema = {k: v for k, v in registry.get(c.expect.tool).parameters.items() if k != "required"}
        for key, value in c.expect.args.items():
            assert key in schema["properties"], f"{c.id}: {c.expect.tool} has no argument {key!r}"
            for alt in alternatives(value):
                errors = [e.message for e in Draft202012Validator(schema).iter_errors({key: _first(alt)})]
                assert not errors, f"{c.id}: {key}={alt!r}: {errors}"
    for c in cases:
        assert c.family_name in FAMILIES, c.id
        if c.expect.tool is not None:
            assert TOOL_FAMILY[c.expect.tool] == c.family_name or c.id.count("sess"), c.id


def test_orders_name_catalogue_items_and_calls_name_contacts():
    catalogue = Catalogue.from_json(load_catalogue())
    book = [(p.name, [p.name, *p.aliases], p) for p in Config().vehicle.contacts]
    cases = cases_of("dev_en", "dev_zh", "dev_en_sessions", "dev_zh_sessions", "holdout_en", "holdout_zh",
                     "holdout_sessions")
    for c in cases:
        if c.expect.tool == "order_meal":
            lines = [c.expect.args] + list(c.expect.args.get("more_items", []))
            for line in lines:
                for item in alternatives(line.get("item")) if line.get("item") else []:
                    assert catalogue.best(item), f"{c.id}: {item!r} is not in the catalogue"
        if c.expect.tool == "call_contact" and c.expect.args.get("name"):
            for name in alternatives(c.expect.args["name"]):
                assert match_name(name, book) is not None, f"{c.id}: {name!r} is not in the address book"


def test_the_development_singles_share_no_utterance_with_the_held_out_split():
    # Two writers who never saw each other's sets both wrote "take me to work" and 打开收音机: short, common
    # phrasings meet by chance. Those were taken out of the development singles (the held-out split is never
    # edited), so that nothing tuned on is also measured on; session turns ("yes", 好的) may still meet.
    held = {normalize_text(c.text) for c in cases_of("holdout_en", "holdout_zh", "holdout_sessions")}
    dev, _ = load_eval(EVAL_DATA / "dev_en.jsonl")
    dev_zh, _ = load_eval(EVAL_DATA / "dev_zh.jsonl")
    same = [c.text for c in dev + dev_zh if normalize_text(c.text) in held]
    assert not same, same
