"""What a plugin is: a named set of tools, each with a JSON schema, network and confirmation needs, and a handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.core.config import Config


@dataclass
class ToolResult:
    """What a tool did. `say` is a short confirmation the car may speak without a second model pass."""

    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    say: str | None = None
    error: str | None = None  # short and readable: the model and the driver may see it

    def for_model(self) -> dict[str, Any]:
        if self.ok:
            return self.data
        return {"error": self.error or "failed"}


@dataclass
class ToolContext:
    """What a handler may use: config, language, the utterance that led to the call, shared services."""

    config: Config
    language: str
    utterance: str = ""
    services: dict[str, Any] = field(default_factory=dict)
    # The calls made earlier in the drive, oldest first (objects with .name and .arguments): what "move them
    # to Saturday" or "the passenger side too" refers to.
    recent: list[Any] = field(default_factory=list)


Handler = Callable[[ToolContext, dict[str, Any]], Awaitable[ToolResult]]


@dataclass(frozen=True)
class ToolExample:
    """A request for a tool as a driver says it, and the arguments the model should write for it (in the
    driver's words). Shown to the model in the cached prompt; the more real the phrasing, the better."""

    utterance: str
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Question:
    """What the car asks back when a call cannot go ahead yet: a missing value, or which of several matches."""

    slot: str
    text: str
    options: tuple[str, ...] = ()


@dataclass
class Prepared:
    """A call made ready by its plugin: final arguments in the car's own names (a catalogue item, a saved
    place), or a question to ask first, or a reason it cannot be done (spoken to the driver)."""

    arguments: dict[str, Any]
    question: Question | None = None
    problem: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # what the plugin worked out (a quote), for the handler
    # False: the request is not one for this tool after all (an "order" of flowers, nothing on any menu; a
    # climate call for the window). The car says `problem` and no call is counted as made.
    applies: bool = True


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments, an object
    handler: Handler
    requires_network: bool = False
    needs_confirmation: bool = False
    # Arguments that must come from what the driver said (not invented by the model), e.g. a temperature.
    grounded: tuple[str, ...] = ()
    # Optional arguments kept only when one of their cue words was said ("fan", "空调"): a model that fills in
    # every optional argument would otherwise change settings nobody asked for.
    cues: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    # Words at least one of which a request for this tool contains ("navigate", "take me", "导航"). A call
    # whose utterance has none is refused: small models answer "open the sunroof" with navigate_to("sunroof").
    intents: tuple[str, ...] = ()
    plugin: str = ""
    # Words that show where in an utterance an argument is said (only to order the grammar as it was said).
    mentions: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    # Worked examples for the model's cached prompt, English and Chinese.
    examples: tuple[ToolExample, ...] = field(default=(), hash=False)
    # The question for each required argument the driver may leave out: {"item": ("What would you like?", "您想点什么？")}.
    questions: dict[str, tuple[str, str]] = field(default_factory=dict, hash=False)

    def schema_for_prompt(self) -> dict[str, Any]:
        """The OpenAI-style function description that Qwen's chat template renders into the system prompt."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class Plugin:
    """Base class for plugins found through the `cabin_agent.plugins` entry-point group."""

    name: str = "plugin"
    requires_network: bool = False

    def __init__(self, config: Config) -> None:
        self.config = config

    def tools(self) -> list[Tool]:
        raise NotImplementedError

    def vocabulary(self) -> list[str]:
        """Words recognition should be biased toward: menu items, contact names, saved places."""
        return []

    async def prepare(self, ctx: ToolContext, tool: str, arguments: dict[str, Any]) -> Prepared:
        """Turn a grounded call into the car's own terms before it is confirmed or run (default: as it is)."""
        return Prepared(dict(arguments))

    def fill(self, ctx: ToolContext, tool: str, arguments: dict[str, Any], question: Question,
             answer: str) -> dict[str, Any] | None:
        """Arguments completed by a short answer to `question` ("large", "the shoes"); None: not an answer."""
        return None

    def amend(self, ctx: ToolContext, tool: str, arguments: dict[str, Any], words: str) -> dict[str, Any] | None:
        """A call waiting for its yes, changed as the words say ("make it two", "and a coke"); None: the
        words change nothing this plugin can read."""
        return None

    def state(self) -> dict[str, Any]:
        """What this plugin knows about the car right now, compactly (for follow-ups and the status command)."""
        return {}

    async def start(self) -> None:
        """Open connections, start background work. Failing here disables the plugin, not the daemon."""

    async def stop(self) -> None:
        """Release what start() opened."""
