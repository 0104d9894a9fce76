"""The reference packages on their way to the driver (seed data of the reference service, and the offline fixture)."""

from __future__ import annotations

SEED_PACKAGES = [
    {
        "id": "P1",
        "description": "running shoes",
        "description_zh": "跑鞋",
        "carrier": "SF Express",
        "status": "out for delivery",
        "status_zh": "派送中",
        "eta": "today 14:00-16:00",
        "destination": "home",
    },
    {
        "id": "P2",
        "description": "phone charger",
        "description_zh": "手机充电器",
        "carrier": "JD Logistics",
        "status": "in transit",
        "status_zh": "运输中",
        "eta": "tomorrow",
        "destination": "home",
    },
]


def find_package(packages: list[dict], wanted: str | None) -> dict | None:
    """The package the driver means ("the shoes", "充电器", "P2"); the first one when they did not say."""
    if not packages:
        return None
    if not wanted:
        return packages[0]
    w = wanted.casefold().strip()
    for p in packages:
        if p["id"].casefold() == w:
            return p
    for p in packages:
        words = [word.rstrip("s") for word in w.split() if len(word) > 2]
        if (
            any(word and word in p["description"] for word in words)
            or p["description_zh"] in wanted
            or (wanted in p["description_zh"])
        ):
            return p
    return None
