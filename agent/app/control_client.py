"""The control socket's client: how a `cabin-agent status|ptt|ask|cancel` process finds the daemon and asks
it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from agent.app.control import ControlError, DaemonNotRunning, check_socket_dir, encode_line
from agent.core.config import Config, control_socket_path

SYSTEM_SOCKET_PATH = Path("/run/cabin-agent/control.sock")
SYSTEM_UNIT_PATHS = (
    Path("/etc/systemd/system/cabin-agent.service"),
    Path("/lib/systemd/system/cabin-agent.service"),
)


def client_socket_path(config: Config, environ: dict[str, str] | None = None) -> Path:
    """Where a `cabin-agent status|ptt|ask|cancel` process finds the daemon.

    The configured path if set; under systemd the service's own; otherwise the caller's own daemon
    (`cabin-agent run` in a terminal) if it is running, else the system service's socket.
    """
    env = os.environ if environ is None else environ
    if config.control.socket_path is not None or env.get("RUNTIME_DIRECTORY"):
        return control_socket_path(config)
    user_path = control_socket_path(config)
    if user_path.exists():
        return user_path
    if SYSTEM_SOCKET_PATH.exists() or any(p.exists() for p in SYSTEM_UNIT_PATHS):
        return SYSTEM_SOCKET_PATH
    return user_path


class ControlClient:
    """One connection to the daemon: `await client.request("status")` returns the result or raises."""

    def __init__(self, path: Path | str, *, timeout_s: float = 5.0, connect_timeout_s: float = 2.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0

    async def connect(self) -> None:
        try:
            # A socket in a directory another user can write may be theirs, answering as the daemon.
            check_socket_dir(self.path.parent)
        except FileNotFoundError:
            raise DaemonNotRunning(f"cabin-agent is not running (no socket at {self.path})") from None
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path), limit=16 * 1024 * 1024), self.connect_timeout_s
            )
        except FileNotFoundError:
            raise DaemonNotRunning(f"cabin-agent is not running (no socket at {self.path})") from None
        except ConnectionRefusedError:
            raise DaemonNotRunning(f"cabin-agent is not running (nothing listening on {self.path})") from None
        except PermissionError:
            raise ControlError(
                f"permission denied on {self.path}: run as root or as a member of the socket's group "
                "(control.group in the config)",
                code="control-permission-denied",
            ) from None
        except TimeoutError:
            raise ControlError(
                f"cabin-agent did not accept a connection on {self.path}", code="timeout"
            ) from None
        except OSError as err:
            raise ControlError(
                f"cannot connect to {self.path}: {err.strerror or err}", code="control-failed"
            ) from err

    async def request(self, cmd: str, timeout_s: float | None = None, **args: Any) -> Any:
        if self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        self._next_id += 1
        request_id = self._next_id
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            self._writer.write(encode_line({"id": request_id, "cmd": cmd, **args}))
            await self._writer.drain()
            line = await asyncio.wait_for(self._reader.readline(), wait_s)
        except TimeoutError:
            await self.close()
            raise ControlError(f"no reply to {cmd!r} within {wait_s:g}s", code="timeout") from None
        except (ConnectionError, ValueError) as err:
            await self.close()
            raise ControlError(f"connection to cabin-agent lost ({err})", code="control-failed") from None
        if not line:
            await self.close()
            raise ControlError("cabin-agent closed the connection without a reply", code="control-failed")
        reply = json.loads(line)
        if reply.get("ok"):
            return reply.get("result")
        error = reply.get("error") or {}
        raise ControlError(error.get("message", "request failed"), code=error.get("code", "control-failed"))

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        self._reader = self._writer = None

    async def __aenter__(self) -> ControlClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def request_sync(path: Path | str, cmd: str, *, timeout_s: float = 5.0, **args: Any) -> Any:
    """One request from synchronous code (the CLI commands)."""

    async def once() -> Any:
        async with ControlClient(path, timeout_s=timeout_s) as client:
            return await client.request(cmd, **args)

    return asyncio.run(once())
