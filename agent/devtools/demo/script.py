"""What the demo's driver says and when: the drive, each request as speech with its pauses, and the script
the scripted microphone plays (a driver waits for the car, says it again when the wake phrase went unheard)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.core.logging import get_logger
from agent.devtools.demo.scenes import ENTER_TUNNEL, LEAVE_TUNNEL, Scene, Tunnel
from agent.devtools.scripted_mic import ScriptedMic
from agent.devtools.voices import RATE, Voices

log = get_logger("pipeline")

# (voice, what the driver says, wake phrase first?) or a Scene. The wake phrase is always said by the Piper
# voice: pocketsphinx does not hear espeak-ng's "hey cabin" (docs/audio.md); a real driver sounds more like
# Piper.
DRIVE: list[tuple[str, str, bool] | Scene] = [
    ("piper", "set the temperature to twenty one degrees", True),
    ("espeak", "please call mom", True),
    ("espeak", "play some jazz", True),
    # whisper hears espeak-ng's "navigate" as "now we get to": that one is Piper's.
    ("piper", "navigate to work", True),
    # Online: fresh from the service, and remembered. Just before the tunnel on purpose: the model sees one past
    # turn (llm.history_turns), and a failed jazz request there once made it answer the order in words instead
    # of calling order_meal.
    ("piper", "where is my package", True),
    ENTER_TUNNEL,
    ("piper", "I'd like a large pepperoni pizza", True),
    ("espeak", "yes", False),  # answers the car's question in the follow-up window, no wake phrase
    ("piper", "where is my package", True),  # offline: the last known status, with its age
    LEAVE_TUNNEL,
    ("espeak", "what is the capital of France", True),
]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


@dataclass
class Segment:
    """One thing the driver says, and when: "idle" waits for the car to be quiet, "follow-up" for its question."""

    label: str
    audio: np.ndarray  # clean 16 kHz speech with its pauses; road noise is added as it is played
    gate: str = "idle"
    # A scene instead of speech: `action` runs when the gate opens, then road noise plays for `audio`'s length
    # and on until `until()` (at most `until_max_seconds`).
    action: Callable[[], Awaitable[None]] | None = None
    until: Callable[[], bool] | None = None
    until_max_seconds: float = 30.0


def request_segment(
    voices: Voices,
    voice: str,
    text: str,
    *,
    wake: bool,
    wake_phrase: str = "hey cabin",
    lead_seconds: float = 1.0,
    gap_seconds: float = 0.6,
    tail_seconds: float = 1.2,
) -> Segment:
    parts = [silence(lead_seconds)]
    if wake:
        parts += [voices.say("piper", wake_phrase), silence(gap_seconds)]
    parts += [voices.say(voice, text), silence(tail_seconds)]
    return Segment(text, np.concatenate(parts), "idle" if wake else "follow-up")


def scene_segment(scene: Scene, tunnel: Tunnel) -> Segment:
    """A scene as a stretch of the drive: its action, then road noise until the car has caught up."""
    return Segment(
        scene.name,
        silence(1.5),
        scene.when,
        action=lambda: tunnel.act(scene),
        until=lambda: tunnel.caught_up(scene),
        until_max_seconds=45.0,
    )


class DriverScript:
    """The drive as the scripted microphone plays it: before each segment, road noise until `ready(gate)` (at
    most `max_wait_seconds`), as a driver waits for the car; then the segment, and a tail of road noise."""

    def __init__(
        self,
        segments: list[Segment],
        *,
        ready: Callable[[str], bool],
        turns: Callable[[], int] | None = None,
        max_wait_seconds: float = 300.0,
        tail_seconds: float = 2.0,
    ) -> None:
        self.segments = segments
        self.ready = ready
        # How many requests the car has started: a driver whose wake phrase went unheard says it all again.
        self.turns = turns
        self.max_wait_seconds = max_wait_seconds
        self.tail_seconds = tail_seconds
        self.repeats = 0
        self.segment_starts_s: list[float] = []
        self.waited_s = 0.0

    async def __call__(self, mic: ScriptedMic) -> AsyncIterator[AudioChunk]:
        for segment in self.segments:
            waited = 0.0
            while not self.ready(segment.gate) and waited < self.max_wait_seconds:
                yield await mic.noise_block()
                waited += mic.block_seconds
            if waited >= self.max_wait_seconds:
                log.warning("demo-gate-timeout", segment=segment.label, gate=segment.gate)
            self.waited_s += waited
            self.segment_starts_s.append(mic.sent_seconds)
            if segment.action is not None:
                await segment.action()
                async for chunk in mic.play(segment.audio):
                    yield chunk
                waited = 0.0
                while (
                    segment.until is not None and not segment.until() and waited < segment.until_max_seconds
                ):
                    yield await mic.noise_block()
                    waited += mic.block_seconds
                if waited >= segment.until_max_seconds:
                    log.warning("demo-scene-timeout", segment=segment.label)
                continue
            before = self.turns() if self.turns is not None else 0
            async for chunk in mic.play(segment.audio):
                yield chunk
            # pocketsphinx misses more wakes after long stretches of road noise (docs/voice-loop.md): like a
            # driver, say it again (at most twice) when the car did not react.
            for _ in range(2):
                if self.turns is None or self.turns() != before:
                    break
                self.repeats += 1
                log.info("demo-driver-repeats", segment=segment.label)
                async for chunk in mic.play(segment.audio):
                    yield chunk
        async for chunk in mic.noise(self.tail_seconds):
            yield chunk
