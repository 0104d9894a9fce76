"""Keyphrase spotting with pocketsphinx and the en-us model its wheel ships: the English wake word that works here.

The sensitivity is pocketsphinx's `kws_threshold` (smaller = more sensitive). `wake.threshold` (0..1, default
0.5) maps onto it log-linearly around DEFAULT_KWS_THRESHOLD, which was tuned on the generated wake test set
(scripts/wake_testset.py; the numbers are in docs/audio.md).
"""

from __future__ import annotations

import math
import os
import re

from agent.audio.chunk import AudioChunk
from agent.core.errors import WakeError
from agent.core.events import now_ms
from agent.core.logging import get_logger
from agent.wake.base import Detection

log = get_logger("wake")

# Tuned on the wake test set (see docs/audio.md): the best detection rate with false accepts/hour within budget.
DEFAULT_KWS_THRESHOLD = 1e-10
# The first stage in front of the whisper verifier (agent.wake.verify), tuned with it on the full set:
# 1e-40 -> 68 % detection, 5.8 false accepts/h; 1e-60 -> 76 %, 6.8/h (docs/audio.md).
VERIFIED_KWS_THRESHOLD = 1e-60
# wake.threshold 0 .. 1 spans this many decades around the default (0.5 = the default).
THRESHOLD_SPAN_DECADES = 40.0
# The keyword search is restarted now and then so a week-long utterance can't grow without bound.
RESTART_AFTER_SECONDS = 300.0


def kws_threshold_for(threshold: float, default: float = DEFAULT_KWS_THRESHOLD) -> float:
    """Map wake.threshold (0 most sensitive .. 1 strictest) to pocketsphinx's kws_threshold."""
    return 10 ** (math.log10(default) + (threshold - 0.5) * THRESHOLD_SPAN_DECADES)


def normalise_phrase(phrase: str) -> str:
    return " ".join(re.sub(r"[^\w' ]+", " ", phrase.lower()).split())


class PocketsphinxWake:
    name = "pocketsphinx"

    def __init__(
        self,
        phrase: str = "hey cabin",
        *,
        threshold: float = 0.5,
        kws_threshold: float | None = None,
        model_dir: str | None = None,
        rate_hz: int = 16000,
    ) -> None:
        try:
            import pocketsphinx
        except ImportError as err:
            raise WakeError(
                "pocketsphinx is not installed (pip install pocketsphinx)", code="wake-engine-unavailable"
            ) from err
        model_dir = model_dir or os.path.join(pocketsphinx.get_model_path(), "en-us")
        hmm = os.path.join(model_dir, "en-us")
        dictionary = os.path.join(model_dir, "cmudict-en-us.dict")
        if not os.path.isdir(hmm) or not os.path.isfile(dictionary):
            raise WakeError(
                f"pocketsphinx model not found in {model_dir}", code="wake-model-missing", path=model_dir
            )
        self.phrase = normalise_phrase(phrase)
        self.rate_hz = rate_hz
        self.kws_threshold = kws_threshold if kws_threshold is not None else kws_threshold_for(threshold)
        try:
            self._decoder = pocketsphinx.Decoder(
                hmm=hmm,
                dict=dictionary,
                lm=None,
                keyphrase=self.phrase,
                kws_threshold=self.kws_threshold,
                samprate=float(rate_hz),
                loglevel="FATAL",
            )
        except RuntimeError as err:
            raise WakeError(f"pocketsphinx failed to start: {err}", code="wake-engine-failed") from err
        # An unknown word does not fail Decoder(); it just never fires. Check the dictionary ourselves.
        missing = [w for w in self.phrase.split() if self._decoder.lookup_word(w) is None]
        if missing:
            raise WakeError(
                f"wake phrase {phrase!r}: not in the pocketsphinx dictionary: {', '.join(missing)}",
                code="wake-phrase-unknown",
                words=missing,
            )
        self._decoder.start_utt()
        self._audio_ms = 0.0

    def process(self, chunk: AudioChunk) -> Detection | None:
        chunk = chunk.to_format(self.rate_hz, 1)
        self._decoder.process_raw(chunk.pcm, False, False)
        self._audio_ms += chunk.duration_ms
        hyp = self._decoder.hyp()
        if hyp is not None:
            self._restart()
            return Detection(self.phrase, self.name, chunk.timestamp_ms or now_ms(), score=float(hyp.score))
        if self._audio_ms >= RESTART_AFTER_SECONDS * 1000:
            self._restart()
        return None

    def _restart(self) -> None:
        self._decoder.end_utt()
        self._decoder.start_utt()
        self._audio_ms = 0.0

    def reset(self) -> None:
        self._restart()

    def close(self) -> None:
        try:
            self._decoder.end_utt()
        except RuntimeError:
            pass
