"""The service contract with systemd, proven on a harness process wired the way `cabin-agent run` must be.

Run as a script (`python tests/app/test_systemd_daemon.py`), this file is that harness: config load (exit 78
on a bad one), a warm-up, READY=1, a fake audio loop beating health per chunk from a capture thread, the
watchdog, the control socket, and SIGTERM -> STOPPING=1 -> clean exit 0. `harness_main()` is the reference for the
daemon's lifecycle (docs/deploy.md, "What `cabin-agent run` must do"); the tests drive it as systemd would,
through a real NOTIFY_SOCKET.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.notify import NotifySocket, notify_address

HERE = Path(__file__).resolve()
TESTS = HERE.parents[1]  # the root of the tests, where `helpers` lives


# ---------------------------------------------------------------------------------------------- the harness


async def _serve(config: object) -> int:
    from agent.app import sdnotify
    from agent.app.control_server import ControlServer
    from agent.app.health import Health, Watchdog

    notifier = sdnotify.Notifier()
    health = Health(max_loop_lag_s=float(os.environ.get("HARNESS_MAX_LAG_S", "1.0")))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    # 1. Warm-up: models and the prompt cache. STATUS says so; a slow first boot asks for more start time.
    notifier.status("loading models")
    notifier.extend_timeout(60)
    await asyncio.sleep(float(os.environ.get("HARNESS_WARMUP_S", "0.5")))

    # 2. The control socket before READY=1, so `cabin-agent status` works as soon as systemd says "active".
    server = ControlServer.from_config(config)  # type: ignore[arg-type]
    stalled = threading.Event()

    async def status(args: dict) -> dict:
        return {"state": "listening", "health": health.snapshot()}

    async def stall(args: dict) -> str:
        stalled.set()  # the capture thread stops delivering chunks: a stuck device read
        return "stalled"

    async def block(args: dict) -> str:
        notifier.status("test: blocking the loop", remember=False)  # a marker for the test's timeline
        time.sleep(float(args.get("seconds", 2)))  # a blocking call on the event loop  # noqa: ASYNC251
        return "blocked"

    server.register("status", status)
    server.register("test.stall", stall)
    server.register("test.block", block)
    await server.start()

    # 3. The audio loop: a capture thread hands chunks to the loop (STYLE habit 5); one beat per chunk.
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=100)
    capture_done = threading.Event()

    def capture() -> None:
        while not capture_done.is_set():
            time.sleep(0.03)
            if not stalled.is_set():
                loop.call_soon_threadsafe(chunks.put_nowait, b"\0" * 960)

    async def audio_loop() -> None:
        while True:
            await chunks.get()
            health.beat("audio")

    thread = threading.Thread(target=capture, name="capture", daemon=True)
    thread.start()
    health.expect("audio", deadline_s=float(os.environ.get("HARNESS_AUDIO_DEADLINE_S", "0.5")))
    watchdog = Watchdog(health, notifier)
    tasks = {
        asyncio.create_task(audio_loop(), name="audio"),
        asyncio.create_task(watchdog.run(), name="watchdog"),
    }

    # 4. Ready: only now does systemd consider the unit started (and arm WatchdogSec=).
    notifier.ready(status="listening")
    await stop.wait()

    # 5. SIGTERM: say so at once, stop listening, (finish or cancel the reply, flush the outbox), exit 0.
    notifier.stopping(status="stopping")
    capture_done.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.close()
    thread.join(timeout=1)
    return 0


def harness_main() -> int:
    from agent.core.config import load_config
    from agent.core.errors import CabinError

    try:
        config = load_config()
    except CabinError as err:
        print(f"cabin-agent: {err.message}", file=sys.stderr)
        return err.exit_status
    return asyncio.run(_serve(config))


if __name__ == "__main__":
    sys.exit(harness_main())


# ---------------------------------------------------------------------------------------------- the tests


def start_harness(
    tmp_path: Path, notify: str, config_text: str | None = None, **env: str
) -> subprocess.Popen:
    config = tmp_path / "config.yaml"
    config.write_text(
        config_text if config_text is not None else f"control:\n  socket_path: {tmp_path}/c.sock\n"
    )
    environ = {
        **os.environ,
        "NOTIFY_SOCKET": notify,
        "WATCHDOG_USEC": "1000000",  # 1 s: a check every 0.25 s
        "CABIN_AGENT_CONFIG": str(config),
        "HARNESS_WARMUP_S": "0.5",
        # Run as a script, this file still imports the shared test helpers.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        **env,
    }
    return subprocess.Popen(
        [sys.executable, str(HERE)], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def control(path: Path, cmd: str, **args: object) -> object:
    from agent.app.control_client import request_sync

    return request_sync(path, cmd, timeout_s=5, **args)


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path):
    manager = NotifySocket(notify_address(tmp_path, request.param))  # the manager's side
    yield manager
    manager.close()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


def test_ready_after_warm_up_then_watchdog_pings_while_healthy(tmp_path: Path, systemd: NotifySocket) -> None:
    started = time.monotonic()
    proc = start_harness(tmp_path, systemd.address)
    try:
        assert systemd.next_with("STATUS", 10)["STATUS"] == "loading models"
        ready = systemd.next_with("READY", 15)
        assert time.monotonic() - started >= 0.5  # not before the warm-up
        assert ready == {"READY": "1", "STATUS": "listening"}
        assert not any("WATCHDOG" in m for m in systemd.read())  # no pings before READY
        assert (tmp_path / "c.sock").exists()  # the control socket is up by READY
        pings = [m for m in systemd.collect(1.5) if m.get("WATCHDOG") == "1"]
        assert len(pings) >= 4  # every 0.25 s against WatchdogSec=1s
        reply = control(tmp_path / "c.sock", "status")
        assert reply["health"]["healthy"] is True
        assert reply["health"]["components"]["audio"]["beats"] > 10
    finally:
        stop(proc)


def test_no_pings_while_the_audio_loop_is_stalled(tmp_path: Path, systemd: NotifySocket) -> None:
    proc = start_harness(tmp_path, systemd.address)
    try:
        systemd.next_with("READY", 15)
        assert any(m.get("WATCHDOG") == "1" for m in systemd.collect(0.6))
        assert control(tmp_path / "c.sock", "test.stall") == "stalled"
        unhealthy = systemd.next_with("STATUS", 3)
        assert unhealthy["STATUS"].startswith("unhealthy: audio: no progress for")
        # WatchdogSec=1s passes twice over without a ping: systemd would kill and restart the service.
        silence = systemd.collect(2.0)
        assert not any("WATCHDOG" in m for m in silence), silence
        assert proc.poll() is None  # the process itself is alive: only the watchdog can save us
        reply = control(tmp_path / "c.sock", "status")
        assert reply["health"]["healthy"] is False
    finally:
        stop(proc)


def test_no_pings_while_the_event_loop_is_blocked(tmp_path: Path, systemd: NotifySocket) -> None:
    proc = start_harness(tmp_path, systemd.address, HARNESS_MAX_LAG_S="0.5")
    try:
        systemd.next_with("READY", 15)
        assert any(m.get("WATCHDOG") == "1" for m in systemd.collect(0.5))
        assert control(tmp_path / "c.sock", "test.block", seconds=1.5) == "blocked"
        # After the block the loop runs again, but the lag it suffered keeps the verdict "unhealthy" for the
        # lag window (half of WatchdogSec=), so a loop that keeps blocking never earns a ping...
        received = systemd.collect(1.5)
        after = received[received.index({"STATUS": "test: blocking the loop"}) + 1 :]
        assert after[0]["STATUS"].startswith("unhealthy: event-loop"), after
        first_ping = after.index({"WATCHDOG": "1"})
        # ...while one spike costs less than WatchdogSec= of silence: pings resume and "listening" comes back.
        assert {"STATUS": "listening"} in after[first_ping:]
    finally:
        stop(proc)


def test_sigterm_sends_stopping_and_exits_0(tmp_path: Path, systemd: NotifySocket) -> None:
    proc = start_harness(tmp_path, systemd.address)
    try:
        systemd.next_with("READY", 15)
        proc.send_signal(signal.SIGTERM)
        assert systemd.next_with("STOPPING", 5)["STOPPING"] == "1"
        assert proc.wait(timeout=10) == 0
        assert not (tmp_path / "c.sock").exists()  # the socket is cleaned up
    finally:
        stop(proc)


@pytest.mark.parametrize(
    ("config_text", "key"),
    [
        ("control:\n  max_request_bytes: 3\n", "control.max_request_bytes"),
        ("contrl: {}\n", "contrl: unknown key"),
        ("control: [\n", "invalid YAML"),
    ],
)
def test_bad_config_exits_78_without_ready(
    tmp_path: Path, systemd: NotifySocket, config_text: str, key: str
) -> None:
    proc = start_harness(tmp_path, systemd.address, config_text=config_text)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 78
    assert key in err and err.count("\n") == 1  # one line naming the key
    assert not any("READY" in m for m in systemd.collect(0.2))
