"""Grounding: a tool call's arguments must come from what the driver said, not the model's imagination."""

from __future__ import annotations

import pytest

from agent.core.config import Config
from agent.core.words import numbers_in, string_grounded, value_grounded, zh_number
from agent.plugins.loader import load_registry
from agent.plugins.meals import MealsPlugin
from agent.plugins.vehicle import VehiclePlugin
from agent.understanding.grounding import ground_arguments

CONFIG = Config()
TOOLS = {t.name: t for t in VehiclePlugin(CONFIG).tools() + MealsPlugin(CONFIG).tools()}
# The same alias groups the turn engine builds from the saved places and contacts.
ALIASES = [[p.name, p.address, *p.aliases] for p in CONFIG.vehicle.places] + [
    [c.name, *c.aliases] for c in CONFIG.vehicle.contacts
]


# ---------------------------------------------------------------- numbers the driver said


@pytest.mark.parametrize(
    ("utterance", "number"),
    [
        ("set the temperature to 21 degrees", 21),
        ("make it 21.5", 21.5),
        ("set it to twenty one", 21),
        ("twenty-one degrees please", 21),
        ("thirty five", 35),
        ("fan to level three", 3),
        ("a couple of lattes", 2),
        ("a dozen croissants", 12),
        ("把温度调到二十二度", 22),
        ("调到十八度", 18),
        ("二十五点五度", 25.5),
        ("来两杯拿铁", 2),
        ("一百二十块以内", 120),
        ("调到25度", 25),
    ],
)
def test_numbers_the_driver_said_are_found(utterance, number):
    assert float(number) in numbers_in(utterance)


def test_twenty_one_is_one_number_not_two():
    assert numbers_in("set it to twenty one") == {21.0}


def test_no_numbers_in_chit_chat():
    assert numbers_in("it's chilly in here") == set()
    assert numbers_in("有点冷") == set()


def test_a_means_one():
    # "order a latte" grounds quantity 1; the price of that is "a bit chilly" grounding 1 too.
    assert numbers_in("order a latte") == {1.0}


@pytest.mark.parametrize(("text", "value"), [("二十二", 22), ("十八", 18), ("十", 10), ("二十五点五", 25.5),
                                             ("两", 2), ("一百二十", 120), ("零点五", 0.5)])
def test_chinese_numerals(text, value):
    assert zh_number(text) == value


def test_a_number_is_grounded_only_when_it_was_said():
    assert value_grounded(21, "set it to twenty one degrees")
    assert value_grounded(21.0, "set it to 21")
    assert not value_grounded(24, "it's a bit chilly in here")
    assert not value_grounded(22, "set it to 21")


# ---------------------------------------------------------------- strings the driver said


@pytest.mark.parametrize(
    ("value", "utterance"),
    [
        ("jazz", "play some JAZZ"),
        ("pizza", "I'd like a pizza"),
        ("Luigi's Pizzeria", "order from luigi's"),  # part of a name is enough
        ("pepperoni pizza", "I'd like a large pepperoni"),
        ("Lanzhou Noodle House", "get me noodles from the lanzhou noodle place"),
        ("拿铁", "来一杯拿铁"),
        ("美式咖啡", "来杯美式"),  # a two-character piece of the value was said
        ("家", "导航回家"),
        ("home", "导航回家"),  # a Chinese request translated by the model: given the benefit of the doubt
    ],
)
def test_said_values_are_grounded(value, utterance):
    assert string_grounded(value, utterance, ALIASES)


@pytest.mark.parametrize(
    ("value", "utterance"),
    [
        ("your favorite pizza place", "I'd like a pizza"),
        ("the airport", "take me somewhere nice"),
        ("Sarah", "call mum"),
        ("张三", "给李伟打电话"),
        ("", "play some jazz"),
        ("Luigi's Pizzeria", "I'd like a pizza"),
    ],
)
def test_invented_values_are_not_grounded(value, utterance):
    assert not string_grounded(value, utterance, ALIASES)


def test_aliases_ground_a_saved_name_said_another_way():
    assert string_grounded("Mom", "call mum", ALIASES)
    assert string_grounded("Mom", "给妈妈打电话", ALIASES)
    assert string_grounded("妈妈", "call mother", ALIASES)
    assert string_grounded("work", "take me to the office", ALIASES)
    assert string_grounded("88 Century Avenue", "导航到公司", ALIASES)


def test_a_translated_value_from_another_alias_group_is_not_grounded():
    # "回家" is home; the model saying "work" picked the wrong saved place.
    assert string_grounded("home", "导航回家", ALIASES)
    assert not string_grounded("work", "导航回家", ALIASES)
    assert not string_grounded("Li Wei", "给妈妈打电话", ALIASES)


# ---------------------------------------------------------------- whole calls with the real tools


def test_optional_climate_arguments_nobody_said_are_dropped():
    kept, missing = ground_arguments(
        TOOLS["set_climate"], {"temperature_c": 21, "zone": "driver", "fan_level": 3, "ac": True},
        "set the temperature to 21 degrees", ALIASES)

    assert kept == {"temperature_c": 21}
    assert missing == []


def test_climate_arguments_that_were_said_are_kept():
    args = {"temperature_c": 21, "zone": "driver", "fan_level": 3, "ac": True}

    kept, missing = ground_arguments(
        TOOLS["set_climate"], args, "set the driver side to 21 with the fan on 3 and the AC on", ALIASES)

    assert kept == args and missing == []


def test_chinese_climate_request_keeps_the_ac_and_the_temperature():
    kept, missing = ground_arguments(TOOLS["set_climate"], {"temperature_c": 22, "ac": True, "fan_level": 4},
                                     "把空调调到二十二度", ALIASES)

    assert kept == {"temperature_c": 22, "ac": True}
    assert missing == []


def test_an_invented_temperature_is_dropped_from_an_optional_argument():
    kept, missing = ground_arguments(TOOLS["set_climate"], {"temperature_c": 24}, "it's a bit chilly in here")

    assert kept == {} and missing == []  # nothing left to do: the turn engine refuses the empty call


def test_an_order_with_its_quantity_and_size_said_keeps_them():
    kept, missing = ground_arguments(TOOLS["order_meal"], {"item": "latte", "quantity": 2, "size": "large"},
                                     "two large lattes please")
    kept_zh, missing_zh = ground_arguments(
        TOOLS["order_meal"], {"item": "拿铁", "quantity": 2, "size": "large"}, "来两杯大杯拿铁")

    assert kept == {"item": "latte", "quantity": 2, "size": "large"} and missing == []
    assert kept_zh == {"item": "拿铁", "quantity": 2, "size": "large"} and missing_zh == []


@pytest.mark.parametrize(
    ("tool", "args", "utterance", "missing"),
    [
        ("navigate_to", {"destination": "home"}, "导航回家", []),
        ("navigate_to", {"destination": "work"}, "导航回家", ["destination"]),
        ("navigate_to", {"destination": "the airport"}, "take me home", ["destination"]),
        ("call_contact", {"name": "Mom"}, "call mum", []),
        ("call_contact", {"name": "Sarah"}, "call mum", ["name"]),
        ("play_media", {"query": "jazz"}, "play some jazz", []),
    ],
)
def test_required_arguments_must_come_from_the_driver(tool, args, utterance, missing):
    kept, found_missing = ground_arguments(TOOLS[tool], args, utterance, ALIASES)

    assert found_missing == missing
    assert kept == args


def test_a_media_kind_is_kept_only_when_it_was_asked_for():
    assert ground_arguments(TOOLS["play_media"], {"query": "jazz", "kind": "radio"}, "play some jazz")[0] == {
        "query": "jazz"}
    assert ground_arguments(TOOLS["play_media"], {"query": "jazz", "kind": "radio"},
                            "play a jazz radio station")[0] == {"query": "jazz", "kind": "radio"}


def test_prune_schema_leaves_out_optional_arguments_nobody_cued():
    from agent.understanding.grounding import prune_schema

    registry = load_registry(Config())
    climate = registry.get("set_climate")
    # A change only when the driver said which way: "passenger side to nineteen" is a setting.
    assert set(prune_schema(climate, "set the temperature to 21 degrees")["properties"]) == {"temperature_c"}
    assert set(prune_schema(climate, "passenger side to nineteen please")["properties"]) == {"temperature_c", "zone"}
    assert set(prune_schema(climate, "make it two degrees warmer")["properties"]) == {
        "temperature_c", "temperature_change_c"}
    assert "temperature_change_c" in prune_schema(climate, "我这边有点冷")["properties"]
    assert set(prune_schema(climate, "turn on the AC and set the fan to 3")["properties"]) == {
        "temperature_c", "fan_level", "ac"}
    every = prune_schema(climate, "passenger side up to 20, fan 2, AC off")
    assert set(every["properties"]) == set(climate.parameters["properties"])
    assert every["properties"]["fan_level"]["enum"] == list(range(8))  # bounded: no fan level of 10**15
    order = registry.get("order_meal")
    kept = set(prune_schema(order, "I'd like two pepperoni pizzas")["properties"])
    # Sizes and restaurants are checked against the catalogue and the words, not left out of the grammar.
    assert {"item", "quantity", "more_items"} <= kept and "delivery_address" not in kept
    assert "delivery_address" in prune_schema(order, "a latte, deliver it to the office")["properties"]
