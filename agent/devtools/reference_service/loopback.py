"""A config pointed at the reference service on loopback, for tests and the development tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.core.config import Config, _merge, validate


def service_config(url: str, outbox_file: Path, **overrides: Any) -> Config:
    """Both services at `url`, the outbox at `outbox_file`, probes fast enough for a test, no NetworkManager."""
    data: dict[str, Any] = {
        "services": {
            "meals": {"base_url": url, "timeout_seconds": 1.0},
            "deliveries": {"base_url": url, "timeout_seconds": 1.0},
        },
        "outbox": {"path": str(outbox_file)},
        "connectivity": {
            "probe_interval_seconds": 0.05,
            "probe_timeout_seconds": 0.5,
            "up_after": 2,
            "down_after": 2,
            "use_networkmanager": False,
        },
    }
    return validate(_merge(data, overrides))
