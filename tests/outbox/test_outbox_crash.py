"""Crash safety: a dispatcher process SIGKILLed again and again, the link toggling, >= 100 actions.

And harsher (issue 10): turns cancelled mid-call, the wall clock stepped a day forward and back, another
writer holding the file's lock, a second dispatcher started beside the first, and at the end a corrupt file.
Afterwards every action is delivered exactly once (counted by idempotency key and by action on the service
side) or reported failed: nothing lost, nothing doubled, nothing expired, every outcome told exactly once, and
every "nothing was ordered" true. The counts are printed (run with -s to see them). Size knobs:
CABIN_AGENT_DRILL_ACTIONS (default 120) and CABIN_AGENT_DRILL_SECONDS (default 150, the crash rounds' budget)."""

from __future__ import annotations

import collections
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.devtools.reference_service import ReferenceService
from agent.outbox.entries import DELIVERED, EXPIRED, FAILED, NOTIFY_TOLD
from agent.outbox.store import OutboxStore

ACTIONS = int(os.environ.get("CABIN_AGENT_DRILL_ACTIONS", "120"))
CORRUPT_ACTIONS = 20
CRASH_POINTS = ["enqueue-before-commit", "enqueue-after-commit", "before-send", "in-flight", "after-response"]
BUDGET_SECONDS = float(os.environ.get("CABIN_AGENT_DRILL_SECONDS", "150"))
RUN_TIMEOUT_SECONDS = 30.0
CANCEL_EVERY = 3
DAY_SECONDS = 86_400.0


class LinkToggler(threading.Thread):
    """Takes the service down and up at random moments (a tunnel), and now and then makes it fail with 503."""

    def __init__(self, service: ReferenceService, rng: random.Random) -> None:
        super().__init__(name="link-toggler", daemon=True)
        self.service, self.rng = service, rng
        self.stop_event = threading.Event()
        self.outages = 0

    def run(self) -> None:
        while not self.stop_event.wait(self.rng.uniform(0.3, 1.2)):
            if self.rng.random() < 0.3:
                self.service.fail_next(self.rng.randint(1, 3), 503)
                continue
            self.service.go_down()
            self.outages += 1
            self.stop_event.wait(self.rng.uniform(0.1, 0.6))
            self.service.come_up()
        self.service.come_up()


class ClockStepper(threading.Thread):
    """Steps the workers' wall clock a day forward or back at random moments (NTP, a GPS fix, the driver)."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        super().__init__(name="clock-stepper", daemon=True)
        self.path, self.rng = path, rng
        self.stop_event = threading.Event()
        self.steps = 0
        path.write_text("0")

    def run(self) -> None:
        while not self.stop_event.wait(self.rng.uniform(0.5, 2.0)):
            self.path.write_text(str(self.rng.choice([-DAY_SECONDS, 0.0, DAY_SECONDS, 2 * DAY_SECONDS])))
            self.steps += 1


class LockHolder(threading.Thread):
    """Another writer: holds the outbox file's write lock for 0.2-4.5 s at random moments, so some enqueues wait
    and some give up (more than the enqueue's 3 s)."""

    def __init__(self, db: Path, rng: random.Random) -> None:
        super().__init__(name="lock-holder", daemon=True)
        self.db, self.rng = db, rng
        self.stop_event = threading.Event()
        self.holds = 0

    def run(self) -> None:
        while not self.stop_event.wait(self.rng.uniform(1.0, 4.0)):
            if not self.db.exists():
                continue
            conn = sqlite3.connect(self.db, timeout=10, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                self.holds += 1
                self.stop_event.wait(self.rng.choice([0.2, 1.0, 4.5]))
                conn.execute("COMMIT")
            except sqlite3.Error:
                pass
            finally:
                conn.close()


def _worker(db: Path, url: str, env_extra: dict[str, str], *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "CABIN_AGENT_CRASH_AT"} | env_extra
    return subprocess.Popen(
        [sys.executable, "-m", "agent.devtools.outbox_drill", "--db", str(db), "--url", url, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _run_worker(
    db: Path,
    url: str,
    env_extra: dict[str, str],
    kill_after: float | None,
    *extra: str,
    rival: list[tuple[int, str, int]] | None = None,
) -> tuple[int, str]:
    args = ("--actions", str(ACTIONS), "--interval", "0.1", "--cancel-every", str(CANCEL_EVERY), *extra)
    proc = _worker(db, url, env_extra, *args)
    try:
        if rival is not None:
            # Once the first owns the store (its pid is in the lock file), a second dispatcher on the same file.
            lock = db.with_name(db.name + ".lock")
            end = time.monotonic() + 10
            while time.monotonic() < end and proc.poll() is None:
                if lock.exists() and lock.read_text().strip() == str(proc.pid):
                    break
                time.sleep(0.02)
            second = _worker(db, url, {}, *args, "--lock-wait", "0.2", "--only-own")
            out2, err2 = second.communicate(timeout=RUN_TIMEOUT_SECONDS)
            # 69: refused, the first owned it. 0 (OWNED): the first had already died, nobody else owned it.
            assert second.returncode == 69 or "OWNED" in out2, (second.returncode, out2, err2)
            rival.append((second.returncode, err2, proc.pid))
        if kill_after is not None:
            try:
                out, _ = proc.communicate(timeout=kill_after)
                return proc.returncode, out
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_SECONDS)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        raise AssertionError(
            f"drill worker hung for {RUN_TIMEOUT_SECONDS}s; output tail: {out[-500:]}"
        ) from None


def _collect(out: str, acked: dict[int, str], refused: dict[str, int], cancelled: collections.Counter) -> None:
    for line in out.splitlines():
        if line.startswith("ACK "):
            _, k, key = line.split()
            acked[int(k)] = key
        elif line.startswith("REFUSED "):
            _, k, key = line.split()
            refused[key] = int(k)
        elif line.startswith("CANCELLED "):
            cancelled[int(line.split()[1])] += 1


def _account(store: OutboxStore, service: ReferenceService, actions: range) -> dict[str, int]:
    """delivered / failed / lost / duplicates / phantom / expired over `actions`, asserting what must hold."""
    entries = [e for e in store.list(limit=100_000) if int(e.body["note"].split("-")[1]) in actions]
    announced = collections.Counter(a.entry_id for a in store.pending_announcements())
    for e in entries:
        # Every finished action is told exactly once: by its tool (told) or by one announcement.
        expected = 0 if e.notify == NOTIFY_TOLD else 1
        assert announced[e.id] == expected, f"entry {e.id} ({e.notify}) announced {announced[e.id]} times"
    by_tag: dict[str, list] = collections.defaultdict(list)
    for e in entries:
        by_tag[e.body["note"]].append(e)
    effects_by_tag = collections.Counter(e["body"]["note"] for e in service.effects())
    counts = collections.Counter()
    for k in actions:
        tag = f"drill-{k}"
        found = by_tag.get(tag, [])
        assert len(found) <= 1, f"action {k} was queued twice: {found}"
        effects = effects_by_tag.get(tag, 0)
        if effects > 1:
            counts["duplicates"] += 1
        if not found:
            counts["lost"] += 1  # the final clean run queues every action, so a missing entry is a loss
            continue
        entry = found[0]
        if entry.state == DELIVERED:
            counts["delivered"] += 1
            if effects == 0:
                counts["lost"] += 1  # marked delivered, but the service never did it
        elif entry.state == FAILED:
            counts["failed"] += 1
            if effects:
                counts["phantom"] += 1  # reported failed, but the service did it
        elif entry.state == EXPIRED:
            counts["expired"] += 1  # nothing here is older than its 30 minutes: a clock step expired it
        else:
            counts["lost"] += 1
    return counts


@pytest.mark.slow
@pytest.mark.timeout(int(BUDGET_SECONDS) + 150)
def test_sigkill_anywhere_delivers_every_action_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(20260426)
    service = ReferenceService(tmp_path / "service.sqlite3").start()
    # Burger Barn is closed: its orders are refused (409) every time, so some actions must end up failed.
    service.set_restaurant_open("burger-barn", False)
    toggler = LinkToggler(service, rng)
    db = tmp_path / "outbox.sqlite3"
    stepper = ClockStepper(tmp_path / "wall-offset", rng)
    holder = LockHolder(db, rng)
    clock_args = ("--wall-offset-file", str(stepper.path))
    acked: dict[int, str] = {}
    refused: dict[str, int] = {}
    cancelled: collections.Counter[int] = collections.Counter()
    rivals: list[tuple[int, str, int]] = []
    kills: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    done = False
    rounds = 0
    for thread in (toggler, stepper, holder):
        thread.start()
    try:
        while not done and time.monotonic() - started < BUDGET_SECONDS:
            rounds += 1
            if rounds % 4 == 0:
                # Kill from outside at a random moment, while the service is slow to answer after committing:
                # most of these land mid-request, after the service accepted, before the car heard back.
                service.slow(0, after_commit_ms=rng.choice([50, 150, 300]))
                point, env, kill_after = "external-sigkill", {}, rng.uniform(0.5, 1.5)
            else:
                # Slow before the answer too, so cancelled turns are cancelled mid-call.
                service.slow(rng.choice([0, 0, 200]), 0)
                point = CRASH_POINTS[rounds % len(CRASH_POINTS)]
                env, kill_after = {"CABIN_AGENT_CRASH_AT": f"{point}:{rng.randint(1, 3)}"}, None
            rival: list[tuple[int, str, int]] | None = [] if rounds % 5 == 2 else None
            returncode, out = _run_worker(db, service.url, env, kill_after, *clock_args, rival=rival)
            _collect(out, acked, refused, cancelled)
            rivals += rival or []
            if returncode == -signal.SIGKILL:
                kills[point] += 1
            elif returncode == 0 and "DONE" in out:
                done = True
            else:
                raise AssertionError(f"worker exited {returncode}: {out[-500:]}")
        for thread in (toggler, stepper, holder):
            thread.stop_event.set()
            thread.join(timeout=10)
        service.reset_faults()
        service.come_up()
        if not done:
            # Out of budget for crashes: one clean run finishes what is left (still must be exactly once).
            returncode, out = _run_worker(db, service.url, {}, None, *clock_args)
            assert returncode == 0 and "DONE" in out, out[-500:]
            _collect(out, acked, refused, cancelled)

        store = OutboxStore(db)
        counts = _account(store, service, range(ACTIONS))
        for key, k in refused.items():
            assert store.by_key(key) is None, f"action {k} was refused as 'nothing was ordered' but is stored"
        for k, key in acked.items():
            entry = store.by_key(key)
            assert entry is not None and entry.body["note"] == f"drill-{k}", f"action {k}: acked key changed"
        store.close()
        for tag in collections.Counter(e["body"]["note"] for e in service.effects()):
            assert int(tag.split("-")[1]) < ACTIONS, f"the service did {tag}, which the car never committed"
        key_counts = service.key_counts()
        assert all(c["effects"] <= 1 for c in key_counts.values()), "a key caused two side effects"
        refusals = [(code, text, pid) for code, text, pid in rivals if code == 69]
        for _, text, pid in refusals:
            assert "already delivered by pid" in text and "outbox.sqlite3.lock" in text, text
            assert f"pid {pid}" in text, (pid, text)

        # A corrupt file: set aside, a fresh store, one notice, and new actions still exactly once.
        damaged = db.read_bytes()
        damaged = damaged[:100] + os.urandom(len(damaged) - 100)
        db.write_bytes(damaged)
        returncode, out = _run_worker(
            db, service.url, {}, None, "--first", str(ACTIONS), "--actions", str(CORRUPT_ACTIONS)
        )
        assert returncode == 0 and "DONE" in out and "SET-ASIDE" in out, out[-500:]
        aside = Path(next(line for line in out.splitlines() if line.startswith("SET-ASIDE")).split()[1])
        assert aside.read_bytes() == damaged
        store = OutboxStore(db)
        notices = [a.text for a in store.pending_announcements() if a.entry_id is None]
        after = _account(store, service, range(ACTIONS, ACTIONS + CORRUPT_ACTIONS))
        store.close()

        replays = sum(c["replays"] for c in key_counts.values())
        print(
            f"\ncrash drill: actions={ACTIONS}+{CORRUPT_ACTIONS} acked={len(acked)} rounds={rounds} "
            f"kill_points={sum(kills.values())} {dict(kills)} outages={toggler.outages} "
            f"clock_steps={stepper.steps} lock_holds={holder.holds} refused_enqueues={len(refused)} "
            f"cancelled_turns={sum(cancelled.values())} rival_dispatchers_refused={len(refusals)} "
            f"delivered={counts['delivered']}+{after['delivered']} failed={counts['failed']}+{after['failed']} "
            f"expired={counts['expired']} duplicates={counts['duplicates']}+{after['duplicates']} "
            f"lost={counts['lost']}+{after['lost']} phantom={counts['phantom']} replayed_keys={replays} "
            f"seconds={time.monotonic() - started:.0f}"
        )
        assert sum(kills.values()) >= 25, f"too few kills to mean anything: {dict(kills)}"
        assert set(kills) >= set(CRASH_POINTS) | {"external-sigkill"}, dict(kills)
        assert counts["duplicates"] == 0 and counts["lost"] == 0 and counts["phantom"] == 0
        assert counts["expired"] == 0, "a clock step expired an order"
        assert counts["delivered"] + counts["failed"] == ACTIONS
        assert counts["failed"] > 0, "the closed restaurant's orders should have failed"
        assert after["duplicates"] == after["lost"] == 0
        assert after["delivered"] + after["failed"] == CORRUPT_ACTIONS
        assert len(notices) == 1 and "set them aside" in notices[0]
        assert stepper.steps > 0 and holder.holds > 0 and sum(cancelled.values()) > 0
        assert refusals, "no second dispatcher was ever refused"
    finally:
        for thread in (toggler, stepper, holder):
            thread.stop_event.set()
        service.close()
