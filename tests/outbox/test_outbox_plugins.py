"""The meals and deliveries plugins on the real service, wired like the daemon wires them (shared store, monitor,
event bus, a running dispatcher) and like a one-shot `say` (nothing shared). The turn engine's confirmation is
played here as it will be: ask `confirmation_prompt`, then run the handler only on "yes"."""

from __future__ import annotations

import asyncio
import time

from helpers.clock import SteppedClock
from helpers.outbox import PIZZA, daemon
from helpers.waiting import until

from agent.devtools.reference_service import loopback_config
from agent.outbox.entries import CANCELLED, DELIVERED, OPEN_STATES
from agent.outbox.store import OutboxStore
from agent.plugins.base import ToolContext, ToolResult
from agent.plugins.deliveries import DeliveriesPlugin
from agent.plugins.meals import MealsPlugin

T = 10.0


async def turn(plugin, config, tool: str, args: dict, answer: str = "yes", language: str = "en"):
    """The turn engine's protocol: prepare (the plugin's own terms, or a problem), ask the confirmation, run the
    handler only on "yes". Returns (prompt, result or None when the driver said no); a problem found while
    preparing comes back as a failed result without a prompt."""
    ctx = ToolContext(config=config, language=language)
    spec = {t.name: t for t in plugin.tools()}[tool]
    prepared = await asyncio.wait_for(plugin.prepare(ctx, tool, args), T)
    if prepared.problem is not None:
        return None, ToolResult(ok=False, error=prepared.problem, say=prepared.problem)
    prompt = None
    if spec.needs_confirmation:
        prompt = await asyncio.wait_for(plugin.confirmation_prompt(ctx, tool, prepared.arguments, prepared), T)
        if prompt is not None and answer != "yes":
            return prompt, None
    return prompt, await asyncio.wait_for(spec.handler(ctx, prepared.arguments), T)


def test_tool_names_and_schemas_are_kept():
    config = loopback_config("http://127.0.0.1:9", "/tmp/unused.db")
    names = [t.name for t in MealsPlugin(config).tools()] + [t.name for t in DeliveriesPlugin(config).tools()]
    assert names == [
        "search_restaurants",
        "order_meal",
        "repeat_last_order",
        "order_status",
        "cancel_order",
        "list_deliveries",
        "track_package",
        "reschedule_delivery",
        "redirect_delivery",
        "hold_at_locker",
    ]
    order = {t.name: t for t in MealsPlugin(config).tools()}["order_meal"]
    # No argument is required: "order some food" is a call, and the car asks what (not a refusal).
    assert order.needs_confirmation and order.requires_network and "required" not in order.parameters
    assert "delivery_address" in order.parameters["properties"]


async def test_yes_places_the_order_once_with_the_priced_confirmation(service, tmp_path):
    async with daemon(service, tmp_path) as (config, store, _, meals, _):
        prompt, result = await turn(meals, config, "order_meal", PIZZA, "yes")
        entry = store.latest(service="meals", action="order_meal")
    assert prompt == "A large pepperoni pizza from Luigi's Pizzeria, 89 yuan. Shall I order it?"
    assert result.ok and result.say == "Ordered. It should arrive at home in about 25 minutes."
    assert entry.state == DELIVERED and entry.body["delivery_address"] == "12 Linden Road"
    assert len(service.orders()) == 1 and service.orders()[0]["total"] == 89


async def test_no_drops_it_nothing_is_queued_or_ordered(service, tmp_path):
    async with daemon(service, tmp_path) as (config, store, _, meals, _):
        prompt, result = await turn(meals, config, "order_meal", PIZZA, "no")
        assert prompt.endswith("Shall I order it?") and result is None
        assert store.list() == []
    assert service.orders() == []


async def test_chinese_confirmation(service, tmp_path):
    async with daemon(service, tmp_path) as (config, _, _, meals, _):
        prompt, _ = await turn(meals, config, "order_meal", PIZZA, "no", language="zh")
    assert prompt == "路易吉披萨的一份大份意大利辣香肠披萨，89元。要下单吗？"


async def test_a_restaurant_the_catalogue_shows_closed_is_said_before_asking(service, tmp_path):
    service.set_restaurant_open("luigis", False)
    async with daemon(service, tmp_path) as (config, store, _, meals, _):
        prompt, result = await turn(meals, config, "order_meal", PIZZA)
        assert prompt is None and result.say == "Luigi's Pizzeria is closed right now."
        assert store.list() == []


async def test_over_the_spend_limit_is_refused_without_asking(service, tmp_path):
    async with daemon(service, tmp_path, services={"spend_limit": 100}) as (config, store, _, meals, _):
        prompt, result = await turn(meals, config, "order_meal", {**PIZZA, "quantity": 2})
        assert prompt is None and not result.ok
        assert result.say == "That is 178 yuan, over your 100 yuan spend limit."
        assert store.list() == []
    assert service.orders() == []


async def into_the_tunnel(service, monitor, meals) -> None:
    """The car has the catalogue from before (it was online once), then the link goes."""
    assert await asyncio.wait_for(meals.catalogue(), T) is not None
    service.go_down()
    await until(lambda: monitor.state("meals").online is False, T)


async def test_offline_order_is_queued_then_placed_and_announced(service, tmp_path):
    async with daemon(service, tmp_path) as (config, store, monitor, meals, _):
        await into_the_tunnel(service, monitor, meals)
        _, result = await turn(meals, config, "order_meal", {**PIZZA, "delivery_address": "office"})
        entry = store.latest(service="meals", action="order_meal")
        assert result.ok and result.data["queued"]
        assert result.say.startswith("We're offline, so I've queued it.")
        assert entry.state == "pending"  # committed before the car said "queued"
        _, status = await turn(meals, config, "order_status", {})
        assert "is queued, waiting for the connection" in status.say
        service.come_up()
        await until(lambda: store.get(entry.id).state not in OPEN_STATES, T)
        notices = store.pending_announcements()
    assert [n.text for n in notices] == [
        "Your order is placed: a large pepperoni pizza from Luigi's Pizzeria, 89 yuan. "
        "It should arrive in about 25 minutes."
    ]
    assert service.orders()[0]["delivery_address"] == "88 Century Avenue"


async def test_cancel_a_queued_order_before_it_left_the_car(service, tmp_path):
    async with daemon(service, tmp_path) as (config, store, monitor, meals, _):
        await into_the_tunnel(service, monitor, meals)
        await turn(meals, config, "order_meal", PIZZA)
        prompt, result = await turn(meals, config, "cancel_order", {})
        entry = store.latest(service="meals", action="order_meal")
        assert prompt == "Cancel your order of a large pepperoni pizza from Luigi's Pizzeria, 89 yuan?"
        assert result.ok and entry.state == CANCELLED
        assert result.say == "Cancelled. The order had not been sent yet."
        service.come_up()
        await asyncio.sleep(0.3)
    assert service.orders() == []


async def test_cancel_a_placed_order_online(service, tmp_path):
    async with daemon(service, tmp_path) as (config, _, _, meals, _):
        await turn(meals, config, "order_meal", PIZZA)
        _, result = await turn(meals, config, "cancel_order", {})
        _, status = await turn(meals, config, "order_status", {})
    assert result.say == "Your order is cancelled."
    assert status.say == "Your pepperoni pizza order is cancelled."


async def test_4xx_is_told_to_the_driver_right_away(service, tmp_path):
    async with daemon(service, tmp_path) as (config, _, _, meals, _):
        await meals.catalogue()  # still says open: the service's refusal is what the driver must hear
        service.set_restaurant_open("luigis", False)
        _, result = await turn(meals, config, "order_meal", PIZZA)
    assert not result.ok
    assert result.say == (
        "I couldn't place your order of a large pepperoni pizza from Luigi's Pizzeria, 89 yuan: "
        "Luigi's Pizzeria is closed right now."
    )


async def test_offline_status_is_the_last_known_one_with_its_age(service, tmp_path):
    clock = SteppedClock(time.monotonic)  # the outbox clock's source: moving it is time passing
    async with daemon(service, tmp_path, clock=clock) as (config, store, monitor, meals, deliveries):
        await turn(meals, config, "order_meal", PIZZA)
        await turn(meals, config, "order_status", {})
        await turn(deliveries, config, "list_deliveries", {})
        service.go_down()
        await until(lambda: monitor.state("meals").online is False, T)
        clock.offset = 12 * 60
        _, status = await turn(meals, config, "order_status", {})
        _, packages = await turn(deliveries, config, "track_package", {"package": "shoes"})
    assert status.say == "As of 12 minutes ago, your pepperoni pizza is preparing, about 25 minutes away."
    assert status.data["source"] == "cache"
    assert (
        packages.say
        == "As of 12 minutes ago, your running shoes: out for delivery, expected today 14:00-16:00."
    )


async def test_delivery_changes_online_and_queued_offline(service, tmp_path):
    async with daemon(service, tmp_path) as (config, store, monitor, _, deliveries):
        _, moved = await turn(
            deliveries, config, "reschedule_delivery", {"package": "shoes", "day": "tomorrow"}
        )
        _, redirected = await turn(
            deliveries, config, "redirect_delivery", {"package": "charger", "destination": "the office"}
        )
        service.go_down()
        await until(lambda: monitor.state("deliveries").online is False, T)
        _, locker = await turn(deliveries, config, "hold_at_locker", {"package": "shoes"})
        assert locker.data["queued"] and locker.say.startswith("We're offline")
        service.come_up()
        entry = store.latest(service="deliveries", action="hold_at_locker")
        await until(lambda: store.get(entry.id).state == DELIVERED, T)
        notices = [a.text for a in store.pending_announcements()]
    assert moved.say == "Your running shoes will now come tomorrow."
    assert redirected.say == "Your phone charger will go to 88 Century Avenue (work)."
    assert notices == ["Done: your running shoes will be left at the nearest parcel locker."]
    assert [e["kind"] for e in service.effects()] == ["reschedule", "redirect", "locker"]


async def test_one_shot_say_without_the_daemon_opens_its_own_store_and_delivers(service, tmp_path):
    config = loopback_config(service.url, tmp_path / "outbox.db")
    meals = MealsPlugin(config)  # no services: what `cabin-agent say` gets
    try:
        _, result = await turn(meals, config, "order_meal", PIZZA)
        _, search = await turn(meals, config, "search_restaurants", {"query": "noodles"})
    finally:
        await asyncio.wait_for(meals.stop(), T)
    assert result.say == "Ordered. It should arrive at home in about 25 minutes."
    assert search.say == "Lanzhou Noodle House is 0.8 kilometres away."
    store = OutboxStore(tmp_path / "outbox.db")
    assert store.latest(service="meals", action="order_meal").state == DELIVERED
    store.close()
    assert len(service.orders()) == 1


async def test_move_them_to_saturday_is_about_the_package_named_before(service, tmp_path):
    """The package a follow-up means comes from the drive when the driver does not name it again."""
    from helpers.fakes import FakeModel

    from agent.plugins.loader import ToolRegistry
    from agent.understanding.engine import Assistant

    script = {
        "where are my shoes": {"name": "track_package", "arguments": {"package": "shoes"}},
        "move them to Saturday": {"name": "reschedule_delivery", "arguments": {"day": "Saturday"}},
    }
    async with daemon(service, tmp_path) as (config, _, _, _, deliveries):
        registry = ToolRegistry()
        registry.add_plugin(deliveries)
        assistant = Assistant(config, registry, FakeModel(script))
        try:
            tracked = await asyncio.wait_for(assistant.turn("where are my shoes"), T)
            moved = await asyncio.wait_for(assistant.turn("move them to Saturday"), T)
        finally:
            await assistant.close()
    assert tracked.tool_calls[0].arguments == {"package": "running shoes"}
    assert moved.tool_calls[0].arguments == {"day": "Saturday", "package": "running shoes"}
    assert moved.tool_calls[0].status == "ok", moved.reply
    assert any(e["kind"] == "reschedule" and e["subject"] == "P1" for e in service.effects()), service.effects()


async def test_my_package_names_no_package(service, tmp_path):
    """"Where is my package?" read as a package called "package" is about all of them, and a change to "my
    parcel" asks which one rather than saying there is no package called "my parcel"."""
    async with daemon(service, tmp_path) as (config, _, _, _, deliveries):
        ctx = ToolContext(config=config, language="en", utterance="Where is my package?")
        tracked = await asyncio.wait_for(deliveries.prepare(ctx, "track_package", {"package": "package"}), T)
        _, everything = await turn(deliveries, config, "track_package", tracked.arguments)
        ctx = ToolContext(config=config, language="en", utterance="move my parcel to tomorrow")
        moved = await asyncio.wait_for(
            deliveries.prepare(ctx, "reschedule_delivery", {"package": "my parcel", "day": "tomorrow"}), T
        )
        zh = ToolContext(config=config, language="zh", utterance="我的快递到哪了")
        tracked_zh = await asyncio.wait_for(deliveries.prepare(zh, "track_package", {"package": "我的快递"}), T)
    assert tracked.question is None and "package" not in tracked.arguments
    assert "running shoes" in everything.say and "phone charger" in everything.say, everything.say
    assert moved.question is not None and moved.question.text.startswith("Which package:"), moved.question
    assert tracked_zh.question is None and "package" not in tracked_zh.arguments


async def test_a_new_request_is_not_taken_as_the_answer_to_which_package(service, tmp_path):
    """With "Which package?" out, "get me a large latte" is an order. The model, reading it with the parcel call
    in view, may put the latte in the package slot; no package is called that, so the words are a new request
    (the outside probe heard the latte order come back as track_package)."""
    from helpers.fakes import FakeModel, _last_user_message

    from agent.plugins.loader import ToolRegistry
    from agent.understanding.engine import Assistant

    class ParcelMinded(FakeModel):
        def _output(self, prompt_text: str):
            said = _last_user_message(prompt_text)
            before = prompt_text[: prompt_text.rfind(said)]
            if "latte" in said and "move my parcel" in before:  # the question's call in view
                return {"name": "reschedule_delivery", "arguments": {"package": "large latte", "day": "tomorrow"}}
            return super()._output(prompt_text)

    model = ParcelMinded({
        "move my parcel to tomorrow": {"name": "reschedule_delivery", "arguments": {"day": "tomorrow"}},
        "get me a large latte": {"name": "order_meal", "arguments": {"item": "latte", "size": "large"}},
    })
    async with daemon(service, tmp_path) as (config, _, _, meals, deliveries):
        registry = ToolRegistry()
        registry.add_plugin(deliveries)
        registry.add_plugin(meals)
        assistant = Assistant(config, registry, model)
        try:
            asked = await asyncio.wait_for(assistant.turn("move my parcel to tomorrow"), T)
            latte = await asyncio.wait_for(assistant.turn("get me a large latte"), T)
        finally:
            await assistant.close()
    assert asked.reply.startswith("Which package:"), asked.reply
    assert [c.name for c in latte.tool_calls] == ["order_meal"], latte.tool_calls
    assert latte.awaiting_confirmation and "latte" in latte.reply, latte.reply
    assert not [e for e in service.effects() if e["kind"] == "reschedule"]


async def test_a_change_with_no_package_named_changes_none_of_several(service, tmp_path):
    async with daemon(service, tmp_path) as (config, store, _, _, deliveries):
        _, moved = await turn(deliveries, config, "reschedule_delivery", {"day": "tomorrow"})
        queued = store.latest(service="deliveries", action="reschedule_delivery")
    assert moved.ok is False and moved.say == "I can't tell which package you mean."
    assert queued is None
    assert [e for e in service.effects() if e["kind"] == "reschedule"] == []
