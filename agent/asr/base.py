"""Speech recognition stage: the Recognizer protocol, Transcript, AsrError codes and the `usable()` check.

Backends (vosk.py, whisper.py) import their native libraries; this module stays light so the pipeline and its
tests import fast.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from agent.audio.chunk import AudioChunk
from agent.core.errors import AsrError
from agent.core.events import now_ms

__all__ = [
    "ASR_ENGINE_FAILED",
    "ASR_MODEL_MISSING",
    "AsrError",
    "EngineThread",
    "Recognizer",
    "Transcript",
    "Word",
    "bias_phrases",
    "usable",
]

ASR_MODEL_MISSING = "asr-model-missing"
ASR_ENGINE_FAILED = "asr-engine-failed"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start_ms: float
    end_ms: float
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class Transcript:
    """What was heard. Partials (is_final=False) may be revised; exactly one final ends each utterance."""

    text: str
    is_final: bool
    confidence: float | None = None  # 0..1 where the engine gives one
    words: tuple[Word, ...] = ()
    timestamp_ms: float = field(default_factory=now_ms)  # when the engine produced it (monotonic clock)


@runtime_checkable
class Recognizer(Protocol):
    """One utterance in, transcripts out: `async for t in asr.transcribe(vad_segment): ...`."""

    name: str
    sample_rate_hz: int

    def set_vocabulary(self, words: Sequence[str]) -> None:
        """Bias recognition toward these words/phrases (menu items, contacts, places, the wake phrase).

        Applies from the next `transcribe()` call; an empty list removes the bias.
        """
        ...

    def transcribe(self, chunks: AsyncIterable[AudioChunk]) -> AsyncIterator[Transcript]:
        """Partials while audio flows, then one final when `chunks` ends. Raises AsrError."""
        ...

    async def aclose(self) -> None: ...


class EngineThread:
    """One dedicated worker thread per engine.

    Native engines (vosk, CTranslate2, onnxruntime) block; running them here keeps the event loop free, and
    one thread (not a pool) keeps calls into a non-thread-safe engine ordered and caps its CPU share at one
    caller on a 2-core head unit.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        # A cancelled await returns at once; the call already running finishes in the thread and is dropped.
        return await loop.run_in_executor(self._executor, fn, *args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Queue background work (e.g. preparing the next utterance) without waiting; `fn` logs its errors."""
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------- usable transcripts

# Hesitations and engine placeholders: a transcript made only of these is not a request.
FILLERS = frozenset(
    {
        "uh",
        "um",
        "umm",
        "uhm",
        "er",
        "erm",
        "ah",
        "eh",
        "hm",
        "hmm",
        "mm",
        "mmm",
        "mhm",
        "huh",
        "oh",
        "[unk]",
        "<unk>",
        "unk",
        "[noise]",
        "<noise>",
        "[laughter]",
        "嗯",
        "啊",
        "呃",
        "额",
        "哦",
        "唔",
        "嗯嗯",
        "啊啊",
        "那个",
        "음",
        "어",
        "아",
        "그",
    }
)
# Whisper marks non-speech as "[BLANK_AUDIO]", "(music)", "*cough*": annotations, not words.
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|<[^>]*>")


def usable(text: str | None) -> bool:
    """False for transcripts worth no model call: empty, punctuation only, fillers ("uh", "[unk]") only."""
    if not text:
        return False
    spaced = "".join(
        " " if unicodedata.category(ch).startswith(("P", "S")) else ch
        for ch in _ANNOTATION.sub(" ", text.casefold())
    )
    for bare in spaced.split():
        if bare in FILLERS:
            continue
        # A CJK run without spaces ("嗯嗯啊") is filler when every character is.
        if all(ch in FILLERS for ch in bare):
            continue
        return True
    return False


# ---------------------------------------------------------------- vocabulary


def bias_phrases(words: Iterable[str], *, latin_only: bool = False, max_phrases: int = 200) -> list[str]:
    """Clean, de-duplicated bias phrases in first-seen order (case-insensitive), optionally Latin script only.

    `latin_only` drops Chinese/Korean entries for English-only engines (whisper tiny.en), where they would
    only confuse the prompt.
    """
    seen: set[str] = set()
    out: list[str] = []
    for raw in words:
        phrase = " ".join(str(raw).split())
        if not phrase:
            continue
        if latin_only and not all(ord(ch) < 0x250 for ch in phrase):
            continue
        key = phrase.casefold()
        if key in seen:
            continue
        seen.add(key)
        out.append(phrase)
        if len(out) >= max_phrases:
            break
    return out


def engine_failed(engine: str, err: BaseException) -> AsrError:
    return AsrError(f"{engine} recognition failed: {err}", code=ASR_ENGINE_FAILED, engine=engine)
