"""Audio out: the cabin speaker (sounddevice) and a WAV writer for the demo; both report the first sample out.

A playback is: `play()` chunks as speech is synthesised, then `drain()` (wait until heard) or `stop()`
(barge-in: the buffer is flushed at once and the stream aborted; control before data).
"""

from __future__ import annotations

import asyncio
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agent.audio.chunk import AudioChunk
from agent.audio.sources import DeviceSpec, _sounddevice, register_stream
from agent.core.config import AudioConfig
from agent.core.errors import AudioError
from agent.core.events import now_ms
from agent.core.logging import get_logger

log = get_logger("audio")

FirstAudioCallback = Callable[[float], None]


@runtime_checkable
class AudioSink(Protocol):
    first_audio_ms: float | None

    async def play(self, chunk: AudioChunk) -> None: ...

    async def drain(self, timeout_seconds: float | None = None) -> None: ...

    def stop(self) -> None: ...


class SpeakerSink:
    """Plays AudioChunks through a sounddevice OutputStream opened per playback (closed after drain/stop).

    `first_audio_ms` (monotonic ms, agent.core.events.now_ms) is when the first sample of the current playback was
    handed to PortAudio; `on_first_audio` is called on the event loop at that moment.
    `pace_realtime` is for the file-backed fake card only (it consumes output as fast as the CPU allows).
    """

    def __init__(
        self,
        config: AudioConfig | None = None,
        *,
        device: DeviceSpec = None,
        rate_hz: int | None = None,
        block_ms: int | None = None,
        pace_realtime: bool = False,
        on_first_audio: FirstAudioCallback | None = None,
    ) -> None:
        config = config or AudioConfig()
        self.device = device if device is not None else config.output_device
        self.rate_hz = rate_hz  # None: the rate of the first chunk of each playback (Piper's 22050 Hz)
        self.block_ms = block_ms or config.block_ms
        self.pace_realtime = pace_realtime
        self.on_first_audio = on_first_audio
        self.first_audio_ms: float | None = None
        self.samples_played = 0
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._stream_rate = 0
        self._ending = False
        self._drained: asyncio.Event | None = None
        self._first: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def playing(self) -> bool:
        return self._stream is not None

    # -- PortAudio thread ----------------------------------------------------------------------------

    def _callback_factory(self, rate: int) -> Any:
        started = time.monotonic()
        frames_out = 0

        def callback(outdata: Any, frames: int, _time: Any, _status: Any) -> None:
            nonlocal frames_out
            want = len(outdata)
            with self._lock:
                take = min(want, len(self._buffer))
                data = bytes(self._buffer[:take])
                del self._buffer[:take]
                empty = not self._buffer
            outdata[:take] = data
            if take < want:
                outdata[take:] = bytes(want - take)
            if take and self.first_audio_ms is None:
                self.first_audio_ms = now_ms()
                self._notify(self._on_first)
            self.samples_played += take // 2
            if empty and self._ending:
                self._notify(self._on_drained)
            frames_out += frames
            if self.pace_realtime:
                ahead = started + frames_out / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)

        return callback

    def _notify(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(fn)
            except RuntimeError:  # loop closed during shutdown
                pass

    def _on_first(self) -> None:
        if self._first is not None:
            self._first.set()
        if self.on_first_audio is not None and self.first_audio_ms is not None:
            self.on_first_audio(self.first_audio_ms)

    def _on_drained(self) -> None:
        if self._drained is not None:
            self._drained.set()

    # -- loop side -----------------------------------------------------------------------------------

    def _open(self, rate: int) -> None:
        sd = _sounddevice()
        try:
            stream = sd.RawOutputStream(
                samplerate=rate,
                channels=1,
                dtype="int16",
                blocksize=max(1, rate * self.block_ms // 1000),
                device=self.device,
                callback=self._callback_factory(rate),
            )
        except (sd.PortAudioError, ValueError) as err:
            raise AudioError(
                f"cannot open output device {self.device!r}: {err}",
                code="audio-output-failed",
                device=self.device,
            ) from err
        register_stream(stream, True)
        self._stream, self._stream_rate = stream, rate
        stream.start()

    async def play(self, chunk: AudioChunk) -> None:
        """Queue a chunk; the first call of a playback opens the device."""
        if self._stream is None:
            self._loop = asyncio.get_running_loop()
            self._drained, self._first = asyncio.Event(), asyncio.Event()
            self.first_audio_ms, self._ending, self.samples_played = None, False, 0
            rate = self.rate_hz or chunk.rate
            with self._lock:
                self._buffer.clear()
            await asyncio.to_thread(self._open, rate)
        pcm = chunk.to_format(self._stream_rate, 1).pcm
        with self._lock:
            self._buffer.extend(pcm)

    async def wait_first_audio(self, timeout_seconds: float = 10.0) -> float | None:
        if self._first is None:
            return self.first_audio_ms
        await asyncio.wait_for(self._first.wait(), timeout=timeout_seconds)
        return self.first_audio_ms

    async def drain(self, timeout_seconds: float | None = None) -> None:
        """Wait until every queued sample has gone to the device, then close the stream."""
        if self._stream is None or self._drained is None:
            return
        with self._lock:
            self._ending = True
            if not self._buffer:
                self._drained.set()
        pending = len(self._buffer) / 2 / max(1, self._stream_rate)
        timeout = timeout_seconds if timeout_seconds is not None else pending * 3 + 5.0
        try:
            await asyncio.wait_for(self._drained.wait(), timeout=timeout)
            # The device still holds up to one block (plus its own latency) after the buffer empties.
            await asyncio.sleep(self.block_ms / 1000)
        finally:
            await asyncio.to_thread(self._close)

    def stop(self) -> None:
        """Barge-in: drop everything not yet played and abort the stream now."""
        with self._lock:
            dropped = len(self._buffer)
            self._buffer.clear()
        if self._drained is not None:
            self._drained.set()
        if self._stream is not None:
            log.info("playback-stopped", dropped_ms=round(1000 * dropped / 2 / max(1, self._stream_rate)))
        self._close()

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort()
            stream.close()
        except Exception as err:  # noqa: BLE001 - the device may be gone; nothing left to play anyway
            log.warning("speaker-close-failed", error=str(err))
        finally:
            register_stream(stream, False)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)


class WavSink:
    """Writes each playback to its own WAV file (the demo's "speaker"); `files` lists them in order.

    With `pace_realtime` a playback takes as long as the audio, so barge-in can be exercised without a device.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        name_pattern: str = "reply_{index:03d}.wav",
        rate_hz: int | None = None,
        pace_realtime: bool = False,
        on_first_audio: FirstAudioCallback | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.name_pattern = name_pattern
        self.rate_hz = rate_hz
        self.pace_realtime = pace_realtime
        self.on_first_audio = on_first_audio
        self.first_audio_ms: float | None = None
        self.files: list[Path] = []
        self.interrupted: list[bool] = []
        self._wav: wave.Wave_write | None = None
        self._rate = 0
        self._started = 0.0
        self._written = 0
        self._stopped = False

    @property
    def playing(self) -> bool:
        return self._wav is not None

    async def play(self, chunk: AudioChunk) -> None:
        if self._stopped and self._wav is None:
            self._stopped = False
        if self._wav is None:
            self._rate = self.rate_hz or chunk.rate
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / self.name_pattern.format(index=len(self.files) + 1)
            self._wav = wave.open(str(path), "wb")
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(self._rate)
            self.files.append(path)
            self.interrupted.append(False)
            self.first_audio_ms, self._started, self._written = None, time.monotonic(), 0
        pcm = chunk.to_format(self._rate, 1).pcm
        if self.pace_realtime:
            ahead = self._started + self._written / self._rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            if self._wav is None:  # stopped while we waited
                return
        self._wav.writeframes(pcm)
        self._written += len(pcm) // 2
        if self.first_audio_ms is None and pcm:
            self.first_audio_ms = now_ms()
            if self.on_first_audio is not None:
                self.on_first_audio(self.first_audio_ms)

    async def wait_first_audio(self, timeout_seconds: float = 10.0) -> float | None:
        return self.first_audio_ms

    async def drain(self, timeout_seconds: float | None = None) -> None:
        if self._wav is None:
            return
        if self.pace_realtime:
            ahead = self._started + self._written / self._rate - time.monotonic()
            if ahead > 0:
                await asyncio.wait_for(asyncio.sleep(ahead), timeout=timeout_seconds)
        self._close()

    def stop(self) -> None:
        if self._wav is not None:
            self.interrupted[-1] = True
        self._close()

    def _close(self) -> None:
        wav, self._wav = self._wav, None
        if wav is not None:
            wav.close()

    async def aclose(self) -> None:
        self._close()


class NullSink:
    """A speaker nobody hears (`cabin-agent run --output null`, benchmarks): the audio is counted, not kept.

    With `pace_realtime` a playback lasts as long as its audio, so the car's speaking state (and barge-in)
    takes the time it would in the cabin.
    """

    def __init__(
        self, *, pace_realtime: bool = True, on_first_audio: FirstAudioCallback | None = None
    ) -> None:
        self.pace_realtime = pace_realtime
        self.on_first_audio = on_first_audio
        self.first_audio_ms: float | None = None
        self.playbacks = 0
        self.samples_played = 0
        self._playing = False
        self._rate = 0
        self._started = 0.0
        self._written = 0

    @property
    def playing(self) -> bool:
        return self._playing

    async def play(self, chunk: AudioChunk) -> None:
        if not self._playing:
            self._playing = True
            self.playbacks += 1
            self._rate = chunk.rate
            self.first_audio_ms, self._started, self._written = None, time.monotonic(), 0
        if self.pace_realtime:
            ahead = self._started + self._written / self._rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            if not self._playing:  # stopped while we waited
                return
        samples = chunk.to_format(self._rate, 1).samples
        self._written += samples
        self.samples_played += samples
        if self.first_audio_ms is None and samples:
            self.first_audio_ms = now_ms()
            if self.on_first_audio is not None:
                self.on_first_audio(self.first_audio_ms)

    async def wait_first_audio(self, timeout_seconds: float = 10.0) -> float | None:
        return self.first_audio_ms

    async def drain(self, timeout_seconds: float | None = None) -> None:
        if not self._playing:
            return
        if self.pace_realtime:
            ahead = self._started + self._written / self._rate - time.monotonic()
            if ahead > 0:
                await asyncio.wait_for(asyncio.sleep(ahead), timeout=timeout_seconds)
        self._playing = False

    def stop(self) -> None:
        self._playing = False

    async def aclose(self) -> None:
        self._playing = False
