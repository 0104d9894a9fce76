"""Opening the outbox as its owner: a damaged file is set aside (renamed, never deleted) and a fresh one started.

A corrupt store must not take the car's offline functions down with it (systemd would restart the daemon until
it gave up). The bad file and its -wal/-shm keep their bytes under a dated name next to it, the driver hears
once that queued orders may be lost, the journal gets one line, and the daemon serves on."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.logging import get_logger
from agent.outbox.errors import OutboxCorrupt
from agent.outbox.lock import StoreLock
from agent.outbox.store import OutboxStore

log = get_logger("outbox")

SIDECARS = ("-wal", "-shm", "-journal")

CORRUPT_NOTICE = {
    "en": "The car's order records were damaged, so I set them aside and started fresh. "
    "Anything you had queued may not go through: please ask again if you still want it.",
    "zh": "订单记录损坏了，已另存并重新开始。之前排队的订单可能不会发出，如果还需要请再说一次。",
}


@dataclass(frozen=True)
class SetAside:
    """Where a damaged store went, and why."""

    original: Path
    moved_to: list[Path]
    reason: str


def set_aside(path: Path, reason: str, *, now: float | None = None) -> SetAside:
    """Rename `path` and its sidecars to `<stem>.corrupt-<UTC time><suffix>[-wal|-shm]`: SQLite can still open
    the copy together with its WAL, for whoever looks into it later."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    base = path.with_name(f"{path.stem}.corrupt-{stamp}{path.suffix}")
    n = 1
    while any(Path(str(base) + s).exists() for s in ("", *SIDECARS)):
        base = path.with_name(f"{path.stem}.corrupt-{stamp}-{n}{path.suffix}")
        n += 1
    moved = []
    for suffix in ("", *SIDECARS):
        src = Path(str(path) + suffix)
        if src.exists() or src.is_symlink():
            dst = Path(str(base) + suffix)
            os.rename(src, dst)
            moved.append(dst)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)  # the renames survive a power cut before the fresh store is announced
        finally:
            os.close(fd)
    return SetAside(path, moved, reason)


def open_owned(
    path: Path | str,
    *,
    language: str = "en",
    lock_wait_seconds: float = 5.0,
    **store_kwargs: Any,
) -> tuple[OutboxStore, SetAside | None]:
    """Take the store's lock (OutboxOwned if another dispatcher has it), open and check the file; a damaged
    one is set aside and replaced by a fresh store that owes the driver one notice."""
    path = Path(path)
    lock = StoreLock.acquire(path, wait_seconds=lock_wait_seconds)
    try:
        try:
            return OutboxStore(path, owner=lock, check=True, **store_kwargs), None
        except OutboxCorrupt as err:
            aside = set_aside(path, err.message)
            # One line for the journal; the driver hears it from the fresh store's announcement.
            log.error(
                "outbox-corrupt-set-aside",
                path=str(path),
                moved_to=[str(p) for p in aside.moved_to],
                error=err.message,
            )
            store = OutboxStore(path, owner=lock, check=True, **store_kwargs)
            store.add_announcement(
                CORRUPT_NOTICE.get(language, CORRUPT_NOTICE["en"]), language=language, priority="high"
            )
            return store, aside
    except BaseException:
        lock.release()
        raise
