"""The voice loop's state machine with real stages where they are cheap and a fake model: push-to-talk, wake then
silence, unusable transcripts, barge-in, follow-up, announcements, health beats, latency records.

The fake assistant subclasses the real Assistant (it only replaces the model call) so the pipeline sees the same
interface; it counts calls, which is how "no model call" is proven. Fake recognizers subclass nothing heavy:
they follow the Recognizer protocol and return a scripted text, so these tests need no models and run fast.
All of them, and the steps that serve a request, are in tests/helpers/pipeline.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.pipeline import (
    RATE,
    FakeAssistant,
    FakeRecognizer,
    ScriptedMic,
    first_turn,
    make_pipeline,
    run_until,
    serve_one,
    silence,
    stop,
    voiced,
    watch_events,
)

from agent.asr.base import Transcript
from agent.audio.chunk import AudioChunk
from agent.audio.sinks import WavSink
from agent.core.config import Config, VadConfig, WakeConfig
from agent.core.events import EventBus, now_ms
from agent.loop.pipeline import State
from agent.plugins.loader import ToolRegistry
from agent.understanding.engine import Assistant

# ---------------------------------------------------------------------------------------------------- tests


async def test_push_to_talk_serves_a_request_with_states_and_latency(tmp_path: Path) -> None:
    mic = ScriptedMic(silence(0.5), voiced(1.5), silence(1.0))
    pipeline = make_pipeline(tmp_path, mic)
    seen, reader = watch_events(pipeline.events)
    beats: list[float] = []
    pipeline.health_beat = lambda: beats.append(now_ms())
    await serve_one(pipeline)
    reader.cancel()
    record = pipeline.records[-1]
    assert record.outcome == "replied" and record.trigger == "push-to-talk"
    assert pipeline.assistant.calls == ["set the temperature to 21"]
    assert pipeline.tts.spoken == ["Temperature set to 21 degrees.", "Anything else?"]
    states = [e.data["state"] for e in seen if e.type == "state"]
    assert states[:4] == ["listening", "thinking", "speaking", "idle"]
    assert all(e.timestamp_ms > 0 for e in seen)
    latency = record.latency_ms()
    assert 60 <= latency["endpoint"] <= 1500  # silence_ms=300 of audio fed at 4x real time
    assert latency["transcript_final"] <= latency["first_token"] <= latency["first_audio"]
    assert len(beats) > 20  # one per chunk
    wav = sorted((tmp_path / "out").glob("*.wav"))
    assert len(wav) == 1 and wav[0].stat().st_size > 20000
    status = pipeline.status()
    assert status["state"] == "idle" and status["last_turns"][-1]["outcome"] == "replied"


async def test_wake_then_no_speech_gives_up_quietly(tmp_path: Path) -> None:
    mic = ScriptedMic(silence(0.3), silence(3.0))
    pipeline = make_pipeline(tmp_path, mic)
    await serve_one(pipeline)
    record = pipeline.records[-1]
    assert record.outcome == "no-speech" and record.end_reason == "no-speech"
    assert pipeline.assistant.calls == [] and pipeline.tts.spoken == []
    assert pipeline.recognizer.utterance_ms == []  # recognition was not even finished
    assert not list((tmp_path / "out").glob("*.wav"))


@pytest.mark.parametrize("heard", ["", "uh", "[BLANK_AUDIO]", "(engine humming)"])
async def test_unusable_transcript_says_not_caught_without_a_model_call(tmp_path: Path, heard: str) -> None:
    mic = ScriptedMic(silence(0.3), voiced(1.0), silence(1.0))
    pipeline = make_pipeline(tmp_path, mic, texts=[heard])
    await serve_one(pipeline)
    assert pipeline.records[-1].outcome == "not-caught"
    assert pipeline.assistant.calls == []
    assert pipeline.tts.spoken == ["Sorry, I didn't catch that."]


async def test_wake_phrase_is_stripped_from_the_request(tmp_path: Path) -> None:
    mic = ScriptedMic(silence(0.3), voiced(1.0), silence(1.0))
    pipeline = make_pipeline(tmp_path, mic, texts=["Hey cabin, play some jazz."])
    await serve_one(pipeline)
    assert pipeline.assistant.calls == ["play some jazz."]


async def test_barge_in_by_push_to_talk_stops_playback_and_serves_a_new_request(tmp_path: Path) -> None:
    # A slow model: the reply keeps streaming (and playing, paced) for seconds.
    config = Config()
    assistant = FakeAssistant(
        config, reply=" ".join(["Here is a very long answer."] * 12), token_delay_s=0.05
    )
    mic = ScriptedMic(silence(0.3), voiced(1.0), silence(0.6), speed=1.0, tail_seconds=20)
    sink = WavSink(tmp_path / "out", pace_realtime=True)
    pipeline = make_pipeline(
        tmp_path, mic, texts=["tell me a story", "set the temperature to 21"], assistant=assistant, sink=sink
    )
    task = await run_until(pipeline, lambda: True)
    await asyncio.sleep(0.05)
    pipeline.push_to_talk()
    async with asyncio.timeout(20):
        while pipeline.state != State.SPEAKING:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    assistant.reply = "Done."  # the second request gets a short answer
    pressed = now_ms()
    mic.insert(voiced(1.0, seed=3))
    pipeline.push_to_talk()
    async with asyncio.timeout(5):
        while pipeline.state == State.SPEAKING:
            await asyncio.sleep(0.005)
    stopped_ms = now_ms() - pressed
    async with asyncio.timeout(30):
        while len(pipeline.records) < 2:
            await asyncio.sleep(0.02)
    await stop(task)
    first, second = pipeline.records[0], pipeline.records[1]
    assert first.outcome == "interrupted" and assistant.cancelled == 1
    assert (
        second.barge_in and second.outcome == "replied" and second.transcript == "set the temperature to 21"
    )
    assert sink.interrupted[0] is True and len(sink.files) == 2
    assert stopped_ms < 200, f"playback kept going {stopped_ms:.0f} ms after push-to-talk"


async def test_follow_up_window_takes_the_answer_without_a_wake(tmp_path: Path) -> None:
    config_wake = WakeConfig(engine="none", follow_up_seconds=4.0)
    mic = ScriptedMic(silence(0.3), voiced(1.0), silence(1.0), tail_seconds=10)
    pipeline = make_pipeline(tmp_path, mic, texts=["order a pizza", "yes"], wake=config_wake)
    pipeline.assistant.awaiting = True
    task = await first_turn(pipeline)
    assert pipeline.detector.in_follow_up
    mic.insert(np.concatenate([silence(0.3), voiced(0.8, seed=5), silence(0.8)]))
    async with asyncio.timeout(20):
        while len(pipeline.records) < 2:
            await asyncio.sleep(0.02)
    await stop(task)
    assert pipeline.records[1].trigger == "follow-up" and pipeline.records[1].outcome == "replied"
    assert pipeline.assistant.calls == ["order a pizza", "yes"]


async def test_announcement_waits_for_idle_and_is_never_spoken_over_a_reply(tmp_path: Path) -> None:
    bus = EventBus()
    config = Config()
    assistant = FakeAssistant(config, token_delay_s=0.05, events=bus)

    async def outbox() -> AsyncIterator[str]:
        await asyncio.sleep(0.4)  # arrives while the car is thinking/speaking
        yield "Your pizza order was placed."

    mic = ScriptedMic(silence(0.1), voiced(1.0), silence(1.0), tail_seconds=8)
    pipeline = make_pipeline(tmp_path, mic, assistant=assistant, events=bus, announcements=outbox())
    seen, reader = watch_events(bus)
    task = await run_until(pipeline, lambda: True)
    await asyncio.sleep(0.02)
    pipeline.push_to_talk()
    async with asyncio.timeout(20):
        while not any(e.type == "announcement-spoken" for e in seen):
            await asyncio.sleep(0.02)
    await stop(task)
    await asyncio.wait_for(pipeline.aclose(), timeout=5)
    reader.cancel()
    assert pipeline.tts.spoken[-1] == "Your pizza order was placed."
    order = [e.type for e in seen if e.type in ("turn-record", "announcement-spoken")]
    assert order == ["turn-record", "announcement-spoken"]


async def test_source_end_finishes_the_request_in_progress(tmp_path: Path) -> None:
    mic = ScriptedMic(silence(0.2), voiced(1.0), tail_seconds=0.0)
    pipeline = make_pipeline(tmp_path, mic)
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, pipeline.push_to_talk)
    await asyncio.wait_for(pipeline.run(), timeout=20)
    assert pipeline.records[-1].outcome == "replied" and pipeline.records[-1].end_reason == "source-ended"
    assert pipeline.state == State.IDLE


async def test_wake_phrase_heard_in_the_follow_up_window_listens_again_for_the_request(
    tmp_path: Path,
) -> None:
    config_wake = WakeConfig(engine="none", follow_up_seconds=4.0)
    mic = ScriptedMic(silence(0.3), voiced(1.0), silence(1.0), tail_seconds=10)
    pipeline = make_pipeline(
        tmp_path, mic, texts=["order a pizza", "Hey cabin.", "play some jazz"], wake=config_wake
    )
    task = await first_turn(pipeline)
    # "Hey cabin" … pause longer than silence_ms … "play some jazz"
    mic.insert(
        np.concatenate([silence(0.3), voiced(0.6, seed=5), silence(0.5), voiced(1.0, seed=6), silence(0.8)])
    )
    async with asyncio.timeout(20):
        while len(pipeline.records) < 2:
            await asyncio.sleep(0.02)
    await stop(task)
    second = pipeline.records[1]
    assert second.index == 2 and second.trigger == "wake" and second.transcript == "play some jazz"
    assert pipeline.assistant.calls == ["order a pizza", "play some jazz"]


async def test_a_purchase_asked_over_the_control_socket_is_confirmed_like_a_spoken_one(tmp_path: Path) -> None:
    """`cabin-agent ask` / the socket's `say` goes through the same turn engine: the price is asked, a refusal
    orders nothing, and only a clear yes places the order."""
    from helpers.fakes import FakeModel, OfflineMealsPlugin

    config = Config(outbox={"path": tmp_path / "outbox.sqlite3"}, wake={"engine": "none"})
    meals = OfflineMealsPlugin(config)
    registry = ToolRegistry()
    registry.add_plugin(meals)
    order = {"name": "order_meal", "arguments": {"item": "pepperoni pizza", "size": "large"}}
    assistant = Assistant(config, registry, FakeModel({"order a large pepperoni pizza": order}))
    mic = ScriptedMic(np.zeros(RATE // 10, np.int16), tail_seconds=30)
    pipeline = make_pipeline(tmp_path, mic, assistant=assistant)  # type: ignore[arg-type]
    task = asyncio.create_task(pipeline.run())
    try:
        asked = await asyncio.wait_for(pipeline.request("order a large pepperoni pizza"), 10)
        refused = await asyncio.wait_for(pipeline.request("please don't"), 10)
        assert asked.awaiting_confirmation and asked.reply.endswith("Shall I order it?")
        assert refused.reply == "Okay, I won't order it." and meals.orders == []
        await asyncio.wait_for(pipeline.request("order a large pepperoni pizza"), 10)
        placed = await asyncio.wait_for(pipeline.request("yes"), 10)
        assert placed.tool_calls[0]["status"] == "ok" and len(meals.orders) == 1
    finally:
        await stop(task)
        await assistant.close()


# ---------------------------------------------------------------- a whole request ends at a short pause


class PausingRecognizer(FakeRecognizer):
    """A final-only engine (like whisper) that can also transcribe the audio so far (`interim`): `heard` says
    what it makes of the audio once that much of it (ms since listening began) has come in."""

    def __init__(self, heard: Sequence[tuple[float, str]], texts: Sequence[str]) -> None:
        super().__init__(texts)
        self.heard = sorted(heard)
        self.interims: list[tuple[float, str]] = []
        self.finals = 0

    async def interim(self, chunks: Sequence[AudioChunk]) -> Transcript:
        ms = sum(c.duration_ms for c in chunks)
        text = next((t for at, t in reversed(self.heard) if ms >= at), "")
        self.interims.append((ms, text))
        return Transcript(text, is_final=False)

    async def transcribe(self, chunks: AsyncIterable[AudioChunk]) -> AsyncIterator[Transcript]:
        async for _ in chunks:
            pass
        self.finals += 1
        yield Transcript(self.texts.pop(0) if self.texts else "", is_final=True)


class PreparingAssistant(FakeAssistant):
    """Records what the loop asks the model to read ahead of the turn."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.prepared: list[str] = []

    async def prepare(self, heard: str = "") -> int:
        self.prepared.append(heard)
        return 0


async def serve_one_request(tmp_path: Path, recognizer: PausingRecognizer, *parts: np.ndarray,
                            partials_every_ms: int = 700, pause_transcript_ms: int = 120) -> Any:
    vad = VadConfig(engine="webrtcvad", pause_ms=250, pause_transcript_ms=pause_transcript_ms, silence_ms=1500,
                    no_speech_timeout_seconds=1.5)
    pipeline = make_pipeline(tmp_path, ScriptedMic(*parts), vad=vad)
    asr = pipeline.config.asr.model_copy(update={"partials_every_ms": partials_every_ms})
    pipeline.config = pipeline.config.model_copy(update={"asr": asr})
    pipeline.assistant = PreparingAssistant(pipeline.config)
    pipeline.recognizer = recognizer
    await serve_one(pipeline)
    return pipeline


async def test_a_whole_request_ends_at_the_short_pause_with_its_transcript_made(tmp_path: Path) -> None:
    recognizer = PausingRecognizer([(0, "set the"), (1900, "set the temperature to 21")], ["(never asked)"])
    pipeline = await serve_one_request(tmp_path, recognizer, silence(0.5), voiced(1.5), silence(2.5))
    record = pipeline.records[-1]
    assert record.end_reason == "complete" and record.outcome == "replied"
    assert pipeline.assistant.calls == ["set the temperature to 21"]
    assert recognizer.finals == 0  # the pause's transcript was the request's: no second decode
    # 250 ms of audio at 4x is ~60 ms; the long silence (1500 ms) would have been ~375 ms.
    assert record.latency_ms()["endpoint"] < 300


@pytest.mark.parametrize("begin_ms", [120, 0])
async def test_the_pause_transcript_is_begun_before_the_pause_ends_the_request(tmp_path: Path, begin_ms: int) -> None:
    recognizer = PausingRecognizer([(0, "set the"), (1900, "set the temperature to 21")], ["(never asked)"])
    pipeline = await serve_one_request(tmp_path, recognizer, silence(0.5), voiced(1.5), silence(2.5),
                                       partials_every_ms=0, pause_transcript_ms=begin_ms)
    record = pipeline.records[-1]
    (at_ms, text), = recognizer.interims
    silent_ms = at_ms - pipeline.endpointer.speech_end_ms  # silence heard when the transcript was begun
    assert (begin_ms <= silent_ms < 250) if begin_ms else (silent_ms >= 250)
    assert record.end_reason == "complete" and pipeline.assistant.calls == ["set the temperature to 21"]
    # The request still ends only once the pause is 250 ms long (the endpointer stops at the end).
    assert 250 <= pipeline.endpointer.pause_ms < 400


async def test_speaking_again_before_the_pause_is_long_enough_keeps_listening(tmp_path: Path) -> None:
    # "set the temperature to 21" sounds whole at 120 ms of silence, but the driver goes on 200 ms later.
    recognizer = PausingRecognizer([(0, "set the"), (1900, "set the temperature to 21"),
                                    (2500, "set the temperature to 21 and the fan to 3")], ["(never asked)"])
    pipeline = await serve_one_request(tmp_path, recognizer, silence(0.5), voiced(1.5), silence(0.2),
                                       voiced(0.8), silence(2.5), partials_every_ms=0)
    assert pipeline.assistant.calls == ["set the temperature to 21 and the fan to 3"]
    assert pipeline.records[-1].end_reason == "complete"


async def test_the_words_so_far_are_read_ahead_while_the_driver_speaks(tmp_path: Path) -> None:
    recognizer = PausingRecognizer([(0, "set the"), (1900, "set the temperature to 21")], ["(never asked)"])
    pipeline = await serve_one_request(tmp_path, recognizer, silence(0.5), voiced(1.5), silence(2.5))
    during = [text for ms, text in recognizer.interims if ms < 1900]
    assert during and set(during) == {"set the"}  # transcribed while speaking, every 700 ms of audio
    assert "set the" in pipeline.assistant.prepared  # and handed to the model before the turn
    assert pipeline.assistant.calls == ["set the temperature to 21"]


async def test_no_partials_when_turned_off(tmp_path: Path) -> None:
    recognizer = PausingRecognizer([(0, "set the"), (1900, "set the temperature to 21")], ["(never asked)"])
    await serve_one_request(tmp_path, recognizer, silence(0.5), voiced(1.5), silence(2.5), partials_every_ms=0)
    assert [text for _, text in recognizer.interims] == ["set the temperature to 21"]  # only at the pause


async def test_words_that_trail_off_wait_for_the_long_silence_and_reuse_the_pause_transcript(tmp_path: Path) -> None:
    recognizer = PausingRecognizer([(0, "set the"), (1900, "set the temperature to")], ["(never asked)"])
    pipeline = await serve_one_request(tmp_path, recognizer, silence(0.5), voiced(1.5), silence(3.0))
    record = pipeline.records[-1]
    assert record.end_reason == "silence"
    assert record.latency_ms()["endpoint"] >= 300  # 1500 ms of audio at 4x
    assert recognizer.finals == 0 and pipeline.assistant.calls == ["set the temperature to"]
    assert "set the temperature to" in pipeline.assistant.prepared  # read ahead while waiting for the rest


async def test_speaking_again_after_a_pause_discards_what_the_pause_heard(tmp_path: Path) -> None:
    recognizer = PausingRecognizer([(0, "set the"), (1250, "set the temperature to"),
                                    (2800, "set the temperature to 21")], ["set the temperature to 21 degrees please"])
    pipeline = await serve_one_request(tmp_path, recognizer, silence(0.5), voiced(1.0), silence(0.5),
                                       voiced(1.0), silence(3.0), partials_every_ms=0)
    record = pipeline.records[-1]
    assert [text for _, text in recognizer.interims] == ["set the temperature to", "set the temperature to 21"]
    assert pipeline.assistant.calls == ["set the temperature to 21"]
    assert record.end_reason == "complete"