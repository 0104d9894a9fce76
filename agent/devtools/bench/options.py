"""What a bench run is asked to do (the CLI's options) and its phases; light, so the CLI can list them without
loading the bench."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.devtools.scripted_mic import SNR_DB

REPO = Path(__file__).resolve().parents[3]  # agent/devtools/bench/options.py -> the repository
DEFAULT_EVAL_SET = REPO / "tests" / "data" / "eval_car.jsonl"


@dataclass
class BenchOptions:
    turns: int = 32
    quick: bool = False
    out: Path = Path("bench/results")
    eval_limit: int = 40
    eval_set: Path = DEFAULT_EVAL_SET
    idle_seconds: float = 60.0
    trigger: str = "mixed"
    snr_db: float = SNR_DB
    reps: int = 3
    skip: frozenset[str] = frozenset()
    command: str = "cabin-agent bench"


PHASES = ("first-token", "idle", "turns", "overhead", "eval")
