"""How a decision looks on the wire between the turn engine and the model: one seam for the prompt, the
history and the decoder, used by the real model and the test fake alike.

The default is one line per call, `set_climate {"temperature_c": 21}`, or `say: <words>` for a spoken answer:
the tool's name is the first token (so choosing it is one scored step over every label at once), calls in a turn
are one per line, and the model writes few tokens the grammar could have written for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

SAY = "say"


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What the model decided for one utterance: calls to make, or words to say."""

    calls: tuple[Call, ...] = ()
    say: str | None = None


class CallFormat(Protocol):
    """Everything that depends on how calls are written: labels, forced text between the parts, history."""

    name: str

    def label(self, tool: str) -> str:
        """The text that opens a call of `tool` (what the first decoding step chooses between)."""
        ...

    @property
    def say_label(self) -> str:
        """The text that opens a spoken answer."""
        ...

    @property
    def args_opening(self) -> str:
        """Forced after a call's label; the arguments' JSON follows."""
        ...

    @property
    def say_opening(self) -> str:
        """Forced after the say label; the words follow up to the end of the line."""
        ...

    @property
    def between_calls(self) -> str:
        """What separates two calls of one turn (the model writes it, or ends the answer)."""
        ...

    def render(self, decision: Decision) -> str:
        """The assistant's message for a decision, as the model would have written it."""
        ...

    def parse(self, text: str) -> Decision:
        """A decision from an answer written freely in this format (for tests and fallbacks)."""
        ...


class LineFormat:
    """`tool {json}` per line, or `say: words`."""

    name = "line"
    say_label = SAY
    args_opening = " "
    say_opening = ": "
    between_calls = "\n"

    def label(self, tool: str) -> str:
        return tool

    def render(self, decision: Decision) -> str:
        if not decision.calls:
            return f"{SAY}: {decision.say or ''}".rstrip()
        return "\n".join(f"{c.name} {json.dumps(c.arguments, ensure_ascii=False)}" for c in decision.calls)

    def parse(self, text: str) -> Decision:
        calls, words = [], []
        for raw in text.strip().splitlines():
            line = raw.strip()
            if not line:
                continue
            head, _, rest = line.partition(" ")
            if head.rstrip(":") == SAY or line.startswith(f"{SAY}:"):
                words.append(line.split(":", 1)[1].strip() if ":" in line else rest.strip())
                continue
            try:
                args = json.loads(rest) if rest.strip() else {}
            except json.JSONDecodeError:
                args = None
            if isinstance(args, dict) and head.isidentifier():
                calls.append(Call(head, args))
            else:
                words.append(line)
        if calls:
            return Decision(calls=tuple(calls))
        return Decision(say=" ".join(words).strip() or None)


class QwenToolFormat:
    """Qwen's native `<tool_call>{"name": ..., "arguments": ...}</tool_call>`; words are plain text."""

    name = "qwen"
    say_label = ""
    args_opening = '", "arguments": '
    say_opening = ""
    between_calls = "</tool_call>\n<tool_call>\n"

    def label(self, tool: str) -> str:
        return f'<tool_call>\n{{"name": "{tool}'

    def render(self, decision: Decision) -> str:
        if not decision.calls:
            return decision.say or ""
        return "\n".join(
            "<tool_call>\n" + json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False)
            + "\n</tool_call>" for c in decision.calls
        )

    def parse(self, text: str) -> Decision:
        calls = []
        for block in text.split("<tool_call>")[1:]:
            body = block.split("</tool_call>")[0].strip()
            try:
                obj = json.loads(body)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("name"), str):
                args = obj.get("arguments")
                calls.append(Call(obj["name"], args if isinstance(args, dict) else {}))
        if calls:
            return Decision(calls=tuple(calls))
        return Decision(say=text.strip() or None)


FORMATS: dict[str, type[LineFormat] | type[QwenToolFormat]] = {"line": LineFormat, "qwen": QwenToolFormat}


def call_format(name: str) -> CallFormat:
    return FORMATS[name]()
