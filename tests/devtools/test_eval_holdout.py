"""Held-out eval set (data/eval_holdout.jsonl): well-formed, disjoint from the main set, fits the tools."""

from __future__ import annotations

import pytest
from helpers.evalsets import ADDED_LATER, DATA, alternatives, assert_args_fit_schemas

from agent.core.config import Config
from agent.devtools.eval_cases import EvalCase, load_cases, normalize_text
from agent.devtools.reference_service import load_catalogue
from agent.plugins.loader import load_registry
from agent.plugins.meals.catalogue import Catalogue
from agent.plugins.vehicle.state import match_name

HOLDOUT = DATA / "eval_holdout.jsonl"
MAIN = DATA / "eval_car.jsonl"


@pytest.fixture(scope="module")
def holdout() -> list[EvalCase]:
    return load_cases(HOLDOUT)


@pytest.fixture(scope="module")
def registry():
    return load_registry(Config())


def test_holdout_loads_with_enough_cases(holdout: list[EvalCase]) -> None:
    assert len(holdout) >= 100
    assert {c.lang for c in holdout} == {"en", "zh"}
    assert sum(not c.expects_tool for c in holdout) >= 20


def test_holdout_ids_unique_and_prefixed(holdout: list[EvalCase]) -> None:
    assert len({c.id for c in holdout}) == len(holdout)
    assert all(c.id.startswith(f"ho-{c.lang}-") for c in holdout)


def test_holdout_texts_not_in_main_set(holdout: list[EvalCase]) -> None:
    main = {normalize_text(c.text) for c in load_cases(MAIN)}
    texts = [normalize_text(c.text) for c in holdout]
    assert len(set(texts)) == len(texts), "duplicate utterances"
    leaked = [c.text for c, t in zip(holdout, texts, strict=True) if t in main]
    assert not leaked, f"also in {MAIN.name}: {leaked}"


def test_holdout_tools_exist_and_categories(holdout: list[EvalCase], registry) -> None:
    for c in holdout:
        if c.expect.tool is None:
            assert c.category == "none", c.id
            continue
        assert c.expect.tool in registry, f"{c.id}: unknown tool {c.expect.tool}"
        want = "vehicle" if registry.get(c.expect.tool).plugin == "vehicle" else "service"
        assert c.category == want, c.id


def test_holdout_covers_every_tool(holdout: list[EvalCase], registry) -> None:
    for tool in (t for t in registry if t.name not in ADDED_LATER):
        assert sum(c.expect.tool == tool.name for c in holdout) >= 3, tool.name


def test_holdout_args_fit_the_tool_schemas(holdout: list[EvalCase], registry) -> None:
    assert_args_fit_schemas(holdout, registry)


def test_holdout_orders_and_contacts_exist(holdout: list[EvalCase]) -> None:
    contacts = Config().vehicle.contacts
    book = [(p.name, [p.name, *p.aliases], p) for p in contacts]
    for c in holdout:
        if c.expect.tool == "order_meal":
            for item in alternatives(c.expect.args["item"]):
                assert Catalogue.from_json(load_catalogue()).best(item), f"{c.id}: {item!r} is not on the menu"
        if c.expect.tool == "call_contact":
            for name in alternatives(c.expect.args["name"]):
                assert match_name(name, book) is not None, f"{c.id}: {name!r} is not in the address book"
