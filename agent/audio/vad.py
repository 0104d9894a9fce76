"""Voice activity and endpointing: when did the driver start and stop speaking, and why did the request end.

Frame classifiers: Silero (onnxruntime, the model faster-whisper ships; holds up in road noise), webrtcvad,
and an energy fallback that needs nothing.
`Endpointer.utterance(chunks)` streams the request audio to recognition and stops after `silence_ms` of silence,
at `max_utterance_seconds`, or (quietly) after `no_speech_timeout_seconds` with nobody speaking.
"""

from __future__ import annotations

import asyncio
import math
import os
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
    """Silero VAD (v6) through onnxruntime, with the model file faster-whisper ships.

    Holds up in road noise where webrtcvad calls rumble speech. The recurrent state and the 64-sample context
    are carried from frame to frame (faster-whisper's own wrapper restarts from zero on every call, which is
    right for a file and wrong for a stream). One 32 ms frame costs well under a millisecond.
    """

    name = "silero"
    blocking = False
    CONTEXT = 64

    def __init__(self, threshold: float = 0.5, rate_hz: int = 16000, model_path: str | None = None) -> None:
        if rate_hz != 16000:
            raise AudioError("Silero VAD needs 16 kHz audio", code="vad-format")
        try:
            import onnxruntime
        except ImportError as err:
            raise AudioError("Silero VAD needs onnxruntime (pip install onnxruntime)", code="vad-unavailable") from err
        path = model_path or silero_model_path()
        if path is None:
            raise AudioError(
                "Silero VAD model not found: it ships with faster-whisper (faster_whisper/assets/silero_vad_v6.onnx);"
                " pip install faster-whisper", code="vad-unavailable")
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1  # one frame at a time: more threads only cost wake-ups
        options.log_severity_level = 4
        try:
            self._session = onnxruntime.InferenceSession(path, sess_options=options,
                                                         providers=["CPUExecutionProvider"])
        except Exception as err:  # a truncated or foreign file
            raise AudioError(f"Silero VAD model {path} could not be loaded: {err}", code="vad-unavailable") from err
        inputs = {i.name: i for i in self._session.get_inputs()}
        if "input" not in inputs:
            raise AudioError(f"{path} is not a Silero VAD model (inputs {sorted(inputs)})", code="vad-unavailable")
        self._state_names = [n for n in inputs if n not in ("input", "sr")]
        self._state_shapes = {n: [d if isinstance(d, int) else 1 for d in inputs[n].shape] for n in self._state_names}
        self._with_rate = "sr" in inputs
        self.threshold = threshold
        self.rate_hz = rate_hz
        self.frame_samples = 512
        self.last_probability = 0.0
        self.reset()

    def probability(self, frame: bytes) -> float:
        x = np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
        window = np.concatenate([self._context, x])[None, :]
        feeds: dict[str, np.ndarray] = {"input": window, **self._state}
        if self._with_rate:
            feeds["sr"] = np.array(self.rate_hz, dtype=np.int64)
        out = self._session.run(None, feeds)
        self._context = x[-self.CONTEXT:]
        # Outputs: the speech probability, then the new recurrent state(s), in the order of the inputs.
        for name, value in zip(self._state_names, out[1:], strict=False):
            self._state[name] = value
        self.last_probability = float(np.asarray(out[0]).reshape(-1)[0])
        return self.last_probability

    def is_speech(self, frame: bytes) -> bool:
        return self.probability(frame) >= self.threshold

    def reset(self) -> None:
        self._state = {n: np.zeros(shape, dtype=np.float32) for n, shape in self._state_shapes.items()}
        self._context = np.zeros(self.CONTEXT, dtype=np.float32)


def silero_model_path() -> str | None:
    """faster-whisper's copy of the Silero model, if faster-whisper is installed."""
    try:
        from importlib.util import find_spec

        spec = find_spec("faster_whisper")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        for name in ("silero_vad_v6.onnx", "silero_vad.onnx"):
            candidate = os.path.join(base, "assets", name)
            if os.path.isfile(candidate):
                return candidate
    return None


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
    (99 % of frames unfiltered, 2-8 % filtered, measured on agent.devtools.road_noise). Speech keeps its harmonics above."""
    x = np.frombuffer(frame, dtype="<i2").astype(np.float32)
    spectrum = np.fft.rfft(x)
    spectrum[: int(np.ceil(cutoff_hz * len(x) / rate_hz))] = 0
    return np.clip(np.round(np.fft.irfft(spectrum, len(x))), -32768, 32767).astype("<i2").tobytes()


def create_vad(config: VadConfig, rate_hz: int = 16000) -> VoiceActivity:
    """The configured classifier; a missing optional engine falls back (silero → webrtcvad → energy) with one
    log line saying why."""
    engines = {"silero": ("silero", "webrtcvad"), "webrtcvad": ("webrtcvad",), "energy": ()}[config.engine]
    for engine in engines:
        try:
            if engine == "silero":
                # aggressiveness 0..3 maps onto Silero's probability threshold 0.35..0.8
                return SileroVad(0.35 + 0.15 * config.aggressiveness, rate_hz)
            return WebRtcVad(config.aggressiveness, rate_hz)
        except AudioError as err:
            log.warning("vad-fallback", engine=engine, error=err.message)
    return EnergyVad(rate_hz)


class EndReason(StrEnum):
    COMPLETE = "complete"  # a short pause after words that make a whole request (decided by the loop)
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

    @property
    def pause_ms(self) -> float:
        """How long the driver has been silent since speech started (0 while speaking or before)."""
        return self._s.silence_ms if self._s.speech_start_ms is not None else 0.0

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
