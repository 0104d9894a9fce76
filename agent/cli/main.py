"""The `cabin-agent` command line: one typer app; each command group lives in its own module here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.cli import control, daemon, demo, models, outbox, speech, turns
from agent.cli.context import CliContext
from agent.core.errors import EX_UNAVAILABLE, CabinError

# The development tools (bench, demo, eval, the reference service) are a folder the runtime never imports: a
# head unit's image may leave agent/devtools out, and then only the commands that need them say so.
DEVTOOLS_MISSING = (
    "this command needs the development tools (agent/devtools: bench, demo, eval, the reference service), "
    "which this install does not carry; install cabin-agent from a checkout to use it"
)

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


def _without_devtools(name: str) -> None:
    @app.command(name, help="(needs the development tools, not installed here)",
                 context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def unavailable() -> None:
        print(f"cabin-agent: {DEVTOOLS_MISSING}", file=sys.stderr)
        sys.exit(EX_UNAVAILABLE)


def _bench_group() -> object | None:
    try:
        from agent.cli import bench
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("agent.devtools"):
            raise  # a broken import fails loudly
        return None
    return bench


# One line per group, in the order `--help` lists them.
for group in (turns, demo, daemon, control, speech, outbox, _bench_group(), models):
    if group is None:
        _without_devtools("bench")
    else:
        group.register(app)  # type: ignore[attr-defined]


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
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("agent.devtools"):
            raise
        print(f"cabin-agent: {DEVTOOLS_MISSING}", file=sys.stderr)
        sys.exit(EX_UNAVAILABLE)
    except Exception as exc:
        # Usage errors come through here with standalone_mode=False. They are click's ClickException, which
        # recent typer vendors (typer._click): recognised by what they do, not by where click lives.
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise
