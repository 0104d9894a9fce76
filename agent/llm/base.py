"""The language-model stage: what the turn engine needs from a local model, independent of the backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.core.errors import LlmError

__all__ = ["ChatPrompt", "GenerationStep", "LanguageModel", "LlmError"]


@dataclass(frozen=True)
class ChatPrompt:
    """A rendered prompt: its token ids, and how many leading tokens are the cacheable system prefix."""

    tokens: list[int]
    prefix_len: int
    text: str = field(repr=False, default="")


@dataclass
class GenerationStep:
    token: int
    text: str  # the decoded text added by this token (may be "" while a multi-byte character is incomplete)


class LanguageModel(Protocol):
    """Blocking interface, called from one dedicated worker thread (llama contexts are not thread-safe)."""

    model_id: str

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ChatPrompt: ...

    def tokenize(self, text: str) -> list[int]: ...

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
        """Greedy tokens after `tokens`; under `json_schema` (written after the literal `lead`) when given,
        and only Latin-script text when `latin_only`."""
        ...

    def score(self, tokens: Sequence[int], options: Sequence[Sequence[int]]) -> list[float]:
        """The log-probability of each option (token ids) as the continuation of `tokens`."""
        ...

    def warm(self, prefix: ChatPrompt) -> dict[str, Any]: ...
