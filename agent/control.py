"""The control socket: newline-delimited JSON over a Unix socket in the runtime directory, server and client.

Request  `{"id": 1, "cmd": "status", ...args}`
Reply    `{"id": 1, "ok": true, "result": ...}` or `{"id": 1, "ok": false, "error": {"code", "message"}}`

The daemon registers one async handler per command (`server.register("status", handler)`); the server knows
nothing about the pipeline, so it is tested without one. Bad input (malformed JSON, oversized lines, unknown
commands, a handler that raises) gets an error reply and never hurts the server or other clients. There is no
TCP listener: access is the socket file's mode (0660) and group.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.config import Config, control_socket_path
from agent.errors import EX_UNAVAILABLE, CabinError, ConfigError
from agent.logging import get_logger

log = get_logger("control")

# The commands the daemon is expected to register; the server accepts any registered name.
COMMANDS = ("status", "ptt", "say", "cancel", "outbox.list")

SYSTEM_SOCKET_PATH = Path("/run/cabin-agent/control.sock")
SYSTEM_UNIT_PATHS = (
    Path("/etc/systemd/system/cabin-agent.service"),
    Path("/lib/systemd/system/cabin-agent.service"),
)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlError(CabinError):
    """A control request failed; `code` is what the reply's error.code says."""

    code = "control-failed"
    exit_status = EX_UNAVAILABLE


class DaemonNotRunning(ControlError):
    code = "daemon-not-running"


def error_reply(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def _encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


# ---------------------------------------------------------------------------------------------- server


class ControlServer:
    """Serves registered handlers on a Unix socket.

    Requests on one connection are answered in order; clients that want concurrency open more connections
    (a `cancel` while a `say` is running comes from another `cabin-agent` process anyway).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        group: str | None = None,
        mode: int = 0o660,
        max_request_bytes: int = 65536,
        max_clients: int = 64,
        request_timeout_s: float = 120.0,
        idle_timeout_s: float | None = 600.0,
    ) -> None:
        self.path = Path(path)
        self.group = group
        self.mode = mode
        self.max_request_bytes = max_request_bytes
        self.max_clients = max_clients
        self.request_timeout_s = request_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._handlers: dict[str, Handler] = {}
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._inode: int | None = None

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> ControlServer:
        kwargs: dict[str, Any] = {
            "group": config.control.group,
            "max_request_bytes": config.control.max_request_bytes,
        }
        kwargs.update(overrides)
        return cls(control_socket_path(config), **kwargs)

    def register(self, cmd: str, handler: Handler) -> None:
        """`handler(args)` gets the request minus `id` and `cmd`; its return value (JSON-able) is the result.

        Raise a CabinError for a failure the client should see (`code` and message go into the reply);
        any other exception becomes `internal-error` and is logged here with its traceback.
        """
        self._handlers[cmd] = handler

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        sock = self._bind()
        self._server = await asyncio.start_unix_server(self._on_client, sock=sock)
        log.info("control-listening", path=str(self.path), mode=oct(self.mode), group=self.group)

    async def close(self) -> None:
        """Stop accepting, end every client connection, remove the socket file (if it is still ours)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        self._unlink_own_socket()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- socket file

    def _bind(self) -> socket.socket:
        gid = self._group_id()
        parent = self.path.parent
        if not parent.exists():
            # Only reached outside systemd (RuntimeDirectory= makes it otherwise); 0750 lets the group in.
            parent.mkdir(parents=True, mode=0o750 if self.group else 0o700)
            if gid is not None:
                os.chown(parent, -1, gid)
        self._remove_stale_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            # chmod/chown before listen(): nobody can connect in the window between bind and the final mode.
            os.chmod(self.path, self.mode)
            if gid is not None:
                try:
                    os.chown(self.path, -1, gid)
                except PermissionError as err:
                    raise ConfigError(
                        f"control.group: this process is not in group {self.group!r} "
                        "(add it to SupplementaryGroups= in the unit)",
                        key="control.group",
                    ) from err
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise
        self._inode = self.path.stat().st_ino
        return sock

    def _group_id(self) -> int | None:
        if not self.group:
            return None
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise ConfigError(
                f"control.group: no such group (got {self.group!r})", key="control.group"
            ) from None

    def _remove_stale_socket(self) -> None:
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(
                f"{self.path} exists and is not a socket; refusing to replace it", code="control-path-taken"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # left behind by a crash: nobody listens
            return
        finally:
            probe.close()
        raise ControlError(
            f"another cabin-agent is already listening on {self.path}", code="control-socket-in-use"
        )

    def _unlink_own_socket(self) -> None:
        try:
            if self._inode is not None and self.path.stat().st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._inode = None

    # -- connections

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= self.max_clients:
            with contextlib.suppress(Exception):
                writer.write(_encode(error_reply(None, "busy", f"too many clients (max {self.max_clients})")))
                await asyncio.wait_for(writer.drain(), 1.0)
            writer.close()
            return
        self._clients.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            raise
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or went quiet: its business, not ours
        except Exception:
            log.exception("control-client-failed")
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        discarding = False  # inside an oversized line: drop bytes until its newline
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), self.idle_timeout_s)
            if not chunk:
                return
            buffer += chunk
            while True:
                newline = buffer.find(b"\n")
                if newline < 0:
                    if len(buffer) > self.max_request_bytes:
                        if not discarding:
                            await self._reply(writer, self._too_large())
                        discarding = True
                        buffer.clear()
                    break
                line = bytes(buffer[:newline])
                del buffer[: newline + 1]
                if discarding:
                    discarding = False
                    continue
                if len(line) > self.max_request_bytes:
                    await self._reply(writer, self._too_large())
                    continue
                if not line.strip():
                    continue
                await self._reply(writer, await self.handle_line(line))

    def _too_large(self) -> dict[str, Any]:
        return error_reply(None, "request-too-large", f"request longer than {self.max_request_bytes} bytes")

    async def _reply(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write(_encode(reply))
        await writer.drain()

    async def handle_line(self, line: bytes) -> dict[str, Any]:
        """One request line in, one reply out. Never raises (except cancellation)."""
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return error_reply(None, "bad-json", f"not a JSON object: {err}")
        if not isinstance(request, dict):
            return error_reply(None, "bad-request", "a request is a JSON object with a 'cmd'")
        request_id = request.get("id")
        if not isinstance(request_id, str | int | float | type(None)) or isinstance(request_id, bool):
            return error_reply(None, "bad-request", "'id' must be a string or a number")
        cmd = request.get("cmd")
        if not isinstance(cmd, str):
            return error_reply(request_id, "bad-request", "missing 'cmd' (a string)")
        handler = self._handlers.get(cmd)
        if handler is None:
            known = ", ".join(self.commands) or "none"
            return error_reply(request_id, "unknown-command", f"unknown command {cmd!r} (known: {known})")
        args = {k: v for k, v in request.items() if k not in ("id", "cmd")}
        try:
            result = await asyncio.wait_for(handler(args), self.request_timeout_s)
            reply = {"id": request_id, "ok": True, "result": result}
            _encode(reply)  # fail here, inside the try, if the handler returned something not JSON-able
            return reply
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return error_reply(request_id, "timeout", f"{cmd} took longer than {self.request_timeout_s:g}s")
        except CabinError as err:
            return error_reply(request_id, err.code, err.message)
        except Exception:
            log.exception("control-handler-failed", cmd=cmd)
            return error_reply(request_id, "internal-error", f"{cmd} failed inside the daemon (see its log)")


# ---------------------------------------------------------------------------------------------- client


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
            self._writer.write(_encode({"id": request_id, "cmd": cmd, **args}))
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
