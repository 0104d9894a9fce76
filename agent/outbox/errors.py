"""The outbox's typed errors: what went wrong with the store file, in words a log reader (and the driver) can
use."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.core.errors import EX_UNAVAILABLE, CabinError


class OutboxError(CabinError):
    code = "outbox-failed"


class OutboxBusy(OutboxError):
    """Another writer held the store's lock longer than this write could wait. Nothing was written."""

    code = "outbox-busy"


class OutboxFull(OutboxError):
    """The disk (or the file's size limit) is full. Nothing was written."""

    code = "outbox-disk-full"


class OutboxCorrupt(OutboxError):
    """The file is not a readable outbox (garbage, truncated, malformed)."""

    code = "outbox-corrupt"


class OutboxOwned(OutboxError):
    """Another dispatcher (a daemon, `cabin-agent outbox dispatch`) already delivers this store."""

    code = "outbox-owned"
    exit_status = EX_UNAVAILABLE


_CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")


def is_corruption(err: sqlite3.Error) -> bool:
    name = getattr(err, "sqlite_errorname", "") or ""
    return name.startswith(_CORRUPT) or "malformed" in str(err) or "not a database" in str(err)


def from_sqlite(err: sqlite3.Error, path: Path | str, *, committing: bool = False) -> OutboxError:
    """The typed error for a failed SQLite call, keeping SQLite's own words (never a rollback's complaint).

    `committing`: the failure came from COMMIT itself, so whether the write is on disk is not known here;
    the caller must look (by key) before telling anyone it failed."""
    name = getattr(err, "sqlite_errorname", "") or ""
    context = {"path": str(path), "sqlite_error": name or type(err).__name__, "uncertain": committing}
    if name.startswith("SQLITE_FULL") or "database or disk is full" in str(err):
        return OutboxFull(f"outbox {path}: {err}", **context)
    if name.startswith(_BUSY) or "database is locked" in str(err):
        return OutboxBusy(f"outbox {path}: {err} (another writer held it too long)", **context)
    if is_corruption(err):
        return OutboxCorrupt(f"outbox {path}: {err}", **context)
    return OutboxError(f"outbox {path}: {err}", code="outbox-io", **context)
