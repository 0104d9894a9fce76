"""Audio in: the cabin microphone (sounddevice), WAV files and raw PCM, each an async iterator of AudioChunk.

Formats are converted here, at the edge: everything downstream sees `rate_hz` mono signed 16-bit chunks of
`block_ms`. The microphone never ends its iterator: a lost device is logged once, retried with backoff and
resumed when it returns (wyoming-satellite's mic task, pipecat's callback-to-loop hand-off).
"""

from __future__ import annotations

import asyncio
import collections
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.core.config import AudioConfig
from agent.core.errors import AudioError
from agent.core.events import now_ms
from agent.core.logging import get_logger

log = get_logger("audio")

DeviceSpec = str | int | None


@runtime_checkable
class AudioSource(Protocol):
    """Anything the pipeline can listen to: `async for chunk in source.stream()`."""

    def stream(self) -> AsyncIterator[AudioChunk]: ...


def block_samples(rate_hz: int, block_ms: int) -> int:
    return max(1, rate_hz * block_ms // 1000)


def split_blocks(chunk: AudioChunk, samples_per_block: int) -> list[AudioChunk]:
    """Cut a chunk into blocks of `samples_per_block` (the last one may be shorter), keeping timestamps right."""
    frame = chunk.width * chunk.channels
    step = samples_per_block * frame
    out = []
    for offset in range(0, len(chunk.pcm), step):
        ts = chunk.timestamp_ms + 1000.0 * (offset // frame) / chunk.rate
        out.append(AudioChunk(chunk.pcm[offset : offset + step], chunk.rate, chunk.width, chunk.channels, ts))
    return out


def read_wav(path: str | Path, rate_hz: int | None = 16000) -> AudioChunk:
    """A whole WAV file as one mono 16-bit chunk at `rate_hz` (None: the file's own rate).

    8/16/24/32-bit integer PCM, any channel count.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise AudioError(f"WAV file not found: {path}", code="audio-file-missing", path=str(path)) from None
    except (wave.Error, EOFError) as err:
        raise AudioError(
            f"{path}: not a PCM WAV file ({err})", code="audio-wav-unsupported", path=str(path)
        ) from err
    data = _to_int16(frames, width)
    chunk = AudioChunk(data.tobytes(), rate=rate, width=2, channels=channels)
    return chunk.to_format(rate_hz or rate, 1)


def _to_int16(frames: bytes, width: int) -> np.ndarray:
    if width == 2:
        return np.frombuffer(frames, dtype="<i2")
    if width == 1:  # WAV 8-bit is unsigned
        return ((np.frombuffer(frames, dtype=np.uint8).astype(np.int16) - 128) << 8).astype("<i2")
    if width == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3)
        return (raw[:, 1].astype(np.int16) | (raw[:, 2].astype(np.int16) << 8)).astype("<i2")
    if width == 4:
        return (np.frombuffer(frames, dtype="<i4") >> 16).astype("<i2")
    raise AudioError(f"unsupported sample width {width}", code="audio-wav-unsupported")


async def _pace(started: float, audio_seconds: float) -> None:
    """Sleep until the wall clock has caught up with the audio we have sent (real-time replay)."""
    ahead = started + audio_seconds - time.monotonic()
    if ahead > 0:
        await asyncio.sleep(ahead)


class WavSource:
    """A WAV file as microphone input (the demo and `say --audio`); optional real-time pacing."""

    def __init__(
        self,
        path: str | Path,
        *,
        rate_hz: int = 16000,
        block_ms: int = 30,
        pace_realtime: bool = False,
        tail_silence_ms: int = 0,
    ) -> None:
        self.path = Path(path)
        self.rate_hz = rate_hz
        self.block_ms = block_ms
        self.pace_realtime = pace_realtime
        # Silence after the file lets an endpointer see the end of the last utterance.
        self.tail_silence_ms = tail_silence_ms

    @classmethod
    def from_config(cls, path: str | Path, config: AudioConfig, **kwargs: Any) -> WavSource:
        return cls(path, rate_hz=config.sample_rate_hz, block_ms=config.block_ms, **kwargs)

    async def stream(self) -> AsyncIterator[AudioChunk]:
        audio = await asyncio.to_thread(read_wav, self.path, self.rate_hz)
        pcm = audio.pcm + bytes(2 * (self.rate_hz * self.tail_silence_ms // 1000))
        start_ms = now_ms()
        started = time.monotonic()
        whole = AudioChunk(pcm, rate=self.rate_hz, timestamp_ms=start_ms)
        sent = 0
        for block in split_blocks(whole, block_samples(self.rate_hz, self.block_ms)):
            if self.pace_realtime:
                await _pace(started, sent / self.rate_hz)
            else:
                await asyncio.sleep(0)  # let the rest of the loop run between blocks
            sent += block.samples
            yield block

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self.stream()


class RawSource:
    """Raw signed 16-bit little-endian PCM from stdin or a file (`arecord -f S16_LE -r 16000 | cabin-agent ...`)."""

    def __init__(
        self,
        path: str | Path | BinaryIO | None = None,
        *,
        input_rate_hz: int = 16000,
        input_channels: int = 1,
        rate_hz: int = 16000,
        block_ms: int = 30,
        pace_realtime: bool = False,
    ) -> None:
        self.path = path  # None or "-": stdin
        self.input_rate_hz = input_rate_hz
        self.input_channels = input_channels
        self.rate_hz = rate_hz
        self.block_ms = block_ms
        self.pace_realtime = pace_realtime

    def _open(self) -> tuple[BinaryIO, bool]:
        if self.path is None or self.path == "-":
            return sys.stdin.buffer, False
        if hasattr(self.path, "read"):
            return self.path, False  # type: ignore[return-value]
        try:
            return open(self.path, "rb"), True  # noqa: SIM115 - closed in stream()
        except FileNotFoundError:
            raise AudioError(f"raw audio file not found: {self.path}", code="audio-file-missing") from None

    def _read_blocks(
        self,
        want: int,
        deliver: Any,
        credits: threading.Semaphore,
        stopping: threading.Event,
    ) -> None:
        """The reader thread: open, then read blocks until EOF or `stopping`, handing each to the loop.

        Opening a FIFO waits for its writer and a read from a stalled pipe never returns; both happen here, so
        a stalled writer stalls the audio (and the watchdog sees it), never the event loop. The thread is a
        daemon and is not joined: a read that never returns must not hold up shutdown either.
        """
        try:
            handle, owned = self._open()
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            deliver(err)
            return
        read = getattr(handle, "read1", handle.read)  # what is there now, not a full block of a slow pipe
        try:
            while not stopping.is_set():
                if not credits.acquire(timeout=0.25):  # the consumer is behind: wait, don't buffer the file
                    continue
                data = read(want)
                deliver(data)
                if not data:
                    return
        except BaseException as err:  # noqa: BLE001
            deliver(err)
        finally:
            if owned:
                handle.close()

    async def stream(self) -> AsyncIterator[AudioChunk]:
        loop = asyncio.get_running_loop()
        frame = 2 * self.input_channels
        want = block_samples(self.input_rate_hz, self.block_ms) * frame
        pending: collections.deque[bytes | BaseException] = collections.deque()
        arrived = asyncio.Event()
        credits = threading.Semaphore(64)  # blocks read ahead of the consumer (about 2 s)
        stopping = threading.Event()

        def on_loop(item: bytes | BaseException) -> None:
            pending.append(item)
            arrived.set()

        def deliver(item: bytes | BaseException) -> None:  # reader thread -> loop (STYLE habit 5)
            try:
                loop.call_soon_threadsafe(on_loop, item)
            except RuntimeError:  # the loop is closed: nobody listens any more
                stopping.set()

        reader = threading.Thread(
            target=self._read_blocks, args=(want, deliver, credits, stopping), name="raw-audio", daemon=True
        )
        reader.start()
        started = time.monotonic()
        sent_samples = 0
        carry = b""
        try:
            while True:
                while not pending:
                    arrived.clear()
                    await arrived.wait()
                item = pending.popleft()
                credits.release()
                if isinstance(item, BaseException):
                    raise item
                if not item:
                    break
                data = carry + item
                usable = len(data) - len(data) % frame
                data, carry = data[:usable], data[usable:]
                if not data:
                    continue
                chunk = AudioChunk(data, self.input_rate_hz, 2, self.input_channels, now_ms())
                if self.pace_realtime:
                    await _pace(started, sent_samples / self.input_rate_hz)
                sent_samples += chunk.samples
                yield chunk.to_format(self.rate_hz, 1)
        finally:
            stopping.set()  # the reader ends after its current read (at once unless the writer stalled)

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self.stream()


# ---------------------------------------------------------------- PortAudio (sounddevice) microphone

_open_streams: set[int] = set()  # ids of our open PortAudio streams; a device rescan would kill them
_streams_lock = threading.Lock()


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as err:  # libportaudio2 missing
        raise AudioError(f"PortAudio is not available ({err})", code="audio-portaudio-missing") from err
    return sounddevice


def register_stream(stream: object, is_open: bool) -> None:
    with _streams_lock:
        (_open_streams.add if is_open else _open_streams.discard)(id(stream))


def portaudio_rescan() -> bool:
    """Re-enumerate devices (PortAudio only sees devices that existed at initialisation).

    Skipped while any of our streams is open, because terminating PortAudio closes every stream.
    """
    sd = _sounddevice()
    with _streams_lock:
        if _open_streams:
            return False
        try:
            sd._terminate()
        finally:
            sd._initialize()
    return True


_SENTINEL_LOST = object()


class MicSource:
    """The cabin microphone through sounddevice; survives unplugging (logs once, retries, resumes).

    `pace_realtime` exists for the file-backed fake card, whose capture runs as fast as the CPU allows:
    the PortAudio callback then sleeps to real time. Never set it with real hardware.
    """

    def __init__(
        self,
        config: AudioConfig | None = None,
        *,
        device: DeviceSpec = None,
        rate_hz: int | None = None,
        block_ms: int | None = None,
        reconnect_max_seconds: float | None = None,
        pace_realtime: bool = False,
        queue_seconds: float = 3.0,
        stall_seconds: float = 2.0,
    ) -> None:
        config = config or AudioConfig()
        self.device = device if device is not None else config.input_device
        self.rate_hz = rate_hz or config.sample_rate_hz
        self.block_ms = block_ms or config.block_ms
        self.reconnect_max_seconds = reconnect_max_seconds or config.reconnect_max_seconds
        self.pace_realtime = pace_realtime
        self.stall_seconds = stall_seconds
        max_blocks = max(4, int(queue_seconds * 1000 / self.block_ms))
        self._queue: collections.deque[Any] = collections.deque(maxlen=max_blocks)
        self._wakeup: asyncio.Event | None = None
        self._stream: Any = None
        self._closing = False
        self.connected = False
        self.reconnects = 0  # successful reopen after a loss
        self.dropped_blocks = 0  # oldest blocks dropped because the consumer fell behind

    # -- callback side (PortAudio thread) ------------------------------------------------------------

    def _make_callback(self, loop: asyncio.AbstractEventLoop, rate: int, channels: int) -> Any:
        started = time.monotonic()
        frames_seen = 0

        def callback(indata: Any, frames: int, _time: Any, status: Any) -> None:
            nonlocal frames_seen
            chunk = AudioChunk(bytes(indata), rate=rate, width=2, channels=channels, timestamp_ms=now_ms())
            loop.call_soon_threadsafe(self._deliver, chunk)
            frames_seen += frames
            if self.pace_realtime:
                ahead = started + frames_seen / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)

        return callback

    def _make_finished(self, loop: asyncio.AbstractEventLoop, stream_box: list[Any]) -> Any:
        def finished() -> None:
            # PortAudio ends the stream on its own when the device goes away.
            if not self._closing and stream_box and stream_box[0] is self._stream:
                try:
                    loop.call_soon_threadsafe(self._deliver, _SENTINEL_LOST)
                except RuntimeError:  # loop already closed at shutdown
                    pass

        return finished

    # -- loop side -----------------------------------------------------------------------------------

    def _deliver(self, item: Any) -> None:
        if len(self._queue) == self._queue.maxlen and item is not _SENTINEL_LOST:
            self.dropped_blocks += 1
            if self.dropped_blocks == 1 or self.dropped_blocks % 1000 == 0:
                log.warning("mic-overflow", dropped_blocks=self.dropped_blocks)
        self._queue.append(item)
        if self._wakeup is not None:
            self._wakeup.set()

    def _open_blocking(self, loop: asyncio.AbstractEventLoop) -> Any:
        sd = _sounddevice()
        last_err: Exception | None = None
        # Ask for the pipeline format first; fall back to what the device offers and convert at the edge.
        candidates: list[tuple[int, int]] = [(self.rate_hz, 1)]
        try:
            info = sd.query_devices(self.device, "input")
            native = (int(info["default_samplerate"]), max(1, min(2, int(info["max_input_channels"]))))
            if native not in candidates:
                candidates.append(native)
        except (ValueError, sd.PortAudioError) as err:
            raise AudioError(f"input device {self.device!r} not found", code="audio-device-missing") from err
        for rate, channels in candidates:
            box: list[Any] = []
            try:
                stream = sd.RawInputStream(
                    samplerate=rate,
                    channels=channels,
                    dtype="int16",
                    blocksize=block_samples(rate, self.block_ms),
                    device=self.device,
                    callback=self._make_callback(loop, rate, channels),
                    finished_callback=self._make_finished(loop, box),
                )
            except (sd.PortAudioError, ValueError) as err:
                last_err = err
                continue
            box.append(stream)
            self._queue.clear()  # stale blocks or a loss marker from the previous stream
            self._stream = stream
            register_stream(stream, True)
            stream.start()
            return stream
        raise AudioError(f"cannot open input device {self.device!r}: {last_err}", code="audio-device-failed")

    def _close_blocking(self, stream: Any) -> None:
        try:
            stream.abort()
            stream.close()
        except Exception as err:  # noqa: BLE001 - a dead device may fail to close; it is gone anyway
            log.debug("mic-close-failed", error=str(err))
        finally:
            register_stream(stream, False)

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        self.connected = False
        if stream is None:
            return
        self._closing = True
        try:
            # A hung driver can block close(); don't let it hang the loop forever.
            await asyncio.wait_for(asyncio.to_thread(self._close_blocking, stream), timeout=5.0)
        except TimeoutError:
            log.warning("mic-close-timeout")
        finally:
            self._closing = False

    async def stream(self) -> AsyncIterator[AudioChunk]:
        loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        backoff = 0.25
        lost_since: float | None = None
        attempts = 0
        try:
            while True:
                try:
                    if lost_since is not None:
                        await asyncio.to_thread(portaudio_rescan)
                    await asyncio.to_thread(self._open_blocking, loop)
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # noqa: BLE001 - any PortAudio failure means: retry later
                    attempts += 1
                    if lost_since is None:
                        lost_since = time.monotonic()
                        log.warning("mic-unavailable", device=self.device, error=str(err), code=_code(err))
                    else:
                        log.debug("mic-retry-failed", attempt=attempts, error=str(err))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.reconnect_max_seconds)
                    continue
                if lost_since is not None:
                    self.reconnects += 1
                    log.info(
                        "mic-recovered",
                        device=self.device,
                        after_seconds=round(time.monotonic() - lost_since, 2),
                        attempts=attempts,
                    )
                self.connected = True
                backoff, lost_since, attempts = 0.25, None, 0
                reason = None
                async for chunk in self._drain():
                    if isinstance(chunk, str):
                        reason = chunk
                        break
                    yield chunk.to_format(self.rate_hz, 1)
                await self._close_stream()
                lost_since = time.monotonic()
                log.warning("mic-lost", device=self.device, reason=reason)
        finally:
            await self._close_stream()

    async def _drain(self) -> AsyncIterator[AudioChunk | str]:
        """Chunks from the callback queue until the device is lost ("finished") or silent too long ("stalled")."""
        assert self._wakeup is not None
        while True:
            while self._queue:
                item = self._queue.popleft()
                if item is _SENTINEL_LOST:
                    yield "finished"
                    return
                yield item
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.stall_seconds)
            except TimeoutError:
                stream = self._stream
                active = bool(stream is not None and stream.active)
                yield "stalled" if active else "finished"
                return

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self.stream()

    def simulate_device_loss(self) -> None:
        """Abort the stream as PortAudio does when the device is unplugged (tests and fault drills)."""
        stream = self._stream
        if stream is not None:
            stream.abort()


def _code(err: Exception) -> str:
    return getattr(err, "code", type(err).__name__)
