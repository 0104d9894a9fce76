"""Fakes for unit tests: a scripted local model, a vehicle that remembers what it was told, a meals
plugin that orders nothing. Each implements or subclasses the real interface, so the turn engine cannot
tell them apart.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.llm.base import ChatPrompt, GenerationStep, LanguageModel
from agent.plugins.base import ToolContext, ToolResult
from agent.plugins.meals import MealsPlugin
from agent.plugins.vehicle.state import SimulatedVehicle

# The turn engine forces these prefixes after the model opened a tool call (agent/turn.py, phases 2 and 3).
NAME_PREFIX = '{"name": "'
ARGS_SUFFIX = '"arguments": '

# What the scripted model says: a spoken reply (str), a tool call ({"name", "arguments"}), raw text the model
# writes as its first tokens (Raw), or an exception raised from inside generate().
Output = str | dict[str, Any] | BaseException


@dataclass(frozen=True)
class Raw:
    """First tokens written verbatim, e.g. Qwen's `<tool_call>` wrapper around the JSON call."""

    text: str
    call: dict[str, Any]


@dataclass
class GenerateCall:
    """One generate() request as the fake saw it: which phase, for which utterance, with what constraints."""

    phase: str  # "decide", "name", "arguments" or "second-pass"
    utterance: str
    prompt_text: str
    max_tokens: int
    json_schema: dict[str, Any] | None
    ban_first: tuple[int, ...]


class FakeModel(LanguageModel):
    """A LanguageModel whose tokens are characters and whose answers come from a script keyed by utterance.

    render() joins the messages as `<|role|>content` lines; tokenize() maps each character to its code
    point, so generate() can read back exactly what the turn engine asked for: the first tokens of an
    answer (`decide`), the tool name after a forced `{"name": "`, the arguments after a forced
    `..."arguments": `, or the wording of a tool result (`second-pass`, when the last message is the
    tool's).
    """

    model_id = "fake-qwen-0"

    def __init__(
        self,
        script: dict[str, Output],
        *,
        second_pass: str = "All done.",
        default: Output = "Sorry, I didn't understand.",
    ) -> None:
        self.script = dict(script)
        self.second_pass = second_pass
        self.default = default
        self.calls: list[GenerateCall] = []
        self.prompts: list[str] = []
        self.warmed: list[ChatPrompt] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the LanguageModel protocol

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ChatPrompt:
        system = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages if m["role"] == "system")
        system += "<|tools|>" + json.dumps([t["function"]["name"] for t in tools]) + "\n"
        rest = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages if m["role"] != "system")
        text = system + rest + "<|assistant|>"
        with self._lock:
            self.prompts.append(text)
        return ChatPrompt(tokens=self.tokenize(text), prefix_len=len(system), text=text)

    def tokenize(self, text: str) -> list[int]:
        return [ord(ch) for ch in text]

    def generate(
        self,
        tokens: Sequence[int],
        *,
        max_tokens: int,
        stop_tokens: Sequence[int] = (),
        json_schema: dict[str, Any] | None = None,
        ban_first: Sequence[int] = (),
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[GenerationStep]:
        text = "".join(chr(t) for t in tokens)
        utterance = _last_user_message(text)
        phase = _phase(text)
        with self._lock:
            self.calls.append(GenerateCall(phase, utterance, text, max_tokens, json_schema, tuple(ban_first)))
        output = self.script.get(utterance, self.default)
        if isinstance(output, BaseException):
            raise output
        for n, ch in enumerate(self._answer(phase, output)):
            if n >= max_tokens or should_stop():
                return
            yield GenerationStep(token=ord(ch), text=ch)

    def warm(self, prefix: ChatPrompt) -> dict[str, Any]:
        self.warmed.append(prefix)
        return {"prefix_tokens": prefix.prefix_len, "source": "fake"}

    # ------------------------------------------------------------------ what the script says in each phase

    def _answer(self, phase: str, output: Output) -> str:
        if phase == "second-pass":
            return self.second_pass
        call = output.call if isinstance(output, Raw) else output
        if phase == "decide":
            if isinstance(output, Raw):
                return output.text
            return json.dumps(output, ensure_ascii=False) if isinstance(output, dict) else str(output)
        if not isinstance(call, dict):
            raise AssertionError(f"engine asked for a tool {phase} but the script has a reply: {output!r}")
        if phase == "name":
            return f'{call["name"]}"}}'  # the model goes on writing; the engine stops at the closing quote
        # The arguments grammar ends the generation when the JSON object closes.
        return json.dumps(call.get("arguments", {}), ensure_ascii=False)

    def phases(self) -> list[str]:
        with self._lock:
            return [c.phase for c in self.calls]


def _last_user_message(prompt_text: str) -> str:
    _, _, tail = prompt_text.rpartition("<|user|>")
    return tail.split("\n", 1)[0]


def _phase(prompt_text: str) -> str:
    if prompt_text.endswith(NAME_PREFIX):
        return "name"
    if prompt_text.endswith(ARGS_SUFFIX):
        return "arguments"
    if prompt_text.rpartition("<|user|>")[2].count("<|tool|>"):
        return "second-pass"
    return "decide"


class BrokenModel(FakeModel):
    """A model whose backend dies in the middle of an answer (a llama context error, an OOM)."""

    def generate(self, tokens: Sequence[int], **kwargs: Any) -> Iterator[GenerationStep]:
        yield GenerationStep(token=ord("I"), text="I")
        raise RuntimeError("llama_decode returned -1")


class RecordingVehicle(SimulatedVehicle):
    """The simulated vehicle, remembering every command that reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def set_climate(self, *, temperature_c: float | None, zone: str, fan_level: int | None, ac: bool | None):
        self.commands.append(("set_climate", {"temperature_c": temperature_c, "zone": zone,
                                              "fan_level": fan_level, "ac": ac}))
        return super().set_climate(temperature_c=temperature_c, zone=zone, fan_level=fan_level, ac=ac)

    def navigate(self, label: str, address: str) -> dict[str, Any]:
        self.commands.append(("navigate", {"label": label, "address": address}))
        return super().navigate(label, address)

    def play(self, query: str, kind: str) -> dict[str, Any]:
        self.commands.append(("play", {"query": query, "kind": kind}))
        return super().play(query, kind)

    def call(self, name: str, number: str) -> dict[str, Any]:
        self.commands.append(("call", {"name": name, "number": number}))
        return super().call(name, number)


@dataclass
class PlacedOrder:
    arguments: dict[str, Any]
    utterance: str
    language: str


class OfflineMealsPlugin(MealsPlugin):
    """The real meals plugin (tools, schemas, priced confirmation question) with an order desk that only
    writes the order down: no outbox, no network."""

    def __init__(self, config: Any) -> None:
        super().__init__(config, services={})
        self.orders: list[PlacedOrder] = []

    async def _order(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        self.orders.append(PlacedOrder(dict(args), ctx.utterance, ctx.language))
        eta = 25
        if ctx.language == "zh":
            say = f"已下单，大约{eta}分钟送到。"
        else:
            say = f"Ordered. It should arrive in about {eta} minutes."
        return ToolResult(ok=True, data={"order": {"id": "ord-1", "eta_minutes": eta}}, say=say)


@dataclass
class Recorder:
    """A tool handler that remembers its calls and answers with a fixed result."""

    result: ToolResult = field(default_factory=lambda: ToolResult(ok=True, data={"done": True}, say="Done."))
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        self.calls.append(dict(args))
        return self.result
