"""Crash points for the crash-safety test: on the Nth pass through a named point, the process SIGKILLs itself.

Off unless CABIN_AGENT_CRASH_AT is set (e.g. "after-response:3,enqueue-before-commit:7"), so in the car each
call is one dict lookup. A real SIGKILL, not an exception: no finally block, no flush, no atexit runs, exactly
like a power cut as far as the process is concerned.

Points: enqueue-before-commit (row inserted, transaction open), enqueue-after-commit (committed, driver not yet
told), before-send (picked, not yet in-flight), in-flight (marked in-flight, request not sent), after-response
(the service answered 2xx, the car has not recorded it).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "CABIN_AGENT_CRASH_AT"


def _plan(raw: str | None) -> dict[str, int]:
    plan: dict[str, int] = {}
    for part in (raw or "").split(","):
        name, _, nth = part.strip().partition(":")
        if name:
            plan[name] = int(nth or 1)
    return plan


_PLAN = _plan(os.environ.get(ENV))
_seen: Counter[str] = Counter()


def crashpoint(name: str) -> None:
    if not _PLAN or name not in _PLAN:
        return
    _seen[name] += 1
    if _seen[name] == _PLAN[name]:
        os.kill(os.getpid(), signal.SIGKILL)
