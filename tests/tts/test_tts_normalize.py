"""Numbers, units, money, times and ids as a person says them, in English and Chinese."""

from __future__ import annotations

import pytest

from agent.tts.normalize import decimal_en, normalize, number_en, number_zh, ordinal_en


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (21, "twenty-one"),
        (40, "forty"),
        (105, "one hundred five"),
        (1001, "one thousand one"),
        (20005, "twenty thousand five"),
        (1_200_000, "one million two hundred thousand"),
        (-3, "minus three"),
    ],
)
def test_number_en(n: int, words: str) -> None:
    assert number_en(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "零"),
        (2, "二"),
        (10, "十"),
        (15, "十五"),
        (21, "二十一"),
        (89, "八十九"),
        (105, "一百零五"),
        (110, "一百一十"),
        (1001, "一千零一"),
        (2000, "两千"),
        (20005, "两万零五"),
        (100000, "十万"),
        (1_0000_0000, "一亿"),
    ],
)
def test_number_zh(n: int, words: str) -> None:
    assert number_zh(n) == words


def test_ordinals_and_decimals() -> None:
    assert [ordinal_en(n) for n in (1, 2, 3, 12, 21, 40, 100)] == [
        "first",
        "second",
        "third",
        "twelfth",
        "twenty-first",
        "fortieth",
        "one hundredth",
    ]
    assert decimal_en("3.5") == "three point five"
    assert decimal_en("-0.25") == "minus zero point two five"


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("21°C", "twenty-one degrees"),
        ("Set to 21 degrees.", "Set to twenty-one degrees."),
        ("It is -3°C outside", "It is minus three degrees outside"),
        ("21.5 °C", "twenty-one point five degrees"),
        ("70°F", "seventy degrees fahrenheit"),
        ("Arriving at 14:30.", "Arriving at two thirty p m."),
        ("14:00", "two p m"),
        ("at 9:05", "at nine oh five a m"),
        ("00:15", "twelve fifteen a m"),
        ("8:30 pm", "eight thirty p m"),
        ("89 yuan", "eighty-nine yuan"),
        ("¥89", "eighty-nine yuan"),
        ("It costs 26元", "It costs twenty-six yuan"),
        ("$12.50", "twelve dollars fifty"),
        ("3.5 km", "three point five kilometres"),
        ("1 km", "one kilometre"),
        ("100 km/h", "one hundred kilometres per hour"),
        ("25 minutes", "twenty-five minutes"),
        ("25 min", "twenty-five minutes"),
        ("2 h", "two hours"),
        ("battery at 80%", "battery at eighty percent"),
        ("Order M1001 is ready.", "Order M one zero zero one is ready."),
        ("parcel DL-2048", "parcel D L two zero four eight"),
        (
            "call +86 138 0000 0001",
            "call plus eight six one three eight zero zero zero zero zero zero zero one",
        ),
        ("the 2nd exit", "the second exit"),
        ("3 items", "three items"),
        ("Version 3.5", "Version three point five"),
        ("no numbers here.", "no numbers here."),
    ],
)
def test_normalize_en(text: str, spoken: str) -> None:
    assert normalize(text, "en") == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("21°C", "二十一度"),
        ("温度设为21度", "温度设为二十一度"),
        ("21 degrees", "二十一度"),
        ("室外-3°C", "室外零下三度"),
        ("14:30到达", "十四点三十分到达"),
        ("14:00", "十四点"),
        ("14:05", "十四点零五分"),
        ("2:00出发", "两点出发"),
        ("8:30 pm", "下午八点三十分"),
        ("一共89元", "一共八十九元"),
        ("¥89", "八十九元"),
        ("89 yuan", "八十九元"),
        ("¥89.5", "八十九点五元"),
        ("3.5公里", "三点五公里"),
        ("3.5 km", "三点五公里"),
        ("2公里", "两公里"),
        ("25分钟", "二十五分钟"),
        ("25 minutes", "二十五分钟"),
        ("时速100 km/h", "时速一百公里每小时"),
        ("电量80%", "电量百分之八十"),
        ("订单M1001已送达", "订单M一零零一已送达"),
        ("第2个路口", "第二个路口"),
        ("3杯拿铁", "三杯拿铁"),
    ],
)
def test_normalize_zh(text: str, spoken: str) -> None:
    assert normalize(text, "zh") == spoken


def test_language_codes_and_unknown_languages() -> None:
    assert normalize("21°C", "en_US") == "twenty-one degrees"
    assert normalize("21°C", "zh-CN") == "二十一度"
    assert normalize("21°C", "ko") == "21°C"
