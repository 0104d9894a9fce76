"""From the driver's words to an order against the served catalogue: names, aliases and Chinese names, sizes and
counts as said, one restaurant, one question when something is missing, an honest no when it is not sold."""

from __future__ import annotations

import pytest

from agent.devtools.reference_service import load_catalogue
from agent.plugins.meals.catalogue import Catalogue
from agent.plugins.meals.orders import describe, prepare_order


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.from_json(load_catalogue())


def lines(outcome) -> list[tuple[str, int, str]]:
    return [(ln["name"], ln["quantity"], ln["size"]) for ln in outcome.quote.lines]


@pytest.mark.parametrize(("said", "args", "language", "want"), [
    ("a large pepperoni pizza and two colas", {"item": "pepperoni pizza", "size": "large"}, "en",
     [("pepperoni pizza", 1, "large"), ("cola", 2, "regular")]),
    # The model mixed up which line the count and the size belong to; the words say it right.
    ("I'd like a large pepperoni pizza and two colas",
     {"item": "pepperoni pizza", "quantity": 2, "more_items": [{"item": "cola", "size": "large"}]}, "en",
     [("pepperoni pizza", 1, "large"), ("cola", 2, "regular")]),
    ("我想点两杯拿铁", {"item": "coffee", "quantity": 2}, "zh", [("latte", 2, "medium")]),
    ("please order two iced americanos", {"item": "iced americos", "quantity": 2}, "en",
     [("iced americano", 2, "medium")]),
    ("16 ounce mocha", {"item": "mocha", "quantity": 16}, "en", [("mocha", 1, "medium")]),
    ("a venti caramel macchiato", {"item": "caramel macchiato"}, "en", [("caramel macchiato", 1, "large")]),
    ("帮我从路易吉披萨点一份大号意大利辣香肠披萨", {"item": "large Italian辣香肠披萨", "restaurant": "路易吉披萨"}, "zh",
     [("pepperoni pizza", 1, "large")]),
    ("一个大号辣香肠披萨和两瓶可乐", {"item": "辣香肠披萨"}, "zh", [("pepperoni pizza", 1, "large"), ("cola", 2, "regular")]),
    ("I'd like a double shot espresso", {"item": "double shot espresso"}, "en", [("double espresso", 1, "regular")]),
    ("two lattes and a croissant", {"item": "latte", "quantity": 2}, "en",
     [("latte", 2, "medium"), ("croissant", 1, "regular")]),
    ("get me a boba", {"item": "boba"}, "en", [("bubble milk tea", 1, "medium")]),
    ("a cheeseburger, large fries and a coke", {"item": "cheeseburger"}, "en",
     [("cheeseburger", 1, "regular"), ("fries", 1, "large"), ("cola", 1, "regular")]),
])
def test_what_was_said_becomes_the_right_lines(catalogue, said, args, language, want):
    outcome = prepare_order(catalogue, args, said, language)

    assert outcome.question is None and outcome.problem is None, (outcome.question, outcome.problem)
    assert lines(outcome) == want


def test_a_size_nobody_said_is_never_the_models_guess(catalogue):
    outcome = prepare_order(catalogue, {"item": "latte", "size": "large"}, "a latte please", "en")

    assert lines(outcome) == [("latte", 1, "medium")]  # the default size, spoken in the confirmation


def test_a_restaurant_nobody_said_is_never_the_models_guess(catalogue):
    outcome = prepare_order(catalogue, {"item": "cola", "restaurant": "Burger Barn"}, "a cola please", "en")

    assert outcome.quote.restaurant.name == "Luigi's Pizzeria"  # the nearest that has it


def test_an_item_several_dishes_fit_asks_which(catalogue):
    outcome = prepare_order(catalogue, {"item": "pizza"}, "I want a pizza", "en")

    assert outcome.question.slot == "choice"
    assert {"pepperoni pizza", "margherita pizza"} <= set(outcome.question.options)


def test_a_pizza_with_no_size_asks_the_size(catalogue):
    outcome = prepare_order(catalogue, {"item": "pepperoni pizza"}, "a pepperoni pizza", "en")

    assert outcome.question.slot == "size"
    assert outcome.question.text == "What size pepperoni pizza: small, medium or large?"


def test_a_size_the_item_does_not_come_in_is_asked_again(catalogue):
    outcome = prepare_order(catalogue, {"item": "flat white", "size": "large"}, "a large flat white", "en")

    assert outcome.question.slot == "size" and "doesn't come in large" in outcome.question.text


def test_nothing_named_asks_what(catalogue):
    outcome = prepare_order(catalogue, {}, "order some food", "en")

    assert outcome.question.slot == "item"


def test_something_not_sold_nearby_is_said_honestly(catalogue):
    outcome = prepare_order(catalogue, {"item": "sushi burrito"}, "order a sushi burrito", "en")

    assert outcome.quote is None and outcome.problem == "I couldn't find sushi burrito on any menu nearby."


def test_one_order_is_one_restaurant(catalogue):
    outcome = prepare_order(catalogue, {"item": "pepperoni pizza", "size": "large",
                                        "more_items": [{"item": "salmon sushi"}]},
                            "a large pepperoni pizza and salmon sushi", "en")

    assert outcome.quote is None and "one restaurant at a time" in outcome.problem


def test_a_closed_restaurant_is_said_before_asking(catalogue):
    closed = Catalogue.from_json({**load_catalogue(), "restaurants": [
        {**r, "open": r["id"] != "bean-there"} for r in load_catalogue()["restaurants"]]})
    outcome = prepare_order(closed, {"item": "croissant"}, "a croissant", "en")

    assert outcome.problem == "Bean There Coffee is closed right now."


def test_the_confirmation_reads_like_speech_in_both_languages(catalogue):
    en = prepare_order(catalogue, {"item": "latte", "quantity": 2, "size": "large",
                                   "more_items": [{"item": "croissant"}]}, None, "en")
    zh = prepare_order(catalogue, {"item": "latte", "quantity": 2, "size": "large"}, None, "zh")

    assert describe(en.quote, "en") == "two large lattes and a croissant from Bean There Coffee, 75 yuan"
    assert describe(zh.quote, "zh") == "豆在咖啡的两杯大杯拿铁，60元"


def test_prices_come_from_the_served_catalogue(catalogue):
    data = load_catalogue()
    for r in data["restaurants"]:
        for item in r["items"]:
            if item["name"] == "latte":
                item["prices"]["large"] = 33
    outcome = prepare_order(Catalogue.from_json(data), {"item": "latte", "size": "large"}, None, "en")

    assert outcome.quote.total == 33


def test_the_catalogue_is_the_recognisers_vocabulary(catalogue):
    words = catalogue.vocabulary()

    assert {"latte", "拿铁", "Luigi's Pizzeria", "路易吉披萨"} <= set(words)
