"""The outbox's clock: seconds that never step with the wall clock and run on across daemon restarts.

Retries and expiry are decided on it, so a clock step (NTP, a GPS fix, the driver setting the time) neither
delays an order by a day nor expires it early. Within one boot it is CLOCK_BOOTTIME (counts suspend) plus an
offset kept in the store; across a reboot, where no monotonic clock survives, the downtime is what the wall
clock says passed (never negative), and `rebase` says which rule decided."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def boottime() -> float:
    """Seconds since boot including suspend (Linux), else the process-independent monotonic clock."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()


def boot_id() -> str | None:
    """This boot's id: two processes with the same one can compare their CLOCK_BOOTTIME readings."""
    try:
        return BOOT_ID_FILE.read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class ClockBase:
    """What the store remembers: outbox clock = offset_seconds + boottime() during boot `boot_id`."""

    boot_id: str
    offset_seconds: float
    checkpoint_seconds: float  # the outbox clock at the last write
    checkpoint_wall: float  # the wall clock at that moment


def rebase(
    stored: ClockBase | None, *, boot: str | None, mono_now: float, wall_now: float
) -> tuple[ClockBase, str]:
    """Where the outbox clock stands now. Returns the base to use and how it was decided:

    new        no base yet: the clock starts at the wall clock, so old wall-clock rows keep their meaning
    same-boot  the same boot: the stored offset, exact (restarts, crashes, SIGKILL)
    reboot     another boot: the last checkpoint plus the wall-clock downtime
    wall-behind another boot and the wall clock is behind the checkpoint: downtime unknown, counted as zero
    """
    if stored is None:
        offset, how = wall_now - mono_now, "new"
    elif boot is not None and stored.boot_id == boot:
        offset, how = stored.offset_seconds, "same-boot"
    else:
        downtime = wall_now - stored.checkpoint_wall
        how = "reboot" if downtime >= 0 else "wall-behind"
        offset = stored.checkpoint_seconds + max(0.0, downtime) - mono_now
    if stored is not None and offset + mono_now < stored.checkpoint_seconds:
        offset = stored.checkpoint_seconds - mono_now  # never backwards (a copied file, a broken boot id)
    now = offset + mono_now
    return ClockBase(boot or "unknown", offset, now, wall_now), how
