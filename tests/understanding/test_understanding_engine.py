"""The turn engine with a scripted model: what reaches the car's plugins, what the driver hears, what it asks
back, what it remembers, and that money never moves without a clear yes."""

from __future__ import annotations

import asyncio

import pytest
from helpers.clock import Clock
from helpers.fakes import BrokenModel, FakeModel, OfflineMealsPlugin, Raw, RecordingVehicle

from agent.core.config import Config
from agent.core.errors import LlmError
from agent.plugins.loader import ToolRegistry
from agent.plugins.vehicle import VehiclePlugin
from agent.understanding import engine
from agent.understanding.engine import Assistant
from agent.understanding.record import TurnResult
from agent.understanding.replies import line

TURN_TIMEOUT_S = 10


def call(tool: str, **arguments) -> dict:
    return {"name": tool, "arguments": arguments}


SCRIPT = {
    "what's the meaning of life": "I can't answer that one. But I can keep you comfortable on the drive.",
    "set the temperature to 21 degrees": call("set_climate", temperature_c=21),
    "make it two degrees warmer": call("set_climate", temperature_change_c=2),
    "把温度调到二十二度": call("set_climate", temperature_c=22),
    # A small model filling in every optional argument nobody asked for.
    "warmer please, 23 degrees": call("set_climate", temperature_c=23, zone="driver", fan_level=5, ac=True),
    "open the sunroof": "Sorry, I can't open the sunroof in this car.",
    "don't forget to turn the airport": "Sorry, I didn't get that.",
    "set the temperature to 45 degrees": call("set_climate", temperature_c=45),
    "play jazz loudly": call("play_media", query="jazz", volume=11),
    "take me somewhere nice": call("navigate_to", destination="the airport"),
    "the airport": call("navigate_to", destination="the airport"),
    "play some jazz": call("play_media", query="jazz"),
    "play music now please": call("play_media", query="the song"),
    "could you navigate to the airport?": call("navigate_to", destination="the airport"),
    "is it spicy at all?": "I don't know, sorry.",
    "call mom": call("call_contact", name="mom"),
    "给妈妈打电话": call("call_contact", name="妈妈"),
    "我要去公司": call("navigate_to", destination="company"),
    "turn on the AC and play some jazz": [call("set_climate", ac=True), call("play_media", query="jazz")],
    "order a large pepperoni pizza": call("order_meal", item="pepperoni pizza", size="large"),
    "a large pepperoni pizza and two colas": call("order_meal", item="pepperoni pizza", size="large"),
    "I'd like a double shot espresso": call("order_meal", item="double shot espresso"),
    "please order two iced americanos": call("order_meal", item="iced americos", quantity=2),
    "16 ounce mocha please": call("order_meal", item="mocha", quantity=16),
    "我想点两杯拿铁": call("order_meal", item="coffee", quantity=2),
    "帮我从路易吉披萨点一份大号意大利辣香肠披萨": call("order_meal", item="large Italian辣香肠披萨",
                                                  restaurant="路易吉披萨"),
    "can you order some food for me": call("order_meal"),
    "I want a pizza": call("order_meal", item="pizza"),
    "order a sushi burrito": call("order_meal", item="sushi burrito"),
    "same as last time": call("repeat_last_order"),
    "navigate home instead": call("navigate_to", destination="home"),
    "hmm, wait": call("media_control", action="pause"),  # a small model hears "wait" as pause
    "fan off": call("set_climate", fan_level=0),
    "passenger side too": call("set_climate", zone="passenger"),
    # The zone said, left out by the model (the grammar lets it skip an optional property).
    "passenger side to nineteen please": call("set_climate", temperature_c=19),
    "副驾驶那边调到19度": call("set_climate", temperature_c=19),
    "打开收音机": call("play_media", query="收音机"),
    "cancel that": call("cancel_order"),
    "tell me something nice, I've set it up": "Sure, I've set the temperature for you.",
    "yes": "Yes to what?",
    "the engine is on fire": RuntimeError("CUDA error: out of memory"),
    "AC off and pause the music": Raw('set_climate {"ac": false}\nmedia_control {"action": "pause"}'),
}


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(outbox={"path": tmp_path / "outbox.sqlite3"})


@pytest.fixture
def vehicle() -> RecordingVehicle:
    return RecordingVehicle()


@pytest.fixture
def meals(config: Config) -> OfflineMealsPlugin:
    return OfflineMealsPlugin(config)


@pytest.fixture
def registry(config: Config, vehicle: RecordingVehicle, meals: OfflineMealsPlugin) -> ToolRegistry:
    registry = ToolRegistry()
    registry.add_plugin(VehiclePlugin(config, adapter=vehicle))
    registry.add_plugin(meals)
    return registry


@pytest.fixture
def model() -> FakeModel:
    return FakeModel(SCRIPT)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def car(config: Config, registry: ToolRegistry, model: FakeModel, clock: Clock):
    assistant = Assistant(config, registry, model, clock=clock)
    yield assistant
    await asyncio.wait_for(assistant.close(), TURN_TIMEOUT_S)


async def say(assistant: Assistant, text: str, **kwargs) -> TurnResult:
    return await asyncio.wait_for(assistant.turn(text, **kwargs), TURN_TIMEOUT_S)


def drive_part(car: Assistant, prompt: str) -> str:
    """What a prompt shows of the drive itself: everything after the cached instructions and examples."""
    prefix = car.model.render(car._prefix, []).text.removesuffix("<|assistant|>")
    assert prompt.startswith(prefix)
    return prompt[len(prefix):]


def statuses(result: TurnResult) -> list[tuple[str, str]]:
    return [(c.name, c.status) for c in result.tool_calls]


# ---------------------------------------------------------------- speaking and acting


async def test_a_question_no_tool_can_answer_gets_spoken_words_sentence_by_sentence(car, vehicle, model):
    heard: list[str] = []

    result = await say(car, "what's the meaning of life", on_text=heard.append)

    assert result.tool_calls == [] and vehicle.commands == []
    assert result.reply == SCRIPT["what's the meaning of life"]
    assert len(heard) == 2, "each sentence goes to the speaker as soon as it is complete"
    assert model.phases() == ["decide", "say"]
    assert result.decision["label"] == "say"


async def test_a_climate_request_reaches_the_vehicle_and_the_car_speaks_its_confirmation(car, vehicle):
    result = await say(car, "set the temperature to 21 degrees")

    assert vehicle.commands == [("set_climate", {"temperature_c": 21, "zone": "all", "fan_level": None, "ac": None})]
    assert statuses(result) == [("set_climate", "ok")]
    assert result.reply == "Temperature set to 21 degrees."
    assert {"first_token", "tool_call_complete", "tool_done", "total"} <= set(result.timings_ms)


async def test_a_chinese_request_gets_a_chinese_confirmation(car, vehicle):
    result = await say(car, "把温度调到二十二度")

    assert result.language == "zh" and result.reply == "温度已设为22度。"


async def test_saved_places_and_contacts_come_out_as_the_configured_names(car, vehicle):
    office = await say(car, "我要去公司")
    mom = await say(car, "给妈妈打电话")

    assert office.tool_calls[0].arguments == {"destination": "work"}
    assert vehicle.route["address"] == "88 Century Avenue"
    assert mom.tool_calls[0].arguments == {"name": "Mom"} and mom.reply == "正在呼叫妈妈。"


async def test_two_things_in_one_request_are_two_calls(car, vehicle):
    result = await say(car, "turn on the AC and play some jazz")

    assert statuses(result) == [("set_climate", "ok"), ("play_media", "ok")]
    assert result.reply == "Air conditioning on. Playing jazz."
    assert vehicle.media["query"] == "jazz" and vehicle.climate["ac"] is True


async def test_calls_written_on_two_lines_are_both_made(car, vehicle):
    result = await say(car, "AC off and pause the music")

    assert statuses(result) == [("set_climate", "ok"), ("media_control", "ok")]


async def test_an_optional_value_is_optional_play_music_plays_music(car, vehicle):
    result = await say(car, "play music now please")

    assert statuses(result) == [("play_media", "ok")]
    assert result.tool_calls[0].arguments == {}, "the model's invented 'the song' is dropped, the music plays"
    assert result.tool_calls[0].dropped_arguments == {"query": "the song"}


async def test_fan_off_in_words_is_level_zero(car, vehicle):
    result = await say(car, "fan off")

    assert result.tool_calls[0].arguments == {"fan_level": 0} and vehicle.climate["fan_level"] == 0


async def test_the_same_for_another_zone_takes_the_temperature_just_set(car, vehicle):
    await say(car, "set the temperature to 21 degrees")
    result = await say(car, "passenger side too")

    assert result.tool_calls[0].arguments == {"zone": "passenger", "temperature_c": 21}


@pytest.mark.parametrize("said", ["passenger side to nineteen please", "副驾驶那边调到19度"])
async def test_a_zone_the_model_left_out_is_taken_from_the_words(car, vehicle, said):
    result = await say(car, said)

    assert result.tool_calls[0].arguments == {"temperature_c": 19, "zone": "passenger"}
    assert vehicle.climate["zones"]["passenger"] == 19


async def test_a_query_that_only_names_the_radio_plays_the_radio(car, vehicle):
    result = await say(car, "打开收音机")

    assert result.tool_calls[0].arguments == {"kind": "radio"} and vehicle.media["kind"] == "radio"


async def test_a_relative_change_is_resolved_from_the_cabin_as_it_is(car, vehicle):
    await say(car, "set the temperature to 21 degrees")
    result = await say(car, "make it two degrees warmer")

    assert result.tool_calls[0].arguments["temperature_c"] == 23
    assert vehicle.climate["zones"]["driver"] == 23.0


# ---------------------------------------------------------------- what is refused, what is asked


async def test_arguments_that_break_the_schema_never_reach_the_vehicle(car, vehicle):
    result = await say(car, "set the temperature to 45 degrees")

    assert vehicle.commands == []
    assert result.asked and result.reply == "What temperature would you like?"


async def test_optional_arguments_nobody_said_are_dropped_and_reported(car, vehicle):
    result = await say(car, "warmer please, 23 degrees")

    [record] = result.tool_calls
    assert record.arguments == {"temperature_c": 23}
    assert set(record.dropped_arguments) == {"zone", "fan_level", "ac"}


async def test_an_invented_destination_becomes_a_question_and_the_answer_fills_it(car, vehicle):
    asked = await say(car, "take me somewhere nice")

    assert vehicle.commands == [] and asked.asked
    assert asked.reply == "Where would you like to go?"
    assert statuses(asked) == [("navigate_to", "asking")]
    done = await say(car, "the airport")
    assert statuses(done) == [("navigate_to", "ok")]
    assert vehicle.route["destination"] == "the airport"


async def test_a_refusal_never_poisons_the_requests_after_it(car, vehicle, model):
    await say(car, "don't forget to turn the airport")
    await say(car, "open the sunroof")
    result = await say(car, "play some jazz")

    assert statuses(result) == [("play_media", "ok")]
    drive = drive_part(car, model.prompts[-1])
    assert "sunroof" not in drive and "didn't get that" not in drive and "airport" not in drive


async def test_canned_lines_and_failed_turns_never_become_history(car):
    await say(car, "open the sunroof")
    await say(car, "set the temperature to 45 degrees")  # asks: not a call that was made
    await say(car, "yes")
    assert car.conversation.current() == []
    await say(car, "set the temperature to 21 degrees")
    assert [e.utterance for e in car.conversation.current()] == ["set the temperature to 21 degrees"]


async def test_history_goes_stale_with_time(car, clock, model):
    await say(car, "set the temperature to 21 degrees")
    clock.now += 10
    await say(car, "play some jazz")
    assert len(car.conversation.current()) == 2
    clock.now += car.config.llm.context_seconds + 1
    await say(car, "call mom")
    assert [e.utterance for e in car.conversation.current()] == ["call mom"]
    assert "set the temperature to 21" not in drive_part(car, model.prompts[-1])


async def test_a_spoken_answer_never_claims_an_action_no_tool_took(car, vehicle):
    result = await say(car, "tell me something nice, I've set it up")

    assert result.tool_calls == [] and vehicle.commands == []
    assert "I've set" not in result.reply
    assert result.reply == line("en", "cannot")


async def test_a_yes_with_nothing_pending_never_reaches_the_model(car, model):
    result = await say(car, "yes")

    assert result.reply == line("en", "nothing_pending") and model.calls == []


async def test_a_model_that_fails_raises_llm_error_and_the_next_turn_still_works(car, vehicle):
    with pytest.raises(LlmError):
        await say(car, "the engine is on fire")
    result = await say(car, "set the temperature to 21 degrees")
    assert statuses(result) == [("set_climate", "ok")]


async def test_a_model_that_dies_mid_answer_raises_instead_of_hanging(config, registry):
    assistant = Assistant(config, registry, BrokenModel(SCRIPT))
    try:
        with pytest.raises(LlmError):
            await say(assistant, "what's the meaning of life")
    finally:
        await assistant.close()


# ---------------------------------------------------------------- orders: the catalogue, questions, a clear yes


async def test_an_order_is_priced_from_the_catalogue_and_yes_places_it(car, meals):
    asked = await say(car, "order a large pepperoni pizza")

    assert asked.awaiting_confirmation and meals.orders == []
    assert asked.reply == "A large pepperoni pizza from Luigi's Pizzeria, 89 yuan. Shall I order it?"
    assert statuses(asked) == [("order_meal", "awaiting-confirmation")]
    placed = await say(car, "yes please")
    assert statuses(placed) == [("order_meal", "ok")]
    assert meals.orders[0].arguments["item"] == "pepperoni pizza" and meals.orders[0].arguments["size"] == "large"


@pytest.mark.parametrize("answer", ["please don't", "okay never mind", "sure, cancel that", "no",
                                    "好，不要了", "对，取消吧", "确定不要"])
async def test_a_refusal_never_confirms_a_purchase(car, meals, answer):
    await say(car, "order a large pepperoni pizza")
    result = await say(car, answer)

    assert meals.orders == [], f"{answer!r} placed the order"
    assert statuses(result) == [("order_meal", "cancelled")]


async def test_a_new_request_phrased_as_a_question_drops_the_purchase_and_is_done(car, meals):
    """"Shall I order it?" then "could you navigate to the airport?": not a question about the order. A car
    that said the price again to every question swallowed every request after it."""
    await say(car, "order a large pepperoni pizza")
    about = await say(car, "is it spicy at all?")  # about the order, or small talk: asked again
    assert about.reply.endswith("Shall I order it?") and car.pending is not None
    route = await say(car, "could you navigate to the airport?")

    assert meals.orders == [] and car.pending is None
    assert statuses(route) == [("navigate_to", "ok")], route.reply
    assert route.reply.startswith(line("en", "not_ordered")), route.reply


@pytest.mark.parametrize("answer", ["wait", "hmm", "等一下"])
async def test_a_hesitation_never_confirms_and_is_asked_once_more(car, meals, answer):
    await say(car, "order a large pepperoni pizza")
    result = await say(car, answer)

    assert meals.orders == [] and result.reply == line(result.language, "confirm_again")
    assert result.tool_calls == [] and result.awaiting_confirmation and car.pending is not None


async def test_a_hesitation_is_never_taken_for_a_new_request(car, meals, vehicle):
    await say(car, "order a large pepperoni pizza")
    result = await say(car, "hmm, wait")

    assert vehicle.commands == [] and meals.orders == [] and car.pending is not None
    assert result.reply == line("en", "confirm_again")


async def test_and_a_coke_adds_to_the_waiting_order_and_asks_again(car, meals):
    await say(car, "order a large pepperoni pizza")
    result = await say(car, "and a coke")

    assert result.awaiting_confirmation and meals.orders == []
    assert result.reply.startswith("A large pepperoni pizza and a cola from Luigi's Pizzeria, 97 yuan.")


async def test_deliver_it_to_the_office_changes_where_the_order_goes(car, meals):
    await say(car, "order a large pepperoni pizza")
    await say(car, "deliver it to the office")
    await say(car, "yes")

    assert meals.orders[0].arguments["delivery_address"] == "work"


async def test_a_question_about_the_order_keeps_it_waiting_and_a_later_yes_places_it(car, meals):
    question = await say(car, "order a large pepperoni pizza")
    again = await say(car, "how much is it?")

    assert meals.orders == [] and again.reply == question.reply and again.awaiting_confirmation
    await say(car, "yes")
    assert len(meals.orders) == 1


async def test_yes_but_make_it_two_changes_the_order_and_asks_again(car, meals):
    await say(car, "order a large pepperoni pizza")
    changed = await say(car, "yes but make it two")

    assert meals.orders == [] and changed.awaiting_confirmation
    assert changed.reply.startswith("Two large pepperoni pizzas from Luigi's Pizzeria, 178 yuan.")
    await say(car, "yes")
    assert meals.orders[0].arguments["quantity"] == 2


async def test_an_unclear_answer_is_asked_once_more_then_dropped(car, meals):
    await say(car, "order a large pepperoni pizza")
    first = await say(car, "the weather is nice today")
    second = await say(car, "the weather is nice today")

    assert first.reply == line("en", "confirm_again") and first.awaiting_confirmation
    assert second.reply == line("en", "dropped") and not second.awaiting_confirmation
    assert meals.orders == []
    assert car.pending is None


async def test_no_followed_by_a_request_drops_the_order_and_does_the_request(car, meals, vehicle):
    await say(car, "order a large pepperoni pizza")
    result = await say(car, "no, navigate home instead")

    assert meals.orders == []
    assert statuses(result) == [("order_meal", "cancelled"), ("navigate_to", "ok")]
    assert result.reply == "Okay, I won't order it. Navigating to home."


async def test_a_new_request_drops_the_pending_order_and_is_done(car, meals, vehicle):
    await say(car, "order a large pepperoni pizza")
    result = await say(car, "set the temperature to 21 degrees")

    assert meals.orders == []
    assert ("set_climate", "ok") in statuses(result)


async def test_a_yes_after_the_question_expired_orders_nothing(car, meals, clock):
    await say(car, "order a large pepperoni pizza")
    clock.now += engine.CONFIRMATION_TIMEOUT_S + 1
    result = await say(car, "yes")

    assert meals.orders == [] and result.reply == line("en", "nothing_pending")


async def test_a_multi_item_order_is_one_order_priced_and_confirmed_once(car, meals):
    asked = await say(car, "a large pepperoni pizza and two colas")

    assert asked.reply == ("A large pepperoni pizza and two colas from Luigi's Pizzeria, 105 yuan. "
                           "Shall I order it?")
    args = asked.tool_calls[0].arguments
    assert args["more_items"] == [{"item": "cola", "quantity": 2, "size": "regular"}]
    await say(car, "yes")
    assert len(meals.orders) == 1 and meals.orders[0].arguments["more_items"][0]["item"] == "cola"


@pytest.mark.parametrize(("utterance", "item", "quantity", "size"), [
    ("I'd like a double shot espresso", "double espresso", 1, "regular"),
    ("please order two iced americanos", "iced americano", 2, "medium"),
    ("16 ounce mocha please", "mocha", 1, "medium"),
    ("我想点两杯拿铁", "latte", 2, "medium"),
    ("帮我从路易吉披萨点一份大号意大利辣香肠披萨", "pepperoni pizza", 1, "large"),
])
async def test_what_the_driver_named_wins_over_the_models_spelling(car, utterance, item, quantity, size):
    result = await say(car, utterance)

    [record] = result.tool_calls
    assert record.status == "awaiting-confirmation", result.reply
    assert (record.arguments["item"], record.arguments.get("quantity", 1), record.arguments["size"]) == (
        item, quantity, size)


async def test_an_order_with_nothing_named_asks_what_and_the_answer_fills_it(car, meals):
    asked = await say(car, "can you order some food for me")

    assert asked.asked and asked.reply == "What would you like to order?"
    confirm = await say(car, "two lattes and a croissant")
    assert confirm.awaiting_confirmation
    assert confirm.reply == "Two medium lattes and a croissant from Bean There Coffee, 67 yuan. Shall I order it?"


async def test_a_pizza_asks_which_then_what_size(car, meals):
    which = await say(car, "I want a pizza")
    size = await say(car, "pepperoni")
    confirm = await say(car, "large")

    assert which.asked and "pepperoni pizza" in which.reply
    assert size.asked and size.reply == "What size pepperoni pizza: small, medium or large?"
    assert confirm.reply == "A large pepperoni pizza from Luigi's Pizzeria, 89 yuan. Shall I order it?"


async def test_something_not_on_any_menu_is_said_honestly_without_an_order(car, meals):
    result = await say(car, "order a sushi burrito")

    # Nothing asked for is on any menu: not a meal order after all, so no call is counted as made.
    assert result.tool_calls == [] and [c.status for c in result.rejected_calls] == ["not-applicable"]
    assert result.reply == "I couldn't find sushi burrito on any menu nearby."
    assert car.pending is None


async def test_the_same_as_last_time_reorders_what_was_placed(car, meals):
    await say(car, "a large pepperoni pizza and two colas")
    await say(car, "yes")
    # The offline desk records orders without the outbox; repeat reads the outbox's last order.
    meals.access.store.enqueue(service="meals", action="order_meal", method="POST", path="/orders",
                               body={"restaurant_id": "luigis", "items": [
                                   {"name": "pepperoni pizza", "size": "large", "quantity": 1},
                                   {"name": "cola", "size": "regular", "quantity": 2}]},
                               summary="a large pepperoni pizza and two colas", language="en",
                               expiry_seconds=600)
    result = await say(car, "same as last time")
    assert result.awaiting_confirmation
    assert result.reply.startswith("A large pepperoni pizza and two colas from Luigi's Pizzeria, 105 yuan")


# ---------------------------------------------------------------- a slow service is acknowledged


async def test_a_slow_order_desk_gets_one_moment_said_first_then_the_answer(car, meals, monkeypatch):
    """A service slower than the acknowledgement delay: the driver hears "One moment." at once, then the answer;
    the acknowledgement is not part of the reply and is said once."""
    call_tool = car.registry.call

    async def slow(name, args, ctx):
        await asyncio.sleep(0.3)  # the order desk across a slow link
        return await call_tool(name, args, ctx)

    monkeypatch.setattr(car.registry, "call", slow)
    quick = car.config.llm.model_copy(update={"acknowledge_after_seconds": 0.05})
    monkeypatch.setattr(car, "config", car.config.model_copy(update={"llm": quick}))
    await say(car, "order a large pepperoni pizza")
    heard: list[str] = []
    result = await say(car, "yes", on_text=heard.append)
    assert heard[0].strip() == "One moment."
    assert "Ordered" in "".join(heard[1:])
    assert "One moment" not in result.reply
    assert "acknowledged" in result.timings_ms
    assert len(meals.orders) == 1


async def test_a_quick_call_is_not_acknowledged(car, vehicle):
    heard: list[str] = []
    result = await say(car, "set the temperature to 21 degrees", on_text=heard.append)
    assert "acknowledged" not in result.timings_ms
    assert not any("moment" in h for h in heard)


# ---------------------------------------------------------------- prefill between turns


class PrefillingModel(FakeModel):
    def __init__(self, script) -> None:
        super().__init__(script)
        self.prefilled: list[list[int]] = []

    def prefill(self, tokens, should_stop=lambda: False) -> int:
        self.prefilled.append(list(tokens))
        return 0 if should_stop() else len(tokens)


async def test_prepare_puts_the_remembered_turns_and_the_words_so_far_ahead_of_the_next_prompt(config, registry):
    model = PrefillingModel(SCRIPT)
    car = Assistant(config, registry, model)
    try:
        await say(car, "set the temperature to 21 degrees")
        assert await car.prepare() > 0
        known = model.prefilled[-1]
        await car.prepare("make it two degrees")
        heard = model.prefilled[-1]
        await say(car, "make it two degrees warmer")
        assert heard[: len(known)] == known  # the words so far extend the remembered turns
        text = "".join(chr(t) for t in heard)
        assert "set the temperature to 21 degrees" in text and text.endswith("make it two degrees")
        # The turn's prompt starts with what was prefilled (the fake's tokens are characters).
        assert model.calls[-1].prompt_text.startswith(text)
    finally:
        await car.close()


async def test_prepare_gives_way_to_a_turn(config, registry):
    model = PrefillingModel(SCRIPT)
    car = Assistant(config, registry, model)
    try:
        car._in_turn = True  # a turn is running: prefill ahead of need must not start
        assert await car.prepare() == 0
        assert model.prefilled == []
    finally:
        car._in_turn = False
        await car.close()
