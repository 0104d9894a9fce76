"""System prompts per language, and the compact tool descriptions the model sees (the grammar enforces the rest)."""

from __future__ import annotations

import copy
from typing import Any

SYSTEM_PROMPTS = {
    "en": (
        "You are the voice assistant of a car, talking to the driver while they drive. "
        "Call a tool only when the driver asks for something a tool does, and include only the arguments the "
        "driver actually said, in the driver's own words and language (a dish, a place or a name exactly as said). For questions, chit-chat, or anything no tool can do, answer in one short "
        "sentence without a tool; never pretend to do something you cannot. Answer in the driver's language."
    ),
    "zh": (
        "你是汽车里的语音助手，正在和开车的司机对话。只有当司机要求的事情有对应的工具时才调用工具，"
        "并且只填写司机明确说出的参数，菜名、地点和人名照司机的原话填写，不要翻译。对于提问、闲聊或任何工具做不到的事情，不调用工具，用一句简短的话回答；"
        "做不到的事不要假装做到。用司机使用的语言回答。"
    ),
}

# Schema keywords that only constrain values: the grammar and the validator enforce them, so the prompt
# leaves them out (the tool list is the bulk of the system prompt, and prompt tokens are seconds on a head unit).
_PROMPT_ONLY_DROP = ("additionalProperties", "minProperties", "minLength", "maxLength", "minimum", "maximum")


def _compact(schema: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    for key in _PROMPT_ONLY_DROP:
        out.pop(key, None)
    for prop in out.get("properties", {}).values():
        for key in _PROMPT_ONLY_DROP:
            prop.pop(key, None)
    return out


def tools_for_prompt(tools: list[Any]) -> list[dict[str, Any]]:
    """OpenAI-style function entries in a stable order (the prompt cache key depends on the exact text)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": _compact(t.parameters)},
        }
        for t in sorted(tools, key=lambda t: t.name)
    ]


def system_prompt(language: str) -> str:
    return SYSTEM_PROMPTS.get(language, SYSTEM_PROMPTS["en"])


# Short spoken lines that need no model pass.
LINES = {
    "en": {
        "cannot": "Sorry, I can't do that in this car.",
        "not_caught": "Sorry, I didn't catch that.",
        "cancelled": "Okay, I won't do that.",
        "failed": "Sorry, that didn't work.",
        "clarify": "Sorry, could you say that again with the details?",
        "done": "Done.",
        "nothing_pending": "There's nothing waiting for a yes right now.",
    },
    "zh": {
        "cannot": "抱歉，这个我在车上做不到。",
        "not_caught": "抱歉，我没听清。",
        "cancelled": "好的，不做了。",
        "failed": "抱歉，没有成功。",
        "clarify": "抱歉，能再说一遍具体要求吗？",
        "done": "好的。",
        "nothing_pending": "现在没有需要确认的事。",
    },
}


def line(language: str, key: str) -> str:
    return LINES.get(language, LINES["en"])[key]
