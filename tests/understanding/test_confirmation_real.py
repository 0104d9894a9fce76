"""The dev Qwen as a second opinion on unclear answers to "Shall I order it?": it never turns doubt to yes."""

from __future__ import annotations

import time

import pytest
from helpers.real import require

from agent.core.config import Config
from agent.core.errors import ModelError
from agent.understanding.confirmation import Pending, classify_answer, judge_with_model, second_opinion

pytestmark = pytest.mark.model

ORDER_QUESTION = "A large pepperoni pizza from Luigi's Pizzeria, 89 yuan. Shall I order it?"

# Answers the rules call unclear, chosen to tempt a model into "yes": hedged agreement, mixed answers,
# a yes beside a new request, a double negative, noise.
UNCLEAR = [
    "I guess so", "I think so", "I don't mind", "whatever", "uh-huh", "yeah right", "hmm okay", "maybe",
    "no wait yes", "nah yeah", "don't cancel", "yes, but", "yes navigate home", "yes and also play jazz",
    "yes if it's cheap", "嗯", "都行", "随便", "应该吧", "不，好的", "好的，帮我导航回家",
]


@pytest.fixture(scope="module")
def model():
    from agent.app.wiring import llm_model, load_llm

    config = Config()
    try:
        model_id, path = llm_model(config)
        return load_llm(config, model_id, path)
    except (ModelError, ImportError) as err:
        require(False, f"dev LLM not available ({err}); run `cabin-agent models fetch --profile dev`")


def test_the_model_never_turns_an_unclear_answer_into_yes(model):
    verdicts, started = {}, time.monotonic()
    for text in UNCLEAR:
        rules = classify_answer(text)
        assert rules.kind == "unclear", (text, rules)
        verdict = judge_with_model(model, ORDER_QUESTION, text)
        assert verdict in ("yes", "no", "change", "other")
        verdicts[text] = verdict
        decided = second_opinion(rules, text, verdict, action=Pending.PURCHASE)
        assert decided.kind != "yes", (text, verdict, decided)
    per_call_s = (time.monotonic() - started) / len(UNCLEAR)
    print(f"model verdicts ({per_call_s:.1f} s a call): {verdicts}")
