"""The durable outbox: every side-effecting service action, committed to SQLite before the driver hears about it.

Modelled on persist-queue's SQLiteAckQueue; the states an entry goes through are in agent/outbox/entries.py.
The same file also keeps the announcements the car owes the driver ("your pizza was ordered") and the last
known status of read-only questions, so a restart loses neither. Methods are synchronous and thread-safe;
async callers run them with `asyncio.to_thread` so a FULL fsync never blocks the event loop.

Every time in the file (created_at, expires_at, next_attempt_at, ...) is on the outbox clock
(agent/outbox/clock.py), not the wall clock: a clock step neither delays a retry nor expires an order.
SQLite's own error is what a failed write raises (typed: OutboxBusy, OutboxFull, OutboxCorrupt), never the
complaint of a rollback after it."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.core.logging import get_logger
from agent.outbox import clock as outbox_clock
from agent.outbox.entries import (
    CANCELLED,
    EXPIRED,
    FAILED,
    IN_FLIGHT,
    NOTIFY_ANNOUNCE,
    NOTIFY_INLINE,
    NOTIFY_TOLD,
    OPEN_STATES,
    PENDING,
    STATES,
    TERMINAL_STATES,
    Announcement,
    Entry,
    Settled,
    Transition,
    row_to_announcement,
    row_to_entry,
)
from agent.outbox.errors import OutboxError, from_sqlite
from agent.outbox.faults import crashpoint
from agent.outbox.lock import StoreLock
from agent.outbox.schema import SCHEMA, SCHEMA_VERSION, check_integrity

log = get_logger("outbox")

# How long a write waits for another writer's lock. An enqueue must give up well inside the tool's 10 s, so
# the driver hears a true "not saved" instead of a timeout while the order is committed behind her back.
BUSY_TIMEOUT_SECONDS = 10.0
ENQUEUE_BUSY_TIMEOUT_SECONDS = 3.0


@dataclass
class _Listeners:
    callbacks: list[Callable[[], None]] = field(default_factory=list)


class OutboxStore:
    """One SQLite file (WAL, synchronous=FULL). Safe to share between threads and between processes.

    `clock` is the wall clock (only read to carry the outbox clock across a reboot), `monotonic` and `boot_id`
    the outbox clock's sources (tests pass fakes). `owner`: the StoreLock of the process that delivers it.
    `check`: run SQLite's quick_check at open, so a damaged file fails here (OutboxCorrupt) and not mid-drive.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = outbox_clock.boottime,
        boot_id: Callable[[], str | None] = outbox_clock.boot_id,
        owner: StoreLock | None = None,
        check: bool = False,
        busy_timeout_seconds: float = BUSY_TIMEOUT_SECONDS,
    ) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wall = clock
        self._mono = monotonic
        self._boot_id = boot_id
        self.busy_timeout_seconds = busy_timeout_seconds
        self._lock = threading.RLock()
        self._listeners = _Listeners()
        self._owner = owner
        self._db: sqlite3.Connection | None = None
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so a read-modify-write is one transaction
            # even when another process (the CLI, a one-shot `say`) writes the same file.
            self._db = sqlite3.connect(
                str(path), timeout=busy_timeout_seconds, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            if check:
                # Before anything writes to it: a checkpoint into a damaged file would destroy the evidence.
                check_integrity(self.path, self.busy_timeout_seconds)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before we tell the driver "queued"; NORMAL could lose it on power loss.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            self._migrate()
            self._base = self._open_clock()
        except sqlite3.Error as err:
            self._close_quietly()
            raise from_sqlite(err, self.path) from err
        except BaseException:
            self._close_quietly()
            raise

    # ------------------------------------------------------------ plumbing

    def _close_quietly(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _migrate(self) -> None:
        assert self._db is not None
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        with self._tx(checkpoint=False) as db:
            # v1 files: finished inline entries were told by their tool; only open ones may still need a notice.
            db.execute(
                f"UPDATE entries SET notify = ? WHERE notify = ? AND state NOT IN ({','.join('?' * len(OPEN_STATES))})",
                (NOTIFY_TOLD, NOTIFY_INLINE, *OPEN_STATES),
            )
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _open_clock(self) -> outbox_clock.ClockBase:
        assert self._db is not None
        row = self._db.execute("SELECT * FROM clock WHERE id = 1").fetchone()
        stored = (
            outbox_clock.ClockBase(
                row["boot_id"], row["offset_seconds"], row["checkpoint_seconds"], row["checkpoint_wall"]
            )
            if row
            else None
        )
        base, how = outbox_clock.rebase(
            stored, boot=self._boot_id(), mono_now=self._mono(), wall_now=self._wall()
        )
        if how in ("reboot", "wall-behind"):
            log.info("outbox-clock-rebased", how=how, path=str(self.path))
        self._base = base
        try:
            with self._tx():
                pass  # the checkpoint in every write stores the new base
        except OutboxError as err:  # a read-only opener (another user's CLI) keeps its base in memory
            log.debug("outbox-clock-not-saved", error=err.message)
        return base

    def _write_checkpoint(self, db: sqlite3.Connection) -> None:
        base = self._base
        db.execute(
            "INSERT OR REPLACE INTO clock (id, boot_id, offset_seconds, checkpoint_seconds, checkpoint_wall)"
            " VALUES (1, ?, ?, ?, ?)",
            (base.boot_id, base.offset_seconds, self.now(), self._wall()),
        )

    @contextmanager
    def _tx(
        self, *, busy_timeout_seconds: float | None = None, checkpoint: bool = True
    ) -> Iterator[sqlite3.Connection]:
        if self._db is None:
            raise OutboxError(f"outbox {self.path} is closed", code="outbox-closed")
        db = self._db
        wait = self.busy_timeout_seconds if busy_timeout_seconds is None else busy_timeout_seconds
        with self._lock:
            try:
                db.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise from_sqlite(err, self.path) from err
            committing = False
            try:
                yield db
                if checkpoint:
                    self._write_checkpoint(db)
                committing = True
                db.execute("COMMIT")
            except BaseException as err:
                # SQLite rolls back by itself after some errors (a full disk, I/O): then there is nothing left
                # to roll back, and ROLLBACK's own complaint must never replace the error that matters.
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error as rollback_err:
                        log.warning("outbox-rollback-failed", path=str(self.path), error=str(rollback_err))
                if isinstance(err, sqlite3.Error):
                    raise from_sqlite(err, self.path, committing=committing) from err
                raise
        self._changed()

    def _changed(self) -> None:
        for callback in list(self._listeners.callbacks):
            try:
                callback()
            except Exception:  # a listener's bug must not undo a committed write
                pass

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (from the writing thread) after every commit in this process: the dispatcher's wake-up."""
        self._listeners.callbacks.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners.callbacks:
            self._listeners.callbacks.remove(callback)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(OutboxError):
                    with self._tx():
                        pass  # a last checkpoint: the downtime across a reboot is counted from here
            self._close_quietly()
            self.disown()

    def now(self) -> float:
        """The outbox clock (seconds): what every stored time is on."""
        return self._base.offset_seconds + self._mono()

    def wall_now(self) -> float:
        return self._wall()

    # ------------------------------------------------------------ ownership

    @property
    def owned(self) -> bool:
        return self._owner is not None and self._owner.held

    def own(self, *, wait_seconds: float = 0.0) -> bool:
        """Become the one dispatcher of this file (True), or raise OutboxOwned. False: already ours."""
        if self.owned or str(self.path) == ":memory:":
            return False
        self._owner = StoreLock.acquire(self.path, wait_seconds=wait_seconds)
        return True

    def disown(self) -> None:
        if self._owner is not None:
            self._owner.release()
            self._owner = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError(f"outbox {self.path} is closed", code="outbox-closed")
        return self._db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn()
            except sqlite3.Error as err:
                raise from_sqlite(err, self.path) from err

    def _get(self, db: sqlite3.Connection, entry_id: int) -> Entry:
        row = db.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise OutboxError(f"no outbox entry {entry_id}", code="outbox-entry-missing", entry=entry_id)
        return row_to_entry(row)

    # ------------------------------------------------------------ entries

    def enqueue(
        self,
        *,
        service: str,
        action: str,
        method: str,
        path: str,
        body: dict[str, Any],
        summary: str,
        language: str = "en",
        expiry_seconds: float = 1800.0,
        depends_on: str | None = None,
        notify: str = NOTIFY_INLINE,
        key: str | None = None,
        busy_timeout_seconds: float = ENQUEUE_BUSY_TIMEOUT_SECONDS,
    ) -> Entry:
        """Commit a new pending entry (fsynced when this returns) and give it back with its id and key.

        Raises OutboxBusy (nothing written) when another writer holds the file longer than
        `busy_timeout_seconds`; any error with `context["uncertain"]` came from COMMIT itself, and only
        `by_key(key)` can tell whether the entry is there."""
        now = self.now()
        key = key or str(uuid.uuid4())
        with self._tx(busy_timeout_seconds=busy_timeout_seconds) as db:
            cur = db.execute(
                "INSERT INTO entries (key, service, action, method, path, body, summary, language, depends_on,"
                " state, notify, created_at, expires_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    key,
                    service,
                    action,
                    method.upper(),
                    path,
                    json.dumps(body, ensure_ascii=False),
                    summary,
                    language,
                    depends_on,
                    PENDING,
                    notify,
                    now,
                    now + expiry_seconds,
                    now,
                ),
            )
            entry = self._get(db, int(cur.lastrowid))
            crashpoint("enqueue-before-commit")
        crashpoint("enqueue-after-commit")
        return entry

    def get(self, entry_id: int) -> Entry:
        with self._read() as db:
            return self._get(db, entry_id)

    def by_key(self, key: str) -> Entry | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM entries WHERE key = ?", (key,)).fetchone()
        return row_to_entry(row) if row else None

    def list(
        self,
        *,
        states: tuple[str, ...] | None = None,
        service: str | None = None,
        action: str | None = None,
        limit: int = 200,
    ) -> list[Entry]:
        sql, params = "SELECT * FROM entries WHERE 1=1", []
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params += list(states)
        if service:
            sql += " AND service = ?"
            params.append(service)
        if action:
            sql += " AND action = ?"
            params.append(action)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._read() as db:
            return [row_to_entry(r) for r in db.execute(sql, params).fetchall()]

    def latest(self, *, service: str, action: str) -> Entry | None:
        found = self.list(service=service, action=action, limit=1)
        return found[0] if found else None

    def head(self, service: str) -> Entry | None:
        """The oldest open entry of a service: the only one that may be sent (in order per service)."""
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM entries WHERE service = ? AND state IN (?, ?) ORDER BY id LIMIT 1",
                (service, *OPEN_STATES),
            ).fetchone()
        return row_to_entry(row) if row else None

    def services_with_open_entries(self) -> list[str]:
        with self._read() as db:
            rows = db.execute(
                "SELECT DISTINCT service FROM entries WHERE state IN (?, ?)", OPEN_STATES
            ).fetchall()
        return sorted(r[0] for r in rows)

    def recover(self, text_for: Callable[[Entry], tuple[str, str]] | None = None) -> int:
        """At boot: nobody is waiting inline any more, so every open entry's outcome must be announced.

        In-flight entries stay in-flight (the service may have them); they are re-sent with their key.
        With `text_for` (entry -> (text, priority)), an entry that finished while its tool waited but that the
        tool never took (the car died in between) gets its announcement now. Returns how many open entries
        there were.
        """
        with self._tx() as db:
            cur = db.execute(
                "UPDATE entries SET notify = ? WHERE state IN (?, ?)", (NOTIFY_ANNOUNCE, *OPEN_STATES)
            )
            reopened = cur.rowcount
            if text_for is not None:
                rows = db.execute("SELECT * FROM entries WHERE notify = ?", (NOTIFY_INLINE,)).fetchall()
                for row in rows:
                    self._announce_finished(db, row_to_entry(row), text_for)
            return reopened

    def _announce_finished(
        self, db: sqlite3.Connection, entry: Entry, text_for: Callable[[Entry], tuple[str, str]]
    ) -> Announcement:
        text, priority = text_for(entry)
        db.execute("UPDATE entries SET notify = ? WHERE id = ?", (NOTIFY_ANNOUNCE, entry.id))
        return self._add_announcement(db, text, entry.language, priority, entry.id)

    def begin_attempt(self, entry_id: int) -> Entry:
        """Mark in-flight and count the attempt, committed before the request leaves the car."""
        with self._tx() as db:
            db.execute(
                "UPDATE entries SET state = ?, attempts = attempts + 1, updated_at = ? WHERE id = ? AND state IN (?, ?)",
                (IN_FLIGHT, self.now(), entry_id, *OPEN_STATES),
            )
            return self._get(db, entry_id)

    def retry_later(self, entry_id: int, error: str, next_attempt_at: float) -> Entry:
        """A retryable failure (timeout, 5xx, offline): back to pending, same key, not before `next_attempt_at`."""
        with self._tx() as db:
            db.execute(
                "UPDATE entries SET state = ?, last_error = ?, next_attempt_at = ?, updated_at = ?"
                " WHERE id = ? AND state IN (?, ?)",
                (PENDING, error, next_attempt_at, self.now(), entry_id, *OPEN_STATES),
            )
            return self._get(db, entry_id)

    def finish(
        self,
        entry_id: int,
        state: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        announcement: str | None = None,
        priority: str = "normal",
    ) -> Transition:
        """Move an open entry to a terminal state; in the same transaction, store the announcement it owes
        the driver when nobody is waiting for it inline. A crash can never separate the two."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"not a terminal state: {state}")
        with self._tx() as db:
            entry = self._get(db, entry_id)
            if not entry.is_open:
                return Transition(entry)
            db.execute(
                "UPDATE entries SET state = ?, result = COALESCE(?, result), last_error = COALESCE(?, last_error),"
                " updated_at = ? WHERE id = ?",
                (
                    state,
                    json.dumps(result, ensure_ascii=False) if result is not None else None,
                    error,
                    self.now(),
                    entry_id,
                ),
            )
            entry = self._get(db, entry_id)
            ann = None
            if announcement and entry.notify == NOTIFY_ANNOUNCE:
                ann = self._add_announcement(db, announcement, entry.language, priority, entry_id)
            return Transition(entry, ann)

    def settle_waiter(
        self,
        entry_id: int,
        *,
        tell_inline: bool,
        text_for: Callable[[Entry], tuple[str, str]] | None = None,
        retract_told: bool = False,
    ) -> Settled:
        """The tool that waited for `entry_id` stops waiting, in one transaction with whatever finished meanwhile.

        Still open: its outcome will be announced ("announce"). Finished and the tool can still say it
        (`tell_inline`): "told", the tool says it now. Finished but the tool is gone (its turn was cancelled):
        the announcement from `text_for(entry)` is stored ("announced"). Already settled: nothing changes,
        except with `retract_told`: the tool was cancelled before it could say a "told" outcome, so it is
        announced after all.
        """
        with self._tx() as db:
            entry = self._get(db, entry_id)
            if entry.notify == NOTIFY_TOLD and retract_told and text_for is not None:
                ann = self._announce_finished(db, entry, text_for)
                return Settled(self._get(db, entry_id), "announced", ann)
            if entry.notify != NOTIFY_INLINE:
                return Settled(entry, "told" if entry.notify == NOTIFY_TOLD else "announce")
            if entry.is_open:
                db.execute("UPDATE entries SET notify = ? WHERE id = ?", (NOTIFY_ANNOUNCE, entry_id))
                return Settled(self._get(db, entry_id), "announce")
            if tell_inline or text_for is None:
                db.execute("UPDATE entries SET notify = ? WHERE id = ?", (NOTIFY_TOLD, entry_id))
                return Settled(self._get(db, entry_id), "told")
            ann = self._announce_finished(db, entry, text_for)
            return Settled(self._get(db, entry_id), "announced", ann)

    def release_to_announce(self, entry_id: int) -> bool:
        """The tool stops waiting: if the entry is still open, its outcome will be announced later (True).
        False means it already finished and the tool must tell the driver itself (it is marked told)."""
        return self.settle_waiter(entry_id, tell_inline=True).how == "announce"

    def cancel(self, entry_id: int) -> Entry:
        """Withdraw an entry that was never sent. One the service may have seen cannot be taken back here:
        that needs a cancel request to the service (see the meals plugin)."""
        with self._tx() as db:
            entry = self._get(db, entry_id)
            if entry.state in (CANCELLED,):
                return entry
            if not entry.is_open:
                raise OutboxError(f"entry {entry_id} is already {entry.state}", code="outbox-not-open")
            if entry.ever_sent:
                raise OutboxError(
                    f"entry {entry_id} may already have reached the service ({entry.attempts} attempts)",
                    code="outbox-already-sent",
                )
            db.execute(
                "UPDATE entries SET state = ?, updated_at = ? WHERE id = ?",
                (CANCELLED, self.now(), entry_id),
            )
            return self._get(db, entry_id)

    def retry(self, entry_id: int, *, expiry_seconds: float | None = None) -> Entry:
        """Put a failed or expired entry back to pending, keeping its key (so a late success is not doubled)."""
        with self._tx() as db:
            entry = self._get(db, entry_id)
            if entry.state not in (FAILED, EXPIRED):
                raise OutboxError(
                    f"entry {entry_id} is {entry.state}; only failed or expired entries can be retried",
                    code="outbox-not-retryable",
                )
            now = self.now()
            expires_at = now + expiry_seconds if expiry_seconds else max(entry.expires_at, now + 1800.0)
            db.execute(
                "UPDATE entries SET state = ?, next_attempt_at = 0, expires_at = ?, notify = ?, updated_at = ?"
                " WHERE id = ?",
                (PENDING, expires_at, NOTIFY_ANNOUNCE, now, entry_id),
            )
            return self._get(db, entry_id)

    def counts(self) -> dict[str, int]:
        with self._read() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM entries GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | {r[0]: r[1] for r in rows}

    # ------------------------------------------------------------ announcements

    def _add_announcement(
        self, db: sqlite3.Connection, text: str, language: str, priority: str, entry_id: int | None
    ) -> Announcement:
        cur = db.execute(
            "INSERT INTO announcements (created_at, text, language, priority, entry_id) VALUES (?,?,?,?,?)",
            (self.now(), text, language, priority, entry_id),
        )
        row = db.execute("SELECT * FROM announcements WHERE id = ?", (cur.lastrowid,)).fetchone()
        return row_to_announcement(row)

    def add_announcement(
        self, text: str, *, language: str = "en", priority: str = "normal", entry_id: int | None = None
    ) -> Announcement:
        with self._tx() as db:
            return self._add_announcement(db, text, language, priority, entry_id)

    def pending_announcements(self) -> list[Announcement]:
        """What the car still owes the driver, oldest first (high priority first)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM announcements WHERE delivered = 0"
                " ORDER BY CASE priority WHEN 'high' THEN 0 ELSE 1 END, id"
            ).fetchall()
        return [row_to_announcement(r) for r in rows]

    def mark_announced(self, announcement_id: int) -> bool:
        """The car has spoken it. True when this call marked it (False: already spoken or unknown)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE announcements SET delivered = 1, delivered_at = ? WHERE id = ? AND delivered = 0",
                (self.now(), announcement_id),
            )
            return cur.rowcount == 1

    # ------------------------------------------------------------ last known statuses

    def save_status(self, service: str, subject: str, data: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO statuses (service, subject, data, fetched_at) VALUES (?,?,?,?)"
                " ON CONFLICT(service, subject) DO UPDATE SET data = excluded.data, fetched_at = excluded.fetched_at",
                (service, subject, json.dumps(data, ensure_ascii=False), self.now()),
            )

    def last_status(self, service: str, subject: str) -> tuple[Any, float] | None:
        """(data, fetched_at) of the last answer the service gave about `subject`, or None."""
        with self._read() as db:
            row = db.execute(
                "SELECT data, fetched_at FROM statuses WHERE service = ? AND subject = ?", (service, subject)
            ).fetchone()
        return (json.loads(row[0]), row[1]) if row else None

