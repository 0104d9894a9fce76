"""Registers every area's commands on the typer app (one line per area, so areas never edit each other's files)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from agent import turn_cli

    turn_cli.register(app)
    from agent import demo; demo.register(app)  # noqa: E702
    from agent import daemon; daemon.register(app)  # noqa: E702
    from agent import control_cli; control_cli.register(app)  # noqa: E702
    from agent import voice_cli; voice_cli.register(app)  # noqa: E702
    from agent import outbox_cli; outbox_cli.register(app)  # noqa: E702
    from agent import bench; bench.register(app)  # noqa: E702
    try:
        from agent.models import cli as models_cli

        models_cli.register(app)
    except ImportError:  # the model manager lands in its own change
        pass
