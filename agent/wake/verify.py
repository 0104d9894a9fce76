"""Second-stage wake verification: whisper tiny.en transcribes the candidate window, a fuzzy match decides.

The first stage (pocketsphinx) runs permissively on every chunk; only its candidates reach whisper, so idle
CPU stays the spotter's. `VerifiedWake` wraps any WakeEngine and is itself one, so WakeDetector runs it on its
wake worker thread (never on the event loop). Acceptance rules were chosen on the generated test set
(scripts/wake_testset.py --verify; the numbers are in docs/audio.md).
"""

from __future__ import annotations

import collections
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.core.errors import WakeError
from agent.core.logging import get_logger
from agent.wake.base import Detection, WakeEngine

log = get_logger("wake")

RATE = 16000
# The window whisper hears ends at the chunk that completed the first-stage match. "hey cabin" lasts 0.5-1 s;
# the rest is context, which whisper needs to not hallucinate the prompt into a one-word window.
DEFAULT_WINDOW_MS = 1800
# 0.75 let "hey cab driver", "the cabin" and "hey can we" through; 0.85 cut false accepts 3x at the same
# detection.
DEFAULT_MIN_SIMILARITY = 0.85
# A loose first stage can fire on "hey ca-": whisper then hears only "Hey." One more look this much later
# recovered 7 % of the Piper clips (92 -> 99 %) without adding false accepts.
RETRY_AFTER_MS = 300
# Whisper's own no-speech estimate: above this, the window is noise/music, whatever text came out.
NO_SPEECH_REJECT = 0.6


def words_of(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[^\w' ]+", " ", text).split()


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def phrase_similarity(transcript: str, phrase: str) -> float:
    """1 - normalised character edit distance between the phrase and the closest run of transcript words.

    Runs of the phrase's word count +-1 are tried, joined without spaces ("hey cabin", "hey, cabin" and
    "heycabin" are the same), so the phrase may sit anywhere in the window's transcript.
    """
    target = "".join(words_of(phrase))
    heard = words_of(transcript)
    if not target or not heard:
        return 0.0
    n = len(words_of(phrase))
    best = 0.0
    for size in range(max(1, n - 1), n + 2):
        for start in range(0, max(1, len(heard) - size + 1)):
            run = "".join(heard[start : start + size])
            distance = _levenshtein(run, target)
            best = max(best, 1.0 - distance / max(len(run), len(target)))
    return best


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    transcript: str
    similarity: float
    seconds: float
    no_speech_prob: float | None = None


class WhisperVerifier:
    """faster-whisper tiny.en (int8) prompted with the wake phrase; `verify(audio)` on 16 kHz int16."""

    def __init__(
        self,
        model_dir: Path | str | None,
        phrase: str,
        *,
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
        # 2: 0.5 s per check instead of 0.7 s with 1 (2 shared cores). It runs only on candidates, and while
        # the car speaks the spotter is gated (wake.barge_in off), so it rarely competes with the LLM.
        cpu_threads: int = 2,
        prompt: bool = True,
        model: Any = None,
    ) -> None:
        self.phrase = " ".join(words_of(phrase))
        self.min_similarity = min_similarity
        # The phrase as the prompt: without it tiny.en writes "hey cabin" as "Hey Kevin" or "Hey, come in".
        self.initial_prompt = f"{phrase.strip().capitalize().rstrip('.!?')}." if prompt else None
        if model is None:
            try:
                from faster_whisper import WhisperModel
            except ImportError as err:
                raise WakeError(
                    "faster-whisper is not installed: wake verification needs it",
                    code="wake-engine-unavailable",
                ) from err
            if model_dir is None or not (Path(model_dir) / "model.bin").is_file():
                raise WakeError(
                    f"wake verifier: whisper model not found at {model_dir}",
                    code="wake-model-missing",
                    path=str(model_dir),
                )
            model = WhisperModel(
                str(model_dir),
                device="cpu",
                compute_type="int8",
                cpu_threads=cpu_threads,
                local_files_only=True,
            )
        self._model = model
        # The first decode allocates CTranslate2's buffers: pay it at load, not on the first wake.
        self.transcribe(np.zeros(RATE // 2, dtype=np.int16))

    def transcribe(self, audio: np.ndarray) -> tuple[str, float | None]:
        samples = audio.astype(np.float32) / 32768.0
        segments, _info = self._model.transcribe(
            samples,
            language="en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            initial_prompt=self.initial_prompt,
            vad_filter=False,
        )
        texts: list[str] = []
        no_speech: float | None = None
        for seg in segments:
            texts.append(seg.text.strip())
            no_speech = seg.no_speech_prob if no_speech is None else min(no_speech, seg.no_speech_prob)
        return " ".join(t for t in texts if t), no_speech

    def verify(self, audio: np.ndarray) -> Verdict:
        started = time.perf_counter()
        text, no_speech = self.transcribe(audio)
        similarity = phrase_similarity(text, self.phrase)
        accepted = similarity >= self.min_similarity and (no_speech is None or no_speech < NO_SPEECH_REJECT)
        return Verdict(accepted, text, round(similarity, 3), time.perf_counter() - started, no_speech)


@dataclass
class VerifyStats:
    candidates: int = 0
    accepted: int = 0
    verify_seconds: list[float] = field(default_factory=list)

    @property
    def mean_latency_ms(self) -> float:
        return 1000 * sum(self.verify_seconds) / len(self.verify_seconds) if self.verify_seconds else 0.0


class VerifiedWake:
    """A permissive first-stage engine whose candidates must pass the verifier. A WakeEngine itself."""

    def __init__(
        self, first_stage: WakeEngine, verifier: WhisperVerifier, *, window_ms: int = DEFAULT_WINDOW_MS
    ) -> None:
        self.first_stage = first_stage
        self.verifier = verifier
        self.name = f"{first_stage.name}+whisper"
        self.phrase = first_stage.phrase
        self.rate_hz = RATE
        self.window_ms = window_ms
        self.stats = VerifyStats()
        self.last_verdict: Verdict | None = None
        self._first_word = self.phrase.split()[0] if len(self.phrase.split()) > 1 else None
        self._retry_in_ms: float | None = None
        self._window: collections.deque[bytes] = collections.deque()
        self._window_bytes = 0
        self._max_bytes = 2 * RATE * window_ms // 1000

    def _remember(self, chunk: AudioChunk) -> None:
        pcm = chunk.to_format(RATE, 1).pcm
        self._window.append(pcm)
        self._window_bytes += len(pcm)
        while self._window and self._window_bytes - len(self._window[0]) >= self._max_bytes:
            self._window_bytes -= len(self._window.popleft())

    def window(self) -> np.ndarray:
        audio = np.frombuffer(b"".join(self._window), dtype="<i2")
        return audio[-self._max_bytes // 2 :]

    def process(self, chunk: AudioChunk) -> Detection | None:
        self._remember(chunk)
        candidate = self.first_stage.process(chunk)
        if candidate is None and self._retry_in_ms is not None:
            self._retry_in_ms -= chunk.duration_ms
            if self._retry_in_ms <= 0:
                self._retry_in_ms = None
                return self._verify(Detection(self.phrase, self.name, chunk.timestamp_ms), retry=True)
            return None
        if candidate is None:
            return None
        self._retry_in_ms = None
        self.stats.candidates += 1
        return self._verify(candidate, retry=False)

    def _verify(self, candidate: Detection, *, retry: bool) -> Detection | None:
        verdict = self.verifier.verify(self.window())
        self.last_verdict = verdict
        self.stats.verify_seconds.append(verdict.seconds)
        log.debug(
            "wake-verify",
            accepted=verdict.accepted,
            transcript=verdict.transcript,
            similarity=verdict.similarity,
            verify_ms=round(1000 * verdict.seconds),
            retry=retry,
        )
        if not verdict.accepted:
            heard = words_of(verdict.transcript)
            if not retry and heard and heard[-1] == self._first_word:
                self._retry_in_ms = RETRY_AFTER_MS  # the window ended inside the phrase
            return None
        self.stats.accepted += 1
        return Detection(self.phrase, self.name, candidate.timestamp_ms, score=verdict.similarity)

    def reset(self) -> None:
        self.first_stage.reset()
        self._retry_in_ms = None
        self._window.clear()
        self._window_bytes = 0

    def close(self) -> None:
        self.first_stage.close()
