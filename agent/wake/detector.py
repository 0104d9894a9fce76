"""WakeDetector: runs a wake engine off the event loop and decides which detections start a request.

Adds what every engine needs: push-to-talk (always works), a refractory period, gating while the car speaks
(unless barge-in is on), the follow-up window (speech right after the car asked something counts as a wake),
and real-time-factor accounting so we know the engine keeps up on two cores.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from agent.audio.chunk import AudioChunk
from agent.audio.vad import EnergyVad, VoiceActivity, highpass
from agent.core.config import WakeConfig
from agent.core.errors import WakeError
from agent.core.events import now_ms
from agent.core.logging import get_logger
from agent.wake.base import Detection, WakeEngine
from agent.wake.push_to_talk import PushToTalk

log = get_logger("wake")

PREROLL_MS = 400  # follow-up speech onset kept so recognition hears the first syllable
FOLLOW_UP_SPEECH_MS = 120  # voiced audio needed to treat follow-up sound as speech


@dataclass
class WakeStats:
    audio_ms: float = 0.0
    engine_ms: float = 0.0
    chunks: int = 0
    detections: int = 0
    suppressed: int = 0  # engine detections dropped by refractory/gating
    max_lag_ms: float = 0.0  # worst delay between capture and the engine finishing the chunk

    @property
    def real_time_factor(self) -> float:
        return self.engine_ms / self.audio_ms if self.audio_ms else 0.0


class WakeDetector:
    """`await detector.wait(mic)` returns the next Detection that should start a request.

    It reads `chunks` only up to the detection (the mic then goes to the endpointer) and never closes it.
    """

    def __init__(
        self,
        engine: WakeEngine | None,
        config: WakeConfig | None = None,
        *,
        push_to_talk: PushToTalk | None = None,
        vad: VoiceActivity | None = None,
    ) -> None:
        self.engine = engine
        self.config = config or WakeConfig()
        self.push_to_talk = push_to_talk or PushToTalk()
        self.vad = vad or EnergyVad()
        self.stats = WakeStats()
        self.phrase = engine.phrase if engine is not None else ""
        # One dedicated worker: engines are not thread-safe, and order must be kept.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="wake")
        self._speaking = False
        self._last_detection_ms: float | None = None
        self._follow_up_until_ms: float | None = None
        self._engine_dirty = False
        self._recent: collections.deque[AudioChunk] = collections.deque()
        self._recent_ms = 0.0
        self._voiced_ms = 0.0
        self._vad_pending = bytearray()

    # -- control from the pipeline ------------------------------------------------------------------

    def set_speaking(self, speaking: bool) -> None:
        """The car started/stopped playing a reply. Without barge-in, the engine is deaf meanwhile."""
        if self._speaking and not speaking:
            self._engine_dirty = True  # don't let half a phrase from our own voice complete later
        self._speaking = speaking

    @property
    def speaking(self) -> bool:
        return self._speaking

    def open_follow_up(self, seconds: float | None = None) -> None:
        """The car asked a question: speech in the next `follow_up_seconds` starts a request without the phrase."""
        window = self.config.follow_up_seconds if seconds is None else seconds
        if window > 0:
            self._follow_up_until_ms = now_ms() + window * 1000
            self._voiced_ms = 0.0
            self._vad_pending.clear()

    def close_follow_up(self) -> None:
        self._follow_up_until_ms = None

    @property
    def in_follow_up(self) -> bool:
        return self._follow_up_until_ms is not None and now_ms() < self._follow_up_until_ms

    # -- engine side ---------------------------------------------------------------------------------

    def _engine_process(self, chunk: AudioChunk, reset_first: bool) -> tuple[Detection | None, float]:
        assert self.engine is not None
        if reset_first:
            self.engine.reset()
        started = time.perf_counter()
        detection = self.engine.process(chunk)
        return detection, (time.perf_counter() - started) * 1000

    async def feed(self, chunk: AudioChunk) -> Detection | None:
        """One chunk in; a Detection if this chunk should start a request."""
        self._remember(chunk)
        stamp = self.push_to_talk.consume()
        if stamp is not None:
            self._engine_dirty = True
            return self._accept(
                Detection(
                    self.phrase, "push-to-talk", stamp, source="push-to-talk", during_playback=self._speaking
                )
            )
        if self._follow_up_until_ms is not None:
            if now_ms() > self._follow_up_until_ms:
                self._follow_up_until_ms = None
            elif not self._speaking and self._follow_up_speech(chunk):
                self._follow_up_until_ms = None
                self._engine_dirty = True
                return self._accept(
                    Detection(
                        self.phrase,
                        "follow-up",
                        chunk.timestamp_ms,
                        source="follow-up",
                        preroll=tuple(self._recent),
                    )
                )
        if self.engine is None:
            return None
        gated = self._speaking and not self.config.barge_in
        if gated:
            self._engine_dirty = True
            return None
        reset_first, self._engine_dirty = self._engine_dirty, False
        loop = asyncio.get_running_loop()
        try:
            detection, engine_ms = await loop.run_in_executor(
                self._executor, self._engine_process, chunk, reset_first
            )
        except asyncio.CancelledError:
            raise
        except Exception as err:
            raise WakeError(
                f"wake engine {self.engine.name} failed: {err}", code="wake-engine-failed"
            ) from err
        self.stats.audio_ms += chunk.duration_ms
        self.stats.engine_ms += engine_ms
        self.stats.chunks += 1
        if chunk.timestamp_ms:
            self.stats.max_lag_ms = max(
                self.stats.max_lag_ms, now_ms() - chunk.timestamp_ms - chunk.duration_ms
            )
        if detection is None:
            return None
        if self._last_detection_ms is not None and (
            detection.timestamp_ms - self._last_detection_ms < self.config.refractory_seconds * 1000
        ):
            self.stats.suppressed += 1
            log.debug("wake-refractory", engine=detection.engine)
            return None
        if self._speaking:
            detection = Detection(
                detection.phrase,
                detection.engine,
                detection.timestamp_ms,
                detection.score,
                "engine",
                during_playback=True,
            )
        return self._accept(detection)

    def _accept(self, detection: Detection) -> Detection:
        self._last_detection_ms = detection.timestamp_ms
        self.stats.detections += 1
        log.info(
            "wake-detected",
            engine=detection.engine,
            source=detection.source,
            score=detection.score,
            barge_in=detection.during_playback,
        )
        return detection

    def _remember(self, chunk: AudioChunk) -> None:
        self._recent.append(chunk)
        self._recent_ms += chunk.duration_ms
        while self._recent and self._recent_ms - self._recent[0].duration_ms >= PREROLL_MS:
            self._recent_ms -= self._recent.popleft().duration_ms

    def _follow_up_speech(self, chunk: AudioChunk) -> bool:
        chunk = chunk.to_format(self.vad.rate_hz, 1)
        self._vad_pending.extend(chunk.pcm)
        frame_bytes = 2 * self.vad.frame_samples
        frame_ms = 1000 * self.vad.frame_samples / self.vad.rate_hz
        while len(self._vad_pending) >= frame_bytes:
            frame = bytes(self._vad_pending[:frame_bytes])
            del self._vad_pending[:frame_bytes]
            voiced = self.vad.is_speech(highpass(frame, self.vad.rate_hz))
            self._voiced_ms = self._voiced_ms + frame_ms if voiced else 0.0
            if self._voiced_ms >= FOLLOW_UP_SPEECH_MS:
                return True
        return False

    # -- the stage ------------------------------------------------------------------------------------

    async def wait(self, chunks: AsyncIterable[AudioChunk]) -> Detection:
        """Read chunks until something should start a request (engine, push-to-talk or follow-up speech)."""
        iterator = aiter(chunks)
        while True:
            chunk = await anext(iterator)
            detection = await self.feed(chunk)
            if detection is not None:
                return detection

    async def detections(self, chunks: AsyncIterable[AudioChunk]) -> AsyncIterator[Detection]:
        """Every accepted detection in a stream (measurement, tests)."""
        async for chunk in chunks:
            detection = await self.feed(chunk)
            if detection is not None:
                yield detection

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.engine is not None:
            self.engine.close()
