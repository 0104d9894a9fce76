"""The unit file: `systemd-analyze verify` passes, exposure stays <= 2.5, the contract settings hold."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.real import require

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "cabin-agent.service"
JETSON = REPO / "systemd" / "cabin-agent.service.d" / "jetson.conf"
MAX_EXPOSURE = 2.5


def settings(path: Path) -> dict[str, list[str]]:
    """Key -> every value (systemd keys repeat: LoadCredential=, SystemCallFilter=, DeviceAllow=)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    require(tool is not None, "systemd-analyze missing (apt-get install systemd)")
    return tool  # type: ignore[return-value]


def fake_root(tmp_path: Path, dropin: bool = False) -> Path:
    """A root with the unit, an executable at ExecStart= and the standard targets, for `--root=` analysis."""
    root = tmp_path / "root"
    venv_bin = root / "opt/cabin-agent/venv/bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "cabin-agent").write_text("#!/bin/sh\n")
    (venv_bin / "cabin-agent").chmod(0o755)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    shutil.copy(UNIT, units / UNIT.name)
    if dropin:
        (units / "cabin-agent.service.d").mkdir()
        shutil.copy(JETSON, units / "cabin-agent.service.d" / "10-jetson.conf")
    lib = root / "usr/lib/systemd/system"
    lib.mkdir(parents=True)
    for source in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        for path in Path(source).glob("*.target"):
            shutil.copy(path, lib / path.name)
        for path in Path(source).glob("*.slice"):
            shutil.copy(path, lib / path.name)
    return root


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), "verify", f"--root={root}", "cabin-agent.service"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def exposure(root: Path) -> tuple[float, str]:
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", f"--root={root}", "--no-pager",
         "cabin-agent.service"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for cabin-agent\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1)), result.stdout


@pytest.mark.parametrize("dropin", [False, True], ids=["unit", "unit+jetson"])
def test_systemd_analyze_verify_passes(tmp_path: Path, dropin: bool) -> None:
    result = verify(fake_root(tmp_path, dropin))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # not even a warning (unknown keys, bad values)


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    unit = root / "etc/systemd/system/cabin-agent.service"
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"))
    result = verify(root)
    assert "Failed to parse service type" in result.stderr  # so the passing test above means something


@pytest.mark.parametrize("dropin", [False, True], ids=["unit", "unit+jetson"])
def test_exposure_score_is_at_most_2_5(tmp_path: Path, dropin: bool) -> None:
    score, report = exposure(fake_root(tmp_path, dropin))
    assert score <= MAX_EXPOSURE, report
    # The number docs/deploy.md records must be the real one.
    assert f"**{score:.1f} OK**" in (REPO / "docs/deploy.md").read_text()


def test_service_contract_settings() -> None:
    s = settings(UNIT)
    one = {key: values[-1] for key, values in s.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["ExecStart"] == "/opt/cabin-agent/venv/bin/cabin-agent run"
    assert one["Restart"] == "on-failure"
    assert "78" in one["RestartPreventExitStatus"].split()
    for key in ("WatchdogSec", "TimeoutStopSec", "TimeoutStartSec", "MemoryMax", "CPUWeight", "Nice"):
        assert one.get(key), key
    # Offline-first: nothing waits for the network.
    assert not any("network" in value for values in s.values() for value in values)
    assert one["After"] == "sound.target"
    assert one["User"] == "cabin-agent" and "audio" in one["SupplementaryGroups"].split()
    for key in ("StateDirectory", "CacheDirectory", "ConfigurationDirectory", "RuntimeDirectory"):
        assert one[key] == "cabin-agent", key
    assert sorted(v.split(":")[0] for v in s["LoadCredential"]) == ["deliveries-api-key", "meals-api-key"]
    assert one["CapabilityBoundingSet"] == ""
    assert one["DevicePolicy"] == "closed" and "char-alsa rw" in s["DeviceAllow"]
    assert one["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert "@system-service" in s["SystemCallFilter"]
    assert one["ProtectSystem"] == "strict"
    for key in (
        "ProtectHome", "PrivateTmp", "NoNewPrivileges", "ProtectKernelTunables", "ProtectKernelModules",
        "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname", "LockPersonality",
        "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "PrivateUsers",
    ):  # fmt: skip
        assert one[key] == "yes", key


def test_credential_ids_match_what_the_config_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.core.config import load_config

    for value in settings(UNIT)["LoadCredential"]:
        (tmp_path / value.split(":")[0]).write_text(f"key-for-{value.split(':')[0]}\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load_config(environ={})
    assert config.services.meals.api_key.get_secret_value() == "key-for-meals-api-key"
    assert config.services.deliveries.api_key.get_secret_value() == "key-for-deliveries-api-key"
