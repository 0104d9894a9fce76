"""The voice loop: one audio source through wake word, endpointing, recognition, the turn and streamed speech.

A small state machine (idle → listening → thinking → speaking → idle) publishes a `state` event on every
transition and keeps a latency record per request (wake, speech end, transcript, first token, tool done,
first audio). One task reads the microphone and never waits on the model: while a request is thought about or
spoken, every chunk still goes through the wake detector, so the wake phrase or push-to-talk barges in at once
(control before data: playback stops first, then the turn is cancelled).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

from agent.asr.base import Recognizer, usable
from agent.audio.chunk import AudioChunk
from agent.audio.sinks import AudioSink
from agent.audio.vad import Endpointer, EndReason
from agent.core.config import Config
from agent.core.events import EventBus, now_ms
from agent.core.logging import get_logger
from agent.loop.listening import Listening, PauseEnding
from agent.loop.record import LagStats, State, TurnRecord
from agent.loop.stages import bias_vocabulary, build_stages
from agent.models.engines import resolved_config
from agent.tts.base import Synthesizer
from agent.tts.sentences import speak_stream
from agent.understanding.replies import line
from agent.wake.base import Detection
from agent.wake.detector import WakeDetector

log = get_logger("pipeline")

TURN_TIMEOUT_S = 120.0
INTERRUPT_TIMEOUT_S = 3.0
class VoicePipeline(PauseEnding):
    """The car's voice loop over one audio source. `await run()` until cancelled (or the source ends)."""

    def __init__(
        self,
        config: Config,
        assistant: Any,  # agent.understanding.engine.Assistant (or a subclass: tests count model calls)
        source: Any,  # AudioSource (`stream()`) or any async iterable of AudioChunk
        sink: AudioSink,
        *,
        detector: WakeDetector,
        endpointer: Endpointer,
        recognizer: Recognizer,
        tts: Synthesizer,
        events: EventBus | None = None,
        announcements: AsyncIterable[Any] | None = None,
        health_beat: Callable[[], None] | None = None,
        keep_records: int = 50,
    ) -> None:
        self.config = config
        self.assistant = assistant
        self.source = source
        self.sink = sink
        self.detector = detector
        self.endpointer = endpointer
        self.recognizer = recognizer
        self.tts = tts
        self.events = events or getattr(assistant, "events", None) or EventBus()
        self.announcements = announcements
        # Called once per audio chunk handled (and once a second while the mic is reconnecting), so the
        # daemon's watchdog sees the audio loop moving: `pipeline.health_beat = lambda: health.beat("audio")`.
        self.health_beat = health_beat
        self.records: collections.deque[TurnRecord] = collections.deque(maxlen=keep_records)
        self.state = State.IDLE
        self.state_since_ms = now_ms()
        self.lag: dict[str, LagStats] = {s.value: LagStats() for s in State}
        self._turns = 0
        self._listening: Listening | None = None
        self._active: asyncio.Task[None] | None = None  # the request or announcement being served
        self._active_record: TurnRecord | None = None
        self._pending_announcements: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._announcement_reader: asyncio.Task[None] | None = None
        self._playbacks = 0
        self._recent: collections.deque[tuple[float, AudioChunk]] = collections.deque(maxlen=100)  # ~3 s
        # Said once or twice ("hey cabin, hey cabin, play jazz"), the wake phrase is not part of the request.
        phrase = r"\W+".join(re.escape(w) for w in config.wake_phrase.lower().split())
        self._wake_phrase = re.compile(rf"^(?:\W*{phrase}\b[\s,.!?]*)+", re.IGNORECASE)
        self._vocabulary: list[str] = []
        self._refresh_vocabulary()

    @classmethod
    async def from_config(
        cls,
        config: Config,
        assistant: Any,
        source: Any,
        sink: AudioSink,
        *,
        events: EventBus | None = None,
        announcements: AsyncIterable[Any] | None = None,
        health_beat: Callable[[], None] | None = None,
    ) -> VoicePipeline:
        """Load the stages the config names (models from the store) around an assistant, a source and a sink.

        The loop is wired here: "auto" engines are resolved once and the stages get concrete names.
        """
        stages = await build_stages(resolved_config(config), getattr(assistant, "registry", None))
        return cls(
            stages.config,
            assistant,
            source,
            sink,
            detector=stages.detector,
            endpointer=stages.endpointer,
            recognizer=stages.recognizer,
            tts=stages.tts,
            events=events,
            announcements=announcements,
            health_beat=health_beat,
        )

    def _refresh_vocabulary(self) -> None:
        """Bias recognition toward what the plugins know now: the catalogue the car got from the service since
        the last turn (new dishes, today's restaurants), contacts, places."""
        if not self.config.asr.bias_vocabulary:
            return
        words = bias_vocabulary(self.config, getattr(self.assistant, "registry", None))
        if words != self._vocabulary:
            self._vocabulary = words
            self.recognizer.set_vocabulary(words)

    # ------------------------------------------------------------------ control (daemon, control socket)

    def push_to_talk(self) -> None:
        """Start a request now (steering-wheel button, `cabin-agent ptt`); barges in if the car is busy.

        Call on the event loop; from another thread use `push_to_talk_threadsafe()`. Takes effect at the next
        audio chunk (one block, 30 ms).
        """
        self.detector.push_to_talk.press()

    def push_to_talk_threadsafe(self) -> None:
        self.detector.push_to_talk.press_threadsafe()

    async def cancel(self) -> bool:
        """Stop whatever the car is doing (listening, thinking, speaking) and go idle. True if something stopped."""
        busy = self._active is not None
        await self._interrupt("cancel")
        return busy

    async def request(self, text: str) -> TurnRecord:
        """A typed request (the control socket's `say`, `cabin-agent ask`), served like a spoken one.

        One request at a time, so it never shares the model with a voice turn: whatever the car is doing
        is interrupted first (control before data), then the turn runs and the reply is spoken. Returns the
        record once the reply has been spoken (or the request was interrupted, e.g. by the wake phrase).
        Cancelling the caller does not cancel the request: the driver still hears the answer.
        """
        if self._active is not None or self._listening is not None:
            await self._interrupt("text-request")
        self._turns += 1
        record = TurnRecord(self._turns, "text")
        # The request is complete when it arrives: latencies are measured from here.
        for name in ("listening", "speech_end", "endpoint", "transcript_final"):
            record.mark(name)
        record.transcript = text
        self._set_state(State.THINKING, turn=record.index)
        self._active_record = record
        task = self._own(self._serve_text(record, text), f"turn-{record.index}")
        self._active = task
        await asyncio.wait({task})
        return record

    async def _serve_text(self, record: TurnRecord, text: str) -> None:
        try:
            await self._reply(record, text)
            record.outcome = "replied"
            self.detector.open_follow_up()
            self._prepare_next()
        except asyncio.CancelledError:
            record.outcome = "interrupted"
            raise
        except Exception as err:  # the driver hears a short apology; the loop goes on
            record.outcome, record.error = "failed", f"{type(err).__name__}: {err}"
            log.exception("turn-failed", turn=record.index)
            with contextlib.suppress(Exception):
                await self._speak(record, self._once(line(self.config.language, "failed")))
        finally:
            self._finish_turn(record)

    def announce(self, text: str, *, id: Any = None, language: str | None = None) -> None:  # noqa: A002
        """Queue a text to speak the next time the car is idle (never over the driver or another reply)."""
        if text.strip():
            self._pending_announcements.append({"text": text, "id": id, "language": language})

    def status(self, last: int = 5) -> dict[str, Any]:
        """JSON-ready snapshot for the control socket's `status`."""
        stats = self.detector.stats
        return {
            "state": self.state.value,
            "state_seconds": round((now_ms() - self.state_since_ms) / 1000, 1),
            "turns": self._turns,
            "follow_up_open": self.detector.in_follow_up,
            "pending_announcements": len(self._pending_announcements),
            "wake": {
                "engine": getattr(self.detector.engine, "name", "push-to-talk"),
                "phrase": self.config.wake_phrase,
                "barge_in": self.config.wake.barge_in,
                "detections": stats.detections,
                "suppressed": stats.suppressed,
                "real_time_factor": round(stats.real_time_factor, 3),
                "max_lag_ms": round(stats.max_lag_ms, 1),
            },
            "asr": getattr(self.recognizer, "name", "?"),
            "audio_lag": {state: s.as_dict() for state, s in self.lag.items()},
            "last_turns": [r.as_dict() for r in list(self.records)[-last:]] if last > 0 else [],
        }

    def latency_records(self) -> list[dict[str, Any]]:
        """Every kept turn's latency record (benchmarks)."""
        return [r.as_dict() for r in self.records]

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Read the source until cancelled; if the source ends, finish the request in progress and return."""
        self.detector.push_to_talk.bind_loop()
        self._set_state(State.IDLE)
        if self.announcements is not None and (
            self._announcement_reader is None or self._announcement_reader.done()
        ):
            # Outlives run(): the daemon restarts run() after a failure, and the outbox's stream must keep flowing.
            self._announcement_reader = asyncio.create_task(
                self._read_announcements(self.announcements), name="pipeline-announcements"
            )
        if self.health_beat is not None and hasattr(self.source, "connected"):
            self._own(self._beat_while_reconnecting(), "reconnect-beat")
        stream = self.source.stream() if hasattr(self.source, "stream") else aiter(self.source)
        try:
            async with contextlib.aclosing(stream) if hasattr(stream, "aclose") else contextlib.nullcontext():
                async for chunk in stream:
                    await self._on_chunk(chunk)
            log.info("audio-source-ended")
            if self._listening is not None:
                self._end_listening(EndReason.SOURCE_ENDED)
            while self._active is not None or (self._pending_announcements and self.state == State.IDLE):
                if self._active is None:
                    self._start_announcement()
                active = self._active
                if active is not None:
                    await asyncio.wait({active}, timeout=TURN_TIMEOUT_S)
                    if not active.done():
                        await self._interrupt("timeout")
        finally:
            if self._active is not None:
                await self._interrupt("shutdown")
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=INTERRUPT_TIMEOUT_S)
            self._set_state(State.IDLE)

    async def aclose(self) -> None:
        """Release the stages (wake worker, recognizer and voice threads)."""
        reader, self._announcement_reader = self._announcement_reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait({reader}, timeout=INTERRUPT_TIMEOUT_S)
        self.detector.close()
        await self.recognizer.aclose()
        await self.tts.aclose()

    def _own(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"pipeline-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _on_chunk(self, chunk: AudioChunk) -> None:
        started = time.perf_counter()
        self._recent.append((now_ms(), chunk))
        state = self.state.value
        if self.health_beat is not None:
            self.health_beat()
        listening = self._listening
        if listening is not None:
            await self._feed_endpointer(listening, chunk)
            # Already listening: a button press now means nothing more.
            self.detector.push_to_talk.consume()
        else:
            if (
                self.state == State.IDLE
                and self._active is None
                and self._pending_announcements
                and not self.detector.in_follow_up
            ):
                self._start_announcement()
            detection = await self.detector.feed(chunk)
            if detection is not None:
                await self._on_detection(detection)
        handled = now_ms()
        if chunk.timestamp_ms:
            lag = handled - chunk.timestamp_ms  # capture (or replay) time to handled
            self.lag[state].add(max(0.0, lag), (time.perf_counter() - started) * 1000)

    async def _feed_endpointer(self, listening: Listening, chunk: AudioChunk) -> None:
        listening.queue.put_nowait(chunk)
        listening.audio.append(chunk)
        listening.heard_ms += chunk.duration_ms
        reason = await self.endpointer.aprocess(chunk)
        record = listening.record
        if self.endpointer.speech_started and "speech_start" not in record.marks:
            record.mark("speech_start")
        end = self.endpointer.speech_end_ms
        if end is not None and end != listening.last_speech_end:
            # Wall-clock time of the last voiced frame (as it arrived); the endpoint comes silence_ms later.
            listening.last_speech_end = end
            record.marks["speech_end"] = now_ms()
        if reason is not None:
            self._end_listening(reason)
        elif self.endpointer.speech_started:
            self._watch_pause(listening)

    async def _on_detection(self, detection: Detection) -> None:
        barge_in = self._active is not None
        if barge_in:
            log.info("barge-in", source=detection.source, state=self.state.value)
            self.events.publish("barge-in", source=detection.source, state=self.state.value)
            await self._interrupt("barge-in")
        self._turns += 1
        record = TurnRecord(
            self._turns, detection.source if detection.source != "engine" else "wake", barge_in=barge_in
        )
        record.mark("wake_detected", detection.timestamp_ms or now_ms())
        record.mark("listening")
        self.events.publish(
            "wake-detected",
            source=detection.source,
            engine=detection.engine,
            turn=record.index,
            barge_in=barge_in,
        )
        self.endpointer.reset()
        self._refresh_vocabulary()
        listening = Listening(record)
        self._listening = listening
        self._set_state(State.LISTENING, turn=record.index)
        self._active_record = record
        self._active = self._own(self._serve(listening), f"turn-{record.index}")
        for chunk in detection.preroll:  # follow-up: the first syllables were heard before the trigger
            if self._listening is listening:
                await self._feed_endpointer(listening, chunk)

    def _end_listening(self, reason: EndReason) -> None:
        listening = self._listening
        if listening is None:
            return
        self._listening = None
        listening.reason = reason
        listening.record.end_reason = str(reason)
        listening.record.mark("endpoint")
        # The transcript made at a pause is the request's when nobody spoke since: no second decode is started.
        from_pause = reason == EndReason.COMPLETE or (reason == EndReason.SILENCE and listening.interim is not None)
        if (self.endpointer.speech_started or reason == EndReason.MAX_LENGTH) and not from_pause:
            listening.queue.put_nowait(None)  # else recognition is cancelled, never run on silence
        listening.ended.set()
        self.events.publish("speech-end", turn=listening.record.index, reason=str(reason))
        if self.endpointer.speech_started:
            self._set_state(State.THINKING, turn=listening.record.index)

    async def _interrupt(self, why: str) -> None:
        """Control before data: silence the speaker now, then cancel the request and wait for it to unwind."""
        self.sink.stop()
        if self._listening is not None:
            self._end_listening(EndReason.SOURCE_ENDED)
        active = self._active
        if active is not None and not active.done():
            active.cancel()
            done, _ = await asyncio.wait({active}, timeout=INTERRUPT_TIMEOUT_S)
            if not done:
                log.warning("interrupt-slow", why=why)
        self.detector.set_speaking(False)
        self._active = None
        self._set_state(State.IDLE)

    def _set_state(self, state: State, **data: Any) -> None:
        if state == self.state and state != State.IDLE:
            return
        previous, self.state = self.state, state
        self.state_since_ms = now_ms()
        if previous != state:
            self.events.publish("state", state=state.value, previous=previous.value, **data)
            log.debug("state", state=state.value, previous=previous.value)

    # ------------------------------------------------------------------ one request

    async def _serve(self, listening: Listening) -> None:
        record = listening.record
        recognition = asyncio.create_task(self._recognize(listening), name=f"asr-{record.index}")
        try:
            await listening.ended.wait()
            if not self.endpointer.speech_started and listening.reason != EndReason.MAX_LENGTH:
                record.outcome = "no-speech"  # the driver said nothing after the wake word: give up quietly
                return
            text = await self._final_transcript(listening, recognition)
            record.mark("transcript_final")
            heard, text = text, self._strip_wake_phrase(text)
            record.transcript = text
            self.events.publish("transcript-final", turn=record.index, text=text)
            if heard and not text:
                # Only the wake phrase, heard by recognition (the follow-up window took "hey cabin" as speech,
                # then the endpoint came in the pause before the request): listen again for the request.
                record.outcome = "wake-only"
                return
            if not usable(text):
                if record.trigger == "follow-up":
                    record.outcome = "ignored"  # cabin sound in the follow-up window, not a request
                    return
                record.outcome = "not-caught"
                reply = line(self.config.language, "not_caught")
                record.reply = reply
                await self._speak(record, self._once(reply))
                self.detector.open_follow_up()  # let the driver say it again without the wake phrase
                return
            await self._reply(record, text)
            record.outcome = "replied"
            self.detector.open_follow_up()
            self._prepare_next()
        except asyncio.CancelledError:
            record.outcome = "interrupted"
            raise
        except Exception as err:  # a failed stage must not end the loop; the driver hears a short apology
            record.outcome, record.error = "failed", f"{type(err).__name__}: {err}"
            log.exception("turn-failed", turn=record.index)
            with contextlib.suppress(Exception):
                await self._speak(record, self._once(line(self.config.language, "failed")))
        finally:
            if not recognition.done():
                recognition.cancel()
                with contextlib.suppress(BaseException):
                    await recognition
            if self._finish_turn(record, keep=record.outcome != "wake-only"):
                if record.outcome == "wake-only":
                    # The request may have begun while we recognised the wake phrase: it is in the recent audio.
                    since = record.marks.get("endpoint", now_ms())
                    preroll = tuple(c for at, c in self._recent if at > since)
                    self._turns -= 1  # the same request, not a new turn
                    await self._on_detection(
                        Detection(self.config.wake_phrase, "asr", now_ms(), preroll=preroll)
                    )

    def _finish_turn(self, record: TurnRecord, *, keep: bool = True) -> bool:
        """Close a turn's latency record and, when it was the active turn, go idle. True if it was active."""
        record.mark("done")
        if keep:
            self.records.append(record)
            self.events.publish("turn-record", **record.as_dict())
            log.info("turn-record", index=record.index, outcome=record.outcome, latency_ms=record.latency_ms(),
                     model_calls=[c.as_dict() for c in record.trace.model_calls])
        if asyncio.current_task() is not self._active:
            return False
        self._active = None
        self.detector.set_speaking(False)
        self._set_state(State.IDLE)
        return True

    async def _recognize(self, listening: Listening) -> str:
        async def chunks() -> AsyncIterator[AudioChunk]:
            while (chunk := await listening.queue.get()) is not None:
                yield chunk

        final = ""
        async for transcript in self.recognizer.transcribe(chunks()):
            if transcript.is_final:
                final = transcript.text
            elif transcript.text:
                listening.partial = transcript.text
                self.events.publish("transcript-partial", turn=listening.record.index, text=transcript.text)
        return final.strip()

    def _strip_wake_phrase(self, text: str) -> str:
        """ "Hey cabin, play jazz" heard in the follow-up window (or a slow wake) is a request for jazz."""
        return self._wake_phrase.sub("", text, count=1).strip()

    async def _reply(self, record: TurnRecord, text: str) -> None:
        deltas: asyncio.Queue[str | None] = asyncio.Queue()

        async def turn() -> Any:
            try:
                return await asyncio.wait_for(
                    self.assistant.turn(text, on_text=deltas.put_nowait, trace=record.trace), TURN_TIMEOUT_S
                )
            finally:
                deltas.put_nowait(None)

        async def reply_text() -> AsyncIterator[str]:
            while (delta := await deltas.get()) is not None:
                yield delta

        turn_task = asyncio.create_task(turn(), name=f"turn-{record.index}-model")
        try:
            await self._speak(record, reply_text())
            result = await turn_task
        finally:
            if not turn_task.done():
                turn_task.cancel()  # barge-in: generation stops at the next token
                with contextlib.suppress(BaseException):
                    await turn_task
        record.reply = result.reply
        record.turn_id = result.turn_id
        record.awaiting_confirmation = result.awaiting_confirmation
        record.tool_calls = [c.as_dict() for c in result.tool_calls]

    @staticmethod
    async def _once(text: str) -> AsyncIterator[str]:
        yield text

    async def _speak(self, record: TurnRecord | None, text: AsyncIterable[str]) -> None:
        """Stream sentences through the voice to the sink; the first plays while the rest is being written."""
        playing = False
        try:
            async with contextlib.aclosing(speak_stream(text, self.tts)) as audio:
                async for chunk in audio:
                    if not playing:
                        playing = True
                        self._playbacks += 1
                        if record is not None:
                            record.playback_index = self._playbacks
                        self.detector.set_speaking(True)  # the wake engine is gated unless wake.barge_in
                        self._set_state(State.SPEAKING, turn=record.index if record else None)
                    await self.sink.play(chunk)
                    self._note_first_audio(record)
            if playing:
                await self.sink.drain()
                self._note_first_audio(record)
        finally:
            if playing:
                self.detector.set_speaking(False)

    def _note_first_audio(self, record: TurnRecord | None) -> None:
        first = getattr(self.sink, "first_audio_ms", None)
        if record is not None and first is not None and "first_audio" not in record.marks:
            if first >= record.marks.get("listening", 0.0):
                record.mark("first_audio", first)
                self.events.publish("first-audio", turn=record.index)

    # ------------------------------------------------------------------ announcements

    async def _read_announcements(self, source: AsyncIterable[Any]) -> None:
        async for item in source:
            if isinstance(item, str):
                self.announce(item)
            elif isinstance(item, dict) and item.get("text"):
                self.announce(item["text"], id=item.get("id"), language=item.get("language"))

    def _start_announcement(self) -> None:
        item = self._pending_announcements.popleft()
        self._active_record = None
        self._active = self._own(self._announce(item), "announcement")

    async def _announce(self, item: dict[str, Any]) -> None:
        spoken = False
        try:
            await self._speak(None, self._once(item["text"]))
            spoken = True
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - keep it for later; the loop goes on
            log.warning("announcement-failed", error=str(err), id=item.get("id"))
        finally:
            # Interrupted or failed: not spoken, the daemon keeps it (outbox.mark_announced only on success).
            self.events.publish(
                "announcement-spoken" if spoken else "announcement-interrupted", id=item.get("id")
            )
            if asyncio.current_task() is self._active:
                self._active = None
                self._set_state(State.IDLE)

    async def _beat_while_reconnecting(self) -> None:
        """The mic is away (unplugged, PipeWire restart) and MicSource is retrying: that is the loop working."""
        while True:
            await asyncio.sleep(1.0)
            if getattr(self.source, "connected", True) is False and self.health_beat is not None:
                self.health_beat()

    # ------------------------------------------------------------------ read-only views (demo, bench)

    @property
    def turns(self) -> tuple[TurnRecord, ...]:
        """The finished turns' records still kept (the last `keep_records`), oldest first."""
        return tuple(self.records)

    @property
    def turns_started(self) -> int:
        """Requests the car has started so far, spoken or typed, finished or not."""
        return self._turns

    @property
    def is_idle(self) -> bool:
        """Idle with nothing being served: no request, reply or announcement in progress."""
        return self.state == State.IDLE and self._active is None

    @property
    def in_follow_up(self) -> bool:
        """The car has just answered and listens for a follow-up without the wake phrase."""
        return self.detector.in_follow_up

    @property
    def playbacks(self) -> int:
        """Replies and announcements played so far (a WavSink's n-th file is playback n)."""
        return self._playbacks
