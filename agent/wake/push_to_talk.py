"""Push-to-talk: a steering-wheel button, a key or a control command starts a request, whatever the engine."""

from __future__ import annotations

import asyncio

from agent.core.events import now_ms


class PushToTalk:
    """An asyncio.Event-driven trigger. `press()` on the loop, `press_threadsafe()` from a GPIO/evdev thread."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pressed_ms: float | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()

    def press(self) -> None:
        self.pressed_ms = now_ms()
        self._event.set()

    def press_threadsafe(self) -> None:
        if self._loop is None:
            raise RuntimeError("PushToTalk.bind_loop() must be called on the event loop first")
        self._loop.call_soon_threadsafe(self.press)

    def is_pressed(self) -> bool:
        return self._event.is_set()

    def consume(self) -> float | None:
        """Take the press (if any): returns when it happened and re-arms the trigger."""
        if not self._event.is_set():
            return None
        self._event.clear()
        return self.pressed_ms

    async def wait(self, timeout_seconds: float | None = None) -> float:
        await asyncio.wait_for(self._event.wait(), timeout=timeout_seconds)
        stamp = self.consume()
        return stamp if stamp is not None else now_ms()
