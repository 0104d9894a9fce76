"""Waiting in a test until something is true, never past a limit (every await in a test has a timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(predicate: Callable[[], object], limit_seconds: float = 10.0, interval: float = 0.02) -> None:
    """Polls `predicate` every `interval` seconds; TimeoutError if it is still false after `limit_seconds`."""

    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(interval)

    await asyncio.wait_for(wait(), limit_seconds)
