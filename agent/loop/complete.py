"""Does what the driver said so far sound like a whole request? Decides whether a short pause ends it.

A driver who says "set the temperature to 21" and stops has finished; one who says "set the temperature to"
and stops is looking for the number. The endpoint waits the short pause for the first and the long one for the
second. Only the end of the words is read: a request that trails off on an article, a preposition, a
conjunction, a possessive or a hesitation is not finished; anything else is. A wrong "finished" costs a
question back; a wrong "not finished" costs half a second, so the lists lean toward waiting.
"""

from __future__ import annotations

import re

from agent.core.words import has_cjk

# Words a request does not end on (English): "navigate to", "order a", "call my", "play something by",
# "a large pizza and", "um".
_DANGLING_EN = frozenset(
    """
    a an the this that these those some any another
    to of for from with without at in on onto into by about near past via than as like
    and or but plus also then so because if while until unless
    my your our his her their its
    um uh er erm ah hmm mm like
    is are was be am can could would should will shall
    set turn make put give play call navigate order get take find change switch start open close
    me us i we you it's i'm i'd i'll let's let
    """.split()
)
# Chinese: a request does not end on a conjunction, a preposition, a measure word's lead-in, a verb waiting
# for its object, or a hesitation. (的 and the sentence-final particles 吧, 啊, 呢, 了 end one: 要大杯的.)
_DANGLING_ZH = (
    "和", "跟", "与", "或", "或者", "还有", "到", "去", "往", "给", "把", "在", "从", "向", "帮我",
    "我要", "我想", "请", "一个", "一份", "一杯", "那个", "这个", "就是", "然后", "嗯", "呃", "额",
    "调到", "设置", "打电话给", "导航到", "播放",
)  # not 是, 对, 要, 好: each is a whole answer to "Shall I order it?"; not 点: 调高一点 is whole
_TRAILING_CUT = re.compile(r"(\.\.\.|…|-|—)\s*$")
_WORD = re.compile(r"[A-Za-z']+|\d+")


def sounds_complete(text: str) -> bool:
    """True when `text` reads as a finished request (so a short pause may end it)."""
    text = text.strip()
    if not text:
        return False
    if _TRAILING_CUT.search(text):
        return False  # whisper marks speech that was cut off with an ellipsis or a dash
    # A trailing comma is whisper hedging on audio that stops 120-250 ms after the last word ("turn the fan
    # down to two,"): the words before it decide, so "call my," still waits.
    core = text.rstrip(" .!?。！？,，、")
    if not core:
        return False
    if has_cjk(core[-1]):
        return not any(core.endswith(w) for w in _DANGLING_ZH)
    words = _WORD.findall(core.lower())
    if not words:
        return False
    return words[-1] not in _DANGLING_EN
