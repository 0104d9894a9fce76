"""Crash safety: a dispatcher process SIGKILLed again and again, the link toggling, >= 100 actions.

Afterwards every action is delivered exactly once (counted by idempotency key and by action on the service side)
or reported failed/expired: nothing lost, nothing doubled. The counts are printed (run with -s to see them).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.outbox.store import DELIVERED, EXPIRED, FAILED, OutboxStore
from agent.services.reference import ReferenceService

ACTIONS = 120
CRASH_POINTS = ["enqueue-before-commit", "enqueue-after-commit", "before-send", "in-flight", "after-response"]
BUDGET_SECONDS = 150.0
RUN_TIMEOUT_SECONDS = 30.0


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


def _run_worker(db: Path, url: str, env_extra: dict[str, str], kill_after: float | None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "CABIN_AGENT_CRASH_AT"} | env_extra
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.outbox.drill",
            "--db",
            str(db),
            "--url",
            url,
            "--actions",
            str(ACTIONS),
            "--interval",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
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


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_anywhere_delivers_every_action_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(20260426)
    service = ReferenceService(tmp_path / "service.sqlite3").start()
    # Burger Barn is closed: its orders are refused (409) every time, so some actions must end up failed.
    service.set_restaurant_open("burger-barn", False)
    toggler = LinkToggler(service, rng)
    db = tmp_path / "outbox.sqlite3"
    acked: dict[int, str] = {}
    kills: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    done = False
    rounds = 0
    toggler.start()
    try:
        while not done and time.monotonic() - started < BUDGET_SECONDS:
            rounds += 1
            if rounds % 4 == 0:
                # Kill from outside at a random moment, while the service is slow to answer after committing:
                # most of these land mid-request, after the service accepted, before the car heard back.
                service.slow(0, after_commit_ms=rng.choice([50, 150, 300]))
                point, env, kill_after = "external-sigkill", {}, rng.uniform(0.5, 1.5)
            else:
                service.slow(0, 0)
                point = CRASH_POINTS[rounds % len(CRASH_POINTS)]
                env, kill_after = {"CABIN_AGENT_CRASH_AT": f"{point}:{rng.randint(1, 3)}"}, None
            returncode, out = _run_worker(db, service.url, env, kill_after)
            for line in out.splitlines():
                if line.startswith("ACK "):
                    _, k, key = line.split()
                    acked[int(k)] = key
            if returncode == -signal.SIGKILL:
                kills[point] += 1
            elif returncode == 0 and "DONE" in out:
                done = True
            else:
                raise AssertionError(f"worker exited {returncode}: {out[-500:]}")
        toggler.stop_event.set()
        toggler.join(timeout=5)
        service.reset_faults()
        service.come_up()
        if not done:
            # Out of budget for crashes: one clean run finishes what is left (still must be exactly once).
            returncode, out = _run_worker(db, service.url, {}, None)
            assert returncode == 0 and "DONE" in out, out[-500:]
            for line in out.splitlines():
                if line.startswith("ACK "):
                    _, k, key = line.split()
                    acked[int(k)] = key

        store = OutboxStore(db)
        entries = store.list(limit=100_000)
        announced = collections.Counter(a.entry_id for a in store.pending_announcements())
        store.close()
        # Every finished action owes the driver exactly one notice, crash or not.
        assert all(announced[e.id] == 1 for e in entries), "an outcome was announced twice or not at all"
        by_tag: dict[str, list] = collections.defaultdict(list)
        for e in entries:
            by_tag[e.body["note"]].append(e)
        effects_by_tag = collections.Counter(e["body"]["note"] for e in service.effects())
        key_counts = service.key_counts()

        delivered = failed = duplicates = lost = phantom = 0
        for k in range(ACTIONS):
            tag = f"drill-{k}"
            found = by_tag.get(tag, [])
            assert len(found) <= 1, f"action {k} was queued twice: {found}"
            effects = effects_by_tag.get(tag, 0)
            if effects > 1:
                duplicates += 1
            if not found:
                lost += 1  # the final clean run queues every action, so a missing entry is a loss
                continue
            entry = found[0]
            if entry.state == DELIVERED:
                delivered += 1
                if effects == 0:
                    lost += 1  # marked delivered, but the service never did it
            elif entry.state in (FAILED, EXPIRED):
                failed += 1
                if effects:
                    phantom += 1  # reported failed, but the service did it
            else:
                lost += 1
            if k in acked:
                assert acked[k] == entry.key, f"action {k}: acked key changed"
        for tag in effects_by_tag:
            assert tag in by_tag, f"the service did {tag}, which the car never committed"
        assert all(c["effects"] <= 1 for c in key_counts.values()), "a key caused two side effects"
        replays = sum(c["replays"] for c in key_counts.values())
        print(
            f"\ncrash drill: actions={ACTIONS} acked={len(acked)} rounds={rounds} "
            f"kill_points={sum(kills.values())} {dict(kills)} outages={toggler.outages} "
            f"delivered={delivered} failed_or_expired={failed} duplicates={duplicates} lost={lost} "
            f"phantom={phantom} replayed_keys={replays} seconds={time.monotonic() - started:.0f}"
        )
        assert sum(kills.values()) >= 25, f"too few kills to mean anything: {dict(kills)}"
        assert set(kills) >= set(CRASH_POINTS) | {"external-sigkill"}, dict(kills)
        assert duplicates == 0 and lost == 0 and phantom == 0
        assert delivered + failed == ACTIONS
        assert failed > 0, "the closed restaurant's orders should have failed"
    finally:
        toggler.stop_event.set()
        service.close()
