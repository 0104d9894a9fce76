"""A config pointed at the reference service on loopback: the one builder for tests, the eval, the demo, the
bench and the outbox crash drill."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.core.config import Config, _merge, validate


def loopback_config(
    url: str,
    outbox_file: Path | str,
    config: Config | None = None,
    *,
    timeout_seconds: float = 1.0,
    probe_interval_seconds: float | None = 0.05,
    probe_timeout_seconds: float | None = 0.5,
    up_after: int | None = None,
    down_after: int | None = None,
    **sections: Any,
) -> Config:
    """`config` (the defaults if None) with both services at the reference service at `url` (no API key),
    the outbox in `outbox_file` and no NetworkManager: the machine's own link says nothing about a loopback
    service.

    The probes default to fast enough for a test; a probe setting given as None keeps the config's own.
    `sections` are merged last, key by key (`outbox={"max_attempts": 3}`, `services={"meals": {...}}`).
    """
    endpoint = {"base_url": url, "api_key": None, "timeout_seconds": timeout_seconds}
    probes = {
        "probe_interval_seconds": probe_interval_seconds,
        "probe_timeout_seconds": probe_timeout_seconds,
        "up_after": up_after,
        "down_after": down_after,
    }
    loopback = {
        "services": {"meals": endpoint, "deliveries": endpoint},
        "outbox": {"path": str(outbox_file)},
        "connectivity": {k: v for k, v in probes.items() if v is not None} | {"use_networkmanager": False},
    }
    # model_dump keeps values as the config holds them (paths, secrets): validating it again changes nothing.
    base = config.model_dump() if config is not None else {}
    return validate(_merge(_merge(base, loopback), sections))
