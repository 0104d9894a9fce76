"""Saved places and contacts found by what the driver called them, and never by a word that merely contains one."""

from __future__ import annotations

import pytest

from agent.core.config import Config
from agent.plugins.vehicle.state import match_name

CONFIG = Config()
PLACES = [(p.name, [p.name, p.address, *p.aliases], p.name) for p in CONFIG.vehicle.places]
CONTACTS = [(c.name, [c.name, *c.aliases], c.name) for c in CONFIG.vehicle.contacts]


@pytest.mark.parametrize(("said", "place"), [
    ("home", "home"), ("my home", "home"), ("家", "home"), ("我家", "home"), ("回家", "home"),
    ("office", "work"), ("the office", "work"), ("公司", "work"), ("我的公司", "work"), ("回公司", "work"),
    ("the gym", "gym"), ("健身房", "gym"),
])
def test_a_saved_place_by_its_name_or_alias(said: str, place: str) -> None:
    assert match_name(said, PLACES) == place


@pytest.mark.parametrize("said", [
    "宜家",              # IKEA: 家 is in the word, it is not home
    "南京路那家星巴克",  # "that Starbucks on Nanjing Road": 家 is a measure word here
    "home depot", "the work site", "公司楼下的咖啡店", "airport", "机场",
])
def test_a_place_that_contains_a_saved_name_is_not_that_place(said: str) -> None:
    assert match_name(said, PLACES) is None


@pytest.mark.parametrize(("said", "contact"), [("mom", "Mom"), ("my mom", "Mom"), ("张民", "Zhang Min"), ("Sara", "Sarah")])
def test_a_contact_by_name_sound_or_near_spelling(said: str, contact: str) -> None:
    names = {c.name for c in CONFIG.vehicle.contacts}
    if contact not in names:
        pytest.fail(f"the default contacts changed: {sorted(names)}")
    assert match_name(said, CONTACTS) == contact
