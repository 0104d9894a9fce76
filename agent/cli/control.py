"""`cabin-agent status|ptt|ask TEXT|cancel`: clients of the running daemon's control socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.app.control_client import client_socket_path, request_sync
from agent.cli.context import command_config

SocketOption = Annotated[
    Path | None,
    typer.Option("--socket", help="Control socket (default: the running daemon's, see docs/deploy.md)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the daemon's reply as JSON.")]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the reply.")]


def _socket(ctx: typer.Context, path: Path | None) -> Path:
    if path is not None:
        return path
    return client_socket_path(command_config(ctx))


def _print_tree(value: Any, indent: str = "") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                typer.echo(f"{indent}{key}:")
                _print_tree(item, indent + "  ")
            else:
                typer.echo(f"{indent}{key}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                typer.echo(f"{indent}-")
                _print_tree(item, indent + "  ")
            else:
                typer.echo(f"{indent}- {_scalar(item)}")
    else:
        typer.echo(f"{indent}{_scalar(value)}")


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _emit(result: Any, as_json: bool, fallback: str) -> None:
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
    elif result is None or result == {}:
        typer.echo(fallback)
    else:
        _print_tree(result)


def status(
    ctx: typer.Context, socket: SocketOption = None, as_json: JsonOption = False, timeout: TimeoutOption = 5.0
) -> None:
    """What the running daemon is doing: state, models, connectivity, outbox, last turn latencies, health."""
    _emit(request_sync(_socket(ctx, socket), "status", timeout_s=timeout), as_json, "running")


def ptt(
    ctx: typer.Context, socket: SocketOption = None, as_json: JsonOption = False, timeout: TimeoutOption = 5.0
) -> None:
    """Push-to-talk: start listening for a request now, as if the wake phrase had been heard."""
    _emit(request_sync(_socket(ctx, socket), "ptt", timeout_s=timeout), as_json, "listening")


def ask(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="The request, as if the driver had said it.")],
    socket: SocketOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 60.0,
) -> None:
    """Send a text request to the running daemon; it runs the turn and speaks the reply."""
    result = request_sync(_socket(ctx, socket), "say", timeout_s=timeout, text=text)
    if not as_json and isinstance(result, dict) and isinstance(result.get("reply"), str):
        for call in result.get("tool_calls") or []:
            typer.echo(f"tool: {call.get('name')} {json.dumps(call.get('arguments'), ensure_ascii=False)}")
        typer.echo(result["reply"])
        return
    _emit(result, as_json, "ok")


def cancel(
    ctx: typer.Context, socket: SocketOption = None, as_json: JsonOption = False, timeout: TimeoutOption = 5.0
) -> None:
    """Stop speaking and cancel the reply in progress (queued orders are never dropped)."""
    _emit(request_sync(_socket(ctx, socket), "cancel", timeout_s=timeout), as_json, "cancelled")


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("ptt")(ptt)
    app.command("ask")(ask)
    app.command("cancel")(cancel)
