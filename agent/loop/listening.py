"""Listening to one request: what was heard so far, and what the loop does at a pause in the driver's speech.

At a short pause the words so far are transcribed; a whole request ends there with that transcript, one that
trails off waits for the long silence (and keeps the transcript if nobody spoke since). While the driver
speaks, the words so far are transcribed now and then and read into the model's cache ahead of the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.asr.base import usable
from agent.audio.chunk import AudioChunk
from agent.audio.vad import EndReason
from agent.core.logging import get_logger
from agent.loop.complete import sounds_complete
from agent.loop.record import TurnRecord

if TYPE_CHECKING:
    from agent.asr.base import Recognizer
    from agent.audio.vad import Endpointer
    from agent.core.config import Config
    from agent.core.events import EventBus

log = get_logger("pipeline")

RECOGNITION_TIMEOUT_S = 30.0


@dataclass
class Listening:
    """One request being listened to."""

    record: TurnRecord
    queue: asyncio.Queue[AudioChunk | None] = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    reason: EndReason | None = None
    last_speech_end: float | None = None
    audio: list[AudioChunk] = field(default_factory=list)  # the request so far, for a transcript at a pause
    heard_ms: float = 0.0  # how much audio that is
    pause: int = 0  # counts the pauses; a transcript made in an earlier pause is stale
    paused: bool = False
    interim: asyncio.Task[str | None] | None = None  # the transcript of the audio up to the current pause
    whole: str | None = None  # that transcript, when its words are whole and the pause is still too short
    partial: str = ""  # the streaming engine's latest partial (vosk)
    partial_task: asyncio.Task[None] | None = None  # words so far, transcribed while the driver speaks
    partial_at_ms: float = 0.0  # audio length when the last one started
    final: str | None = None  # the transcript, when it was made before the endpoint


class PauseEnding:
    """The voice loop's part that acts on pauses (mixed into VoicePipeline, whose state it reads)."""

    config: Config
    endpointer: Endpointer
    recognizer: Recognizer
    events: EventBus
    assistant: Any
    _listening: Listening | None

    def _own(self, coro: Any, name: str) -> asyncio.Task[Any]: ...

    def _end_listening(self, reason: EndReason) -> None: ...

    def _strip_wake_phrase(self, text: str) -> str: ...

    def _watch_pause(self, listening: Listening) -> None:
        """At a short pause, transcribe what was said; if it is a whole request, the request ends there.

        The transcript is begun a little before the pause is long enough to end the request
        (`vad.pause_transcript_ms`), so the words are ready when it is rather than recognised after it."""
        vad = self.config.vad
        silent = self.endpointer.pause_ms
        if silent == 0.0:
            if listening.paused:  # speaking again: what was transcribed in the pause is not the request
                listening.paused = False
                listening.pause += 1
                listening.interim = None
                listening.whole = None
            self._watch_speech(listening)
            return
        if not vad.pause_ms:
            return
        begin = min(vad.pause_transcript_ms or vad.pause_ms, vad.pause_ms)
        if not listening.paused and silent >= begin:
            listening.paused = True
            listening.interim = self._own(self._transcribe_pause(listening, listening.pause),
                                          f"pause-{listening.record.index}")
        elif listening.whole is not None and silent >= vad.pause_ms and self._listening is listening:
            listening.final = listening.whole
            self._end_listening(EndReason.COMPLETE)

    def _watch_speech(self, listening: Listening) -> None:
        """While the driver speaks, now and then transcribe the words so far and let the model read them."""
        every = self.config.asr.partials_every_ms
        interim = getattr(self.recognizer, "interim", None)
        if not every or interim is None or (listening.partial_task and not listening.partial_task.done()):
            return
        if listening.heard_ms - listening.partial_at_ms < every:
            return
        listening.partial_at_ms = listening.heard_ms

        async def words_so_far() -> None:
            try:
                text = (await interim(list(listening.audio))).text.strip()
            except Exception as err:  # a missed partial costs only the time it would have saved
                log.warning("partial-transcript-failed", error=str(err))
                return
            if self._listening is listening and usable(text) and not listening.paused:
                listening.record.mark("first_partial")
                self.events.publish("transcript-partial", turn=listening.record.index, text=text)
                self._prepare(self._strip_wake_phrase(text))

        listening.partial_task = self._own(words_so_far(), f"partial-{listening.record.index}")

    async def _transcribe_pause(self, listening: Listening, pause: int) -> str | None:
        interim = getattr(self.recognizer, "interim", None)
        try:
            if interim is not None:
                text = (await interim(list(listening.audio))).text.strip()
            else:
                text = listening.partial.strip()  # a streaming engine: its partial is the words so far
        except Exception as err:  # a failed early transcript is only a missed shortcut
            log.warning("pause-transcript-failed", error=str(err))
            return None
        if listening.pause != pause or not usable(text):
            return None  # spoken over, or nothing worth keeping: the recogniser hears the whole request
        record = listening.record
        record.mark("pause_transcript")
        self.events.publish("transcript-partial", turn=record.index, text=text)
        if self._listening is listening and sounds_complete(self._strip_wake_phrase(text)):
            if self.endpointer.pause_ms >= self.config.vad.pause_ms:
                listening.final = text
                self._end_listening(EndReason.COMPLETE)
            else:  # whole words, but the pause is still short of ending it: the next quiet chunk may
                listening.whole = text
        elif self._listening is listening:
            self._prepare(self._strip_wake_phrase(text))  # into the model's cache while the driver goes on
        return text

    def _prepare_next(self) -> None:
        """While the car waits for the next request, the remembered turns go into the model's cache."""
        self._prepare("")

    def _prepare(self, heard: str) -> None:
        prepare = getattr(self.assistant, "prepare", None)
        if prepare is None:
            return

        async def quietly() -> None:
            try:
                await prepare(heard)
            except Exception as err:  # work ahead of need: a failure costs only the time it would have saved
                log.warning("prepare-failed", error=f"{type(err).__name__}: {err}")

        self._own(quietly(), "prepare")

    async def _final_transcript(self, listening: Listening, recognition: asyncio.Task[str]) -> str:
        """The request's words: made at the pause that ended it, or at a pause the driver did not break, or
        else by the recogniser from the whole request."""
        if listening.final is None and listening.interim is not None and listening.reason == EndReason.SILENCE:
            # Silent since the pause that was transcribed: that transcript is the request's.
            text = None
            with contextlib.suppress(asyncio.TimeoutError):
                text = await asyncio.wait_for(asyncio.shield(listening.interim), RECOGNITION_TIMEOUT_S)
            if text is not None:
                listening.final = text
            else:
                listening.queue.put_nowait(None)  # the pause gave nothing: recognise the whole request
        if listening.final is not None:
            recognition.cancel()
            return listening.final.strip()
        return await asyncio.wait_for(recognition, RECOGNITION_TIMEOUT_S)
