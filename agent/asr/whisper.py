"""Recognition with faster-whisper (CTranslate2): the utterance is buffered and decoded once at its end.

Whisper decodes a 30 s window whatever the audio length (about 0.5-0.65 s for tiny.en int8 on 2 cores), so
partials would cost a full decode each; this engine yields only the final, and decodes what was said so far
when the loop asks (`interim`, at a pause in the driver's speech). Biasing goes through the decoder
prompt: `initial_prompt` (default) or `hotwords`, built from the vocabulary.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agent.asr.base import (
    ASR_MODEL_MISSING,
    AsrError,
    EngineThread,
    Transcript,
    bias_phrases,
    engine_failed,
)
from agent.audio.chunk import AudioChunk
from agent.core.events import now_ms
from agent.core.logging import get_logger

log = get_logger("asr")

BiasMethod = Literal["prompt", "hotwords", "none"]
Window = Literal["fit", "full"]

# Whisper's prompt holds at most 223 tokens; ~4 characters a token leaves room for the decoder's own context.
MAX_PROMPT_CHARS = 600
# Whisper's own no-speech rule: a segment this likely silent and this unsure is noise, not words.
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
# The fitted window: the request plus this much silence (whisper's own padding is silence too), at most
# whisper's 30 s. Its encoder costs in proportion to the window: 0.67 s for 30 s, 0.08 s for 10 s (tiny.en).
# With the glossary prompt a short tail lets whisper say the request again (1 s: 8 of 36 noisy requests, 3 s:
# word error 39 %); 8 s: no loop, word error 26.5 % and key words 76 % as with the 30 s window (26.5 %, 75 %),
# in 0.21 s instead of 0.73 s.
FIT_TAIL_SECONDS = 8.0
MAX_FRAMES = 3000  # whisper's positional table: 30 s of 10 ms frames
_WORDS = re.compile(r"[\w']+")


def build_prompt(phrases: Sequence[str], max_chars: int = MAX_PROMPT_CHARS) -> str:
    """A short comma-separated glossary; whisper continues in the spelling and style of its prompt."""
    prompt = ""
    for phrase in phrases:
        candidate = f"{prompt}, {phrase}" if prompt else phrase
        if len(candidate) + 1 > max_chars:
            break
        prompt = candidate
    return f"{prompt}." if prompt else ""


def _to_float_16k(parts: list[AudioChunk]) -> np.ndarray:
    """Join the utterance first, then convert once: per-chunk resampling would click at every boundary."""
    if not parts:
        return np.zeros(0, dtype=np.float32)
    first = parts[0]
    if all(p.rate == first.rate and p.channels == first.channels and p.width == first.width for p in parts):
        joined = AudioChunk(
            b"".join(p.pcm for p in parts), rate=first.rate, width=first.width, channels=first.channels
        )
        pcm = joined.to_format(16000, 1).pcm
    else:
        pcm = b"".join(p.to_format(16000, 1).pcm for p in parts)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def _once(text: str) -> str:
    """Whisper caught in a loop says the request again ("call mom please, call mom please, call"): a request
    does not begin again with its own first three words, so the text is cut where they come back."""
    words = list(_WORDS.finditer(text))
    if len(words) < 6:
        return text
    key = [w.group(0).lower() for w in words]
    for i in range(3, len(key) - 2):
        if key[i : i + 3] == key[:3]:
            return text[: words[i].start()].rstrip(" ,;、，")
    return text


class WhisperRecognizer:
    """A loaded faster-whisper model. English-only models (*.en) get a Latin-script vocabulary only."""

    name = "whisper"
    sample_rate_hz = 16000

    def __init__(
        self,
        model_dir: Path | str,
        *,
        language: str = "en",
        beam_size: int = 1,
        compute_type: str = "int8",
        cpu_threads: int = 2,
        bias: BiasMethod = "prompt",
        english_only: bool | None = None,
        window: Window = "fit",
        warm_up: bool = True,
    ) -> None:
        from faster_whisper import WhisperModel  # native library: imported only by this backend

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "model.bin").is_file():
            raise AsrError(
                f"whisper model not found at {self.model_dir} (fetch it with `cabin-agent models fetch`)",
                code=ASR_MODEL_MISSING,
                path=str(self.model_dir),
            )
        try:
            self._model = WhisperModel(
                str(self.model_dir),
                device="cpu",
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=True,
            )
        except Exception as err:
            raise AsrError(
                f"whisper model at {self.model_dir} could not be loaded: {err}",
                code=ASR_MODEL_MISSING,
                path=str(self.model_dir),
            ) from err
        self.english_only = (not self._model.model.is_multilingual) if english_only is None else english_only
        self.language = "en" if self.english_only else language
        self.beam_size = beam_size
        self.bias: BiasMethod = bias
        self.window: Window = window
        self._phrases: list[str] = []
        from faster_whisper.tokenizer import Tokenizer

        self._tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual,
                                    task="transcribe", language=None if self.english_only else self.language)
        self._thread = EngineThread("asr-whisper")
        if warm_up:
            # The first decode sets up CTranslate2's buffers (~0.5 s extra); pay it at load, not on a request.
            self._decode(np.zeros(self.sample_rate_hz // 2, dtype=np.float32), "none")
        log.info(
            "whisper model loaded",
            path=str(self.model_dir),
            english_only=self.english_only,
            beam_size=beam_size,
            window=window,
            cpu_threads=cpu_threads,
        )

    @classmethod
    async def load(cls, model_dir: Path | str, **kwargs: Any) -> WhisperRecognizer:
        import asyncio

        return await asyncio.to_thread(cls, model_dir, **kwargs)

    def set_vocabulary(self, words: Sequence[str]) -> None:
        self._phrases = bias_phrases(words, latin_only=self.english_only)

    @property
    def prompt(self) -> str:
        return build_prompt(self._phrases)

    def _decode(self, audio: np.ndarray, bias: BiasMethod) -> tuple[str, float | None]:
        if self.window == "fit" and bias != "hotwords":
            return self._decode_fitted(audio, bias)
        return self._decode_full(audio, bias)

    def _decode_fitted(self, audio: np.ndarray, bias: BiasMethod) -> tuple[str, float | None]:
        """One greedy (or beam) pass with the encoder's window cut to the request instead of 30 s.

        faster-whisper pads every clip to whisper's 30 s window, and the encoder's cost is the window's: for a
        three-second request that is most of the time (0.82 s → about 0.15 s per request on 2 cores with tiny.en,
        key words heard as often or more on noisy synthetic requests). CTranslate2 takes the shorter window.
        """
        from faster_whisper.transcribe import get_ctranslate2_storage

        tail = np.zeros(int(FIT_TAIL_SECONDS * self.sample_rate_hz), dtype=np.float32)
        features = self._model.feature_extractor(np.concatenate([audio.astype(np.float32), tail]))
        frames = min(MAX_FRAMES, features.shape[-1] - features.shape[-1] % 2)
        features = np.ascontiguousarray(features[:, :frames][None], dtype=np.float32)
        encoded = self._model.model.encode(get_ctranslate2_storage(features), to_cpu=False)
        tok = self._tokenizer
        prompt: list[int] = []
        glossary = self.prompt if bias == "prompt" else ""
        if glossary:
            # As whisper's initial prompt: the previous-text slot, at most half the decoder's context.
            prompt = [tok.sot_prev, *tok.encode(" " + glossary.strip())[-223:]]
        prompt += [*tok.sot_sequence, tok.no_timestamps]
        seconds = len(audio) / self.sample_rate_hz
        # Room for fast speech, none for a loop: a short window invites whisper to say the words again (and no
        # three words twice: a request does not repeat itself, a decoding loop does).
        new_tokens = int(16 + 8 * seconds)
        result = self._model.model.generate(
            encoded, [prompt], beam_size=self.beam_size, max_length=min(448, len(prompt) + new_tokens),
            return_scores=True, return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1],
            no_repeat_ngram_size=3,
        )[0]
        ids = [t for t in result.sequences_ids[0] if t < tok.eot]
        text = _once(tok.decode(ids).strip())
        logprob = float(result.scores[0]) if result.scores else 0.0
        if not text or (result.no_speech_prob > NO_SPEECH_PROB and logprob < LOW_LOGPROB):
            return "", None
        return text, math.exp(logprob)

    def _decode_full(self, audio: np.ndarray, bias: BiasMethod) -> tuple[str, float | None]:
        kwargs: dict[str, Any] = {}
        prompt = self.prompt
        if prompt and bias == "prompt":
            kwargs["initial_prompt"] = prompt
        elif prompt and bias == "hotwords":
            kwargs["hotwords"] = prompt
        segments, _info = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            # One utterance: no cross-window conditioning, and temperature fallback only costs time here.
            condition_on_previous_text=False,
            temperature=0.0,
            without_timestamps=False,
            **kwargs,
        )
        texts: list[str] = []
        logprobs: list[float] = []
        for seg in segments:
            if seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < LOW_LOGPROB:
                continue
            texts.append(seg.text.strip())
            logprobs.append(seg.avg_logprob)
        text = " ".join(t for t in texts if t)
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else None
        return text, confidence

    def transcribe_array(self, audio: np.ndarray, bias: BiasMethod | None = None) -> Transcript:
        """Blocking decode of float32 16 kHz mono audio (for benchmarks and the CLI; the pipeline uses
        `transcribe`)."""
        text, confidence = self._decode(audio, self.bias if bias is None else bias)
        return Transcript(text, is_final=True, confidence=confidence)

    async def transcribe(self, chunks: AsyncIterable[AudioChunk]) -> AsyncIterator[Transcript]:
        parts: list[AudioChunk] = []
        async for chunk in chunks:
            parts.append(chunk)
        yield await self._transcript(parts, is_final=True)

    async def interim(self, chunks: Sequence[AudioChunk]) -> Transcript:
        """What the audio so far says: the loop asks at a pause in the driver's speech, so that a finished
        request can end there with its transcript already made (whisper has no cheaper partials)."""
        return await self._transcript(list(chunks), is_final=False)

    async def _transcript(self, parts: list[AudioChunk], *, is_final: bool) -> Transcript:
        audio = _to_float_16k(parts)
        if audio.size == 0:
            return Transcript("", is_final=is_final, timestamp_ms=now_ms())
        try:
            text, confidence = await self._thread.run(self._decode, audio, self.bias)
        except Exception as err:  # CancelledError passes through
            raise engine_failed("whisper", err) from err
        log.debug("whisper final" if is_final else "whisper interim", transcript=text, confidence=confidence)
        return Transcript(text, is_final=is_final, confidence=confidence, timestamp_ms=now_ms())

    async def aclose(self) -> None:
        self._thread.close()
