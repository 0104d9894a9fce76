"""Running eval sets through the real turn engine: a fresh car for every case and session, one loaded model.

Each case or session gets new plugins (a vehicle at 22 °C, nothing playing, no orders) and its own outbox; the
meals and deliveries services are the reference service on loopback, so the catalogue, prices and orders are
real HTTP and real SQLite, as in the car.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from agent.core.config import Config
from agent.devtools.eval_cases import EvalCase, EvalSession
from agent.devtools.eval_scoring import summarize_sessions
from agent.devtools.evaluation import EvalReport, Progress, run_eval, run_sessions
from agent.devtools.reference_service import ReferenceService, loopback_config
from agent.plugins.loader import load_registry
from agent.understanding.engine import Assistant


class EvalWorld:
    """One model, one reference service; a new car (plugins, outbox) per case or session."""

    def __init__(self, config: Config, model: Any, directory: Path) -> None:
        self.config = config
        self.model = model
        self.directory = directory
        self.service = ReferenceService(directory / "service.sqlite3").start()
        self._count = 0

    def close(self) -> None:
        self.service.close()

    async def car(self) -> Assistant:
        self._count += 1
        # Fast probes and no NetworkManager: the machine's own link says nothing about a loopback service.
        config = loopback_config(
            self.service.url, self.directory / f"outbox-{self._count}.sqlite3", self.config,
            timeout_seconds=2.0, probe_interval_seconds=0.5, probe_timeout_seconds=0.5, up_after=1,
            down_after=2,
        )
        assistant = Assistant(config, load_registry(config), self.model)
        await assistant.warm()
        return assistant

    @staticmethod
    async def scrap(assistant: Assistant) -> None:
        for plugin in assistant.registry.plugins:
            with contextlib.suppress(Exception):
                await plugin.stop()
        await assistant.close()


@contextlib.asynccontextmanager
async def eval_world(config: Config, model: Any) -> AsyncIterator[EvalWorld]:
    with tempfile.TemporaryDirectory(prefix="cabin-eval-") as tmp:
        world = EvalWorld(config, model, Path(tmp))
        try:
            yield world
        finally:
            world.close()


async def evaluate(
    world: EvalWorld,
    cases: Sequence[EvalCase],
    sessions: Sequence[EvalSession] = (),
    progress: Progress | None = None,
    *,
    timeout_s: float | None = 120.0,
) -> EvalReport:
    """Score single-turn cases (each in a fresh car) and sessions (each turn in order, in one car)."""

    async def run_turn(case: EvalCase) -> dict[str, Any]:
        assistant = await world.car()
        try:
            return (await assistant.turn(case.text)).as_dict()
        finally:
            await world.scrap(assistant)

    async def start_session(session: EvalSession) -> Any:
        assistant = await world.car()

        async def turn(text: str) -> dict[str, Any]:
            return (await assistant.turn(text)).as_dict()

        async def close() -> None:
            await world.scrap(assistant)

        return turn, close

    report = await run_eval(cases, run_turn, progress, timeout_s=timeout_s)
    if sessions:
        report.sessions = await run_sessions(sessions, start_session, progress, timeout_s=timeout_s)
        report.summary["sessions"] = summarize_sessions(report.sessions)
    return report
