"""What a turn produced (its calls, reply and timings) and what waits on the driver between turns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.core.events import TurnTrace
from agent.plugins.base import Prepared, Question, Tool, ToolContext
from agent.understanding.confirmation import Pending as PendingKind
from agent.understanding.wire import Call


@dataclass
class ToolCallRecord:
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None = None
    valid: bool = True
    # ok, failed: it ran. awaiting-confirmation: waits for the driver's yes. asking: waits for a missing value.
    # declined: its plugin said why it cannot be done, before anything ran. cancelled: the driver said no.
    # invalid, unknown-tool, not-applicable (the plugin found it was no request for this tool): not calls.
    status: str = "ok"
    error: str | None = None
    dropped_arguments: dict[str, Any] = field(default_factory=dict)
    needs_confirmation: bool = False
    model_arguments: dict[str, Any] | None = None  # what the model wrote, before grounding and the plugin

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "arguments": self.arguments, "result": self.result, "valid": self.valid,
               "status": self.status, "needs_confirmation": self.needs_confirmation}
        if self.error:
            out["error"] = self.error
        if self.dropped_arguments:
            out["dropped_arguments"] = self.dropped_arguments
        if self.model_arguments is not None and self.model_arguments != self.arguments:
            out["model_arguments"] = self.model_arguments
        return out


@dataclass
class TurnResult:
    turn_id: str
    text: str
    language: str
    tool_calls: list[ToolCallRecord]
    reply: str
    timings_ms: dict[str, float]
    awaiting_confirmation: bool = False
    transcript: str | None = None
    # Calls the model attempted that never reached a plugin: kept for eval and logs.
    rejected_calls: list[ToolCallRecord] = field(default_factory=list)
    asked: bool = False  # the reply is a question for a missing value
    decision: dict[str, Any] = field(default_factory=dict)  # the labels the model weighed, for logs and eval
    trace: TurnTrace | None = field(default=None, repr=False)  # milestones and model calls (bench, logs)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "text": self.text,
            "tool_calls": [c.as_dict() for c in self.tool_calls],
            "reply": self.reply,
            "timings_ms": self.timings_ms,
            "language": self.language,
            "turn_id": self.turn_id,
            "awaiting_confirmation": self.awaiting_confirmation,
            "asked": self.asked,
            "rejected_calls": [c.as_dict() for c in self.rejected_calls],
        }
        if self.decision:
            out["decision"] = self.decision
        if self.trace is not None and self.trace.model_calls:
            out["model_calls"] = [c.as_dict() for c in self.trace.model_calls]
        if self.transcript is not None:
            out["transcript"] = self.transcript
        return out


@dataclass
class Pending:
    """A call waiting on the driver: a yes to a confirmation question, or the answer to a question."""

    tool: Tool
    arguments: dict[str, Any]
    language: str
    utterance: str
    expires_at: float
    prepared: Prepared | None = None
    question: Question | None = None  # None: waiting for a yes
    asked: str = ""  # what the car said, for asking again
    asked_again: bool = False

    @property
    def kind(self) -> PendingKind:
        return PendingKind.CANCEL if self.tool.name == "cancel_order" else PendingKind.PURCHASE


@dataclass
class TurnInProgress:
    """What one turn builds up while it runs."""

    text: str
    ctx: ToolContext
    trace: TurnTrace
    emit: Callable[[str], Any]
    calls: list[ToolCallRecord] = field(default_factory=list)
    made: list[Call] = field(default_factory=list)  # calls that ran or wait, as the history will show them
    replies: list[str] = field(default_factory=list)
    awaiting: bool = False
    asked: bool = False
    acknowledged: bool = False  # "one moment" was said while a plugin worked
    decision: dict[str, Any] = field(default_factory=dict)

    @property
    def language(self) -> str:
        return self.ctx.language

    def say(self, text: str) -> None:
        if text:
            self.replies.append(text)
            self.emit(text if len(self.replies) == 1 else " " + text)
