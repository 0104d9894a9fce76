"""scripts/install.sh into a temporary root: what it places, idempotence, kept configs, uninstall, purge."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers.real import require

from agent.core.config import Config, load_config, validate

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install.sh"


def run(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    result = subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stderr


def install(root: Path, profile: str = "pi5", *extra: str) -> str:
    return run(root, "--profile", profile, "--no-venv", "--no-models", *extra)


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every path under root with its mode and content hash: two equal trees mean nothing changed."""
    snapshot = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else ""
        snapshot[str(path.relative_to(root))] = (oct(stat.S_IMODE(st.st_mode)), digest)
    return snapshot


EXPECTED_FILES = [
    "etc/systemd/system/cabin-agent.service",
    "etc/cabin-agent/config.yaml",
    "usr/share/cabin-agent/models/manifest.yaml",
    "usr/share/cabin-agent/config.yaml.installed",
    "usr/share/doc/cabin-agent/deploy.md",
    "usr/lib/sysusers.d/cabin-agent.conf",
    "usr/lib/tmpfiles.d/cabin-agent.conf",
]
EXPECTED_DIRS = ["opt/cabin-agent", "var/lib/cabin-agent/models", "var/cache/cabin-agent", "etc/credstore"]


def test_install_places_the_files(tmp_path: Path) -> None:
    install(tmp_path)
    for name in EXPECTED_FILES:
        assert (tmp_path / name).is_file(), name
    for name in EXPECTED_DIRS:
        assert (tmp_path / name).is_dir(), name
    assert (tmp_path / EXPECTED_FILES[0]).read_bytes() == (REPO / "systemd/cabin-agent.service").read_bytes()
    assert (tmp_path / EXPECTED_FILES[2]).read_bytes() == (REPO / "models/manifest.yaml").read_bytes()
    assert stat.S_IMODE((tmp_path / "etc/credstore").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "var/lib/cabin-agent").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "etc/cabin-agent/config.yaml").stat().st_mode) == 0o640
    assert not (tmp_path / "etc/systemd/system/cabin-agent.service.d").exists()  # no Jetson drop-in on a Pi
    assert (tmp_path / EXPECTED_FILES[5]).read_text().startswith("u cabin-agent - ")
    config = load_config(tmp_path / "etc/cabin-agent/config.yaml", environ={})
    assert config.models.profile == "pi5"
    assert config.llm.n_gpu_layers == 0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_config_not_world_readable(tmp_path: Path) -> None:
    """The config may carry API keys: 0640, root:cabin-agent (the unit's group), never loosened."""
    install(tmp_path)
    config = tmp_path / "etc/cabin-agent/config.yaml"
    assert mode(config) == 0o640 and mode(config) & 0o007 == 0
    # In an image the group does not exist yet: tmpfiles.d sets it at boot, without touching the mode.
    tmpfiles = (tmp_path / "usr/lib/tmpfiles.d/cabin-agent.conf").read_text().splitlines()
    assert "z /etc/cabin-agent/config.yaml - root cabin-agent -" in tmpfiles
    unit = (REPO / "systemd/cabin-agent.service").read_text()
    assert "\nGroup=cabin-agent\n" in unit  # the group the service reads it as

    # An admin's stricter mode survives a re-install, also when the file is replaced (still our default)...
    config.chmod(0o600)
    install(tmp_path, "jetson")
    assert load_config(config, environ={}).models.profile == "jetson" and mode(config) == 0o600
    # ...and a changed config is kept as it is; when every user can read it, the installer says so.
    config.write_text(config.read_text() + "# mine\n")
    config.chmod(0o644)
    log = install(tmp_path)
    assert mode(config) == 0o644
    assert f"warning: {config} is open to every local user (mode 644) and may hold API keys" in log
    assert mode(tmp_path / "etc/cabin-agent/config.yaml.new") == 0o640
    config.chmod(0o640)
    assert "open to every local user" not in install(tmp_path)


def test_install_is_idempotent(tmp_path: Path) -> None:
    install(tmp_path)
    first = tree(tmp_path)
    install(tmp_path)
    assert tree(tmp_path) == first


def test_jetson_gets_the_drop_in_and_gpu_offload(tmp_path: Path) -> None:
    install(tmp_path, "jetson")
    dropin = tmp_path / "etc/systemd/system/cabin-agent.service.d/10-jetson.conf"
    assert dropin.read_bytes() == (REPO / "systemd/cabin-agent.service.d/jetson.conf").read_bytes()
    config = load_config(tmp_path / "etc/cabin-agent/config.yaml", environ={})
    assert (config.models.profile, config.llm.n_gpu_layers) == ("jetson", -1)
    # Switching profiles on an untouched config follows the new profile and drops the drop-in.
    install(tmp_path, "pi5")
    assert not dropin.exists()
    assert load_config(tmp_path / "etc/cabin-agent/config.yaml", environ={}).models.profile == "pi5"


def test_a_changed_config_is_never_overwritten(tmp_path: Path) -> None:
    install(tmp_path)
    config = tmp_path / "etc/cabin-agent/config.yaml"
    mine = config.read_text().replace("# language: en", "language: zh")
    config.write_text(mine)
    log = install(tmp_path, "jetson")
    assert config.read_text() == mine
    assert "kept your changed" in log and "does not select profile jetson" in log
    new = tmp_path / "etc/cabin-agent/config.yaml.new"
    assert load_config(new, environ={}).models.profile == "jetson"
    # Uninstall keeps a changed config (and state); purge removes it.
    run(tmp_path, "--uninstall")
    assert config.read_text() == mine and not new.exists()
    run(tmp_path, "--uninstall", "--purge")
    assert not config.exists()


def test_uninstall_removes_what_install_placed_and_keeps_state(tmp_path: Path) -> None:
    install(tmp_path)
    (tmp_path / "var/lib/cabin-agent/outbox.sqlite3").write_bytes(b"orders")
    (tmp_path / "etc/credstore/cabin-agent.meals-api-key").write_text("secret")
    (tmp_path / "etc/credstore/other-service.key").write_text("not ours")
    run(tmp_path, "--uninstall")
    for name in EXPECTED_FILES:
        assert not (tmp_path / name).exists(), name
    assert not (tmp_path / "opt/cabin-agent").exists()
    assert not (tmp_path / "etc/cabin-agent").exists()  # the untouched default config went with it
    assert (tmp_path / "var/lib/cabin-agent/outbox.sqlite3").read_bytes() == b"orders"
    assert (tmp_path / "etc/credstore/cabin-agent.meals-api-key").exists()
    run(tmp_path, "--uninstall")  # idempotent
    run(tmp_path, "--uninstall", "--purge")
    assert not (tmp_path / "var/lib/cabin-agent").exists()
    assert not (tmp_path / "var/cache/cabin-agent").exists()
    assert not (tmp_path / "etc/credstore/cabin-agent.meals-api-key").exists()
    assert (tmp_path / "etc/credstore/other-service.key").read_text() == "not ours"


def test_admin_drop_ins_survive_uninstall(tmp_path: Path) -> None:
    install(tmp_path, "jetson")
    override = tmp_path / "etc/systemd/system/cabin-agent.service.d/override.conf"
    override.write_text("[Service]\nMemoryMax=6G\n")
    run(tmp_path, "--uninstall")
    assert override.exists()
    assert not (override.parent / "10-jetson.conf").exists()


def test_bad_arguments(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(INSTALL), "--root", str(tmp_path), "--profile", "pi4"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 64 and "unknown profile pi4" in result.stderr
    result = subprocess.run(
        ["bash", str(INSTALL), "--frobnicate"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 64 and "usage" in result.stderr


def test_installed_unit_verifies(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    require(tool is not None, "systemd-analyze missing (apt-get install systemd)")
    install(tmp_path, "jetson")
    stub = tmp_path / "opt/cabin-agent/venv/bin/cabin-agent"  # --no-venv: stand-in for the real entry point
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    lib = tmp_path / "usr/lib/systemd/system"
    lib.mkdir(parents=True, exist_ok=True)
    for pattern in ("*.target", "*.slice"):
        for path in Path("/lib/systemd/system").glob(pattern):
            shutil.copy(path, lib / path.name)
    result = subprocess.run([tool, "verify", f"--root={tmp_path}", "cabin-agent.service"],  # type: ignore[list-item]
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_default_config_documents_every_key() -> None:
    """etc/config.yaml shows every key (commented out); uncommented it validates and equals the defaults."""
    text = (REPO / "etc/config.yaml").read_text()
    lines = []
    for line in text.splitlines():
        commented = re.match(r"^(\s*)# (\s*)(.*)$", line)
        if commented and re.match(r"^([a-z_]+:|- )", commented.group(3)):
            lines.append(commented.group(1) + commented.group(2) + commented.group(3))
        elif not line.lstrip().startswith("#"):
            lines.append(line)
    data = yaml.safe_load("\n".join(lines))
    config = validate(data)

    def keys(model: object, prefix: str = "") -> set[str]:
        found = set()
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if hasattr(type(value), "model_fields") and field.annotation is type(value):
                found |= keys(value, f"{prefix}{name}.")
            else:
                found.add(prefix + name)
        return found

    def present(tree: dict, prefix: str = "") -> set[str]:
        found = set()
        for key, value in tree.items():
            if isinstance(value, dict):
                found |= present(value, f"{prefix}{key}.")
            found.add(prefix + key)
        return found

    missing = keys(Config()) - present(data)
    assert not missing, f"etc/config.yaml does not document: {sorted(missing)}"
    # The comments show the real defaults (fails when a default in agent/core/config.py changes: update the file).
    shown, real = (
        config.model_dump(exclude={"models", "vehicle"}),
        Config().model_dump(exclude={"models", "vehicle"}),
    )
    stale = {f"{s}.{k}": (shown[s][k], v) for s in real if isinstance(real[s], dict)
             for k, v in real[s].items() if shown[s].get(k) != v}  # fmt: skip
    assert shown == real, f"etc/config.yaml shows stale defaults (shown, real): {stale}"


@pytest.mark.slow
def test_real_install_with_a_venv(tmp_path: Path) -> None:
    """The real path: venv, a prebuilt llama-cpp-python wheel (as an image build would use), the package."""
    wheels = sorted(Path.home().glob(".cache/cabin-agent/wheels/*/llama_cpp_python-*.whl"))
    require(bool(wheels), "no cached llama-cpp-python wheel (scripts/setup.sh builds one)")
    python = shutil.which("python3.11") or shutil.which("python3")
    env = {"LLAMA_WHEEL": str(wheels[-1]), "CABIN_AGENT_EXTRAS": "webrtcvad", "PYTHON": str(python)}
    run(tmp_path, "--profile", "dev", "--no-models", timeout=1500,
        env=env)  # fmt: skip
    venv = tmp_path / "opt/cabin-agent/venv"
    out = subprocess.run([venv / "bin/cabin-agent", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "status" in out.stdout
    check = subprocess.run([venv / "bin/python", "-c", "import llama_cpp, agent; print(agent.__file__)"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert check.returncode == 0 and str(venv) in check.stdout  # a regular install, not the clone
    stamp = (venv / ".cabin-agent-install").read_text()
    log = run(tmp_path, "--profile", "dev", "--no-models", timeout=600,
              env=env)  # fmt: skip
    assert "installing cabin-agent" not in log and (venv / ".cabin-agent-install").read_text() == stamp
