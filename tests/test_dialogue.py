"""Decisions taken without the model: which language the driver spoke, and yes/no to "Shall I order it?"."""

from __future__ import annotations

import pytest

from agent.dialogue import classify_confirmation, detect_language


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("set the temperature to 21 degrees", "en"),
        ("把温度调到二十二度", "zh"),
        ("导航到 Starbucks", "zh"),  # mixed: Chinese characters decide
        ("play 周杰伦", "zh"),
        ("OK", "en"),
    ],
)
def test_the_language_is_the_one_the_driver_spoke(text, language):
    assert detect_language(text) == language


def test_without_words_the_configured_language_is_kept():
    assert detect_language("21", default="zh") == "zh"
    assert detect_language("", default="zh") == "zh"
    assert detect_language("...", default="en") == "en"


@pytest.mark.parametrize(
    "text",
    ["yes", "Yes.", "yes please", "yeah", "yep", "sure", "okay", "OK!", "go ahead", "do it", "please do",
     "sounds good", "of course", "yes, order it",
     "是的", "好的", "好", "对", "可以", "行", "确认", "要", "嗯", "好的，下单吧", "没问题"],
)
def test_yes(text):
    assert classify_confirmation(text) == "yes"


@pytest.mark.parametrize(
    "text",
    ["no", "No.", "no thanks", "No, thank you.", "nope", "nah", "cancel", "cancel that", "don't", "do not",
     "never mind", "forget it", "not now", "wait",
     "不要", "不用了", "不", "取消", "算了", "别买了", "不行", "等等", "不要了谢谢"],
)
def test_no(text):
    assert classify_confirmation(text) == "no"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "?",
        "play some jazz",
        "take me home",
        "what's the weather like",
        "yes and also play jazz tomorrow with my friends",  # too long to be an answer: a new request
        "导航回家",
        "放首歌",
        "要不然去公司吧",  # "or else, go to the office": starts with 要 but is not a yes
        "要不要带伞",
        "对了帮我导航回家",
        "是不是快到了",
        "可以帮我放首歌吗",
        "好像有点冷",
    ],
)
def test_anything_else_is_a_new_request(text):
    assert classify_confirmation(text) is None


def test_a_chinese_no_wins_over_the_yes_inside_it():
    # 不要 contains 要 ("want"); the negative must be read first.
    assert classify_confirmation("不要") == "no"
    assert classify_confirmation("不可以") == "no"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("yes please", "yes"), ("Yes.", "yes"), ("no thanks", "no"), ("好的", "yes"), ("好吧", "yes"), ("不要了", "no"),
     ("算了", "no"), ("好的，帮我导航回家", None), ("yes and play some jazz", None), ("ok take me home", None)],
)
def test_bare_answer_is_only_a_yes_or_a_no(text: str, expected: str | None) -> None:
    from agent.dialogue import bare_answer

    assert bare_answer(text) == expected
