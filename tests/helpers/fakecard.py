"""Children that run on the fake ALSA card (agent.devtools.fakecard): PortAudio reads the ALSA configuration
once, when sounddevice is imported, so whatever opens the card runs in a subprocess pointed at it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from agent.devtools.fakecard import FakeCard
from helpers.real import require

REPO = Path(__file__).resolve().parents[2]
HAS_PORTAUDIO = any(
    Path(p).exists()
    for p in (
        "/usr/lib/x86_64-linux-gnu/libportaudio.so.2",
        "/usr/lib/aarch64-linux-gnu/libportaudio.so.2",
        "/usr/lib/libportaudio.so.2",
    )
)


def run_on_card(card: FakeCard, code: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Runs `code` (dedented) in a child whose ALSA configuration is the card; fails unless it exits 0."""
    require(HAS_PORTAUDIO, "libportaudio2 is not installed")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=card.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    """The last JSON line a child printed (its result)."""
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
