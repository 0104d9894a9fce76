"""The `cabin-agent` command line: one typer app; each area contributes its commands from its own module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.config import Config, load_config
from agent.errors import CabinError
from agent.logging import setup_logging

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


class State:
    config_path: Path | None = None
    log_level: str | None = None


state = State()


@app.callback()
def _root(
    config: ConfigOption = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="debug, info, warning or error.")] = None,
) -> None:
    state.config_path = config
    state.log_level = log_level


def get_config() -> Config:
    """Load and validate the config once per command, and set up logging from it."""
    cfg = load_config(state.config_path)
    setup_logging(state.log_level or cfg.logging.level, cfg.logging.format, cfg.logging.log_transcripts)
    return cfg


def _register() -> None:
    # Each area owns its commands; importing them here keeps this file small and conflict-free.
    from agent.commands import register

    register(app)


def main(argv: list[str] | None = None) -> None:
    _register()
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
    except Exception as exc:  # click usage errors come through here with standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
