"""Pipeline health and the watchdog: pings only while every expected component is moving."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from helpers.clock import Clock

from agent.app.health import EVENT_LOOP, Health, Watchdog
from agent.app.sdnotify import Notifier


def test_components_must_beat_within_their_deadline() -> None:
    clock = Clock()
    health = Health(clock=clock)
    health.expect("audio", deadline_s=2.0)
    assert health.healthy() == (True, [])  # a full deadline before the first beat
    clock.now += 2.5
    ok, reasons = health.healthy()
    assert not ok and reasons == ["audio: no progress yet for 2.5s (deadline 2s)"]
    health.beat("audio")
    assert health.healthy() == (True, [])
    clock.now += 3.0
    ok, reasons = health.healthy()
    assert not ok and reasons[0].startswith("audio: no progress for 3.0s")
    health.forget("audio")
    assert health.healthy() == (True, [])


def test_unexpected_beats_never_make_us_unhealthy() -> None:
    clock = Clock()
    health = Health(clock=clock)
    health.beat("wake")
    clock.now += 100
    assert health.healthy() == (True, [])
    assert health.snapshot()["components"]["wake"]["beats"] == 1


def test_watching_expects_only_inside_the_block() -> None:
    clock = Clock()
    health = Health(clock=clock)
    with health.watching("llm", deadline_s=1.0):
        clock.now += 2
        assert not health.healthy()[0]
    assert health.healthy()[0]


def test_loop_lag_over_the_bound_is_unhealthy_for_a_window() -> None:
    clock = Clock()
    health = Health(max_loop_lag_s=0.5, lag_window_s=10.0, clock=clock)
    health.record_loop_lag(0.01)
    assert health.healthy()[0]
    health.record_loop_lag(1.2)
    ok, reasons = health.healthy()
    assert not ok and reasons == [f"{EVENT_LOOP}: lag 1.20s (bound 0.5s)"]
    clock.now += 11  # the spike ages out of the window
    health.record_loop_lag(0.01)
    assert health.healthy()[0]


def test_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Health().expect("audio", 0)


async def test_loop_probe_sees_a_blocked_event_loop() -> None:
    health = Health(max_loop_lag_s=0.2, loop_probe_interval_s=0.05)
    probe = asyncio.create_task(health.run_loop_probe())
    try:
        await asyncio.sleep(0.2)
        assert health.healthy()[0]
        time.sleep(0.5)  # what a blocking call on the loop does  # noqa: ASYNC251
        await asyncio.sleep(0.1)
        ok, reasons = health.healthy()
        assert not ok and reasons[0].startswith(f"{EVENT_LOOP}: lag")
    finally:
        probe.cancel()
        await asyncio.gather(probe, return_exceptions=True)
    assert EVENT_LOOP not in health._expected


class Listener:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


def test_watchdog_pings_only_while_healthy_and_says_why(tmp_path: Path) -> None:
    listener = Listener(tmp_path / "notify")
    clock = Clock()
    health = Health(clock=clock)
    notifier = Notifier(str(tmp_path / "notify"))
    notifier.status("listening")
    listener.drain()
    watchdog = Watchdog(health, notifier, environ={"WATCHDOG_USEC": "8000000"})
    assert watchdog.enabled and watchdog.check_interval_s == 2.0
    health.expect("audio", 1.0)

    health.beat("audio")
    assert watchdog.check()
    assert listener.drain() == ["WATCHDOG=1"]

    clock.now += 5  # the audio loop stalls
    assert not watchdog.check()
    assert not watchdog.check()
    messages = listener.drain()
    assert "WATCHDOG=1" not in messages
    assert messages == [
        "STATUS=unhealthy: audio: no progress for 5.0s (deadline 1s)"
    ]  # said once, not per round
    assert notifier.last_status == "listening"

    health.beat("audio")  # it recovers: pings resume and the daemon's status comes back
    assert watchdog.check()
    assert listener.drain() == ["WATCHDOG=1", "STATUS=listening"]
    assert watchdog.pings == 2
    listener.sock.close()


def test_watchdog_without_systemd_watchdog_never_pings(tmp_path: Path) -> None:
    listener = Listener(tmp_path / "notify")
    watchdog = Watchdog(Health(), Notifier(str(tmp_path / "notify")), environ={})
    assert not watchdog.enabled
    assert watchdog.check()
    assert listener.drain() == []
    listener.sock.close()


async def test_watchdog_run_is_one_task_that_owns_its_probe(tmp_path: Path) -> None:
    listener = Listener(tmp_path / "notify")
    health = Health(loop_probe_interval_s=0.02)
    watchdog = Watchdog(health, Notifier(str(tmp_path / "notify")), timeout_s=0.2)
    task = asyncio.create_task(watchdog.run())
    await asyncio.sleep(0.3)
    assert EVENT_LOOP in health._expected
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert EVENT_LOOP not in health._expected
    assert listener.drain().count("WATCHDOG=1") >= 3
    listener.sock.close()
