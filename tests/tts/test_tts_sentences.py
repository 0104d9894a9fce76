"""The sentence streamer: where a reply is cut, and how speak_stream overlaps writing and speaking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from helpers.audio import collect

from agent.audio.chunk import AudioChunk
from agent.tts.sentences import MAX_SENTENCE_CHARS, sentences, speak_stream, split_complete


async def deltas_of(*parts: str, delay: float = 0.0) -> AsyncIterator[str]:
    for part in parts:
        if delay:
            await asyncio.sleep(delay)
        yield part


async def all_sentences(*parts: str) -> list[str]:
    return await asyncio.wait_for(collect(sentences(deltas_of(*parts))), 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("It is 3.5 km away. Go left.", ["It is 3.5 km away.", "Go left."]),
        ("Dr. Li called. Mr. Smith too.", ["Dr. Li called.", "Mr. Smith too."]),
        ("Meet at 14:30. Then go home.", ["Meet at 14:30.", "Then go home."]),
        ("Bring snacks, e.g. fries. Done.", ["Bring snacks, e.g. fries.", "Done."]),
        ("It is 21°C. Nice.", ["It is 21°C.", "Nice."]),
        ("No. I can't do that.", ["No.", "I can't do that."]),
        ("Room No. 5 is free.", ["Room No. 5 is free."]),
        ("J. R. Smith is here. Hi.", ["J. R. Smith is here.", "Hi."]),
        ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
        ("Wait... what? Really?!", ["Wait... what?", "Really?!"]),
        ("你好。今天很冷！要开暖气吗？好的", ["你好。", "今天很冷！", "要开暖气吗？", "好的"]),
        ("温度设为21度；风量调低。", ["温度设为21度；", "风量调低。"]),
        ("距离3.5公里，大约25分钟。出发吧！", ["距离3.5公里，大约25分钟。", "出发吧！"]),
        ("好的!马上出发?", ["好的!", "马上出发?"]),
        ("Line one\nLine two", ["Line one", "Line two"]),
        ("no ending punctuation", ["no ending punctuation"]),
        ("", []),
    ],
)
async def test_sentences_whole_text(text: str, expected: list[str]) -> None:
    assert await all_sentences(text) == expected


async def test_sentence_cut_as_token_stream_arrives() -> None:
    # Token boundaries in awkward places: "3." then "5", "Dr" "." " " "Li".
    parts = ["It is ", "3", ".", "5 km", " away", ".", " Dr", ".", " ", "Li", " will ", "call", ". ", "Bye"]
    assert await all_sentences(*parts) == ["It is 3.5 km away.", "Dr. Li will call.", "Bye"]


def test_a_sentence_is_emitted_as_soon_as_its_end_is_certain() -> None:
    done, rest = split_complete("Turning on the heat. ")
    assert done == [] and rest  # the next word decides ("Dr. Li" vs a new sentence)
    done, rest = split_complete("Turning on the heat. It")
    assert done == ["Turning on the heat."] and rest == " It"
    done, rest = split_complete("好的。马上")
    assert done == ["好的。"] and rest == "马上"  # Chinese ends need no lookahead
    done, rest = split_complete("It is 3.")
    assert done == [] and rest == "It is 3."  # maybe "3.5"


def test_runaway_sentence_is_cut_at_a_comma() -> None:
    text = "one, " * 60
    done, rest = split_complete(text)
    assert done and all(len(s) <= MAX_SENTENCE_CHARS for s in done)
    assert (" ".join(done) + " " + rest).split() == text.split()


class FakeTts:
    """Stands in for Piper: one 100 ms chunk per sentence after `delay`; records what it was asked to say."""

    name = "fake"
    sample_rate_hz = 16000
    language = "en"

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay
        self.spoken: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        await asyncio.sleep(self.delay)
        self.spoken.append(text)
        yield AudioChunk(b"\1\0" * 1600)

    async def aclose(self) -> None:
        pass


async def test_speak_stream_speaks_the_first_sentence_while_the_reply_streams() -> None:
    tts = FakeTts()
    writing_done = asyncio.Event()

    async def llm() -> AsyncIterator[str]:
        for part in ["Sure. ", "Setting ", "it ", "to ", "21 ", "degrees. ", "Anything ", "else?"]:
            await asyncio.sleep(0.05)
            yield part
        writing_done.set()

    stream = speak_stream(llm(), tts)
    first = await asyncio.wait_for(anext(stream), 5)
    assert first.samples == 1600
    assert not writing_done.is_set()
    rest = await asyncio.wait_for(collect(stream), 5)
    assert len(rest) == 2
    assert tts.spoken == ["Sure.", "Setting it to 21 degrees.", "Anything else?"]


async def test_speak_stream_keeps_reading_the_reply_while_synthesising() -> None:
    tts = FakeTts(delay=0.3)
    received: list[float] = []
    loop = asyncio.get_running_loop()

    async def llm() -> AsyncIterator[str]:
        for part in ["One. ", "Two. ", "Three. ", "Four."]:
            received.append(loop.time())
            yield part

    started = loop.time()
    await asyncio.wait_for(collect(speak_stream(llm(), tts)), 5)
    # The whole reply was consumed long before the (slow) synthesis of the second sentence finished.
    assert received[-1] - started < 0.2


async def test_speak_stream_close_cancels_the_reply_reader() -> None:
    tts = FakeTts()
    cancelled = asyncio.Event()

    async def endless_llm() -> AsyncIterator[str]:
        try:
            i = 0
            while True:
                i += 1
                await asyncio.sleep(0.01)
                yield f"Sentence {i}. "
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stream = speak_stream(endless_llm(), tts)
    await asyncio.wait_for(anext(stream), 5)
    await asyncio.wait_for(stream.aclose(), 1)
    await asyncio.wait_for(cancelled.wait(), 1)
    spoken = len(tts.spoken)
    await asyncio.sleep(0.1)
    assert len(tts.spoken) == spoken  # nothing is synthesised after barge-in


async def test_speak_stream_surfaces_a_failing_reply() -> None:
    async def broken_llm() -> AsyncIterator[str]:
        yield "Okay. "
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="model crashed"):
        await asyncio.wait_for(collect(speak_stream(broken_llm(), FakeTts())), 5)
