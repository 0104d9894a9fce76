#!/usr/bin/env python3
"""Shows that every runtime dependency except llama-cpp-python installs on aarch64 from wheels (no compiler).

    scripts/check_aarch64_wheels.py [--extras whisper,pocketsphinx,silero,webrtcvad] [--only NAME ...]
                                    [--glibc 2.35] [--dest DIR] [--json]

Runs `pip download --only-binary=:all: --platform manylinux2014_aarch64 ... --platform manylinux_2_X_aarch64
--python-version 3.11` over the package's dependencies (pyproject.toml, plus the chosen extras) minus
llama-cpp-python. pip does not expand --platform to older tags, so every manylinux tag from 2014
(glibc 2.17) to 2.X is passed: 2.35 (Ubuntu 22.04 / JetPack 6; Raspberry Pi OS bookworm has 2.36)
accepts exactly what those boards can install. Pure-Python packages published only as sdists
(PURE_PYTHON_SDISTS) are built here into `py3-none-any` wheels first, which proves they need no compiler.
Exit 0 when everything resolved to wheels; 1 otherwise, naming each requirement without an aarch64 wheel.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILT_ON_DEVICE = {"llama-cpp-python"}  # compiled per board with the right CPU flags / CUDA (docs/deploy.md)
DEFAULT_EXTRAS = ("whisper", "pocketsphinx", "silero", "webrtcvad")
# No wheel on PyPI, but pure Python: the wheel built here is `none-any`, installs anywhere without a compiler.
PURE_PYTHON_SDISTS = ("srt",)  # a dependency of vosk


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def runtime_requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        for requirement in optional.get(extra, []):
            if not requirement.startswith("cabin-agent"):
                requirements.append(requirement)
    return [r for r in requirements if _name(r) not in BUILT_ON_DEVICE]


def platforms(glibc: str) -> list[str]:
    major, minor = (int(part) for part in glibc.split("."))
    tags = ["manylinux2014_aarch64"] + [f"manylinux_{major}_{m}_aarch64" for m in range(17, minor + 1)]
    return [arg for tag in tags for arg in ("--platform", tag)]


def build_pure_python(names: tuple[str, ...], local: Path) -> list[str]:
    """Build the sdist-only pure-Python dependencies into wheels; returns problems (e.g. not `none-any`)."""
    if not names:
        return []
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--no-binary", ",".join(names), "--wheel-dir", str(local), *names]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        return [f"could not build {', '.join(names)}: {result.stderr.strip()[-300:]}"]
    return [
        f"{w.name} is not pure Python" for w in local.glob("*.whl") if not w.name.endswith("-none-any.whl")
    ]


def pip_download(
    requirements: list[str], dest: Path, glibc: str, local: Path | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
        *platforms(glibc), "--dest", str(dest), *requirements,
    ]  # fmt: skip
    if local is not None:
        cmd[5:5] = ["--find-links", str(local)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)


def check(requirements: list[str], dest: Path, glibc: str) -> dict[str, object]:
    """One resolve of the whole set; on failure, one per requirement to name every culprit."""
    local = dest / "pure-python"
    local.mkdir(exist_ok=True)
    problems = build_pure_python(PURE_PYTHON_SDISTS, local)
    result = pip_download(requirements, dest, glibc, local)
    failed: dict[str, str] = {name: why for name, why in zip(PURE_PYTHON_SDISTS, problems, strict=False)}
    if result.returncode != 0:
        for requirement in requirements:
            single = pip_download([requirement], dest, glibc, local)
            if single.returncode != 0:
                lines = [line for line in single.stderr.splitlines() if line.startswith("ERROR")]
                failed[requirement] = lines[0] if lines else single.stderr.strip()[-300:]
    wheels = sorted(p.name for p in dest.glob("*.whl"))
    not_wheels = sorted(p.name for p in dest.iterdir() if p.is_file() and not p.name.endswith(".whl"))
    return {
        "ok": result.returncode == 0 and not not_wheels and not failed,
        "requirements": requirements,
        "wheels": wheels,
        "not_wheels": not_wheels,
        "failed": failed,
        "platform_specific": [w for w in wheels if "aarch64" in w],
        "pure_python_sdists": sorted(p.name for p in local.glob("*.whl")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--extras", default=",".join(DEFAULT_EXTRAS), help="extras to include (comma-separated)"
    )
    parser.add_argument("--only", nargs="*", help="check only these requirements (e.g. numpy vosk)")
    parser.add_argument("--glibc", default="2.35", help="oldest glibc of the target boards")
    parser.add_argument(
        "--dest", type=Path, help="keep the downloaded wheels here (default: a temporary dir)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    extras = [e for e in args.extras.split(",") if e]
    requirements = args.only or runtime_requirements(extras)
    with tempfile.TemporaryDirectory() as tmp:
        dest = args.dest or Path(tmp)
        dest.mkdir(parents=True, exist_ok=True)
        report = check(requirements, dest, args.glibc)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"aarch64 (glibc {args.glibc}, cp311): "
            f"{len(report['wheels'])} wheels for {len(requirements)} requirements"
        )
        for wheel in report["platform_specific"]:
            print(f"  native  {wheel}")
        for wheel in report["pure_python_sdists"]:
            print(f"  built   {wheel} (sdist only on PyPI, pure Python)")
        for name in report["not_wheels"]:
            print(f"  SOURCE  {name}")
        for requirement, why in report["failed"].items():
            print(f"  NO WHEEL  {requirement}: {why}")
        print("built on the device: " + ", ".join(sorted(BUILT_ON_DEVICE)))
        print("OK: no compiler needed for these" if report["ok"] else "FAILED")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
