"""File sources and the WAV sink: formats converted at the edge, blocks of block_ms, optional real-time pacing."""

from __future__ import annotations

import asyncio
import io
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.audio.chunk import AudioChunk
from agent.audio.sinks import WavSink
from agent.audio.sources import AudioSource, RawSource, WavSource, read_wav, split_blocks
from agent.core.config import AudioConfig
from agent.core.errors import AudioError


def write_wav(path: Path, data: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(data.tobytes())
    return path


async def collect(source: AudioSource, timeout: float = 10.0) -> list[AudioChunk]:
    async def run() -> list[AudioChunk]:
        return [c async for c in source.stream()]

    return await asyncio.wait_for(run(), timeout)


async def test_wav_source_converts_stereo_44k_to_16k_mono_blocks(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    left = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    stereo = np.stack([left, left], axis=1)
    path = write_wav(tmp_path / "s.wav", stereo, 44100, channels=2)
    chunks = await collect(WavSource.from_config(path, AudioConfig(block_ms=20)))
    assert all(c.rate == 16000 and c.channels == 1 for c in chunks)
    assert [c.samples for c in chunks[:-1]] == [320] * (len(chunks) - 1)
    assert sum(c.samples for c in chunks) == 16000
    # The tone survives resampling: its main frequency is still 440 Hz.
    audio = np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2").astype(float)
    peak_hz = np.argmax(np.abs(np.fft.rfft(audio))) * 16000 / len(audio)
    assert abs(peak_hz - 440) < 3


async def test_wav_source_paces_in_real_time(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "q.wav", np.zeros(8000, np.int16), 16000)
    started = time.monotonic()
    chunks = await collect(WavSource(path, pace_realtime=True, tail_silence_ms=100))
    assert 0.45 <= time.monotonic() - started <= 2.0
    assert sum(c.samples for c in chunks) == 8000 + 1600


def test_read_wav_8_and_24_bit(tmp_path: Path) -> None:
    eight = write_wav(tmp_path / "8.wav", np.array([128, 255, 0], np.uint8), 16000, width=1)
    assert list(read_wav(eight).as_int16()[:, 0]) == [0, 127 << 8, -128 << 8]
    raw24 = np.array([0x00, 0x00, 0x40, 0x00, 0x00, 0xC0], np.uint8)  # +0.5, -0.5
    s24 = write_wav(tmp_path / "24.wav", raw24, 16000, width=3)
    assert list(read_wav(s24).as_int16()[:, 0]) == [0x4000, -0x4000]


def test_read_wav_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioError) as err:
        read_wav(tmp_path / "missing.wav")
    assert err.value.code == "audio-file-missing"
    (tmp_path / "bad.wav").write_bytes(b"not a wav at all")
    with pytest.raises(AudioError) as err:
        read_wav(tmp_path / "bad.wav")
    assert err.value.code == "audio-wav-unsupported"


async def test_raw_source_from_a_pipe_like_stream_with_odd_reads() -> None:
    data = (np.arange(4000) % 1000).astype("<i2")
    stream = io.BytesIO(data.tobytes() + b"\x01")  # a trailing half sample is dropped, not crashed on
    chunks = await collect(RawSource(stream, block_ms=30))
    got = np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2")
    assert np.array_equal(got, data)
    assert chunks[0].samples == 480


async def test_raw_source_stereo_48k_file(tmp_path: Path) -> None:
    stereo = np.zeros((4800, 2), np.int16)
    stereo[:, 0] = 1000
    stereo[:, 1] = 3000
    (tmp_path / "in.raw").write_bytes(stereo.tobytes())
    chunks = await collect(RawSource(tmp_path / "in.raw", input_rate_hz=48000, input_channels=2))
    audio = np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2")
    assert abs(len(audio) - 1600) <= 10 and np.all(audio[5:-5] == 2000)


def test_split_blocks_keeps_time() -> None:
    chunk = AudioChunk(bytes(2 * 1000), timestamp_ms=500.0)
    blocks = split_blocks(chunk, 480)
    assert [b.samples for b in blocks] == [480, 480, 40]
    assert blocks[1].timestamp_ms == pytest.approx(530.0)


async def test_wav_sink_writes_one_file_per_reply_and_marks_interruptions(tmp_path: Path) -> None:
    sink = WavSink(tmp_path / "replies")
    first_audio: list[float] = []
    sink.on_first_audio = first_audio.append
    tone = (3000 * np.sin(np.arange(22050) / 10)).astype(np.int16)
    await asyncio.wait_for(sink.play(AudioChunk(tone.tobytes(), rate=22050)), 5)
    await asyncio.wait_for(sink.drain(), 5)
    await asyncio.wait_for(sink.play(AudioChunk(tone.tobytes(), rate=22050)), 5)
    sink.stop()
    assert [p.name for p in sink.files] == ["reply_001.wav", "reply_002.wav"]
    assert sink.interrupted == [False, True]
    assert len(first_audio) == 2
    with wave.open(str(sink.files[0])) as wav:
        assert wav.getframerate() == 22050 and wav.getnframes() == 22050


async def test_wav_sink_paced_playback_can_be_barged_in(tmp_path: Path) -> None:
    sink = WavSink(tmp_path, pace_realtime=True)
    second = AudioChunk(bytes(2 * 16000), rate=16000)

    async def speak() -> None:
        for _ in range(5):
            await sink.play(second)

    speaking = asyncio.create_task(speak(), name="speak")
    await asyncio.sleep(1.2)
    sink.stop()
    await asyncio.wait_for(speaking, 5)
    with wave.open(str(sink.files[0])) as wav:
        assert wav.getnframes() <= 3 * 16000
