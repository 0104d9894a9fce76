"""ARM64: every runtime dependency but llama-cpp-python installs from aarch64 wheels (no compiler on a Pi)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.real import IN_CI

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check_aarch64_wheels.py"


def load_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("check_aarch64_wheels", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runtime_set_is_the_dependencies_and_engine_extras_minus_llama() -> None:
    script = load_script()
    names = {script._name(r) for r in script.runtime_requirements(list(script.DEFAULT_EXTRAS))}
    assert "llama-cpp-python" not in names
    assert {"vosk", "piper-tts", "sounddevice", "numpy", "pydantic"} <= names
    assert {"faster-whisper", "pocketsphinx", "onnxruntime", "webrtcvad-wheels"} <= names
    assert script.platforms("2.19") == [
        "--platform",
        "manylinux2014_aarch64",
        "--platform",
        "manylinux_2_17_aarch64",
        "--platform",
        "manylinux_2_18_aarch64",
        "--platform",
        "manylinux_2_19_aarch64",
    ]


@pytest.mark.slow
def test_every_runtime_dependency_has_an_aarch64_wheel(tmp_path: Path) -> None:
    # Keep downloads between runs: pip skips files already in --dest.
    dest = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cabin-agent" / "aarch64-wheels"
    result = subprocess.run([sys.executable, str(SCRIPT), "--dest", str(dest), "--json"],
                            capture_output=True, text=True, timeout=1800)  # fmt: skip
    if result.returncode != 0 and not result.stdout.strip():
        if not IN_CI and ("Network is unreachable" in result.stderr or "NewConnectionError" in result.stderr):
            pytest.skip("no network to PyPI")
    report = json.loads(result.stdout)
    assert report["failed"] == {} and report["not_wheels"] == [], report
    assert result.returncode == 0
    wheels = " ".join(report["wheels"])
    for native in ("numpy", "onnxruntime", "vosk", "piper_tts", "pydantic_core", "ctranslate2"):
        assert f"{native}-" in wheels
    assert not any("llama_cpp" in w for w in report["wheels"])
