"""The cached part of every prompt: what the car is, one line per tool, and worked examples of requests and
answers in both languages. It is identical on every turn, so its KV cache is computed once and costs nothing after.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from agent.understanding.wire import Call, CallFormat, Decision

INSTRUCTIONS = (
    "You are the voice assistant of a car, talking with the driver while they drive. For each thing the driver "
    "says, answer with one line per action:\n"
    "- `<tool> {arguments as JSON}` when the driver asks the car to do something one of the tools below does "
    "(several lines when they ask for several things);\n"
    "- `say: <one short sentence>` for everything else: questions, chit-chat, and requests none of the tools can "
    "do (then say honestly that you can't). Never claim to have done something without a tool.\n"
    "Put into the arguments only what the driver said, in the driver's own words; leave out what they did not "
    "say. Answer in the driver's language.\n\nTools:\n"
)
EXAMPLES_NOTE = (
    "\n\nThe conversation starts with examples of requests and your answers. After them, the drive begins: "
    "earlier turns of the drive are context for the driver's follow-ups."
)


@dataclass(frozen=True)
class Example:
    """One worked example: what a driver said and the right answer (calls, or words)."""

    utterance: str
    calls: tuple[Call, ...] = ()
    say: str | None = None

    @property
    def label(self) -> str:
        return self.calls[0].name if self.calls else "say"

    def decision(self) -> Decision:
        return Decision(calls=self.calls, say=self.say)


@dataclass
class PromptParts:
    """The system message and the example turns that make up the cached prefix."""

    system: str
    examples: list[Example] = field(default_factory=list)

    def messages(self, fmt: CallFormat) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}]
        for ex in self.examples:
            out += [{"role": "user", "content": ex.utterance},
                    {"role": "assistant", "content": fmt.render(ex.decision())}]
        return out


def _type_text(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "|".join(json.dumps(v, ensure_ascii=False) for v in prop["enum"])
    kind = prop.get("type")
    if kind == "integer" and "minimum" in prop and "maximum" in prop:
        return f"{prop['minimum']}-{prop['maximum']}"
    if kind == "boolean":
        return "true|false"
    if kind == "array":
        inner = prop.get("items", {})
        if inner.get("type") == "object":
            return f"[{_object_text(inner)}, ...]"
        return f"[{_type_text(inner)}, ...]"
    if kind == "object":
        return _object_text(prop)
    return {"string": "text", "number": "number", "integer": "number"}.get(kind or "", "value")


def _object_text(schema: dict[str, Any]) -> str:
    required = set(schema.get("required", []))
    parts = [
        f'"{name}"{"" if name in required else "?"}: {_type_text(prop)}'
        for name, prop in schema.get("properties", {}).items()
    ]
    return "{" + ", ".join(parts) + "}"


def tool_line(tool: Any) -> str:
    """`name {"arg": type, "optional"?: type}: what it does` — the compact form the model reads."""
    return f"{tool.name} {_object_text(tool.parameters)}: {tool.description}"


def load_general_examples() -> list[Example]:
    """Examples that belong to no tool: what the car answers in words (the cases it must not act on)."""
    text = resources.files("agent.understanding").joinpath("examples.yaml").read_text(encoding="utf-8")
    return [_example(e) for e in yaml.safe_load(text)]


def _example(raw: dict[str, Any]) -> Example:
    if "say" in raw and "driver" in raw:
        return Example(raw["driver"], say=raw["say"])
    calls = tuple(Call(c["name"], dict(c.get("args") or {})) for c in raw["calls"])
    return Example(raw["driver"], calls=calls)


def interleave(groups: list[list[Example]]) -> list[Example]:
    """Spread each group evenly over the sequence (stride order), so that no label crowds the end of the prefix:
    the model leans toward what it saw last, and a tail of spoken answers made it answer requests in words."""
    keyed = [((i + 0.5) / len(group), g, i, ex) for g, group in enumerate(groups) for i, ex in enumerate(group)]
    return [ex for *_, ex in sorted(keyed, key=lambda k: k[:3])]


def build_prompt(tools: list[Any], general: list[Example] | None = None) -> PromptParts:
    """The cached prefix for a tool set: instructions, tool lines, and examples from every tool and the
    general ones, in a fixed order (the prompt cache is keyed by the exact tokens)."""
    tools = sorted(tools, key=lambda t: t.name)
    system = INSTRUCTIONS + "\n".join(tool_line(t) for t in tools) + EXAMPLES_NOTE
    groups = [[Example(ex.utterance, calls=(Call(t.name, dict(ex.arguments)),)) for ex in t.examples]
              for t in tools]
    groups.append(list(general if general is not None else load_general_examples()))
    return PromptParts(system, interleave([g for g in groups if g]))
