"""The control socket's protocol: newline-delimited JSON over a Unix socket in the runtime directory.

Request  `{"id": 1, "cmd": "status", ...args}`
Reply    `{"id": 1, "ok": true, "result": ...}` or `{"id": 1, "ok": false, "error": {"code", "message"}}`

This module holds what the server (control_server.py) and the client (control_client.py) share: the commands
and their arguments, the errors, the JSON limits, and the check that only the socket's owner (or root) could
have put a socket in its directory: there is no TCP listener, access is the socket file's mode (0660) and
group, and a client refuses a socket in any other directory (a local user could otherwise stand in for the
daemon)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.core.errors import EX_UNAVAILABLE, CabinError

# The commands the daemon is expected to register; the server accepts any registered name.
COMMANDS = ("status", "ptt", "say", "cancel", "outbox.list")
# Control before data: these are served even when every ordinary connection slot is taken.
PRIORITY_COMMANDS = frozenset({"status", "cancel", "ptt"})
# JSON nested deeper than this is refused before parsing (no request needs more than a few levels).
MAX_JSON_DEPTH = 32

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlError(CabinError):
    """A control request failed; `code` is what the reply's error.code says."""

    code = "control-failed"
    exit_status = EX_UNAVAILABLE


class DaemonNotRunning(ControlError):
    code = "daemon-not-running"


class UntrustedSocketDir(ControlError):
    """The socket's directory could be written by another user: a socket there may not be the daemon's."""

    code = "control-untrusted-dir"


# ---------------------------------------------------------------------------------------------- arguments


class _Args(BaseModel):
    # strict: "abc" (or "5", or true) is not a number; extra keys pass through to the handler untouched.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class StatusArgs(_Args):
    last: int = Field(default=5, ge=0, le=100)


class SayArgs(_Args):
    text: str = Field(min_length=1, max_length=4000)


class OutboxListArgs(_Args):
    state: str | None = Field(default=None, max_length=32)
    limit: int = Field(default=50, ge=1, le=10_000)


class EntryArgs(_Args):
    entry_id: int = Field(ge=1)


# Each known command's arguments; a command registered without a model of its own is checked against these.
COMMAND_ARGS: dict[str, type[BaseModel]] = {
    "status": StatusArgs,
    "say": SayArgs,
    "outbox.list": OutboxListArgs,
    "outbox.retry": EntryArgs,
    "outbox.cancel": EntryArgs,
}


def bad_arguments(cmd: str, err: ValidationError) -> str:
    problems = []
    for item in err.errors()[:3]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "arguments"
        got = repr(item.get("input"))
        got = got if len(got) <= 40 else got[:37] + "..."
        problems.append(f"{where}: {item.get('msg', 'invalid')} (got {got})")
    return f"{cmd}: " + "; ".join(problems)


def json_too_deep(line: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `line` nests arrays/objects deeper than `limit`, found without parsing (strings skipped)."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


# ---------------------------------------------------------------------------------------------- trust


def untrusted_dir_reason(directory: Path | str, *, uid: int | None = None) -> str | None:
    """Why a socket in `directory` could have been put there by another user; None when it could not.

    Walks the path from `/` with lstat (links are followed only where no other user could have made them):
    a directory inside a shared one (group/other-writable, like /tmp) must belong to `uid` or root, and the
    socket's own directory must not be writable by group or others at all. FileNotFoundError if it is missing.
    """
    uid = os.geteuid() if uid is None else uid
    trusted = {0, uid}
    parts = [p for p in os.path.abspath(directory).split("/") if p]
    current, parent_st = "/", os.lstat("/")
    hops = i = 0
    while i < len(parts):
        candidate = os.path.join(current, parts[i])
        st = os.lstat(candidate)
        parent_shared = bool(parent_st.st_mode & 0o022)
        if stat.S_ISLNK(st.st_mode):
            if parent_shared and st.st_uid not in trusted:
                return f"{candidate} is a symbolic link made by uid {st.st_uid} in a shared directory"
            hops += 1
            if hops > 32:
                return f"{directory}: too many symbolic links"
            target = os.path.normpath(os.path.join(current, os.readlink(candidate)))
            parts = [p for p in target.split("/") if p] + parts[i + 1 :]
            current, parent_st, i = "/", os.lstat("/"), 0
            continue
        if not stat.S_ISDIR(st.st_mode):
            return f"{candidate} is not a directory"
        if parent_shared and st.st_uid not in trusted:
            return f"{candidate} belongs to uid {st.st_uid}, not to uid {uid} or root"
        last = i == len(parts) - 1
        if st.st_mode & 0o022 and (last or not st.st_mode & stat.S_ISVTX):
            return f"{candidate} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
        current, parent_st, i = candidate, st, i + 1
    return None


def check_socket_dir(directory: Path | str) -> None:
    """Raise UntrustedSocketDir unless only its owner (us or root) could have placed a socket there."""
    reason = untrusted_dir_reason(directory)
    if reason is not None:
        raise UntrustedSocketDir(
            f"refusing the control socket in {directory}: {reason}", path=str(directory)
        )


def error_reply(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def encode_line(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
