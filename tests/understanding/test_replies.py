"""A spoken answer never claims an action that no tool took: the check the turn engine puts on every sentence."""

from __future__ import annotations

import pytest

from agent.understanding.replies import LINES, claims_action


@pytest.mark.parametrize("sentence", [
    "Sure, I'll order the pizza for you.",
    "I have set the temperature to 22.",
    "I've gone ahead and placed your order.",
    "Ordering now.",
    "Okay, calling Mom.",
    "The temperature has been set to 21 degrees.",
    "Your order is placed and on its way.",
    "I'm navigating you to the airport.",
    "已为您下单。",
    "温度已经调到22度了。",
    "好的，正在为您导航。",
    "请稍等，我正在打开收音机。",
    "马上为您拨打电话。",
])
def test_a_sentence_that_reports_an_action_is_caught(sentence: str) -> None:
    assert claims_action(sentence)


@pytest.mark.parametrize("sentence", [
    "The capital of France is Paris.",
    "Sorry, I can't open the sunroof.",
    "I can start navigation to the airport if you like.",
    "I can order something for you.",
    "Want me to order you a coffee?",
    "Why did the car get a flat? There was a fork in the road.",
    "抱歉，我打不开后备箱。",
    "需要的话我可以导航去机场。",
    "我可以帮您打开导航。",
    "为什么汽车从不迷路？因为它总跟着导航走。",
])
def test_answers_offers_and_refusals_are_not_claims(sentence: str) -> None:
    assert not claims_action(sentence)


def test_the_cars_own_lines_claim_nothing_they_should_not() -> None:
    # The fixed lines are spoken without a tool; none of them may say that something was done.
    for lines in LINES.values():
        for key, text in lines.items():
            if key != "done":
                assert not claims_action(text), (key, text)
