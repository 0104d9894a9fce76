"""The `cabin-agent` command line: one typer app; each command group lives in its own module here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.cli import bench, control, daemon, demo, models, outbox, speech, turns
from agent.cli.context import CliContext
from agent.core.errors import CabinError

app = typer.Typer(
    name="cabin-agent",
    help="Offline-first voice agent for car head units.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Config file (default /etc/cabin-agent/config.yaml).")
]


@app.callback()
def _root(
    ctx: typer.Context,
    config: ConfigOption = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="debug, info, warning or error.")] = None,
) -> None:
    ctx.obj = CliContext(config_path=config, log_level=log_level)


# One line per group, in the order `--help` lists them.
for group in (turns, demo, daemon, control, speech, outbox, bench, models):
    group.register(app)


def main(argv: list[str] | None = None) -> None:
    try:
        # With standalone_mode=False click returns a command's exit status instead of exiting.
        status = app(args=argv, standalone_mode=False)
        if isinstance(status, int) and status != 0:
            sys.exit(status)
    except CabinError as err:
        print(f"cabin-agent: {err.message}", file=sys.stderr)
        sys.exit(err.exit_status)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # Usage errors come through here with standalone_mode=False. They are click's ClickException, which
        # recent typer vendors (typer._click): recognised by what they do, not by where click lives.
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise
