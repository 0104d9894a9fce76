"""Fakes for unit tests: a scripted local model, a vehicle that remembers what it was told, a meals
plugin that orders nothing. Each implements or subclasses the real interface, so the turn engine cannot
tell them apart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.devtools.reference_service import load_catalogue
from agent.llm.base import ChatPrompt, GenerationStep, LanguageModel
from agent.plugins.base import ToolContext, ToolResult
from agent.plugins.meals import MealsPlugin
from agent.plugins.meals.catalogue import Catalogue
from agent.plugins.vehicle.state import SimulatedVehicle
from agent.understanding.wire import Call, CallFormat, Decision, LineFormat

# What the scripted model says: a spoken reply (str), a tool call ({"name", "arguments"}), several calls (a list of
# them), raw text the model writes (Raw: parsed with the call format), or an exception raised from generate().
Output = str | dict[str, Any] | list[dict[str, Any]] | BaseException

END = 3  # the fake's end-of-answer token (ETX)


@dataclass(frozen=True)
class Raw:
    """An answer written verbatim in the call format, e.g. two lines of calls."""

    text: str


@dataclass
class GenerateCall:
    """One request to the fake as it saw it: which phase, for which utterance, with what constraints."""

    phase: str  # "decide" (labels scored), "next" (another call?), "arguments", "say"
    utterance: str
    prompt_text: str
    max_tokens: int
    json_schema: dict[str, Any] | None
    latin_only: bool = False


class FakeModel(LanguageModel):
    """A LanguageModel whose tokens are characters and whose answers come from a script keyed by utterance.

    It writes its answers through the same call format as the turn engine reads them (agent/understanding/
    wire.py), so scoring a label, decoding arguments after a label and writing words after `say:` all see
    exactly what a real model would have to produce.
    """

    model_id = "fake-qwen-0"
    end_tokens = [END]

    def __init__(
        self,
        script: dict[str, Output],
        *,
        default: Output = "Sorry, I didn't understand.",
        fmt: CallFormat | None = None,
    ) -> None:
        self.script = dict(script)
        self.default = default
        self.format = fmt or LineFormat()
        self.calls: list[GenerateCall] = []
        self.prompts: list[str] = []
        self.warmed: list[ChatPrompt] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the LanguageModel protocol

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ChatPrompt:
        system = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages if m["role"] == "system")
        rest = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages if m["role"] != "system")
        text = system + rest + "<|assistant|>"
        with self._lock:
            self.prompts.append(text)
        return ChatPrompt(tokens=self.tokenize(text), prefix_len=len(system), text=text)

    def tokenize(self, text: str) -> list[int]:
        return [ord(ch) for ch in text]

    def score(self, tokens: Sequence[int], options: Sequence[Sequence[int]]) -> list[float]:
        text = "".join(chr(t) for t in tokens)
        answer, written = self._answer_so_far(text)
        phase = "next" if written else "decide"
        with self._lock:
            self.calls.append(GenerateCall(phase, _last_user_message(text), text, 0, None))
        rest = answer[len(written):] if answer.startswith(written) else ""
        out = []
        for option in options:
            if list(option) == [END]:
                out.append(0.0 if not rest else -20.0)
            else:
                piece = "".join(chr(t) for t in option)
                out.append(0.0 if rest and rest.startswith(piece) else -20.0)
        return out

    def generate(
        self,
        tokens: Sequence[int],
        *,
        max_tokens: int,
        stop_tokens: Sequence[int] = (),
        json_schema: dict[str, Any] | None = None,
        lead: str = "",
        latin_only: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[GenerationStep]:
        text = "".join(chr(t) for t in tokens)
        answer, written = self._answer_so_far(text)
        phase = "arguments" if json_schema is not None or lead else "say"
        with self._lock:
            self.calls.append(GenerateCall(phase, _last_user_message(text), text, max_tokens, json_schema,
                                           latin_only))
        if isinstance(self._output(text), BaseException):
            raise self._output(text)
        if not answer.startswith(written):
            raise AssertionError(f"the engine wrote {written!r}, but the script answers {answer!r}")
        rest = answer[len(written):].split("\n", 1)[0]  # one call (or the words) per line
        for n, ch in enumerate(rest):
            if n >= max_tokens or should_stop():
                return
            yield GenerationStep(token=ord(ch), text=ch)

    def warm(self, prefix: ChatPrompt) -> dict[str, Any]:
        self.warmed.append(prefix)
        return {"prefix_tokens": prefix.prefix_len, "source": "fake"}

    # ------------------------------------------------------------------ what the script says

    def _output(self, prompt_text: str) -> Output:
        return self.script.get(_last_user_message(prompt_text), self.default)

    def _answer_so_far(self, prompt_text: str) -> tuple[str, str]:
        """The scripted answer for the prompt's utterance in the call format, and what the engine has already
        written of it after the assistant tag."""
        output = self._output(prompt_text)
        written = prompt_text.rpartition("<|assistant|>")[2]
        if isinstance(output, BaseException):
            return "", written
        if isinstance(output, Raw):
            return output.text, written
        if isinstance(output, dict):
            output = [output]
        if isinstance(output, list):
            decision = Decision(calls=tuple(Call(c["name"], c.get("arguments", {})) for c in output))
        else:
            decision = Decision(say=str(output))
        return self.format.render(decision), written

    def phases(self) -> list[str]:
        with self._lock:
            return [c.phase for c in self.calls]


def _last_user_message(prompt_text: str) -> str:
    _, _, tail = prompt_text.rpartition("<|user|>")
    return tail.split("\n", 1)[0]


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
        self._catalogue = Catalogue.from_json(load_catalogue())
        self._catalogue_age_at = float("inf")  # never due: there is no service to ask

    async def catalogue(self) -> Catalogue | None:
        return self._catalogue

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
