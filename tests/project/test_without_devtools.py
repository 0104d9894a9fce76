"""A head unit's image may leave agent/devtools out: the runtime never imports it, and the CLI still works,
with the commands that need the development tools saying so (exit 69) instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Runs the CLI with agent.devtools made unimportable, as if the folder were not installed.
BOOT = "import sys; sys.modules['agent.devtools'] = None; from agent.cli.main import main; main(sys.argv[1:])"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BOOT, *args], capture_output=True, text=True, timeout=120)


def test_help_and_the_runtime_commands_work_without_the_development_tools() -> None:
    out = cli("--help")
    assert out.returncode == 0, out.stderr
    for command in ("run", "say", "status", "models", "bench", "demo"):
        assert command in out.stdout
    assert cli("models", "list").returncode == 0


@pytest.mark.parametrize("args", [("bench", "--quick"), ("demo",), ("eval", "tests/data/eval/dev_en.jsonl"),
                                  ("devservice",)])
def test_a_development_command_says_what_is_missing(args: tuple[str, ...]) -> None:
    out = cli(*args)
    assert out.returncode == 69, out.stderr[-2000:]
    assert "development tools" in out.stderr and "Traceback" not in out.stderr
