"""`cabin-agent demo`: a simulated spoken drive through the real voice loop (agent.devtools.demo.drive)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.context import cli_context
from agent.core.logging import setup_logging


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        ctx: typer.Context,
        out: Annotated[
            Path, typer.Option("--out", help="Where the car's spoken replies are written.")
        ] = Path("demo-out"),
        as_json: Annotated[
            bool, typer.Option("--json", help="One JSON object per turn, then a summary.")
        ] = False,
        speed: Annotated[
            float,
            typer.Option(
                "--speed",
                min=0.25,
                max=8.0,
                help="Feed the cabin audio this many times faster than real time.",
            ),
        ] = 1.0,
    ) -> None:
        """A simulated spoken drive through the real voice loop on the embedded defaults (no microphone needed)."""
        root = cli_context(ctx)
        config = root.config()
        if root.log_level is None:
            # The drive prints every turn itself; info logs would bury it (pass --log-level info to see them).
            setup_logging("warning", config.logging.format, config.logging.log_transcripts)
        from agent.devtools.demo.drive import spoken_drive  # the voice loop loads only when the demo runs

        asyncio.run(spoken_drive(config, out, speed=speed, as_json=as_json))
