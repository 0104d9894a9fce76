"""The control socket's server: registered async handlers on a Unix socket, one error reply per bad line.

The daemon registers one async handler per command (`server.register("status", handler)`); the server knows
nothing about the pipeline, so it is tested without one. Bad input (malformed or deeply nested JSON, oversized
lines, unknown commands, arguments of the wrong type, a handler that raises) gets exactly one error reply per
non-blank line and never hurts the server or other clients. Hostile or broken clients cannot lock others out:
a line must arrive whole within `line_timeout_s` of its first byte, a client that does not read its replies is
dropped, and when every slot is taken a few reserved ones still serve `status`, `cancel` and `ptt`."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import math
import os
import socket
import stat
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.app.control import (
    COMMAND_ARGS,
    MAX_JSON_DEPTH,
    PRIORITY_COMMANDS,
    ControlError,
    Handler,
    UntrustedSocketDir,
    bad_arguments,
    check_socket_dir,
    encode_line,
    error_reply,
    json_too_deep,
)
from agent.core.config import Config, control_socket_path
from agent.core.errors import CabinError, ConfigError
from agent.core.logging import get_logger

log = get_logger("control")


class _Drop(Exception):
    """End this client's connection now (it stopped reading, or broke the protocol's deadlines)."""


class ControlServer:
    """Serves registered handlers on a Unix socket.

    Requests on one connection are answered in order; clients that want concurrency open more connections
    (a `cancel` while a `say` is running comes from another `cabin-agent` process anyway). Limits: `max_clients`
    ordinary connections, plus `reserved_clients` that serve one priority command each (status, cancel, ptt)
    when the ordinary ones are all taken; a line must be complete `line_timeout_s` after its first byte; a
    connection with no request for `idle_timeout_s` is closed; a reply not taken within `write_timeout_s` drops
    the client.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        group: str | None = None,
        mode: int = 0o660,
        max_request_bytes: int = 65536,
        max_clients: int = 64,
        reserved_clients: int = 8,
        request_timeout_s: float = 120.0,
        idle_timeout_s: float | None = 120.0,
        line_timeout_s: float = 5.0,
        write_timeout_s: float = 5.0,
        reserved_wait_s: float = 2.0,
        max_json_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.path = Path(path)
        self.group = group
        self.mode = mode
        self.max_request_bytes = max_request_bytes
        self.max_clients = max_clients
        self.reserved_clients = reserved_clients
        self.request_timeout_s = request_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.line_timeout_s = line_timeout_s
        self.write_timeout_s = write_timeout_s
        self.reserved_wait_s = reserved_wait_s
        self.max_json_depth = max_json_depth
        self._handlers: dict[str, Handler] = {}
        self._arg_models: dict[str, type[BaseModel] | None] = {}
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._reserved: set[asyncio.Task[None]] = set()
        self._inode: int | None = None

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> ControlServer:
        kwargs: dict[str, Any] = {
            "group": config.control.group,
            "max_request_bytes": config.control.max_request_bytes,
        }
        kwargs.update(overrides)
        return cls(control_socket_path(config), **kwargs)

    def register(self, cmd: str, handler: Handler, *, args: type[BaseModel] | None = None) -> None:
        """`handler(args)` gets the request minus `id` and `cmd`, checked against `args` (a pydantic model;
        default: COMMAND_ARGS[cmd]) and given as a dict of what the client sent; its return value (JSON-able)
        is the result. A request whose arguments do not fit gets `bad-request` naming the argument.

        Raise a CabinError for a failure the client should see (`code` and message go into the reply);
        any other exception becomes `internal-error` and is logged here with its traceback.
        """
        self._handlers[cmd] = handler
        self._arg_models[cmd] = args or COMMAND_ARGS.get(cmd)

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def client_count(self) -> int:
        return len(self._clients) + len(self._reserved)

    async def start(self) -> None:
        sock = self._bind()
        self._server = await asyncio.start_unix_server(self._on_client, sock=sock)
        log.info("control-listening", path=str(self.path), mode=oct(self.mode), group=self.group)

    async def close(self) -> None:
        """Stop accepting, end every client connection, remove the socket file (if it is still ours)."""
        if self._server is not None:
            self._server.close()
        tasks = self._clients | self._reserved
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
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
        self._prepare_dir(self.path.parent, gid)
        self._remove_stale_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            # chmod/chown before listen(): nobody can connect in the window between bind and the final mode.
            # The directory is ours alone (checked above), so the name still is the socket we bound.
            os.chmod(self.path, self.mode)
            if gid is not None:
                try:
                    os.chown(self.path, -1, gid, follow_symlinks=False)
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

    def _prepare_dir(self, directory: Path, gid: int | None) -> None:
        """Create the missing directories (0700; the socket's own 0750 with a group), each checked through a
        descriptor opened without following links; existing ones are never chmod/chown'ed, only checked."""
        missing: list[Path] = []
        probe = directory
        while not os.path.lexists(probe):
            missing.append(probe)
            probe = probe.parent
        for path in reversed(missing):
            last = path == directory
            mode = 0o750 if (gid is not None and last) else (0o710 if gid is not None else 0o700)
            try:
                os.mkdir(path, mode)
            except FileExistsError:
                continue  # made by someone else meanwhile: the check below decides whether to trust it
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                st = os.fstat(fd)
                if st.st_uid != os.geteuid():
                    raise UntrustedSocketDir(f"{path} was replaced while being created", path=str(path))
                os.fchmod(fd, mode)  # the umask may have taken bits away
                if gid is not None:
                    os.fchown(fd, -1, gid)
            finally:
                os.close(fd)
        check_socket_dir(directory)

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
        reserved = len(self._clients) >= self.max_clients
        if reserved and len(self._reserved) >= self.reserved_clients:
            with contextlib.suppress(Exception):
                busy = error_reply(None, "busy", f"too many clients (max {self.max_clients})")
                writer.write(encode_line(busy))
                await asyncio.wait_for(writer.drain(), 1.0)
            writer.close()
            return
        slots = self._reserved if reserved else self._clients
        slots.add(task)
        try:
            await self._serve(reader, writer, reserved=reserved)
        except asyncio.CancelledError:
            raise
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, _Drop):
            pass  # the client went away, went quiet or stopped reading: its business, not ours
        except Exception:
            log.exception("control-client-failed")
        finally:
            slots.discard(task)
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a client that does not read must not keep our buffer
            else:
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, reserved: bool) -> None:
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        discarding = False  # inside an oversized line: drop bytes until its newline
        line_started: float | None = None  # when the first byte of the unfinished line came
        connected = last_request = loop.time()
        while True:
            if line_started is not None:
                deadline, what = line_started + self.line_timeout_s, "line"
            elif reserved:
                deadline, what = connected + self.reserved_wait_s, "reserved"
            elif self.idle_timeout_s is not None:
                deadline, what = last_request + self.idle_timeout_s, "idle"
            else:
                deadline, what = None, "idle"
            try:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                chunk = await asyncio.wait_for(reader.read(65536), timeout)
            except TimeoutError:
                if what == "line":
                    # Per request, not per byte: one byte a second does not keep a slot.
                    message = f"a request must arrive whole within {self.line_timeout_s:g}s of its first byte"
                    await self._reply(writer, error_reply(None, "request-timeout", message))
                elif what == "reserved":
                    await self._reply(writer, self._busy())
                return
            if not chunk:
                return
            buffer += chunk
            if line_started is None and (buffer or discarding):
                line_started = loop.time()
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
                line_started = loop.time() if buffer else None  # the rest is the start of the next line
                if discarding:
                    discarding = False
                    continue
                if len(line) > self.max_request_bytes:
                    await self._reply(writer, self._too_large())
                    continue
                if not line.strip():
                    continue
                only = PRIORITY_COMMANDS if reserved else None
                await self._reply(writer, await self.handle_line(line, only=only))
                last_request = loop.time()
                if reserved:
                    return  # a reserved slot serves one request, then makes room
            if discarding and line_started is None:
                line_started = loop.time()

    def _too_large(self) -> dict[str, Any]:
        return error_reply(None, "request-too-large", f"request longer than {self.max_request_bytes} bytes")

    def _busy(self) -> dict[str, Any]:
        return error_reply(
            None,
            "busy",
            f"too many clients (max {self.max_clients}); only {', '.join(sorted(PRIORITY_COMMANDS))} "
            "are served now",
        )

    async def _reply(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write(encode_line(reply))
        try:
            await asyncio.wait_for(writer.drain(), self.write_timeout_s)
        except TimeoutError:
            log.warning("control-client-not-reading", timeout_s=self.write_timeout_s)
            raise _Drop from None

    async def handle_line(self, line: bytes, *, only: frozenset[str] | None = None) -> dict[str, Any]:
        """One request line in, one reply out. Never raises (except cancellation).

        `only`: the commands this connection may run (a reserved slot); others are answered `busy`."""
        if json_too_deep(line, self.max_json_depth):
            return error_reply(None, "bad-json", f"JSON nested deeper than {self.max_json_depth} levels")
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return error_reply(None, "bad-json", f"not a JSON object: {err}")
        except (ValueError, RecursionError) as err:  # e.g. an integer of 5,000 digits
            return error_reply(None, "bad-json", f"not a JSON object: {str(err)[:100]}")
        if not isinstance(request, dict):
            return error_reply(None, "bad-request", "a request is a JSON object with a 'cmd'")
        request_id = request.get("id")
        if (
            not isinstance(request_id, str | int | float | type(None))
            or isinstance(request_id, bool)
            or (isinstance(request_id, float) and not math.isfinite(request_id))
            or (isinstance(request_id, str) and len(request_id) > 200)
        ):
            return error_reply(None, "bad-request", "'id' must be a string or a finite number")
        cmd = request.get("cmd")
        if not isinstance(cmd, str):
            return error_reply(request_id, "bad-request", "missing 'cmd' (a string)")
        if only is not None and cmd not in only:
            return error_reply(request_id, "busy", self._busy()["error"]["message"])
        handler = self._handlers.get(cmd)
        if handler is None:
            known = ", ".join(self.commands) or "none"
            return error_reply(request_id, "unknown-command", f"unknown command {cmd[:64]!r} (known: {known})")
        args = {k: v for k, v in request.items() if k not in ("id", "cmd")}
        model = self._arg_models.get(cmd)
        if model is not None:
            try:
                args = model.model_validate(args).model_dump(exclude_unset=True)
            except ValidationError as err:
                return error_reply(request_id, "bad-request", bad_arguments(cmd, err))
        try:
            result = await asyncio.wait_for(handler(args), self.request_timeout_s)
            reply = {"id": request_id, "ok": True, "result": result}
            encode_line(reply)  # fail here, inside the try, if the handler returned something not JSON-able
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

