"""The real daemon (`python -m agent run --input raw:FIFO --output wav:DIR`) under a test systemd.

The test is the service manager: it binds the NOTIFY_SOCKET (a path, and the abstract `@` form), sets
WATCHDOG_USEC=2 s, and is the cabin microphone, writing quiet noise into a FIFO at real-time pace from a
thread. It checks what issue 5 asks of `cabin-agent run`: STATUS=loading models then READY=1 (timed cold,
with an empty prompt cache, and again with the cache the first run persisted), WATCHDOG=1 while audio flows
and none for longer than WatchdogSec= once the microphone stalls, `cabin-agent status` over the control
socket, a typed request spoken into a WAV file, an announcement owed from the outbox spoken and marked,
SIGTERM -> STOPPING=1 and exit 0 (also with the FIFO stalled mid-read, and during the start), and exit 78
with one line on stderr for a bad config.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
import wave
from pathlib import Path

import numpy as np
import pytest
from helpers.daemon import LLM, RATE_HZ, READY_TIMEOUT_S, WATCHDOG_S, Daemon, Microphone, daemon_env
from helpers.notify import NotifySocket, notify_address

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------------- helpers


def start_daemon(
    tmp_path: Path, notify_address: str, cache_dir: Path, *, watchdog_pid: bool = False, feed: bool = True
) -> Daemon:
    fifo = tmp_path / "mic.fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    out_dir = tmp_path / "replies"
    notify = NotifySocket(notify_address)
    env = daemon_env(tmp_path, notify_address, cache_dir)
    command = [sys.executable, "-m", "agent", "run", "--input", f"raw:{fifo}", "--output", f"wav:{out_dir}"]
    if watchdog_pid:
        # As systemd does: WATCHDOG_PID names the main process. The shell's pid is the daemon's after exec.
        command = ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", *command]
    log_path = tmp_path / f"daemon-{uuid.uuid4().hex[:6]}.log"
    log_file = log_path.open("w")
    started = time.monotonic()
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
    daemon = Daemon(proc, started, notify, tmp_path / "control.sock", log_path, out_dir, env)
    daemon.cleanup += [notify.close, log_file.close]
    if feed:
        daemon.microphone = Microphone(fifo)
    return daemon


def driver_says(*parts: str | float) -> np.ndarray:
    """What the driver says, synthesised by the store's Piper voice at 16 kHz; a number is a pause (s)."""
    from agent.audio.chunk import AudioChunk
    from agent.core.config import Config
    from agent.tts.factory import voice_file
    from agent.tts.piper import PiperTts

    piper = PiperTts(voice_file(Config(), "en"), threads=1, warm_up=False)
    clips = []
    for part in parts:
        if isinstance(part, str):
            chunk = AudioChunk(piper.synthesize_blocking(part), rate=piper.sample_rate_hz)
            clip = np.frombuffer(chunk.to_format(RATE_HZ, 1).pcm, dtype="<i2").astype(np.float64)
            clips.append(clip * (3000 / max(1.0, float(np.sqrt(np.mean(clip**2))))))  # about -21 dBFS
        else:
            clips.append(np.zeros(int(part * RATE_HZ)))
    return np.concatenate(clips)


def load_average() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------------------------- the tests


@pytest.mark.model
def test_ready_watchdog_status_stall_and_sigterm_cold_then_persisted_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"  # empty: no prompt cache yet
    cache.mkdir()

    # 1. Cold: the system prompt's KV cache is computed (and persisted into the cache dir).
    (tmp_path / "cold").mkdir()
    cold = start_daemon(tmp_path / "cold", notify_address(tmp_path, "path"), cache)
    try:
        cold_ready_s = cold.wait_ready()
        cold_load = load_average()
        (ready_event,) = cold.log_events("ready")
        assert ready_event["prompt_cache"] == "computed"
        assert list((cache / "cabin-agent" / "prompt-cache").glob(f"{LLM}-*.kv")), (
            "prompt cache not persisted"
        )

        # Audio flows: WATCHDOG=1 every WatchdogSec/4.
        window_start = time.monotonic()
        time.sleep(3 * WATCHDOG_S / 2)
        pings = cold.notify.pings(since=window_start)
        assert len(pings) >= 4, cold.notify.describe(window_start)
        assert max(np.diff([window_start, *pings, time.monotonic()])) < WATCHDOG_S

        # `cabin-agent status` answers over the control socket while it runs.
        status = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--json"],
            env=cold.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        reply = json.loads(status.stdout)
        assert reply["state"] == "idle"
        assert reply["pid"] == cold.proc.pid
        assert reply["models"]["llm"] == LLM
        assert reply["models"]["prompt_cache"]["source"] == "computed"
        assert reply["models"]["asr"] == "whisper" and reply["models"]["tts"] == "piper"
        assert reply["outbox"]["pending"] == 0 and set(reply["outbox"]) >= {
            "pending",
            "in-flight",
            "delivered",
        }
        assert reply["health"]["healthy"] is True, reply["health"]
        assert reply["health"]["components"]["audio"]["beats"] > 50
        assert reply["pipeline"]["audio_lag"]["idle"]["chunks"] > 50
        assert (
            reply["connectivity"]["meals"]["online"] is False
        )  # port 9 is closed: offline, and still serving

        assert cold.terminate() == 0
        assert not cold.control_socket.exists()  # removed on the way out
        assert cold.log_events("stopped")
    finally:
        cold.close()

    # 2. Warm: the same cache dir, so the prompt cache is restored from the file the cold run wrote.
    (tmp_path / "warm").mkdir()
    warm = start_daemon(tmp_path / "warm", notify_address(tmp_path / "warm", "path"), cache)
    try:
        warm_ready_s = warm.wait_ready()
        warm_load = load_average()
        (ready_event,) = warm.log_events("ready")
        assert ready_event["prompt_cache"] == "file"
        print(
            f"\nREADY after start: cold (prompt cache computed) {cold_ready_s:.1f} s "
            f"[daemon: {cold.log_events('ready')[0]['ready_s']} s, {cold_load}]; "
            f"persisted prompt cache {warm_ready_s:.1f} s [daemon: {ready_event['ready_s']} s, {warm_load}]"
        )
        healthy_since = time.monotonic()
        warm.notify.wait_for(lambda m: m.get("WATCHDOG") == "1", WATCHDOG_S, since=healthy_since)

        # 3. The microphone stalls (FIFO open, nothing written): the audio loop stops beating, the pings stop.
        assert warm.microphone is not None
        warm.microphone.stall()
        stalled = time.monotonic()
        t, unhealthy = warm.notify.wait_for(
            lambda m: m.get("STATUS", "").startswith("unhealthy: audio: no progress"), 12, since=stalled
        )
        assert t - stalled >= 4.0  # the audio deadline is 5 s: not before it
        quiet_from = time.monotonic()
        time.sleep(WATCHDOG_S * 1.5)  # longer than WatchdogSec=: systemd would kill and restart it now
        assert not warm.notify.pings(since=t), warm.notify.describe(t)
        assert warm.proc.poll() is None  # alive and answering: only the watchdog can tell
        reply = warm.control("status")
        assert isinstance(reply, dict) and reply["health"]["healthy"] is False
        assert any(r.startswith("audio: no progress") for r in reply["health"]["reasons"])
        assert time.monotonic() - quiet_from > WATCHDOG_S

        # 4. SIGTERM while the daemon's reader is stuck in a read of the stalled FIFO: still a clean exit 0.
        assert warm.terminate() == 0
        assert warm.log_events("stopped")
    finally:
        warm.close()


@pytest.mark.model
def test_abstract_socket_spoken_and_typed_requests_and_owed_announcement(tmp_path: Path) -> None:
    from agent.outbox.store import OutboxStore

    # An outcome that finished while the car was off: the daemon owes the driver this sentence.
    store = OutboxStore(tmp_path / "outbox.sqlite3")
    owed = store.add_announcement("Your pizza from Luigi's was ordered.")
    store.close()
    cache = tmp_path / "cache"
    cache.mkdir()
    daemon = start_daemon(tmp_path, notify_address(tmp_path, "abstract"), cache, watchdog_pid=True)
    try:
        daemon.wait_ready()
        # WATCHDOG_PID named the daemon itself, so the watchdog is on.
        daemon.notify.wait_for(lambda m: m.get("WATCHDOG") == "1", WATCHDOG_S, since=time.monotonic())

        # The owed announcement is spoken once the car is idle (into the WAV "speaker"), then marked.
        end = time.monotonic() + 60
        while daemon.control("outbox.announcements") and time.monotonic() < end:
            time.sleep(0.25)
        assert daemon.control("outbox.announcements") == [], daemon.log_tail()
        first = daemon.out_dir / "reply_001.wav"
        assert first.exists()

        # A spoken request through the FIFO: wake phrase, endpoint, whisper, the model, Piper into a WAV.
        assert daemon.microphone is not None
        request = driver_says("hey cabin", 0.6, "set the temperature to 21 degrees", 1.5)
        turn = None
        for _attempt in range(2):  # a driver whose wake phrase went unheard says it again, once
            daemon.microphone.say(request)
            end = time.monotonic() + 45
            while turn is None and time.monotonic() < end:
                time.sleep(0.5)
                status = daemon.control("status")
                assert isinstance(status, dict)
                turns = status["pipeline"]["last_turns"]
                turn = turns[-1] if turns else None
            if turn is not None:
                break
        assert turn is not None, daemon.log_tail()
        assert turn["trigger"] == "wake" and turn["outcome"] == "replied", turn
        heard = turn["transcript"].lower()
        assert "temperature" in heard and ("21" in heard or "twenty" in heard), turn
        assert turn["latency_ms"]["first_audio"] > 0 and turn["reply"], turn
        print(f"\nspoken turn: {turn['transcript']!r} -> {turn['reply']!r}, latency_ms {turn['latency_ms']}")

        # A typed request goes through the voice loop too: one turn at a time, the reply spoken.
        result = daemon.control("say", timeout_s=120, text="set the temperature to 22 degrees")
        assert isinstance(result, dict), result
        assert result["trigger"] == "text" and result["outcome"] == "replied", result
        assert result["reply"], result
        assert result["latency_ms"]["first_audio"] > 0
        replies = sorted(daemon.out_dir.glob("reply_*.wav"))
        assert len(replies) == 3, replies  # announcement, spoken turn, typed turn
        with wave.open(str(replies[-1])) as wav:
            assert wav.getnframes() / wav.getframerate() > 0.5  # a sentence, not a click
        status = daemon.control("status")
        assert isinstance(status, dict)
        assert status["pipeline"]["last_turns"][-1]["transcript"] == "set the temperature to 22 degrees"
        assert status["health"]["healthy"] is True

        assert daemon.terminate() == 0
    finally:
        daemon.close()
    # The store was closed cleanly (WAL checkpointed): the announcement is marked spoken on disk.
    assert (
        not (tmp_path / "outbox.sqlite3-wal").exists()
        or (tmp_path / "outbox.sqlite3-wal").stat().st_size == 0
    )
    store = OutboxStore(tmp_path / "outbox.sqlite3")
    try:
        assert store.pending_announcements() == []
        assert owed.id not in [a.id for a in store.pending_announcements()]
    finally:
        store.close()


@pytest.mark.model
def test_corrupt_outbox_is_set_aside_and_daemon_serves(tmp_path: Path) -> None:
    """Issue 10: a garbage outbox file no longer ends `cabin-agent run` (systemd would restart it until it gave
    up): it is set aside, the daemon serves, the driver hears it once, and a second daemon on the same store
    refuses with one line naming the lock and the owner."""
    bad = b"this is not an outbox" + os.urandom(4000)
    (tmp_path / "outbox.sqlite3").write_bytes(bad)
    cache = tmp_path / "cache"
    cache.mkdir()
    daemon = start_daemon(tmp_path, notify_address(tmp_path, "path"), cache)
    try:
        daemon.wait_ready()
        status = daemon.control("status")
        assert isinstance(status, dict) and status["outbox"]["pending"] == 0
        end = time.monotonic() + 60
        while daemon.control("outbox.announcements") and time.monotonic() < end:
            time.sleep(0.25)  # the notice is spoken once the car is idle, then marked
        assert daemon.control("outbox.announcements") == [], daemon.log_tail()
        assert (daemon.out_dir / "reply_001.wav").exists()
        (aside,) = tmp_path.glob("outbox.corrupt-*.sqlite3")
        assert aside.read_bytes() == bad
        assert len(daemon.log_events("outbox-corrupt-set-aside")) == 1

        second_env = {k: v for k, v in daemon.env.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        second_env["CABIN_AGENT__CONTROL__SOCKET_PATH"] = str(tmp_path / "second.sock")
        second = subprocess.run(
            [sys.executable, "-m", "agent", "run", "--input", "raw:/dev/null", "--output", "null"],
            env=second_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 69, second.stderr[-2000:]
        lines = [line for line in second.stderr.splitlines() if line.startswith("cabin-agent:")]
        assert len(lines) == 1 and f"already delivered by pid {daemon.proc.pid}" in lines[0], second.stderr
        assert "outbox.sqlite3.lock" in lines[0] and "Traceback" not in second.stderr
        assert isinstance(daemon.control("status"), dict)  # the first one serves on
        assert daemon.terminate() == 0
    finally:
        daemon.close()


@pytest.mark.model
def test_sigterm_while_loading_models_stops_without_ready(tmp_path: Path) -> None:
    cache = tmp_path / "cache"  # empty: the start computes the prompt cache, its longest step
    cache.mkdir()
    daemon = start_daemon(tmp_path, notify_address(tmp_path, "path"), cache, feed=False)
    try:
        daemon.notify.wait_for(lambda m: m.get("STATUS") == "loading models", 30, proc=daemon.proc)
        time.sleep(2.0)
        # STOPPING=1 comes at once; the exit waits only for the model step already running in its thread.
        assert daemon.terminate(exit_timeout_s=READY_TIMEOUT_S) == 0
        print(
            f"\nSIGTERM during start: STOPPING=1 after {daemon.stopping_s:.2f} s, "
            f"exit after {daemon.exit_s:.1f} s"
        )
        assert not any("READY" in m for _, m in daemon.notify.snapshot())
        assert not daemon.control_socket.exists()
        (stopping,) = daemon.log_events("stopping")
        assert stopping["reason"] == "signal-during-start"
    finally:
        daemon.close()


@pytest.mark.parametrize(
    ("config_text", "args", "status", "says"),
    [
        ("llm:\n  n_thread: 2\n", [], 78, "llm.n_thread: unknown key"),
        ("contrl: {}\n", [], 78, "contrl: unknown key"),
        ("", ["--input", "tape:deck"], 64, "--input: expected mic, wav:PATH, raw:PATH or raw:-"),
    ],
)
def test_bad_config_or_input_exits_with_its_status_and_one_line_without_ready(
    tmp_path: Path, config_text: str, args: list[str], status: int, says: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(config_text)
    notify = NotifySocket(notify_address(tmp_path, "path"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CABIN_AGENT", "WATCHDOG_"))}
    env.update({"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "2000000", "HOME": str(tmp_path)})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "--config", str(bad), "run", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == status, proc.stderr
        assert says in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        time.sleep(0.2)
        assert not any("READY" in m for _, m in notify.snapshot())
    finally:
        notify.close()


def test_missing_model_exits_66_without_ready_and_releases_what_it_opened(tmp_path: Path) -> None:
    notify = NotifySocket(notify_address(tmp_path, "path"))
    empty_store = tmp_path / "no-models"
    empty_store.mkdir()
    env = daemon_env(tmp_path, notify.address, tmp_path / "cache", store=empty_store)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "run", "--input", "raw:-", "--output", "null"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 66, proc.stderr  # EX_NOINPUT: RestartPreventExitStatus= keeps it down
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("cabin-agent: ") and LLM in last, proc.stderr
        time.sleep(0.2)
        messages = [m for _, m in notify.snapshot()]
        assert not any("READY" in m for m in messages)
        assert messages[-1]["STATUS"].startswith("failed: "), messages
        assert not (tmp_path / "control.sock").exists()
    finally:
        notify.close()


# ---------------------------------------------------------------------------------------------- supervision


async def test_a_failing_task_restarts_with_backoff_and_a_config_error_stops_the_daemon() -> None:
    import asyncio

    from agent.app.daemon import Supervisor
    from agent.core.errors import ConfigError

    fatal: list[Exception] = []
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(time.monotonic())
        raise RuntimeError("the microphone thread died")

    async def misconfigured() -> None:
        raise ConfigError("audio.input_device: no such device (got 'hw:9')")

    tasks = Supervisor(on_fatal=fatal.append)
    tasks.start("voice-loop", flaky)
    tasks.start("wake", misconfigured)
    try:
        deadline = time.monotonic() + 15
        while len(runs) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(runs) >= 3
        # At 0, 0.5 and 1.5 s: the backoff doubles (compared within the run, not against the wall clock).
        first, second = runs[1] - runs[0], runs[2] - runs[1]
        assert first >= 0.45 and second > 1.5 * first
        assert tasks.restarts["voice-loop"] >= 2
        assert [type(e) for e in fatal] == [ConfigError]  # reported once, not retried
        assert tasks.tasks["wake"].done() and "wake" not in tasks.restarts
    finally:
        await asyncio.wait_for(tasks.stop(), 5)
    assert all(t.done() for t in tasks.tasks.values())


# ---------------------------------------------------------------------------------------------- the raw input


@pytest.mark.timeout(20)  # a blocked event loop would hang here instead of failing an assertion
@pytest.mark.parametrize("writer", ["none", "stalled"])
async def test_a_stalled_fifo_stalls_the_audio_but_never_the_event_loop(tmp_path: Path, writer: str) -> None:
    import asyncio

    from agent.audio.sources import RawSource

    fifo = tmp_path / "mic.fifo"
    os.mkfifo(fifo)
    # "none": nobody opened the FIFO for writing (open() waits); "stalled": a writer that wrote one block,
    # then nothing more (read() waits).
    fd = os.open(fifo, os.O_RDWR) if writer == "stalled" else None
    if fd is not None:
        os.write(fd, bytes(960))
    chunks = []

    async def listen() -> None:
        async for chunk in RawSource(fifo, pace_realtime=True).stream():
            chunks.append(chunk)

    listening = asyncio.create_task(listen())
    try:
        for _ in range(10):  # the loop keeps its pace while the reader waits
            started = time.monotonic()
            await asyncio.sleep(0.05)
            assert time.monotonic() - started < 0.2
        assert len(chunks) == (1 if writer == "stalled" else 0)
        listening.cancel()
        done, _ = await asyncio.wait({listening}, timeout=1.0)  # the old reader blocked the loop in close()
        assert done == {listening}
    finally:
        if fd is not None:
            os.close(fd)
