"""The outbox store: durable commits, states, in-order heads, atomic notices, cancel/retry rules, last statuses."""

from __future__ import annotations

import sqlite3

import pytest
from helpers.clock import Clock

from agent.outbox.entries import CANCELLED, DELIVERED, EXPIRED, FAILED, IN_FLIGHT, NOTIFY_ANNOUNCE, PENDING
from agent.outbox.errors import OutboxError
from agent.outbox.messages import age_phrase
from agent.outbox.store import OutboxStore


def _entry(store: OutboxStore, service: str = "meals", **kw):
    return store.enqueue(
        service=service,
        action=kw.pop("action", "order_meal"),
        method="POST",
        path="/orders",
        body=kw.pop("body", {"n": 1}),
        summary=kw.pop("summary", "a pizza"),
        **kw,
    )


def test_commit_is_durable_and_uses_wal_full(tmp_path):
    path = tmp_path / "o.db"
    store = OutboxStore(path)
    entry = _entry(store)
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    # Another connection (another process, after a crash) sees the committed entry.
    other = sqlite3.connect(path)
    assert other.execute("SELECT key, state FROM entries").fetchall() == [(entry.key, PENDING)]
    other.close()
    store.close()
    assert OutboxStore(path).get(entry.id).key == entry.key


def test_head_is_the_oldest_open_entry_per_service(tmp_path):
    store = OutboxStore(tmp_path / "o.db")
    a, b = _entry(store), _entry(store)
    c = _entry(store, service="deliveries")
    assert store.head("meals").id == a.id and store.head("deliveries").id == c.id
    store.begin_attempt(a.id)
    assert store.head("meals").state == IN_FLIGHT
    store.finish(a.id, DELIVERED, result={"ok": 1})
    assert store.head("meals").id == b.id
    assert store.services_with_open_entries() == ["deliveries", "meals"]


def test_attempts_and_retry_later_keep_the_key(tmp_path):
    store = OutboxStore(tmp_path / "o.db")
    e = _entry(store)
    store.begin_attempt(e.id)
    again = store.retry_later(e.id, "service-timeout: slow", 123.0)
    assert (again.state, again.attempts, again.key, again.last_error) == (
        PENDING,
        1,
        e.key,
        "service-timeout: slow",
    )
    assert again.ever_sent


def test_notice_is_stored_with_the_transition_only_when_announced(tmp_path):
    store = OutboxStore(tmp_path / "o.db")
    inline, queued = _entry(store), _entry(store, notify=NOTIFY_ANNOUNCE)
    assert store.finish(inline.id, DELIVERED, announcement="placed").announcement is None
    t = store.finish(queued.id, FAILED, error="closed", announcement="not placed", priority="high")
    assert t.announcement is not None and t.entry.state == FAILED
    # Finishing twice changes nothing and owes nothing more.
    assert store.finish(queued.id, DELIVERED, announcement="again").announcement is None
    pending = store.pending_announcements()
    assert [a.text for a in pending] == ["not placed"] and pending[0].priority == "high"
    assert store.mark_announced(pending[0].id) is True
    assert store.mark_announced(pending[0].id) is False
    assert store.pending_announcements() == []


def test_release_to_announce_races_safely_with_finish(tmp_path):
    store = OutboxStore(tmp_path / "o.db")
    open_entry, done = _entry(store), _entry(store)
    store.finish(done.id, DELIVERED)
    assert store.release_to_announce(open_entry.id) is True
    assert store.release_to_announce(done.id) is False  # finished: the tool must say it itself


def test_recover_makes_every_open_outcome_announced(tmp_path):
    store = OutboxStore(tmp_path / "o.db")
    e = _entry(store)
    store.begin_attempt(e.id)
    assert store.recover() == 1
    assert store.get(e.id).notify == NOTIFY_ANNOUNCE and store.get(e.id).state == IN_FLIGHT


def test_cancel_only_what_never_left_the_car(tmp_path):
    store = OutboxStore(tmp_path / "o.db")
    fresh, sent = _entry(store), _entry(store)
    assert store.cancel(fresh.id).state == CANCELLED
    store.begin_attempt(sent.id)
    with pytest.raises(OutboxError) as err:
        store.cancel(sent.id)
    assert err.value.code == "outbox-already-sent"


def test_retry_failed_or_expired_with_the_same_key(tmp_path):
    # Time passing is the outbox clock moving (agent/outbox/clock.py), not the wall clock.
    clock = Clock(1_000_000.0)
    store = OutboxStore(tmp_path / "o.db", monotonic=clock)
    e = _entry(store, expiry_seconds=60)
    with pytest.raises(OutboxError):
        store.retry(e.id)
    store.finish(e.id, EXPIRED)
    clock.now += 600
    again = store.retry(e.id, expiry_seconds=60)
    assert (again.state, again.key, again.expires_at) == (PENDING, e.key, store.now() + 60)


def test_last_status_and_its_age(tmp_path):
    clock = Clock(1_000_000.0)
    store = OutboxStore(tmp_path / "o.db", monotonic=clock)
    assert store.last_status("meals", "order:M1") is None
    store.save_status("meals", "order:M1", {"status": "preparing"})
    clock.now += 12 * 60
    data, fetched_at = store.last_status("meals", "order:M1")
    assert data == {"status": "preparing"}
    assert age_phrase(store.now() - fetched_at) == "as of 12 minutes ago"
    assert age_phrase(30) == "as of a moment ago" and age_phrase(3700) == "as of 1 hour ago"
    assert age_phrase(12 * 60, "zh") == "12分钟前"
