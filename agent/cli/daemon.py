"""`cabin-agent run`: the daemon in the foreground, audio from `--input`, to `--output` (docs/deploy.md)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated

import typer

from agent.app.daemon import INPUT_HELP, OUTPUT_HELP, Daemon, open_input, open_output
from agent.cli.context import command_config
from agent.core.logging import get_logger

log = get_logger("daemon")


def run(
    ctx: typer.Context,
    input_spec: Annotated[str, typer.Option("--input", "-i", help=INPUT_HELP)] = "mic",
    output_spec: Annotated[str, typer.Option("--output", "-o", help=OUTPUT_HELP)] = "speaker",
) -> None:
    """The daemon: listen for the wake phrase, answer, speak; under systemd, Type=notify with a watchdog."""
    config = command_config(ctx)  # a bad config raises ConfigError: one line on stderr, exit 78
    source = open_input(input_spec, config)
    sink = open_output(output_spec, config)
    daemon = Daemon(config, source=source, sink=sink, stop_when_source_ends=source is not None)
    status = asyncio.run(daemon.serve())
    if daemon.start_abandoned:
        # Everything is released and the store closed; only a model step (a cold prompt-cache computation,
        # tens of seconds on a Pi) may still run in its thread. Waiting for it would outlast TimeoutStopSec=.
        log.info("exit-without-waiting-for-model-thread")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    raise typer.Exit(status)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
