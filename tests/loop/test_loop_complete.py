"""Whether the words so far are a whole request: a short pause ends those, a trailing-off one waits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.loop.complete import sounds_complete

WHOLE = [
    "Set the temperature to 21 degrees.", "set the temperature to twenty one", "Navigate to the airport.",
    "call mom", "Play something by Miles Davis.", "turn it up", "turn the volume down", "AC off",
    "order a large latte from Bean There Coffee", "where's my package?", "play jazz please", "yes", "no thanks",
    "把温度调到二十二度", "给妈妈打电话", "我要去公司", "打开收音机吧", "取消订单", "好的", "是", "对", "要", "调高一点", "我要大杯的",
    # whisper's comma on audio that stops soon after the last word: the words decide
    "turn the fan down to two,", "Play something by Miles,", "pause the music,", "给妈妈打电话，",
]
TRAILING = [
    "Set the temperature to", "navigate to the", "call my", "play something by", "order a",
    "a large pizza and", "um", "I want to go to the airport and, uh", "Set the temperature to...",
    "call my,", "navigate to the airport and", "I'd like a", "Set the temperature to —", "导航到，",
    "帮我导航到", "给", "我想点一杯", "把温度调到", "嗯", "打电话给", "我要去那个",
]


@pytest.mark.parametrize("text", WHOLE)
def test_a_whole_request_may_end_at_a_short_pause(text: str) -> None:
    assert sounds_complete(text)


@pytest.mark.parametrize("text", TRAILING)
def test_words_that_trail_off_wait_for_the_rest(text: str) -> None:
    assert not sounds_complete(text)


@given(st.text(max_size=60))
def test_any_text_gives_an_answer_and_never_raises(text: str) -> None:
    assert sounds_complete(text) in (True, False)


@given(st.sampled_from(WHOLE), st.sampled_from(["to", "and", "the", "uh", "my", "from"]))
def test_a_whole_request_followed_by_a_binding_word_waits(text: str, word: str) -> None:
    if any("\u4e00" <= ch <= "\u9fff" for ch in text):
        return
    assert not sounds_complete(f"{text.rstrip('.?')} {word}")
