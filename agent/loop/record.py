"""What the voice loop keeps of each request (its record and trace), its states, and how late it handled audio."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agent.core.events import TurnTrace

# Marks of a turn, in the order they happen; latency is reported from `speech_end` to each later one.
MARKS = (
    "wake_detected",
    "listening",
    "speech_start",
    "speech_end",
    "endpoint",
    "transcript_final",
    "first_token",
    "tool_done",
    "first_audio",
    "done",
)


class State(StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"


@dataclass
class TurnRecord:
    """One request from trigger to silence: what was heard, done and said, and its trace (the milestones the
    loop and the turn engine marked on one clock, and the model's calls)."""

    index: int
    trigger: str  # wake, push-to-talk, follow-up, text (the control socket's say)
    barge_in: bool = False  # it interrupted the car
    trace: TurnTrace = field(default_factory=TurnTrace)
    end_reason: str | None = None  # why listening ended (silence, max-length, no-speech, source-ended)
    transcript: str | None = None
    reply: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # replied, not-caught, no-speech, ignored (unusable follow-up), interrupted, failed
    outcome: str = "open"
    error: str | None = None
    turn_id: str | None = None
    awaiting_confirmation: bool = False
    playback_index: int | None = None  # which playback of the sink carried the reply (WavSink files)

    @property
    def marks(self) -> dict[str, float]:
        """Monotonic ms (agent.core.events.now_ms) of each milestone reached."""
        return self.trace.marks

    def mark(self, name: str, at_ms: float | None = None) -> None:
        self.trace.mark(name, at_ms)

    def latency_ms(self) -> dict[str, float]:
        """Each stage after the driver stopped speaking, in ms from the end of speech."""
        end = self.marks.get("speech_end")
        if end is None:
            return {}
        out = {}
        for name in ("endpoint", "transcript_final", "first_token", "tool_done", "first_audio", "done"):
            if name in self.marks:
                out[name] = round(self.marks[name] - end, 1)
        return out

    def as_dict(self) -> dict[str, Any]:
        start = self.marks.get("wake_detected", self.marks.get("listening", 0.0))
        return {
            "index": self.index,
            "trigger": self.trigger,
            "barge_in": self.barge_in,
            "outcome": self.outcome,
            "end_reason": self.end_reason,
            "transcript": self.transcript,
            "reply": self.reply,
            "tool_calls": self.tool_calls,
            "awaiting_confirmation": self.awaiting_confirmation,
            "turn_id": self.turn_id,
            "error": self.error,
            # relative to the trigger, in the order they happened
            "marks_ms": {k: round(v - start, 1) for k, v in sorted(self.marks.items(), key=lambda kv: kv[1])},
            "latency_ms": self.latency_ms(),
            "model_calls": [c.as_dict() for c in self.trace.model_calls],
        }


@dataclass
class LagStats:
    """How late chunks were handled, per state: proves the wake engine and VAD keep up while the model runs."""

    chunks: int = 0
    max_ms: float = 0.0
    total_ms: float = 0.0
    max_handle_ms: float = 0.0  # time spent in the pipeline on one chunk (detector/endpointer)

    def add(self, lag_ms: float, handle_ms: float) -> None:
        self.chunks += 1
        self.total_ms += lag_ms
        self.max_ms = max(self.max_ms, lag_ms)
        self.max_handle_ms = max(self.max_handle_ms, handle_ms)

    def as_dict(self) -> dict[str, float]:
        return {
            "chunks": self.chunks,
            "mean_lag_ms": round(self.total_ms / self.chunks, 1) if self.chunks else 0.0,
            "max_lag_ms": round(self.max_ms, 1),
            "max_handle_ms": round(self.max_handle_ms, 1),
        }
