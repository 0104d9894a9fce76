"""The turn engine with a scripted model: what reaches the car's plugins, what the driver hears, what is
refused."""

from __future__ import annotations

import asyncio
import json

import pytest
from fakes import BrokenModel, FakeModel, OfflineMealsPlugin, Raw, RecordingVehicle

import agent.turn
from agent.config import Config
from agent.errors import LlmError
from agent.llm.prompts import line
from agent.plugins.loader import ToolRegistry
from agent.plugins.vehicle import VehiclePlugin
from agent.turn import Assistant, TurnResult

TURN_TIMEOUT_S = 10


def call(tool: str, **arguments) -> dict:
    return {"name": tool, "arguments": arguments}


SCRIPT = {
    "what's the meaning of life": "I can't answer that one, but I can keep you comfortable on the drive.",
    "set the temperature to 21 degrees": call("set_climate", temperature_c=21),
    "make it 22 instead": call("set_climate", temperature_c=22),
    "把温度调到二十二度": call("set_climate", temperature_c=22),
    # A small model filling in every optional argument nobody asked for.
    "warmer please, 23 degrees": call("set_climate", temperature_c=23, zone="driver", fan_level=5, ac=True),
    "open the sunroof": call("open_sunroof", position="half"),
    "set the temperature to 45 degrees": call("set_climate", temperature_c=45),
    "set the temperature to hot": call("set_climate", temperature_c="hot"),
    "play jazz loudly": call("play_media", query="jazz", volume=11),
    "take me somewhere nice": call("navigate_to", destination="the airport"),
    "it's a bit chilly in here": call("set_climate", temperature_c=24),
    "play some jazz": call("play_media", query="jazz"),
    "call mum": Raw('<tool_call>\n{"name": "call_contact", "arguments": {"name": "Mom"}}\n</tool_call>',
                    call("call_contact", name="Mom")),
    "order a latte": call("order_meal", item="latte"),
    "order two cheeseburgers": call("order_meal", item="cheeseburger", quantity=2),
    "来一杯拿铁": call("order_meal", item="拿铁"),
    "要不然去公司吧": call("navigate_to", destination="公司"),
    "yes": "Yes to what? Tell me what you'd like.",
    "the engine is on fire": RuntimeError("CUDA error: out of memory"),
}


@pytest.fixture
def config() -> Config:
    return Config()


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
async def car(config: Config, registry: ToolRegistry, model: FakeModel):
    assistant = Assistant(config, registry, model)
    yield assistant
    await asyncio.wait_for(assistant.close(), TURN_TIMEOUT_S)


async def say(assistant: Assistant, text: str, **kwargs) -> TurnResult:
    return await asyncio.wait_for(assistant.turn(text, **kwargs), TURN_TIMEOUT_S)


# ---------------------------------------------------------------- speaking and acting


async def test_a_question_no_tool_can_answer_gets_a_spoken_reply(car, vehicle, model):
    heard: list[str] = []

    result = await say(car, "what's the meaning of life", on_text=heard.append)

    assert result.tool_calls == []
    assert result.reply == SCRIPT["what's the meaning of life"]
    assert "".join(heard) == result.reply
    assert len(heard) > 1, "a spoken reply streams to the speaker as it is produced"
    assert vehicle.commands == []
    assert model.phases() == ["decide"]


async def test_a_climate_request_reaches_the_vehicle_and_the_car_speaks_its_confirmation(car, vehicle, model):
    heard: list[str] = []

    result = await say(car, "set the temperature to 21 degrees", on_text=heard.append)

    assert vehicle.commands == [
        ("set_climate", {"temperature_c": 21, "zone": "all", "fan_level": None, "ac": None})]
    assert vehicle.climate["zones"] == {"driver": 21.0, "passenger": 21.0, "rear": 21.0}
    [record] = result.tool_calls
    assert (record.name, record.arguments, record.status, record.valid) == (
        "set_climate", {"temperature_c": 21}, "ok", True)
    assert result.reply == "Temperature set to 21 degrees."
    assert heard == [result.reply]
    assert result.as_dict()["tool_calls"][0]["result"]["climate"]["zones"]["driver"] == 21.0
    # The arguments were decoded under the tool's own schema, after the name was checked; optional arguments
    # whose cue words were not said (zone, fan, A/C) are not in the grammar at all.
    assert model.phases() == ["decide", "name", "arguments"]
    schema = model.calls[-1].json_schema
    full = car.registry.get("set_climate").parameters
    assert set(schema["properties"]) == {"temperature_c"}
    assert schema["properties"]["temperature_c"] == full["properties"]["temperature_c"]
    assert {k: v for k, v in schema.items() if k != "properties"} == {k: v for k, v in full.items() if k != "properties"}


async def test_a_chinese_request_gets_a_chinese_confirmation(car, vehicle):
    result = await say(car, "把温度调到二十二度")

    assert result.language == "zh"
    assert vehicle.climate["zones"]["driver"] == 22.0
    assert result.reply == "温度已设为22度。"


async def test_a_call_wrapped_in_qwen_tool_call_tags_is_still_a_call(car, vehicle):
    result = await say(car, "call mum")

    assert [c.name for c in result.tool_calls] == ["call_contact"]
    assert vehicle.commands == [("call", {"name": "Mom", "number": "+86 138 0000 0001"})]
    assert result.reply == "Calling Mom."
    assert "<tool_call>" not in result.reply


async def test_timings_cover_first_token_and_the_whole_turn(car):
    result = await say(car, "set the temperature to 21 degrees")

    for mark in ("prompt_ready", "first_token", "tool_call_complete", "tool_done", "total"):
        assert mark in result.timings_ms, mark
    assert 0 <= result.timings_ms["first_token"] <= result.timings_ms["total"]
    assert result.as_dict()["timings_ms"] == result.timings_ms


async def test_a_second_model_pass_words_the_result_when_templated_confirmations_are_off(registry):
    config = Config.model_validate({"llm": {"templated_confirmations": False}})
    model = FakeModel(SCRIPT, second_pass="It's set to 21 now.\nAnything else?")
    assistant = Assistant(config, registry, model)
    try:
        result = await say(assistant, "set the temperature to 21 degrees")
    finally:
        await assistant.close()

    assert result.reply == "It's set to 21 now."  # one line: a driver is not read paragraphs
    assert model.phases() == ["decide", "name", "arguments", "second-pass"]
    assert '<|tool|>{"climate"' in model.calls[-1].prompt_text


# ---------------------------------------------------------------- what never reaches a plugin


async def test_an_unknown_tool_gets_an_honest_cannot_and_no_plugin_runs(car, vehicle, meals, model):
    heard: list[str] = []

    result = await say(car, "open the sunroof", on_text=heard.append)

    assert result.tool_calls == [], "an attempted call that reached no plugin is not a call made"
    [record] = result.rejected_calls
    assert (record.name, record.status, record.valid) == ("open_sunroof", "unknown-tool", False)
    assert result.reply == line("en", "cannot")
    assert heard == [result.reply]
    assert vehicle.commands == [] and meals.orders == []
    assert model.phases() == ["decide", "name"], "no arguments are decoded for a tool that does not exist"


@pytest.mark.parametrize(
    ("utterance", "problem"),
    [
        ("set the temperature to 45 degrees", "temperature_c: 45 is greater than the maximum of 30"),
        ("set the temperature to hot", "temperature_c: 'hot' is not of type 'number'"),
        ("play jazz loudly", "Additional properties are not allowed ('volume' was unexpected)"),
    ],
    ids=["out-of-range", "wrong-type", "extra-argument"],
)
async def test_arguments_that_break_the_schema_never_reach_the_vehicle(car, vehicle, utterance, problem):
    result = await say(car, utterance)

    assert result.tool_calls == []
    [record] = result.rejected_calls
    assert (record.status, record.valid) == ("invalid", False)
    assert problem in record.error
    assert record.result is None
    assert vehicle.commands == []
    assert result.reply == line("en", "clarify")


async def test_an_invented_destination_is_refused(car, vehicle):
    result = await say(car, "take me somewhere nice")

    [record] = result.rejected_calls
    assert record.status == "refused"
    assert "destination" in record.error
    assert vehicle.commands == [] and vehicle.route is None
    assert result.reply == line("en", "clarify")


async def test_chit_chat_answered_with_a_made_up_temperature_changes_nothing(car, vehicle):
    result = await say(car, "it's a bit chilly in here")

    [record] = result.rejected_calls
    assert record.status == "refused"
    assert record.dropped_arguments == {"temperature_c": 24}
    assert vehicle.commands == []
    assert vehicle.climate["zones"]["driver"] == 22.0


async def test_optional_arguments_nobody_said_are_dropped_and_reported(car, vehicle):
    result = await say(car, "warmer please, 23 degrees")

    [record] = result.tool_calls
    assert record.status == "ok"
    assert record.arguments == {"temperature_c": 23}
    assert record.dropped_arguments == {"zone": "driver", "fan_level": 5, "ac": True}
    assert result.as_dict()["tool_calls"][0]["dropped_arguments"] == record.dropped_arguments
    assert vehicle.commands == [
        ("set_climate", {"temperature_c": 23, "zone": "all", "fan_level": None, "ac": None})]
    assert vehicle.climate["fan_level"] == 2, "the fan stays where the driver left it"


# ---------------------------------------------------------------- purchases wait for the driver's yes


async def test_an_order_asks_with_the_price_first_and_yes_places_it(car, meals, model):
    question = await say(car, "order a latte")

    assert question.awaiting_confirmation
    assert question.reply == "A medium latte from Bean There Coffee, 26 yuan. Shall I order it?"
    [record] = question.tool_calls
    assert record.status == "awaiting-confirmation"
    assert meals.orders == [], "nothing is ordered before the driver says yes"
    asked = len(model.calls)

    heard: list[str] = []
    answer = await say(car, "yes please", on_text=heard.append)

    assert len(model.calls) == asked, "a yes is understood without the model"
    assert [(o.arguments, o.utterance) for o in meals.orders] == [({"item": "latte"}, "order a latte")]
    [record] = answer.tool_calls
    assert (record.name, record.status) == ("order_meal", "ok")
    assert answer.reply == "Ordered. It should arrive in about 25 minutes."
    assert heard == [answer.reply]
    assert not answer.awaiting_confirmation and car.pending is None


async def test_no_cancels_the_order(car, meals):
    await say(car, "order two cheeseburgers")

    answer = await say(car, "no thanks")

    assert meals.orders == []
    assert [(c.name, c.status) for c in answer.tool_calls] == [("order_meal", "cancelled")]
    assert answer.reply == line("en", "cancelled")
    assert car.pending is None


async def test_a_chinese_no_cancels_the_order(car, meals):
    await say(car, "order a latte")

    answer = await say(car, "不要")

    assert meals.orders == []
    assert answer.reply == line("zh", "cancelled")


async def test_a_chinese_order_is_asked_and_confirmed_in_chinese(car, meals):
    question = await say(car, "来一杯拿铁")
    answer = await say(car, "好的")

    assert question.reply == "豆在咖啡的1份中份拿铁，26元。要下单吗？"
    assert [o.arguments for o in meals.orders] == [{"item": "拿铁"}]
    assert answer.reply.startswith("已下单")


async def test_a_chinese_new_request_that_starts_like_yes_does_not_order(car, meals, vehicle):
    await say(car, "来一杯拿铁")

    other = await say(car, "要不然去公司吧")  # "or else, go to the office"

    assert meals.orders == []
    assert [c.name for c in other.tool_calls] == ["navigate_to"]
    assert vehicle.route["destination"] == "work"


async def test_a_different_request_drops_the_pending_order(car, meals, vehicle):
    await say(car, "order a latte")

    other = await say(car, "play some jazz")
    late_yes = await say(car, "yes")

    assert vehicle.commands == [("play", {"query": "jazz", "kind": "music"})]
    assert other.reply == "Playing jazz."
    assert meals.orders == [], "a yes after another request must not place the old order"
    assert late_yes.tool_calls == [] and late_yes.reply == line("en", "nothing_pending")


async def test_a_yes_after_the_question_expired_orders_nothing(car, meals, monkeypatch):
    monkeypatch.setattr(agent.turn, "CONFIRMATION_TIMEOUT_S", -1.0)
    await say(car, "order a latte")

    answer = await say(car, "yes")

    assert meals.orders == []
    assert answer.reply == line("en", "nothing_pending")


# ---------------------------------------------------------------- follow-ups and failures


async def test_a_follow_up_sees_the_previous_turn(car, vehicle, model):
    await say(car, "set the temperature to 21 degrees")

    result = await say(car, "make it 22 instead")

    follow_up_prompt = next(c.prompt_text for c in model.calls if c.utterance == "make it 22 instead")
    assert "<|user|>set the temperature to 21 degrees\n" in follow_up_prompt
    assert json.dumps(call("set_climate", temperature_c=21)) in follow_up_prompt
    assert "<|assistant|>Temperature set to 21 degrees.\n" in follow_up_prompt
    assert result.reply == "Temperature set to 22 degrees."
    assert vehicle.climate["zones"]["driver"] == 22.0


async def test_history_keeps_only_the_configured_number_of_turns(registry):
    config = Config.model_validate({"llm": {"history_turns": 1}})
    model = FakeModel(SCRIPT)
    assistant = Assistant(config, registry, model)
    try:
        await say(assistant, "what's the meaning of life")
        await say(assistant, "play some jazz")
        await say(assistant, "set the temperature to 21 degrees")
    finally:
        await assistant.close()

    last_prompt = next(c.prompt_text for c in model.calls
                       if c.utterance == "set the temperature to 21 degrees" and c.phase == "decide")
    assert "play some jazz" in last_prompt
    assert "meaning of life" not in last_prompt
    assert len(assistant.history) == 1


async def test_a_model_that_fails_mid_answer_raises_llm_error_instead_of_hanging(registry, config):
    assistant = Assistant(config, registry, BrokenModel(SCRIPT))
    try:
        with pytest.raises(LlmError, match="generation failed: llama_decode returned -1"):
            await say(assistant, "set the temperature to 21 degrees")
    finally:
        await assistant.close()


async def test_a_model_that_raises_at_once_raises_llm_error_and_the_next_turn_still_works(car, vehicle):
    with pytest.raises(LlmError) as caught:
        await say(car, "the engine is on fire")
    assert caught.value.code == "llm-failed"
    assert isinstance(caught.value.__cause__, RuntimeError)

    result = await say(car, "play some jazz")

    assert result.reply == "Playing jazz."
    assert vehicle.commands == [("play", {"query": "jazz", "kind": "music"})]


async def test_warm_renders_the_system_prompt_with_every_tool(car, model):
    info = await asyncio.wait_for(car.warm(), TURN_TIMEOUT_S)

    assert info["source"] == "fake"
    [prompt] = model.warmed
    for name in ("set_climate", "navigate_to", "order_meal"):
        assert name in prompt.text


async def test_a_yes_with_nothing_pending_never_reaches_the_model(car, vehicle, meals, model):
    """Otherwise the model guesses what was meant and claims it is done ("Great, I'll order it!")."""
    calls_before = len(model.calls)
    result = await say(car, "yes please")
    assert result.tool_calls == [] and result.reply == line("en", "nothing_pending")
    assert len(model.calls) == calls_before
    assert meals.orders == [] and vehicle.commands == []
    result = await say(car, "好的")
    assert result.reply == line("zh", "nothing_pending")
