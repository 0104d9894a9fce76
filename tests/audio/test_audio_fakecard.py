"""The real sounddevice/PortAudio path through a fake ALSA card made of files (agent.devtools.fakecard).

Each case runs the part that imports sounddevice in a subprocess whose ALSA_CONFIG_PATH points at the card:
PortAudio reads the ALSA configuration once, at initialisation. The card does not pace, so the sources/sinks run
with `pace_realtime=True`; every await in the children has a timeout and every child has a process timeout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.fakecard import last_json, run_on_card

from agent.devtools.fakecard import FakeCard

pytestmark = pytest.mark.slow

def tone(seconds: float, hz: float, rate: int = 16000, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@pytest.fixture
def card(tmp_path: Path) -> FakeCard:
    card = FakeCard(tmp_path / "card")
    card.write()
    return card


def test_activate_refuses_after_sounddevice_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.core.errors import AudioError

    monkeypatch.setitem(sys.modules, "sounddevice", object())
    with pytest.raises(AudioError) as err:
        FakeCard(tmp_path).activate()
    assert err.value.code == "audio-fakecard-too-late"


def test_mic_source_reads_the_card_in_real_time(card: FakeCard, tmp_path: Path) -> None:
    signal = tone(1.0, 440.0)
    card.write_input(signal, pad_seconds=1.0)
    proc = run_on_card(
        card,
        f"""
        import asyncio, json, sys, time
        from agent.audio.sources import MicSource
        async def main():
            src = MicSource(device="card_in", block_ms=30, pace_realtime=True)
            stream = src.stream()
            got, sizes = bytearray(), set()
            t0 = time.monotonic()
            async def read():
                async for chunk in stream:
                    assert chunk.rate == 16000 and chunk.channels == 1 and chunk.width == 2
                    sizes.add(chunk.samples)
                    got.extend(chunk.pcm)
                    if len(got) >= 2 * 16000:
                        return
            await asyncio.wait_for(read(), timeout=15)
            elapsed = time.monotonic() - t0
            await asyncio.wait_for(stream.aclose(), timeout=5)
            open({str(tmp_path / "got.raw")!r}, 'wb').write(bytes(got))
            print(json.dumps({{"elapsed": elapsed, "sizes": sorted(sizes)}}))
        asyncio.run(main())
    """,
    )
    info = last_json(proc)
    got = np.frombuffer((tmp_path / "got.raw").read_bytes(), dtype="<i2")
    assert info["sizes"] == [480]
    # Paced: one second of audio takes about one second, not the 1-2 ms the plugin alone would take.
    assert 0.7 <= info["elapsed"] <= 3.0
    assert np.array_equal(got[:16000], signal)


def test_speaker_sink_writes_the_card_out_file_and_reports_first_audio(
    card: FakeCard, tmp_path: Path
) -> None:
    signal = tone(0.6, 300.0, rate=22050)
    np.save(tmp_path / "signal.npy", signal)
    proc = run_on_card(
        card,
        f"""
        import asyncio, json, numpy as np
        from agent.audio.chunk import AudioChunk
        from agent.audio.sinks import SpeakerSink
        from agent.core.events import now_ms
        async def main():
            signal = np.load({str(tmp_path / "signal.npy")!r})
            sink = SpeakerSink(device="card_out", pace_realtime=True)
            t0 = now_ms()
            for i in range(0, len(signal), 2205):  # 100 ms pieces, like sentences streaming from Piper
                await asyncio.wait_for(sink.play(AudioChunk(signal[i:i+2205].tobytes(), rate=22050)), timeout=5)
            first = await sink.wait_first_audio(timeout_seconds=5)
            await sink.drain(timeout_seconds=10)
            print(json.dumps({{"first_audio_after_ms": first - t0, "played": sink.samples_played}}))
        asyncio.run(main())
    """,
    )
    info = last_json(proc)
    assert 0 <= info["first_audio_after_ms"] < 500
    assert info["played"] == len(signal)
    out = card.read_output()
    # The output holds the tone (the plug may add a little silence around it); find it and compare.
    start = int(np.argmax(np.abs(out) > 100))
    assert len(out) - start >= len(signal) - 1
    played = out[start : start + len(signal)].astype(np.float64)
    corr = np.dot(played, signal[: len(played)]) / (
        np.linalg.norm(played) * np.linalg.norm(signal[: len(played)])
    )
    assert corr > 0.99


def test_speaker_stop_flushes_immediately_for_barge_in(card: FakeCard, tmp_path: Path) -> None:
    proc = run_on_card(
        card,
        """
        import asyncio, json, time, numpy as np
        from agent.audio.chunk import AudioChunk
        from agent.audio.sinks import SpeakerSink
        async def main():
            t = np.arange(22050 * 4) / 22050
            long_reply = (6000 * np.sin(2 * np.pi * 250 * t)).astype(np.int16)
            sink = SpeakerSink(device="card_out", pace_realtime=True)
            await asyncio.wait_for(sink.play(AudioChunk(long_reply.tobytes(), rate=22050)), timeout=5)
            await asyncio.wait_for(sink.wait_first_audio(), timeout=5)
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            sink.stop()
            stop_ms = 1000 * (time.monotonic() - t0)
            await asyncio.wait_for(sink.drain(), timeout=5)  # nothing left: returns at once
            print(json.dumps({"stop_ms": stop_ms, "played": sink.samples_played, "playing": sink.playing}))
        asyncio.run(main())
    """,
    )
    info = last_json(proc)
    assert info["stop_ms"] < 200
    assert not info["playing"]
    assert info["played"] < 22050 * 1.5  # about 0.5 s of a 4 s reply went out
    assert len(card.read_output()) < 22050 * 1.5


def test_device_lost_and_back_is_recovered_without_ending(card: FakeCard) -> None:
    card.write_input(tone(20.0, 500.0), pad_seconds=1.0)
    proc = run_on_card(
        card,
        f"""
        import asyncio, json, os
        from agent.devtools.fakecard import FakeCard
        from agent.audio.sources import MicSource
        card = FakeCard({str(card.directory)!r})
        async def main():
            src = MicSource(device="card_in", block_ms=30, pace_realtime=True, reconnect_max_seconds=0.5)
            stream = src.stream()
            phases = {{"before": 0, "after": 0}}
            async def unplug_and_replug():
                await asyncio.sleep(0.5)
                # The USB mic goes away: the PCM and its file vanish, PortAudio aborts the stream.
                card.write(with_capture=False)
                os.rename(card.input_path, str(card.input_path) + ".away")
                src.simulate_device_loss()
                await asyncio.sleep(2.0)
                os.rename(str(card.input_path) + ".away", card.input_path)
                card.write(with_capture=True)
            task = asyncio.create_task(unplug_and_replug(), name="unplug")
            async def read():
                async for chunk in stream:
                    if src.reconnects == 0:
                        phases["before"] += 1
                    else:
                        phases["after"] += 1
                        if phases["after"] >= 20:
                            return
            await asyncio.wait_for(read(), timeout=20)
            await asyncio.wait_for(task, timeout=5)
            await asyncio.wait_for(stream.aclose(), timeout=5)
            print(json.dumps({{**phases, "reconnects": src.reconnects}}))
        asyncio.run(main())
    """,
    )
    info = last_json(proc)
    assert info["before"] > 5
    assert info["after"] >= 20
    assert info["reconnects"] == 1
    # Logged once when lost, once when back; the failed retries in between are debug only.
    logs = proc.stdout + proc.stderr  # structlog prints to stdout unless agent.core.logging.setup_logging ran
    assert logs.count("mic-lost") == 1
    assert logs.count("mic-recovered") == 1
    # While away the device really was gone (not just a closed stream): reopening failed by name.
    assert "input device 'card_in' not found" in logs
