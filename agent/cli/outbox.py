"""`cabin-agent outbox list|retry|cancel|announcements|dispatch` and `cabin-agent devservice`.

Outbox commands go through the running daemon's control socket when it answers them, else straight to the store
file (safe: SQLite serialises writers, and every change is a single transaction).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.app.control import ControlError, DaemonNotRunning
from agent.app.control_client import client_socket_path, request_sync
from agent.cli.context import command_config
from agent.core.config import outbox_path
from agent.outbox.admin import OutboxAdmin
from agent.outbox.store import OutboxStore

outbox_app = typer.Typer(
    help="Show and manage queued service actions (orders, cancels, delivery changes).", no_args_is_help=True
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _via_daemon_or_store(ctx: typer.Context, cmd: str, direct: Callable[[Any], Any], **args: Any) -> Any:
    """Ask the daemon when it runs and knows the command; otherwise run `direct(admin)` on the store."""
    config = command_config(ctx)
    try:
        return request_sync(client_socket_path(config), cmd, timeout_s=5.0, **args)
    except DaemonNotRunning:
        pass
    except ControlError as err:
        if err.code not in ("unknown-command", "control-permission-denied"):
            raise
    store = OutboxStore(outbox_path(config))
    try:
        return direct(OutboxAdmin(store, expiry_seconds=config.outbox.expiry_minutes * 60))
    finally:
        store.close()


def _minutes(seconds: float) -> str:
    if abs(seconds) < 90:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m"


@outbox_app.command("list")
def list_entries(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option("--state", help="Only entries in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Newest first: id, state, service, what it is, attempts, age, last error."""
    rows = _via_daemon_or_store(
        ctx, "outbox.list", lambda admin: admin.list(state, limit), state=state, limit=limit
    )
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("The outbox is empty.")
        return
    for r in rows:
        expires = (
            ""
            if r["state"] not in ("pending", "in-flight")
            else f"  expires in {_minutes(r['expires_in_seconds'])}"
        )
        error = f"  last error: {r['last_error']}" if r["last_error"] else ""
        typer.echo(
            f"{r['id']:>5}  {r['state']:<10} {r['service']:<10} {r['action']:<20} {r['summary']}"
            f"  (attempts {r['attempts']}, {_minutes(r['age_seconds'])} ago){expires}{error}"
        )


EntryId = Annotated[int, typer.Argument(help="Entry id from `outbox list`.")]


@outbox_app.command("retry")
def retry_entry(ctx: typer.Context, entry_id: EntryId) -> None:
    """Send a failed or expired entry again, with its original idempotency key."""
    row = _via_daemon_or_store(
        ctx, "outbox.retry", lambda admin: admin.retry(entry_id), entry_id=entry_id
    )
    typer.echo(f"Entry {row['id']} is pending again: {row['summary']}")


@outbox_app.command("cancel")
def cancel_entry(ctx: typer.Context, entry_id: EntryId) -> None:
    """Withdraw an entry that has not been sent yet."""
    row = _via_daemon_or_store(
        ctx, "outbox.cancel", lambda admin: admin.cancel(entry_id), entry_id=entry_id
    )
    typer.echo(f"Entry {row['id']} is cancelled: {row['summary']}")


@outbox_app.command("announcements")
def list_announcements(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """What the car still has to tell the driver."""
    rows = _via_daemon_or_store(ctx, "outbox.announcements", lambda admin: admin.announcements())
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for a in rows or []:
        typer.echo(f"{a['id']:>5}  {a['priority']:<6} {a['text']}")
    if not rows:
        typer.echo("Nothing to announce.")


@outbox_app.command("dispatch")
def dispatch(ctx: typer.Context) -> None:
    """Deliver the outbox in the foreground until Ctrl-C (what the daemon does in the background)."""
    import asyncio
    import contextlib

    from agent.outbox.dispatcher import run_standalone

    config = command_config(ctx)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_standalone(config))


def devservice(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", help="Loopback port (0: any free port).")] = 8765,
    db: Annotated[Path | None, typer.Option("--db", help="SQLite file (default: in memory).")] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            "--api-key-env", help="Require `Authorization: Bearer $VAR` (name of an environment variable)."
        ),
    ] = None,
    admin: Annotated[
        bool,
        typer.Option("--admin", help="Serve /admin/* (faults, prices, down); behind the API key if set."),
    ] = False,
) -> None:
    """Run the reference meals/deliveries service on 127.0.0.1 (see docs/services.md)."""
    import os

    from agent.devtools.reference_service import ReferenceService

    command_config(ctx)  # logging set-up
    api_key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and not api_key:
        raise typer.BadParameter(f"environment variable {api_key_env} is not set", param_hint="--api-key-env")
    service = ReferenceService(db or ":memory:", port=port, api_key=api_key, admin=admin).start()
    where = (
        f"admin: POST {service.url}/admin/faults, /admin/down" if admin else "admin off; --admin turns it on"
    )
    typer.echo(f"reference service on {service.url} ({where})")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        service.close()


def register(app: typer.Typer) -> None:
    app.add_typer(outbox_app, name="outbox")
    app.command("devservice")(devservice)
