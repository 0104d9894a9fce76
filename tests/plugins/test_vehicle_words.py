"""The car's own words read from what the driver said: saved places and contacts by what the driver called them
(never by a word that merely contains one), and the climate zone named."""

from __future__ import annotations

import pytest

from agent.core.config import Config
from agent.plugins.vehicle import zone_said
from agent.plugins.vehicle.state import match_name, named_in

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


def test_a_place_named_inside_a_sentence() -> None:
    assert named_in("deliver it to the office instead", PLACES) == "work"
    assert named_in("送到公司", PLACES) == "work"
    assert named_in("送到宜家", PLACES) is None  # 家 alone is too common inside other words


@pytest.mark.parametrize(("said", "zone"), [
    ("driver side 20", "driver"), ("passenger side to 19", "passenger"), ("set the back to 23", "rear"),
    ("my wife is cold", "passenger"), ("all zones to 22", "all"), ("副驾驶那边调到19度", "passenger"),
    ("后排调到23", "rear"), ("我这边太冷了", "driver"),
    ("make it warmer", None), ("go back a song", None), ("rear and passenger to 20", None),
])
def test_the_zone_named_in_the_words(said: str, zone: str | None) -> None:
    assert zone_said(said) == zone
