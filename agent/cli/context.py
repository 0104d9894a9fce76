"""What the root options (`--config`, `--log-level`) hand every command, through typer's context object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from agent.core.config import Config, load_config
from agent.core.logging import setup_logging


@dataclass(frozen=True)
class CliContext:
    # None: $CABIN_AGENT_CONFIG, else /etc/cabin-agent/config.yaml, else the defaults
    config_path: Path | None = None
    log_level: str | None = None  # None: logging.level from the config

    def config(self) -> Config:
        """Load and validate the config once per command, and set up logging from it."""
        cfg = load_config(self.config_path)
        setup_logging(self.log_level or cfg.logging.level, cfg.logging.format, cfg.logging.log_transcripts)
        return cfg


def cli_context(ctx: typer.Context) -> CliContext:
    """The root's options (the defaults when a group is mounted on an app without the root callback)."""
    found = ctx.find_object(CliContext)
    return found if found is not None else CliContext()


def command_config(ctx: typer.Context) -> Config:
    """The validated config for the running command (a ConfigError exits 78 through agent.cli.main)."""
    return cli_context(ctx).config()
