"""What the car says without asking the model: short fixed lines in both languages, and the check that a
spoken answer never claims an action that no tool took."""

from __future__ import annotations

import re

LINES = {
    "en": {
        "cannot": "Sorry, I can't do that in this car.",
        "not_caught": "Sorry, I didn't catch that.",
        "cancelled": "Okay, I won't do that.",
        "not_ordered": "Okay, I won't order it.",
        "not_cancelled": "Okay, I'll leave it.",
        "dropped": "Okay, I've dropped that.",
        "failed": "Sorry, that didn't work.",
        "confirm_again": "Sorry, should I go ahead? Please say yes or no.",
        "done": "Done.",
        "nothing_pending": "There's nothing waiting for a yes right now.",
        "one_moment": "One moment.",
    },
    "zh": {
        "cannot": "抱歉，这个我在车上做不到。",
        "not_caught": "抱歉，我没听清。",
        "cancelled": "好的，不做了。",
        "not_ordered": "好的，不下单了。",
        "not_cancelled": "好的，保留订单。",
        "dropped": "好的，这个先不办了。",
        "failed": "抱歉，没有成功。",
        "confirm_again": "抱歉，要继续吗？请说“好”或者“不要”。",
        "done": "好的。",
        "nothing_pending": "现在没有需要确认的事。",
        "one_moment": "请稍等。",
    },
}


def line(language: str, key: str) -> str:
    return LINES.get(language, LINES["en"])[key]


# Sentences that report or promise an action: "I've set...", "Ordering...", "I'll call...", "已为您...".
_ACTION_VERBS = (
    r"(?:set|setting|turn(?:ed|ing)?|order(?:ed|ing)?|plac(?:ed|ing)|call(?:ed|ing)|dial(?:ed|ing)|"
    r"navigat(?:e|ed|ing)|start(?:ed|ing)|play(?:ed|ing)|cancel(?:l?ed|l?ing)?|book(?:ed|ing)?|"
    r"reschedul(?:e|ed|ing)|redirect(?:ed|ing)?|sen(?:t|d|ding)|open(?:ed|ing)?|clos(?:e|ed|ing)|"
    r"adjust(?:ed|ing)?|chang(?:e|ed|ing)|switch(?:ed|ing)?|lower(?:ed|ing)?|rais(?:e|ed|ing)|"
    r"increas(?:e|ed|ing)|decreas(?:e|ed|ing)|paus(?:e|ed|ing)|skip(?:ped|ping)?|resum(?:e|ed|ing)|"
    r"lock(?:ed|ing)?|unlock(?:ed|ing)?)"
)
_CLAIM_EN = re.compile(
    "|".join([
        # "I've set...", "I'll order...", "I'm calling..."
        r"\bi(?:'ve| have| will|'ll| am|'m)\s+(?:now\s+|just\s+|gone ahead and\s+)?" + _ACTION_VERBS + r"\b",
        # "Ordering now", "Sure, calling Mom"
        r"^(?:ok(?:ay)?,?\s+|sure,?\s+|done[.!,]?\s*)?(?:now\s+)?(?:ordering|calling|dialing|navigating|playing|"
        r"setting|turning|cancel+ing|starting|opening|closing|placing|booking|sending|pausing|skipping|"
        r"resuming|rescheduling|redirecting)\b",
        # "The temperature has been set"
        r"\b(?:has|have) been (?:set|ordered|placed|called|started|cancel+ed|booked|sent|opened|closed|"
        r"turned|scheduled|rescheduled|redirected|paused)\b",
        # "Your order is placed"
        r"\b(?:your|the) (?:order|call|route|navigation|music|temperature)\b[^.?!]*\b(?:is|was) "
        r"(?:placed|on its way|set|started|cancel+ed|confirmed)\b",
    ]),
    re.IGNORECASE,
)
_CLAIM_ZH = re.compile(
    r"(?:已经?|已为您|已帮您|已给您)(?:把|将)?[^，。！？]{0,8}?"
    r"(?:设置|设为|调到|调成|调高|调低|打开|关闭|关掉|开启|下单|点了|订了|预订|预定|取消|呼叫|拨打|打给|导航|播放|"
    r"暂停|切换|发送|改到|改送|放到|存到)"
    r"|(?:^|[，,。！\s]|我)(?:正在|马上|这就|现在就|立刻)(?:为您|帮您|给您)?(?:设置|调|打开|关闭|下单|点|订|取消|呼叫|"
    r"拨打|导航|播放|暂停|发送)"
    r"|(?:订单|电话|导航|温度|空调)(?:已经?)(?:下好|下单|设置|打开|关闭|开始|取消|拨通)"
)


def claims_action(text: str) -> bool:
    """True when a spoken answer says something was done or is being done (which only a tool can make true)."""
    return bool(_CLAIM_EN.search(text) or _CLAIM_ZH.search(text))
