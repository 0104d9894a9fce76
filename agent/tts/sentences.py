"""Sentence streaming: cut the model's reply into sentences as it streams; speech starts after the first.

`sentences()` emits each sentence as soon as its end is certain; `speak_stream()` synthesises them in order
while the rest of the reply is still being generated.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterable, AsyncIterator

from agent.audio.chunk import AudioChunk
from agent.core.logging import get_logger
from agent.tts.base import Synthesizer

log = get_logger("tts")

# "Dr. Li" and "e.g. this" are not sentence ends (compared case-insensitively, without the final dot).
ABBREVIATIONS = frozenset(
    {
        "dr",
        "mr",
        "mrs",
        "ms",
        "prof",
        "sr",
        "jr",
        "st",
        "ave",
        "rd",
        "blvd",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "approx",
        "dept",
        "est",
        "inc",
        "ltd",
        "corp",
        "mt",
        "ft",
        "a.m",
        "p.m",
        "u.s",
        "u.k",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    }
)
# Abbreviations only before a number ("No. 5", "Tel. 555"): "No. I can't." is two sentences.
NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "tel", "ext", "fig", "vol", "p", "pp"})
CJK_ENDS = (
    "。！？；!?;"  # Chinese full-width ends (and ASCII ones right after CJK text) end a sentence at once
)
LATIN_ENDS = ".!?"
CLOSERS = "\"'”’)]}」』》"
# Beyond this many characters without a sentence end, cut at a comma/space: latency must stay bounded.
MAX_SENTENCE_CHARS = 220

_CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")


def _is_cjk(ch: str) -> bool:
    return bool(_CJK.match(ch))


def _abbreviation_before(text: str, dot: int, following: str) -> bool:
    """True when the word ending at text[dot] (a '.') is a known abbreviation or a single initial."""
    start = dot
    while start > 0 and (text[start - 1].isalpha() or text[start - 1] == "."):
        start -= 1
    word = text[start:dot].casefold()
    if not word:
        return False
    if word in ABBREVIATIONS:
        return True
    if word in NUMBER_ABBREVIATIONS:
        return following[:1].isdigit()
    # Dotted forms like "a.m", and initials ("J. R. Smith"): a lone capital after a space, not "21°C.".
    if "." in word:
        return True
    return len(word) == 1 and text[start].isupper() and (start == 0 or text[start - 1].isspace())


def split_complete(buffer: str, final: bool = False) -> tuple[list[str], str]:
    """Split `buffer` into the sentences known to be complete and the rest still being written.

    A Latin end (. ! ?) counts only once the next character is known (whitespace, then not a lowercase
    letter), so "3." then "5" and "Dr." then " Li" never cut. With `final`, the rest counts as complete.
    """
    out: list[str] = []
    start = 0
    i = 0
    n = len(buffer)
    while i < n:
        ch = buffer[i]
        end: int | None = None
        if ch == "\n":
            end = i + 1
        elif ch in "。！？；" or (ch in "!?;" and i > 0 and _is_cjk(buffer[i - 1])):
            end = i + 1
            while end < n and (buffer[end] in CLOSERS or buffer[end] in CJK_ENDS):
                end += 1
        elif ch in LATIN_ENDS:
            j = i + 1
            while j < n and (buffer[j] in LATIN_ENDS or buffer[j] in CLOSERS):
                j += 1
            if j >= n:
                if final:
                    end = n
                else:
                    break  # the next character decides; wait for it
            elif buffer[j].isspace():
                k = j
                while k < n and buffer[k].isspace():
                    k += 1
                if k >= n and not final:
                    break  # "Dr. " then "li..." or "Dr. " then "Li": need the next word to decide
                nxt = buffer[k] if k < n else ""
                if ch == "." and (_abbreviation_before(buffer, i, nxt) or (nxt and nxt.islower())):
                    end = None
                else:
                    end = j
            elif _is_cjk(buffer[j]):
                end = j
            i = j - 1 if end is None else i
        if end is not None:
            sentence = buffer[start:end].strip()
            if sentence:
                out.append(sentence)
            start = end
            i = end
            continue
        i += 1
    rest = buffer[start:]
    if len(rest) > MAX_SENTENCE_CHARS:
        cut = max(rest.rfind(", ", 0, MAX_SENTENCE_CHARS), rest.rfind("，", 0, MAX_SENTENCE_CHARS))
        if cut <= 0:
            cut = rest.rfind(" ", 0, MAX_SENTENCE_CHARS)
        if cut > 0:
            out.append(rest[: cut + 1].strip())
            rest = rest[cut + 1 :]
    if final:
        if rest.strip():
            out.append(rest.strip())
        rest = ""
    return out, rest


async def sentences(text_deltas: AsyncIterable[str]) -> AsyncIterator[str]:
    """Each complete sentence of a streamed text, as soon as it is complete; the remainder at the end."""
    buffer = ""
    async for delta in text_deltas:
        if not delta:
            continue
        buffer += delta
        done, buffer = split_complete(buffer)
        for sentence in done:
            yield sentence
    done, _ = split_complete(buffer, final=True)
    for sentence in done:
        yield sentence


async def speak_stream(text_deltas: AsyncIterable[str], tts: Synthesizer) -> AsyncIterator[AudioChunk]:
    """Audio for a streamed reply: the first sentence is synthesised (and plays) while the model still writes.

    The reply is read by a task of its own so generation never waits on synthesis; cancelling or closing this
    generator (barge-in) cancels that task and stops synthesis before the next sentence.
    """
    # Unbounded: sentences are short strings, and the end marker must always fit.
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def read_reply() -> None:
        try:
            async for sentence in sentences(text_deltas):
                queue.put_nowait(sentence)
        finally:
            # Always wake the speaker, also when the reply stream failed (its error surfaces below).
            queue.put_nowait(None)

    reader = asyncio.create_task(read_reply(), name="tts-sentences")
    try:
        while True:
            sentence = await queue.get()
            if sentence is None:
                break
            async for chunk in tts.synthesize(sentence):
                yield chunk
        await reader  # re-raises a failure of the reply stream
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
