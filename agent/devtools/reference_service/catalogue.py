"""The reference service's seed data: restaurants, menus, prices and packages (`data/catalogue.json`).

The car ships none of it: it asks for the catalogue (GET /catalogue) and keeps the answer, with its age, for
use in a tunnel. Tests and the eval read the same file to know what is on the menu.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CATALOGUE_FILE = Path(__file__).with_name("data") / "catalogue.json"


def load_catalogue(path: Path = CATALOGUE_FILE) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


SEED = load_catalogue()
RESTAURANTS: list[dict[str, Any]] = SEED["restaurants"]
SEED_PACKAGES: list[dict[str, Any]] = SEED["packages"]


def with_aliases(package: dict[str, Any]) -> dict[str, Any]:
    """A package as served: its row, and the other words people use for it (from the seed data)."""
    seed = next((p for p in SEED_PACKAGES if p["id"] == package.get("id")), {})
    return package | {"aliases": seed.get("aliases", [])}
