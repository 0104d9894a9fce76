"""The control socket server and client, with handlers standing in for the daemon."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.app.control import ControlError, DaemonNotRunning
from agent.app.control_client import SYSTEM_SOCKET_PATH, ControlClient, client_socket_path
from agent.app.control_server import ControlServer
from agent.core.config import Config, ControlConfig
from agent.core.errors import EX_UNAVAILABLE, ConfigError, ToolError

CLI = [sys.executable, "-m", "agent"]


async def status(args: dict[str, Any]) -> dict[str, Any]:
    return {"state": "idle", "outbox": {"queued": 2}, "args": args}


async def slow(args: dict[str, Any]) -> str:
    await asyncio.sleep(float(args.get("seconds", 0.3)))
    return "done"


async def refuses(args: dict[str, Any]) -> None:
    raise ToolError("nothing is speaking", code="nothing-to-cancel")


async def crashes(args: dict[str, Any]) -> None:
    raise RuntimeError("boom")


async def not_json(args: dict[str, Any]) -> object:
    return object()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ControlServer]:
    srv = ControlServer(tmp_path / "run" / "control.sock", max_request_bytes=1024, request_timeout_s=1.0)
    for name, handler in {
        "status": status,
        "slow": slow,
        "cancel": refuses,
        "crash": crashes,
        "weird": not_json,
    }.items():
        srv.register(name, handler)
    await srv.start()
    yield srv
    await asyncio.wait_for(srv.close(), 5)


class Raw:
    """A bare stream client, for sending what the real client never would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: Path) -> Raw:
        return cls(*await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2))

    async def send(self, data: bytes) -> dict[str, Any]:
        self.writer.write(data)
        await self.writer.drain()
        return json.loads(await asyncio.wait_for(self.reader.readline(), 3))

    async def close(self) -> None:
        self.writer.close()
        await asyncio.wait_for(self.writer.wait_closed(), 2)


async def test_request_reply_roundtrip(server: ControlServer) -> None:
    async with ControlClient(server.path) as client:
        result = await client.request("status", verbose=True)
        assert result == {"state": "idle", "outbox": {"queued": 2}, "args": {"verbose": True}}
        assert await client.request("slow", seconds=0) == "done"  # many requests on one connection


async def test_reply_carries_the_request_id(server: ControlServer) -> None:
    raw = await Raw.open(server.path)
    assert await raw.send(b'{"id": "abc", "cmd": "slow", "seconds": 0}\n') == {
        "id": "abc",
        "ok": True,
        "result": "done",
    }
    await raw.close()


async def test_socket_file_is_0660_and_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock"
    srv = ControlServer(path)
    await srv.start()
    st = path.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # created by us, no group: owner only
    await srv.close()
    assert not path.exists()


async def test_socket_group_is_applied(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    srv = ControlServer(tmp_path / "control.sock", group=group)
    await srv.start()
    assert (tmp_path / "control.sock").stat().st_gid == os.getgid()
    await srv.close()


async def test_unknown_group_is_a_config_error(tmp_path: Path) -> None:
    srv = ControlServer(tmp_path / "control.sock", group="no-such-group-cabin")
    with pytest.raises(ConfigError, match="control.group: no such group"):
        await srv.start()


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"{not json\n", "bad-json"),
        (b"\xff\xfe\n", "bad-json"),
        (b"[1, 2]\n", "bad-request"),
        (b'{"id": 1}\n', "bad-request"),
        (b'{"id": [1], "cmd": "status"}\n', "bad-request"),
        (b'{"id": 1, "cmd": "launch-rockets"}\n', "unknown-command"),
        (b'{"id": 1, "cmd": "cancel"}\n', "nothing-to-cancel"),
        (b'{"id": 1, "cmd": "crash"}\n', "internal-error"),
        (b'{"id": 1, "cmd": "weird"}\n', "internal-error"),
        (b'{"id": 1, "cmd": "slow", "seconds": 5}\n', "timeout"),
    ],
)
async def test_bad_requests_get_an_error_reply_and_the_connection_lives_on(
    server: ControlServer, line: bytes, code: str
) -> None:
    raw = await Raw.open(server.path)
    reply = await raw.send(line)
    assert reply["ok"] is False and reply["error"]["code"] == code, reply
    assert reply["error"]["message"]
    assert (await raw.send(b'{"id": 2, "cmd": "status"}\n'))["ok"] is True
    await raw.close()


async def test_unknown_command_lists_the_known_ones(server: ControlServer) -> None:
    raw = await Raw.open(server.path)
    reply = await raw.send(b'{"id": 7, "cmd": "fly"}\n')
    assert reply["id"] == 7
    assert "known: cancel, crash, slow, status, weird" in reply["error"]["message"]
    await raw.close()


async def test_oversized_lines_are_refused_and_skipped(server: ControlServer) -> None:
    raw = await Raw.open(server.path)
    # In one piece with its newline.
    reply = await raw.send(b'{"id": 1, "cmd": "status", "pad": "' + b"x" * 5000 + b'"}\n')
    assert reply["error"]["code"] == "request-too-large"
    # Streamed without a newline for a long time: refused once, the rest discarded up to the newline.
    raw.writer.write(b'{"id": 2, "pad": "' + b"y" * 3000)
    await raw.writer.drain()
    reply = json.loads(await asyncio.wait_for(raw.reader.readline(), 3))
    assert reply["error"]["code"] == "request-too-large"
    raw.writer.write(b"y" * 3000 + b'"}\n')
    assert (await raw.send(b'{"id": 3, "cmd": "status"}\n'))["id"] == 3
    await raw.close()


async def test_blank_lines_are_ignored(server: ControlServer) -> None:
    raw = await Raw.open(server.path)
    assert (await raw.send(b'\n\n  \n{"id": 1, "cmd": "status"}\n'))["id"] == 1
    await raw.close()


async def test_client_disconnecting_mid_request_is_fine(server: ControlServer) -> None:
    for _ in range(5):
        raw = await Raw.open(server.path)
        raw.writer.write(b'{"id": 1, "cmd": "slow", "seconds": 0.2}\n{"id": 2, "cmd": "status"}\n')
        await raw.writer.drain()
        raw.writer.transport.abort()  # gone before the reply (a killed `cabin-agent ask`)
    raw = await Raw.open(server.path)
    raw.writer.write(b'{"id": 1, "cmd": "sta')  # half a request, then gone
    await raw.writer.drain()
    await raw.close()
    await asyncio.sleep(0.4)
    async with ControlClient(server.path) as client:
        assert (await client.request("status"))["state"] == "idle"
    assert server.client_count <= 1


async def test_many_concurrent_clients(server: ControlServer) -> None:
    async def one(i: int) -> str:
        async with ControlClient(server.path, timeout_s=5) as client:
            assert (await client.request("status", n=i))["args"] == {"n": i}
            return await client.request("slow", seconds=0.2)

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(50))), 10)
    assert results == ["done"] * 50  # served concurrently: 50 x 0.2 s would not fit in the timeout otherwise


async def test_too_many_clients_get_busy(tmp_path: Path) -> None:
    srv = ControlServer(tmp_path / "c.sock", max_clients=2)
    srv.register("slow", slow)
    await srv.start()
    holders = [await Raw.open(srv.path) for _ in range(2)]
    for holder in holders:  # make sure both are accepted and counted
        assert (await holder.send(b'{"id": 1, "cmd": "slow", "seconds": 0}\n'))["ok"]
    third = await Raw.open(srv.path)
    reply = json.loads(await asyncio.wait_for(third.reader.readline(), 3))
    assert reply["error"]["code"] == "busy"
    for raw in [*holders, third]:
        await raw.close()
    await srv.close()


async def test_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a crashed daemon's leftover: the file exists, nobody listens
    first = ControlServer(path)
    await first.start()
    second = ControlServer(path)
    with pytest.raises(ControlError, match="already listening"):
        await second.start()
    await first.close()


async def test_a_regular_file_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("important")
    with pytest.raises(ControlError) as info:
        await ControlServer(path).start()
    assert info.value.code == "control-path-taken"
    assert path.read_text() == "important"


async def test_client_says_clearly_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with pytest.raises(DaemonNotRunning, match=rf"cabin-agent is not running \(no socket at {path}\)"):
        await ControlClient(path).request("status")
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))
    leftover.close()
    with pytest.raises(DaemonNotRunning, match="nothing listening"):
        await ControlClient(path).request("status")


async def test_client_times_out(server: ControlServer) -> None:
    async with ControlClient(server.path, timeout_s=0.1) as client:
        with pytest.raises(ControlError) as info:
            await client.request("slow", seconds=0.5)
    assert info.value.code == "timeout"


async def test_client_raises_the_servers_error(server: ControlServer) -> None:
    async with ControlClient(server.path) as client:
        with pytest.raises(ControlError) as info:
            await client.request("cancel")
        assert info.value.code == "nothing-to-cancel"
        assert await client.request("status")  # still usable after an error reply


def test_from_config_uses_the_control_section(tmp_path: Path) -> None:
    cfg = Config(control=ControlConfig(socket_path=tmp_path / "x.sock", max_request_bytes=4096))
    srv = ControlServer.from_config(cfg)
    assert srv.path == tmp_path / "x.sock" and srv.max_request_bytes == 4096


def test_client_finds_the_service_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    cfg = Config()
    user_path = tmp_path / "cabin-agent" / "control.sock"
    monkeypatch.setattr("agent.app.control_client.SYSTEM_UNIT_PATHS", (tmp_path / "no-unit",))
    monkeypatch.setattr("agent.app.control_client.SYSTEM_SOCKET_PATH", tmp_path / "system" / "control.sock")
    assert client_socket_path(cfg) == user_path  # nothing installed: the user's own daemon
    (tmp_path / "no-unit").touch()
    assert client_socket_path(cfg) == tmp_path / "system" / "control.sock"  # the service is installed
    user_path.parent.mkdir()
    user_path.touch()
    assert client_socket_path(cfg) == user_path  # the user's daemon is running: it wins
    explicit = Config(control=ControlConfig(socket_path=tmp_path / "mine.sock"))
    assert client_socket_path(explicit) == tmp_path / "mine.sock"
    assert SYSTEM_SOCKET_PATH == Path("/run/cabin-agent/control.sock")


# ------------------------------------------------------------------------------ the CLI commands


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CABIN_AGENT_CONFIG": "", **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_commands_talk_to_the_socket(tmp_path: Path) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def recorder(name: str, result: Any) -> Any:
        async def handler(args: dict[str, Any]) -> Any:
            seen.append((name, args))
            return result

        return handler

    srv = ControlServer(tmp_path / "control.sock")
    srv.register("status", recorder("status", {"state": "listening", "outbox": {"queued": 2, "failed": 0}}))
    srv.register("ptt", recorder("ptt", None))
    srv.register("cancel", recorder("cancel", None))
    reply = {
        "text": "order a pizza",
        "tool_calls": [{"name": "order_meal", "arguments": {"item": "pizza"}}],
        "reply": "Ordering a pizza.",
    }
    srv.register("say", recorder("say", reply))
    await srv.start()
    sock = str(srv.path)
    try:
        code, out, _ = await run_cli("status", "--socket", sock)
        assert code == 0 and "state: listening" in out and "queued: 2" in out
        code, out, _ = await run_cli("status", "--socket", sock, "--json")
        assert json.loads(out)["outbox"] == {"queued": 2, "failed": 0}
        code, out, _ = await run_cli("ptt", "--socket", sock)
        assert (code, out.strip()) == (0, "listening")
        code, out, _ = await run_cli("ask", "order a pizza", "--socket", sock)
        assert code == 0 and out.splitlines() == ['tool: order_meal {"item": "pizza"}', "Ordering a pizza."]
        code, out, _ = await run_cli("cancel", "--socket", sock)
        assert (code, out.strip()) == (0, "cancelled")
    finally:
        await srv.close()
    assert [name for name, _ in seen] == ["status", "status", "ptt", "say", "cancel"]
    assert seen[3][1] == {"text": "order a pizza"}


async def test_cli_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    path = tmp_path / "nothing.sock"
    code, out, err = await run_cli("status", "--socket", str(path))
    assert code == EX_UNAVAILABLE
    assert f"cabin-agent is not running (no socket at {path})" in err
    assert "Traceback" not in err
