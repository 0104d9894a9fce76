"""One owner per outbox store: an flock on `<store>.lock`, held by the one process that delivers it.

Two dispatchers on one file would both send every entry (only the service's idempotency would save the
driver's money). Readers (`cabin-agent outbox list`, the control socket's clients) never need the lock. The
kernel drops it when the owner dies, SIGKILL included, so a crash never leaves a stale owner behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from agent.outbox.errors import OutboxOwned


def lock_path(store_path: Path | str) -> Path:
    path = Path(store_path)
    return path.with_name(path.name + ".lock")


class StoreLock:
    """`StoreLock.acquire(store_path)` or raise OutboxOwned naming the file and the owner's pid."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, store_path: Path | str, *, wait_seconds: float = 0.0) -> StoreLock:
        path = lock_path(store_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a planted symlink must not make us truncate some other file.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    owner = _read_pid(fd)
                    os.close(fd)
                    who = f"pid {owner}" if owner else "another process"
                    raise OutboxOwned(
                        f"the outbox {Path(store_path)} is already delivered by {who} (lock {path}); "
                        "only one dispatcher may own a store",
                        path=str(store_path),
                        lock=str(path),
                        owner_pid=owner,
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the flock


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0).decode().strip()
        return int(raw) if raw else None
    except (OSError, ValueError):
        return None
