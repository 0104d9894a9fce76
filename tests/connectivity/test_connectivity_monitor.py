"""The connectivity monitor: hysteresis against a flapping link, real probes, events, NetworkManager's word."""

from __future__ import annotations

import asyncio

import pytest
from helpers.waiting import until

from agent.connectivity.monitor import ConnectivityMonitor
from agent.connectivity.networkmanager import link_up_from_state, watch_networkmanager
from agent.core.events import EventBus
from agent.devtools.reference_service import ReferenceService, loopback_config

T = 5.0


@pytest.fixture
def service():
    with ReferenceService() as svc:
        yield svc


async def _next_events(bus: EventBus, count: int) -> list:
    got = []
    async for event in bus.subscribe():
        got.append(event)
        if len(got) == count:
            return got
    return got


async def test_hysteresis_needs_consecutive_agreement(tmp_path):
    config = loopback_config(
        "http://127.0.0.1:9", tmp_path / "o.db", connectivity={"up_after": 3, "down_after": 2}
    )
    monitor = ConnectivityMonitor(config)
    monitor.report("meals", True)  # the first observation decides at once
    assert monitor.is_online("meals")
    monitor.report("meals", False)
    assert monitor.is_online("meals")  # one failure is a blip
    monitor.report("meals", False)
    assert not monitor.is_online("meals")
    for _ in range(2):
        monitor.report("meals", True)
    assert not monitor.is_online("meals")
    monitor.report("meals", True)
    assert monitor.is_online("meals")


async def test_flapping_link_does_not_thrash(tmp_path):
    monitor = ConnectivityMonitor(loopback_config("http://127.0.0.1:9", tmp_path / "o.db"))
    changes = []
    monitor.add_listener(lambda service, online: changes.append(online))
    monitor.report("meals", True)
    for i in range(20):
        monitor.report("meals", i % 2 == 0)
    assert changes == [True]


async def test_probes_follow_the_real_service_and_publish_events(service, tmp_path):
    bus = EventBus()
    monitor = ConnectivityMonitor(loopback_config(service.url, tmp_path / "o.db"), bus)
    events = asyncio.create_task(_next_events(bus, 6))  # up, down, up for each service
    await asyncio.sleep(0)
    runner = asyncio.create_task(monitor.run())
    try:
        assert await asyncio.wait_for(monitor.wait_online("meals", T), T + 1)
        service.go_down()
        await until(lambda: not monitor.is_online("meals"), T)
        service.come_up()
        assert await asyncio.wait_for(monitor.wait_online("meals", T), T + 1)
        got = await asyncio.wait_for(events, T)
        assert [(e.type, e.data["online"]) for e in got if e.data["service"] == "meals"][:3] == [
            ("connectivity", True),
            ("connectivity", False),
            ("connectivity", True),
        ]
    finally:
        runner.cancel()
        events.cancel()
        await asyncio.gather(runner, events, return_exceptions=True)
        await asyncio.wait_for(monitor.aclose(), T)


async def test_check_probes_on_demand_without_the_loop(service, tmp_path):
    monitor = ConnectivityMonitor(loopback_config(service.url, tmp_path / "o.db"))
    try:
        assert await asyncio.wait_for(monitor.check("deliveries"), T)
        service.go_down()
        # One failed probe is a blip (down_after=2); the second one decides.
        assert await asyncio.wait_for(monitor.check("deliveries", max_age_seconds=0), T)
        assert not await asyncio.wait_for(monitor.check("deliveries", max_age_seconds=0), T)
    finally:
        await asyncio.wait_for(monitor.aclose(), T)


async def test_networkmanager_link_down_is_believed_at_once(tmp_path):
    monitor = ConnectivityMonitor(loopback_config("http://127.0.0.1:9", tmp_path / "o.db"))
    monitor.report("meals", True)
    monitor.set_link(False)
    assert not monitor.is_online("meals")


def test_networkmanager_states():
    assert link_up_from_state(70) is True and link_up_from_state(60) is True
    assert link_up_from_state(20) is False and link_up_from_state(10) is False
    assert link_up_from_state(40) is None


async def test_networkmanager_watch_returns_quietly_when_unavailable():
    # No jeepney or no system bus here: the watcher must log and return, never raise.
    await asyncio.wait_for(watch_networkmanager(lambda up: None), T)

