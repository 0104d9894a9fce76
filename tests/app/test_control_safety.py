"""Issue 10, the control socket: hostile and broken clients on a real Unix socket, and untrusted directories.

Half-sent lines, a slow drip, a client that never reads, deep JSON, bad argument types, a socket directory
another user made; then property-based tests (hypothesis): arbitrary bytes never crash the server, every
complete line gets exactly one reply, and `status` keeps answering while hostile clients are connected."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.app.control import ControlError
from agent.app.control_client import ControlClient
from agent.app.control_server import ControlServer

NOBODY = 65534


async def status(args: dict[str, Any]) -> dict[str, Any]:
    # What the daemon's handler does with its argument.
    return {"state": "idle", "last": int(args.get("last", 5))}


async def cancel(args: dict[str, Any]) -> dict[str, Any]:
    return {"stopped": True}


async def big(args: dict[str, Any]) -> str:
    return "z" * 60_000


async def retry(args: dict[str, Any]) -> dict[str, Any]:
    return {"id": int(args["entry_id"])}


def make_server(path: Path, **kwargs: Any) -> ControlServer:
    server = ControlServer(path, **kwargs)
    for name, handler in {"status": status, "cancel": cancel, "big": big, "outbox.retry": retry}.items():
        server.register(name, handler)
    return server


async def open_raw(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2)


async def ask(path: Path, cmd: str, timeout_s: float = 2.0, **args: Any) -> Any:
    async with ControlClient(path, timeout_s=timeout_s) as client:
        return await client.request(cmd, **args)


@pytest.fixture
async def sock_dir(tmp_path: Path):
    directory = tmp_path / "run"
    yield directory


# ------------------------------------------------------------------------------ 9. hostile clients


async def test_half_sent_lines_do_not_lock_out_status(sock_dir: Path) -> None:
    server = make_server(sock_dir / "c.sock")
    await server.start()
    hostile = []
    try:
        for _ in range(64):
            reader, writer = await open_raw(server.path)
            writer.write(b'{"id": 1, "cmd": "sta')  # and never the rest
            await writer.drain()
            hostile.append((reader, writer))
        await asyncio.sleep(0.1)
        assert (await ask(server.path, "status"))["state"] == "idle"
        assert await ask(server.path, "cancel") == {"stopped": True}  # never lost
        # The half lines are cut at the request deadline, so everything else works again soon after.
        await asyncio.sleep(server.line_timeout_s + 0.5)
        assert server.client_count == 0
        assert await ask(server.path, "outbox.retry", entry_id=3) == {"id": 3}
    finally:
        for _, writer in hostile:
            writer.transport.abort()
        await server.close()


async def test_one_byte_a_second_is_cut_at_the_request_deadline(sock_dir: Path) -> None:
    server = make_server(sock_dir / "c.sock", line_timeout_s=1.0, idle_timeout_s=1.0)
    await server.start()
    reader, writer = await open_raw(server.path)
    lines: list[bytes] = []

    async def listen() -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                lines.append(line)

    listening = asyncio.create_task(listen())
    started = asyncio.get_running_loop().time()
    try:
        for byte in b'{"id": 1, "cmd": "status", "pad": "' + b"x" * 100:
            if listening.done():
                break  # the server closed the connection
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.25)
        await asyncio.wait_for(listening, 2)
        cut_after = asyncio.get_running_loop().time() - started
    finally:
        writer.transport.abort()
        await server.close()
    assert cut_after < 2.5  # not the 25 s the drip would take
    assert [json.loads(x)["error"]["code"] for x in lines] == ["request-timeout"]


async def test_client_that_never_reads_is_dropped(sock_dir: Path) -> None:
    server = make_server(sock_dir / "c.sock", write_timeout_s=0.5)
    await server.start()
    reader, writer = await open_raw(server.path)
    try:
        writer.write(b'{"id": 1, "cmd": "big"}\n' * 200)  # 12 MB of replies, and we read none of them
        await writer.drain()
        async with asyncio.timeout(5):
            while server.client_count:
                await asyncio.sleep(0.05)
        assert (await ask(server.path, "status"))["state"] == "idle"
    finally:
        writer.transport.abort()
        await server.close()


async def test_deeply_nested_json_gets_a_clear_error(sock_dir: Path) -> None:
    server = make_server(sock_dir / "c.sock", max_request_bytes=1_000_000)
    await server.start()
    reader, writer = await open_raw(server.path)
    try:
        writer.write(b"[" * 30_000 + b"]" * 30_000 + b"\n")
        writer.write(b'{"id": 2, "cmd": "status", "x": ' + b"[" * 40 + b"]" * 40 + b"}\n")
        writer.write(b'{"id": 3, "cmd": "status", "big": ' + b"9" * 5000 + b"}\n")
        writer.write(b'{"id": 4, "cmd": "status"}\n')
        await writer.drain()
        replies = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(4)]
    finally:
        writer.transport.abort()
        await server.close()
    assert [r["error"]["code"] for r in replies[:3]] == ["bad-json"] * 3
    assert "nested deeper than 32" in replies[0]["error"]["message"]
    assert replies[3] == {"id": 4, "ok": True, "result": {"state": "idle", "last": 5}}


@pytest.mark.parametrize(
    ("cmd", "args", "named"),
    [
        ("status", {"last": "abc"}, "last"),
        ("status", {"last": True}, "last"),
        ("status", {"last": -1}, "last"),
        ("outbox.retry", {}, "entry_id"),
        ("outbox.retry", {"entry_id": "x"}, "entry_id"),
        ("outbox.retry", {"entry_id": [1]}, "entry_id"),
    ],
)
async def test_bad_argument_types_are_bad_requests_naming_the_argument(
    sock_dir: Path, cmd: str, args: dict, named: str
) -> None:
    server = make_server(sock_dir / "c.sock")
    await server.start()
    try:
        with pytest.raises(ControlError) as err:
            await ask(server.path, cmd, **args)
        assert (await ask(server.path, "status", last=2)) == {"state": "idle", "last": 2}
    finally:
        await server.close()
    assert err.value.code == "bad-request"
    assert f"{cmd}: {named}:" in err.value.message


# ------------------------------------------------------------------------------ 10. untrusted directories


@pytest.fixture
def shared_dir(tmp_path: Path):
    """A directory under the real /tmp (sticky, world-writable), like the fallback /tmp/cabin-agent-<uid>."""
    path = Path("/tmp") / f"cabin-agent-test-{os.getpid()}-{tmp_path.name}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory owned by another user needs root (CI is root)")
async def test_untrusted_socket_dir_refused(shared_dir: Path, tmp_path: Path) -> None:
    # Another local user made the fallback directory first, and put a socket of their own in it.
    shared_dir.mkdir(mode=0o755)
    os.chown(shared_dir, NOBODY, NOBODY)
    impostor = make_server(tmp_path / "impostor" / "c.sock")
    await impostor.start()
    (shared_dir / "cabin-agent").mkdir()
    os.chown(shared_dir / "cabin-agent", NOBODY, NOBODY)
    os.symlink(impostor.path, shared_dir / "cabin-agent" / "control.sock")
    try:
        server = make_server(shared_dir / "cabin-agent" / "control.sock")
        with pytest.raises(ControlError) as refused_server:
            await server.start()
        with pytest.raises(ControlError) as refused_client:
            await ask(shared_dir / "cabin-agent" / "control.sock", "status")
    finally:
        await impostor.close()
    assert refused_server.value.code == refused_client.value.code == "control-untrusted-dir"
    assert f"belongs to uid {NOBODY}" in refused_client.value.message
    assert stat.S_IMODE(shared_dir.lstat().st_mode) == 0o755 and shared_dir.lstat().st_uid == NOBODY  # untouched


async def test_writable_or_linked_socket_dir_refused(shared_dir: Path, tmp_path: Path) -> None:
    shared_dir.mkdir(mode=0o700)
    os.chmod(shared_dir, 0o777)  # ours, but anyone may swap the socket
    with pytest.raises(ControlError, match="writable by group or others"):
        await make_server(shared_dir / "c.sock").start()
    os.chmod(shared_dir, 0o700)
    # A link in a shared directory is followed only when its maker is trusted: ours is, and is never chmod'ed.
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    os.symlink(real, shared_dir / "link")
    server = make_server(shared_dir / "link" / "c.sock")
    await server.start()
    try:
        assert (await ask(shared_dir / "link" / "c.sock", "status"))["state"] == "idle"
    finally:
        await server.close()


async def test_fallback_dir_is_created_private(shared_dir: Path) -> None:
    server = make_server(shared_dir / "cabin-agent" / "control.sock")
    await server.start()
    try:
        for directory in (shared_dir, shared_dir / "cabin-agent"):
            st_ = directory.lstat()
            assert stat.S_IMODE(st_.st_mode) == 0o700 and st_.st_uid == os.geteuid()
    finally:
        await server.close()


# ------------------------------------------------------------------------------ properties (hypothesis)

printable_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
request = st.fixed_dictionaries(
    {"cmd": st.sampled_from(["status", "cancel", "outbox.retry", "nope", ""])},
    optional={"id": printable_json, "last": printable_json, "entry_id": printable_json},
)
line = st.one_of(
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")),
    printable_json.map(lambda v: json.dumps(v).encode()),
    request.map(lambda r: json.dumps(r).encode()),
    st.integers(1, 40_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(4000, 6000).map(lambda n: b'{"cmd": "status", "n": ' + b"7" * n + b"}"),
)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=2000) | line)
def test_any_line_gets_one_json_reply_and_never_raises(tmp_path_factory, raw: bytes) -> None:
    server = make_server(tmp_path_factory.mktemp("hl") / "c.sock")

    async def once():
        return await server.handle_line(raw)

    reply = run(once())
    assert reply["ok"] in (True, False)
    json.dumps(reply, allow_nan=False)  # always a valid JSON reply


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(line, min_size=1, max_size=25))
def test_every_complete_line_gets_exactly_one_reply(tmp_path_factory, lines: list[bytes]) -> None:
    path = tmp_path_factory.mktemp("lines") / "c.sock"
    wanted = sum(1 for x in lines if x.strip())

    async def scenario() -> list[dict]:
        server = make_server(path, max_request_bytes=100_000)
        await server.start()
        try:
            reader, writer = await open_raw(path)
            writer.write(b"".join(x + b"\n" for x in lines))
            writer.write(b'{"id": "last", "cmd": "status"}\n')
            await writer.drain()
            replies = []
            while True:
                reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
                if reply.get("id") == "last" and reply.get("ok"):
                    break
                replies.append(reply)
            writer.transport.abort()
            return replies
        finally:
            await server.close()

    replies = run(scenario())
    assert len(replies) == wanted


hostile = st.one_of(
    st.tuples(st.just("half"), st.binary(min_size=1, max_size=200).map(lambda b: b.replace(b"\n", b""))),
    st.tuples(st.just("garbage"), st.binary(max_size=2000)),
    st.tuples(st.just("deep"), st.integers(33, 20_000)),
    st.tuples(st.just("no-read"), st.integers(1, 50)),
    st.tuples(st.just("idle"), st.just(b"")),
)


def hostile_bytes(kind: str, data: Any) -> bytes:
    if kind == "deep":
        return b"[" * data + b"]" * data + b"\n"
    if kind == "no-read":
        return b'{"cmd": "big"}\n' * data
    return data  # half a line, garbage, or nothing at all (idle)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(clients=st.lists(hostile, min_size=1, max_size=90))
def test_status_keeps_answering_while_hostile_clients_are_connected(tmp_path_factory, clients) -> None:
    path = tmp_path_factory.mktemp("hostile") / "c.sock"

    async def scenario() -> None:
        server = make_server(path, max_request_bytes=65536, write_timeout_s=1.0)
        await server.start()
        writers = []
        try:
            for kind, data in clients:
                try:
                    _, writer = await open_raw(path)
                except (ConnectionError, TimeoutError):
                    continue
                writers.append(writer)
                writer.write(hostile_bytes(kind, data))
            for _ in range(3):
                assert (await ask(path, "status", timeout_s=3.0))["state"] == "idle"
                assert await ask(path, "cancel", timeout_s=3.0) == {"stopped": True}
        finally:
            for writer in writers:
                writer.transport.abort()
            await server.close()

    run(scenario())
