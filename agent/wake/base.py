"""Wake word stage: the engine Protocol and what a detection carries (engines are built in wake/factory.py).

Engines are synchronous and fed 16 kHz mono chunks; `WakeDetector` (agent.wake.detector) runs them off the event
loop and adds the refractory period, gating while the car speaks, push-to-talk and the follow-up window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from agent.audio.chunk import AudioChunk

DetectionSource = Literal["engine", "push-to-talk", "follow-up"]


@dataclass(frozen=True)
class Detection:
    phrase: str
    engine: str
    timestamp_ms: float  # monotonic ms (agent.core.events.now_ms) of the chunk that completed the phrase
    score: float | None = None
    source: DetectionSource = "engine"
    during_playback: bool = False  # barge-in: the car was speaking
    # Audio already heard that belongs to the request (follow-up speech onset); feed it to the endpointer first.
    preroll: tuple[AudioChunk, ...] = field(default=(), repr=False)


@runtime_checkable
class WakeEngine(Protocol):
    name: str
    phrase: str
    rate_hz: int

    def process(self, chunk: AudioChunk) -> Detection | None:
        """Feed one chunk (any size); a Detection when the phrase has just been heard."""
        ...

    def reset(self) -> None:
        """Forget partial matches (after a detection, after playback gating)."""
        ...

    def close(self) -> None: ...
