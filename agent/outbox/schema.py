"""The outbox file's tables and their version, and the check that a file reads back whole before anything
writes to it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.outbox.errors import OutboxCorrupt, is_corruption

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    key              TEXT NOT NULL UNIQUE,          -- the Idempotency-Key, fixed for the entry's life
    service          TEXT NOT NULL,                 -- meals, deliveries: ordering is per service
    action           TEXT NOT NULL,                 -- the tool that created it: order_meal, cancel_order, ...
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,                 -- may hold {order_id}, filled from depends_on's result
    body             TEXT NOT NULL,                 -- validated arguments as JSON
    summary          TEXT NOT NULL,                 -- what it is, in the driver's words and language
    language         TEXT NOT NULL,
    depends_on       TEXT,                          -- key of an earlier entry whose result this one needs
    state            TEXT NOT NULL,
    notify           TEXT NOT NULL,
    created_at       REAL NOT NULL,
    expires_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    next_attempt_at  REAL NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    result           TEXT
);
CREATE INDEX IF NOT EXISTS entries_open ON entries(service, state, id);
CREATE TABLE IF NOT EXISTS announcements (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at   REAL NOT NULL,
    text         TEXT NOT NULL,
    language     TEXT NOT NULL,
    priority     TEXT NOT NULL,                     -- "normal" or "high" (a failed purchase)
    entry_id     INTEGER,
    delivered    INTEGER NOT NULL DEFAULT 0,       -- 1 once the car has spoken it
    delivered_at REAL
);
CREATE TABLE IF NOT EXISTS clock (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    boot_id            TEXT NOT NULL,
    offset_seconds     REAL NOT NULL,               -- outbox clock = offset + CLOCK_BOOTTIME in boot `boot_id`
    checkpoint_seconds REAL NOT NULL,               -- the outbox clock at the last write
    checkpoint_wall    REAL NOT NULL                -- the wall clock then (spans reboots, see clock.py)
);
CREATE TABLE IF NOT EXISTS statuses (
    service     TEXT NOT NULL,
    subject     TEXT NOT NULL,                      -- e.g. "order:M1001", "deliveries", "search:pizza"
    data        TEXT NOT NULL,
    fetched_at  REAL NOT NULL,
    PRIMARY KEY (service, subject)
);
"""


def check_integrity(path: Path, busy_timeout_seconds: float) -> None:
    """OutboxCorrupt unless the file (with its WAL) reads back whole. Looks without writing: the header
    first, then SQLite's quick_check on a read-only connection, which never checkpoints or deletes a WAL."""
    if str(path) == ":memory:" or not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb") as f:
        header = f.read(16)
    if header != b"SQLite format 3\x00":
        raise OutboxCorrupt(f"outbox {path} is not an SQLite database", path=str(path))
    uri = f"file:{path.resolve()}?mode=ro"
    try:
        probe = sqlite3.connect(uri, uri=True, timeout=busy_timeout_seconds)
        try:
            rows = probe.execute("PRAGMA quick_check").fetchall()
        finally:
            probe.close()
    except sqlite3.Error as err:
        if is_corruption(err):
            raise OutboxCorrupt(f"outbox {path} is damaged: {err}", path=str(path)) from err
        raise
    problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
    if problems:
        raise OutboxCorrupt(
            f"outbox {path} is damaged: {'; '.join(problems[:3])}", path=str(path)
        )
