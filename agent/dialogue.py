"""Small language decisions that need no model: which language the driver spoke, and yes/no to a question."""

from __future__ import annotations

import re
import unicodedata

_CJK = re.compile(r"[\u3400-\u9fff]")

_YES_EN = {
    "yes", "yeah", "yep", "yup", "sure", "ok", "okay", "please", "do it", "go ahead", "confirm", "correct",
    "right", "affirmative", "sounds good", "yes please", "please do", "absolutely", "of course", "order it",
}
_NO_EN = {
    "no", "nope", "nah", "cancel", "stop", "don't", "do not", "never mind", "nevermind", "forget it", "negative",
    "not now", "no thanks", "no thank you", "wait",
}
_YES_ZH = ("是的", "是", "好的", "好", "对", "可以", "行", "确认", "确定", "下单", "嗯", "没问题", "要")
_NO_ZH = ("不要", "不用", "不", "取消", "算了", "别", "不行", "等等")
# Openings that start with a yes word but are not an answer: "要不然去公司吧" (or else, go to the
# office), "要是", "好像", "对了" (by the way), "是不是", "可以帮我..." (a new request).
# They must never confirm a purchase.
_NOT_ANSWER_ZH = ("要不", "要是", "好像", "对了", "对面", "是不是", "可以帮", "行驶")


def detect_language(text: str, default: str = "en") -> str:
    """zh when the utterance has Chinese characters, else en (the two languages the agent speaks)."""
    if _CJK.search(text):
        return "zh"
    return "en" if re.search(r"[A-Za-z]", text) else default


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s']", " ", text).split())


def classify_confirmation(text: str) -> str | None:
    """'yes', 'no', or None when the answer is something else (then it is treated as a new request)."""
    norm = _norm(text)
    if not norm:
        return None
    if _CJK.search(norm):
        compact = norm.replace(" ", "")
        # Negatives first: "不要" contains "要".
        if any(compact.startswith(w) for w in _NO_ZH) or compact in _NO_ZH:
            return "no"
        if any(compact.startswith(w) for w in _NOT_ANSWER_ZH):
            return None
        if any(compact.startswith(w) for w in _YES_ZH) and len(compact) <= 8:
            return "yes"
        return None
    words = norm.split()
    for size in (3, 2, 1):
        head = " ".join(words[:size])
        if head in _NO_EN:
            return "no"
        if head in _YES_EN:
            return "yes" if len(words) <= 6 else None
    return None


def bare_answer(text: str) -> str | None:
    """'yes' or 'no' when the utterance is nothing but a yes or a no ("yes please", "好的"), else None.

    Stricter than classify_confirmation: "好的，帮我导航回家" is a request, not a bare answer.
    """
    norm = _norm(text)
    if _CJK.search(norm):
        core = norm.replace(" ", "").rstrip("吧啊呀哦嘛了")
        if core in _YES_ZH or core in ("好吧", "好啊", "好呀"):
            return "yes"
        if core in _NO_ZH or core in ("不要", "不用", "算"):
            return "no"
        return None
    if norm in _YES_EN:
        return "yes"
    if norm in _NO_EN:
        return "no"
    return None
