"""Real-model turns and sessions through the dev Qwen, with the reference service on loopback: the right tool
and arguments in both languages, a refusal that does not poison what follows, money only on a clear yes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.real import require

from agent.core.config import Config
from agent.core.errors import ModelError
from agent.devtools.eval_scoring import args_match

pytestmark = pytest.mark.model

CLI = [sys.executable, "-m", "agent"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One loaded model and one reference service; every test drives a fresh car (`new_car`)."""
    from agent.app.wiring import build_assistant
    from agent.devtools.eval_run import EvalWorld

    loop = asyncio.new_event_loop()
    try:
        first = loop.run_until_complete(asyncio.wait_for(build_assistant(Config()), 900))
    except ModelError as err:
        require(False, f"dev LLM not fetched ({err}); run `cabin-agent models fetch --profile dev`")
    built = EvalWorld(Config(), first.model, tmp_path_factory.mktemp("world"))
    yield loop, built
    loop.run_until_complete(first.close())
    built.close()
    loop.close()


class Car:
    def __init__(self, world) -> None:
        self.loop, self.world = world
        self.assistant = self.loop.run_until_complete(self.world.car())

    def say(self, text: str):
        return self.loop.run_until_complete(asyncio.wait_for(self.assistant.turn(text), 180))

    def close(self) -> None:
        self.loop.run_until_complete(self.world.scrap(self.assistant))


@pytest.fixture
def car(world):
    c = Car(world)
    yield c
    c.close()


def made(result) -> list[tuple[str, str]]:
    return [(c.name, c.status) for c in result.tool_calls]


CASES = [
    ("set the temperature to 21 degrees", "set_climate", {"temperature_c": 21}),
    ("take me home", "navigate_to", {"destination": "home"}),
    ("I want to hear Purple Haze", "play_media", {"query": "purple haze"}),
    ("play music now please", "play_media", {}),
    ("call Sarah", "call_contact", {"name": "Sarah"}),
    ("I'd like a double shot espresso", "order_meal", {"item": "double espresso"}),
    ("把温度调到二十二度", "set_climate", {"temperature_c": 22}),
    ("给妈妈打电话", "call_contact", {"name": "Mom"}),
    ("我要去公司", "navigate_to", {"destination": "work"}),
    ("我想点两杯拿铁", "order_meal", {"item": "latte", "quantity": 2}),
    ("where is my package", "track_package", {}),
]


@pytest.mark.parametrize(("text", "tool", "args"), CASES, ids=[c[0] for c in CASES])
def test_request_calls_the_right_tool(car, text, tool, args):
    result = car.say(text)
    assert result.tool_calls, f"no tool call for {text!r}; reply {result.reply!r}"
    call = result.tool_calls[0]
    assert call.name == tool, f"{text!r} -> {call.name} {call.arguments}"
    assert call.valid and call.status in ("ok", "awaiting-confirmation", "asking"), call
    assert args_match(args, call.arguments), f"{text!r} -> {call.arguments}"
    assert result.reply and len(result.reply) < 200


@pytest.mark.parametrize("text", ["what's the capital of France", "open the sunroof", "打开天窗", "讲个笑话"])
def test_questions_and_what_the_car_lacks_get_words_not_calls(car, text):
    result = car.say(text)
    assert result.tool_calls == [], result.as_dict()
    assert result.reply.strip()


def test_one_refused_request_does_not_poison_the_ones_after_it(car):
    """The session issue 9 measured: after one mishearing every later request was refused."""
    car.say("Don't forget to turn the airport.")
    car.say("open the sunroof")
    heard = [car.say(text) for text in ("Play something by Miles Davis.", "Warm it up to 25.", "Call mom.")]
    assert [made(r)[0][0] if r.tool_calls else None for r in heard] == [
        "play_media", "set_climate", "call_contact"], [r.reply for r in heard]
    assert heard[1].tool_calls[0].arguments["temperature_c"] == 25


def test_a_follow_up_uses_the_cabin_as_it_is(car):
    car.say("set the temperature to 20 degrees")
    warmer = car.say("make it two degrees warmer")
    assert made(warmer) == [("set_climate", "ok")]
    assert warmer.tool_calls[0].arguments["temperature_c"] == 22


@pytest.mark.parametrize("refusal", ["please don't", "okay never mind", "sure, cancel that", "好，不要了"])
def test_a_refusal_never_places_the_order(car, world, refusal):
    _, built = world
    before = len(built.service.orders())
    asked = car.say("order a large pepperoni pizza")
    assert asked.awaiting_confirmation and "89" in asked.reply, asked.as_dict()
    car.say(refusal)
    assert len(built.service.orders()) == before, f"{refusal!r} placed an order"


def test_a_multi_item_order_is_one_order_confirmed_once_and_placed_on_yes(car, world):
    _, built = world
    before = len(built.service.orders())
    asked = car.say("a large pepperoni pizza and two colas")
    assert asked.awaiting_confirmation, asked.as_dict()
    args = asked.tool_calls[0].arguments
    assert args["item"] == "pepperoni pizza" and args["size"] == "large"
    assert [(x["item"], x.get("quantity")) for x in args["more_items"]] == [("cola", 2)]
    assert "105" in asked.reply
    placed = car.say("yes")
    assert made(placed) == [("order_meal", "ok")], placed.as_dict()
    orders = built.service.orders()
    assert len(orders) == before + 1
    assert sorted((i["name"], i["quantity"]) for i in orders[-1]["items"]) == [("cola", 2), ("pepperoni pizza", 1)]


def test_yes_but_make_it_two_asks_again_with_the_change(car, world):
    _, built = world
    before = len(built.service.orders())
    car.say("order a large latte")
    changed = car.say("yes but make it two")
    assert changed.awaiting_confirmation and changed.reply.startswith("Two large lattes"), changed.reply
    assert len(built.service.orders()) == before


def test_a_missing_item_is_asked_for_and_the_answer_fills_it(car):
    asked = car.say("can you order some food for me")
    assert asked.asked and made(asked) == [("order_meal", "asking")], asked.as_dict()
    filled = car.say("a cheeseburger and fries")
    assert filled.awaiting_confirmation and "Burger Barn" in filled.reply, filled.reply


def test_say_cli_json_and_prompt_cache_restored_after_restart(tmp_path: Path):
    env = {**os.environ, "CABIN_AGENT__LOGGING__LEVEL": "warning"}
    outputs = []
    for _ in range(2):  # the second process must restore the prompt's KV cache from its session file
        proc = subprocess.run([*CLI, "say", "--json", "turn the fan to level 3"], capture_output=True, text=True,
                              env=env, timeout=900, check=False)
        if proc.returncode == 66:
            require(False, proc.stderr.strip())
        assert proc.returncode == 0, proc.stderr
        outputs.append(json.loads(proc.stdout))
    data = outputs[1]
    assert set(data) >= {"text", "tool_calls", "reply", "timings_ms", "decision"}
    assert data["tool_calls"][0]["name"] == "set_climate"
    assert data["tool_calls"][0]["arguments"].get("fan_level") == 3
    assert data["prompt_cache"]["source"] == "file"
    assert data["prompt_cache"]["ms"] < 2000


def test_grammar_gate_checks_one_token_per_step(car):
    """Constrained decoding only filters the whole vocabulary when the model's favourite token is not allowed,
    and arguments come out in the order they were said."""
    result = car.say("turn the fan to level 5 and switch the AC off")
    call = result.tool_calls[0]
    assert call.name == "set_climate" and call.valid
    assert call.arguments.get("fan_level") == 5 and call.arguments.get("ac") is False
    stats = car.assistant.model.last_grammar_stats
    assert stats["checks"] > 5
    assert stats["rejections"] < stats["checks"] / 2


def test_guessed_keys_give_the_calls_of_one_token_at_a_time(world):
    """The rest of a JSON key is guessed and checked in one batch; the calls are the ones a token-at-a-time
    loop writes, and the guesses are mostly kept (each wrong one costs a batch)."""
    requests = ["set the driver side to 23 and the fan to 3", "order a large latte and two croissants",
                "navigate to the airport", "把温度调到二十二度"]
    written: dict[int, list] = {}
    kept = guessed = 0
    model = world[1].model
    before = model.guess_tokens
    try:
        for guess in (0, 6):
            model.guess_tokens = guess
            written[guess] = []
            for text in requests:
                car = Car(world)
                try:
                    result = car.say(text)
                finally:
                    car.close()
                written[guess].append([(c.name, c.arguments) for c in result.tool_calls])
                if guess:
                    kept += model.last_decode_stats["kept"]
                    guessed += model.last_decode_stats["guessed"]
    finally:
        model.guess_tokens = before
    assert written[6] == written[0]
    assert all(written[0]), written[0]
    assert guessed >= 6 and kept >= 0.7 * guessed, (kept, guessed)
