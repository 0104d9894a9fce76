"""The drive's scenes: the tunnel's entrance (the services go down) and exit (they come back), and the stretch
of road each one plays until the car has noticed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from agent.devtools.demo.report import DriveReport


@dataclass(frozen=True)
class Scene:
    """A moment of the drive between two requests: a tunnel's entrance or exit.

    `when="quiet"` plays it once the car is idle (the demo); `"now"` right after the driver's last words, while
    the car may still be thinking or speaking (tests: an order placed in the middle of another reply)."""

    name: str  # "enter-tunnel" (the services go down) or "leave-tunnel" (they come back)
    when: str = "quiet"


ENTER_TUNNEL = Scene("enter-tunnel")
LEAVE_TUNNEL = Scene("leave-tunnel")

TUNNEL_BANNERS = {
    "enter-tunnel": "— entering tunnel: no connectivity —",
    "leave-tunnel": "— leaving tunnel: back online —",
}


class Tunnel:
    """Drives through the tunnel: the reference service goes down and comes back, the report says so, and
    each scene knows when the car has caught up (offline noticed; the queued order placed and announced)."""

    def __init__(self, service: Any, monitor: Any, report: DriveReport) -> None:
        self.service = service  # agent.devtools.reference_service.ReferenceService
        self.monitor = monitor  # agent.connectivity.monitor.LinkMonitor
        self.report = report

    async def act(self, scene: Scene) -> None:
        self.report.scene_started(scene.name)
        if scene.name == "enter-tunnel":
            await asyncio.to_thread(self.service.go_down)
        elif scene.name == "leave-tunnel":
            await asyncio.to_thread(self.service.come_up)
        else:
            raise ValueError(f"unknown demo scene {scene.name!r}")
        self.report.emit(
            "scene",
            [
                f"\n{TUNNEL_BANNERS[scene.name]}",
                f"service › {'down' if scene.name == 'enter-tunnel' else 'up'} ({self.service.url})",
            ],
            scene=scene.name,
            service_up=self.service.is_up,
        )

    def caught_up(self, scene: Scene) -> bool:
        if scene.name == "enter-tunnel":
            return not self.monitor.is_online("meals")
        # Back online: wait while the queued order is placed and the car tells the driver.
        return len(self.report.announcements) >= len(self.report.queued_keys)
