"""The tool registry: every call is validated before a plugin sees it; a broken plugin never stops the car."""

from __future__ import annotations

import asyncio

import pytest
from helpers.fakes import Recorder
from jsonschema import Draft202012Validator
from structlog.testing import capture_logs

import agent.plugins.loader as loader
from agent.core.config import Config
from agent.plugins.base import Plugin, Tool, ToolContext, ToolResult
from agent.plugins.loader import ToolRegistry, load_registry
from agent.plugins.vehicle import VehiclePlugin

TIMEOUT_S = 10
SEAT_HEAT_SCHEMA = {
    "type": "object",
    "properties": {
        "seat": {"type": "string", "enum": ["driver", "passenger"]},
        "level": {"type": "integer", "minimum": 0, "maximum": 3},
    },
    "required": ["seat", "level"],
    "additionalProperties": False,
}


class SeatHeatingPlugin(Plugin):
    """A small plugin with one tool whose handler is supplied by the test."""

    name = "seats"

    def __init__(self, config: Config, handler=None) -> None:
        super().__init__(config)
        self.handler = handler or Recorder()

    def tools(self) -> list[Tool]:
        return [Tool("set_seat_heating", "Heat a front seat.", SEAT_HEAT_SCHEMA, self.handler)]


class ExplodingPlugin(Plugin):
    """A plugin whose constructor fails (a missing device, a bad file)."""

    name = "sunroof"

    def __init__(self, config: Config) -> None:
        raise RuntimeError("sunroof controller not found on CAN bus")


@pytest.fixture
def config() -> Config:
    return Config()


@pytest.fixture
def ctx(config: Config) -> ToolContext:
    return ToolContext(config=config, language="en", utterance="heat my seat")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def registry(config: Config, recorder: Recorder) -> ToolRegistry:
    registry = ToolRegistry()
    registry.add_plugin(SeatHeatingPlugin(config, recorder))
    return registry


# ---------------------------------------------------------------- validation


def test_a_valid_call_has_no_problems(registry):
    assert registry.validation_errors("set_seat_heating", {"seat": "driver", "level": 2}) == []


@pytest.mark.parametrize(
    ("name", "arguments", "problem"),
    [
        ("open_sunroof", {}, "unknown tool 'open_sunroof'"),
        ("set_seat_heating", ["driver", 2], "arguments must be an object"),
        ("set_seat_heating", {"seat": "driver", "level": "high"}, "level: 'high' is not of type 'integer'"),
        ("set_seat_heating", {"seat": "rear", "level": 1},
         "seat: 'rear' is not one of ['driver', 'passenger']"),
        ("set_seat_heating", {"seat": "driver", "level": 5}, "level: 5 is greater than the maximum of 3"),
        ("set_seat_heating", {"seat": "driver", "level": -1}, "level: -1 is less than the minimum of 0"),
        ("set_seat_heating", {"seat": "driver", "level": 1, "massage": True},
         "arguments: Additional properties are not allowed ('massage' was unexpected)"),
        ("set_seat_heating", {"seat": "driver"}, "arguments: 'level' is a required property"),
    ],
    ids=["unknown-tool", "not-an-object", "wrong-type", "not-in-enum", "above-maximum", "below-minimum",
         "extra-argument", "missing-required"],
)
def test_invalid_calls_are_named_in_readable_words(registry, name, arguments, problem):
    assert problem in registry.validation_errors(name, arguments)


async def test_an_invalid_call_never_runs_the_handler(registry, recorder, ctx):
    too_hot = {"seat": "driver", "level": 9}

    result = await asyncio.wait_for(registry.call("set_seat_heating", too_hot, ctx), TIMEOUT_S)

    assert recorder.calls == []
    assert not result.ok
    assert result.error == "invalid call to set_seat_heating: level: 9 is greater than the maximum of 3"
    assert result.for_model() == {"error": result.error}


async def test_an_unknown_tool_never_runs_anything(registry, recorder, ctx):
    result = await asyncio.wait_for(registry.call("open_sunroof", {}, ctx), TIMEOUT_S)

    assert not result.ok and "unknown tool 'open_sunroof'" in result.error
    assert recorder.calls == []


async def test_a_valid_call_runs_the_handler_once_with_its_arguments(registry, recorder, ctx):
    result = await asyncio.wait_for(registry.call("set_seat_heating", {"seat": "passenger", "level": 1}, ctx),
                                    TIMEOUT_S)

    assert result.ok and result.say == "Done."
    assert recorder.calls == [{"seat": "passenger", "level": 1}]


# ---------------------------------------------------------------- handlers that fail


async def test_a_handler_that_raises_comes_back_as_a_readable_result(config, ctx):
    async def seat_module_offline(_ctx, _args):
        raise ConnectionError("seat module not responding")

    registry = ToolRegistry()
    registry.add_plugin(SeatHeatingPlugin(config, seat_module_offline))

    with capture_logs() as logs:
        result = await asyncio.wait_for(
            registry.call("set_seat_heating", {"seat": "driver", "level": 1}, ctx), TIMEOUT_S)

    assert result == ToolResult(ok=False, error="set_seat_heating failed: seat module not responding")
    assert "Traceback" not in result.error
    assert [e["event"] for e in logs] == ["tool-failed"]
    assert logs[0]["plugin"] == "seats"


async def test_a_handler_that_hangs_times_out_with_a_readable_result(config, ctx):
    started = asyncio.Event()

    async def stuck(_ctx, _args):
        started.set()
        await asyncio.sleep(3600)

    registry = ToolRegistry()
    registry.add_plugin(SeatHeatingPlugin(config, stuck))

    result = await asyncio.wait_for(
        registry.call("set_seat_heating", {"seat": "driver", "level": 1}, ctx, timeout_s=0.05), TIMEOUT_S)

    assert started.is_set()
    assert result == ToolResult(ok=False, error="set_seat_heating did not answer in time")


async def test_cancelling_a_call_is_not_swallowed(config, ctx):
    async def slow(_ctx, _args):
        await asyncio.sleep(3600)

    registry = ToolRegistry()
    registry.add_plugin(SeatHeatingPlugin(config, slow))
    task = asyncio.create_task(registry.call("set_seat_heating", {"seat": "driver", "level": 1}, ctx))
    await asyncio.sleep(0.01)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT_S)


# ---------------------------------------------------------------- registering tools


def test_a_tool_name_cannot_be_registered_twice(registry, config):
    with pytest.raises(ValueError, match="tool 'set_seat_heating' registered twice"):
        registry.add(Tool("set_seat_heating", "Another seat tool.", {"type": "object"}, Recorder()))
    assert len(registry) == 1


def test_a_plugin_rejected_for_a_duplicate_tool_leaves_none_of_its_tools_behind(config):
    class Horn(Plugin):
        name = "horn"

        def tools(self) -> list[Tool]:
            return [Tool("honk", "Sound the horn.", {"type": "object"}, Recorder()),
                    Tool("set_climate", "A second climate tool.", {"type": "object"}, Recorder())]

    registry = ToolRegistry()
    registry.add_plugin(VehiclePlugin(config))

    with pytest.raises(ValueError, match="'set_climate' registered twice"):
        registry.add_plugin(Horn(config))

    assert "honk" not in registry
    assert registry.get("set_climate").plugin == "vehicle"
    assert [p.name for p in registry.plugins] == ["vehicle"]


def test_a_tool_with_an_invalid_schema_is_rejected(config):
    registry = ToolRegistry()
    with pytest.raises(Exception, match="'integer-ish' is not valid"):
        registry.add(Tool("bad", "Bad schema.", {"type": "integer-ish"}, Recorder()))
    assert "bad" not in registry


def test_tools_are_tagged_with_their_plugin(registry):
    assert registry.get("set_seat_heating").plugin == "seats"


# ---------------------------------------------------------------- loading plugins


def test_the_built_in_plugins_load_with_valid_schemas(config):
    registry = load_registry(config)

    assert {p.name for p in registry.plugins} == {"vehicle", "meals", "deliveries"}
    names = {t.name for t in registry}
    assert {"set_climate", "navigate_to", "play_media", "media_control", "call_contact",
            "search_restaurants", "order_meal", "order_status", "cancel_order", "track_package"} <= names
    for tool in registry:
        Draft202012Validator.check_schema(tool.parameters)
        assert tool.parameters["type"] == "object", tool.name
        assert tool.description.strip(), tool.name
        assert tool.plugin in {"vehicle", "meals", "deliveries"}, tool.name
        # Grounded and cued arguments must be arguments the schema knows.
        known = set(tool.parameters.get("properties", {}))
        assert set(tool.grounded) <= known, tool.name
        assert set(tool.cues) <= known, tool.name
        assert set(tool.parameters.get("required", [])) <= known, tool.name


def test_purchases_need_confirmation_and_vehicle_tools_work_offline(config):
    registry = load_registry(config)

    assert registry.get("order_meal").needs_confirmation
    assert registry.get("cancel_order").needs_confirmation
    for name in ("set_climate", "navigate_to", "play_media", "call_contact"):
        tool = registry.get(name)
        assert not tool.requires_network and not tool.needs_confirmation, name


def test_a_plugin_whose_constructor_raises_is_skipped_with_one_log_line(config, monkeypatch):
    monkeypatch.setattr(loader, "discover", lambda: {
        "seats": lambda: SeatHeatingPlugin,
        "sunroof": lambda: ExplodingPlugin,
        "vehicle": lambda: VehiclePlugin,
    })

    with capture_logs() as logs:
        registry = load_registry(config)

    assert [p.name for p in registry.plugins] == ["seats", "vehicle"]
    assert "set_seat_heating" in registry and "set_climate" in registry
    skipped = [e for e in logs if e["event"] == "plugin-skipped"]
    assert len(skipped) == 1
    assert skipped[0]["plugin"] == "sunroof"
    assert skipped[0]["error"] == "RuntimeError: sunroof controller not found on CAN bus"
    assert skipped[0]["log_level"] == "error"


def test_a_plugin_that_cannot_be_imported_is_skipped(config, monkeypatch):
    def missing_module():
        raise ModuleNotFoundError("No module named 'cabin_agent_weather'")

    monkeypatch.setattr(loader, "discover",
                        lambda: {"weather": missing_module, "vehicle": lambda: VehiclePlugin})

    with capture_logs() as logs:
        registry = load_registry(config)

    assert [p.name for p in registry.plugins] == ["vehicle"]
    assert [e["plugin"] for e in logs if e["event"] == "plugin-skipped"] == ["weather"]


def test_enabled_and_disabled_lists_pick_the_plugins(monkeypatch):
    monkeypatch.setattr(loader, "discover",
                        lambda: {"seats": lambda: SeatHeatingPlugin, "vehicle": lambda: VehiclePlugin})

    only_vehicle = load_registry(Config.model_validate({"plugins": {"enabled": ["vehicle"]}}))
    no_vehicle = load_registry(Config.model_validate({"plugins": {"disabled": ["vehicle"]}}))

    assert [p.name for p in only_vehicle.plugins] == ["vehicle"]
    assert [p.name for p in no_vehicle.plugins] == ["seats"]


def test_a_broken_vocabulary_does_not_break_recognition(config):
    class Broken(SeatHeatingPlugin):
        def vocabulary(self) -> list[str]:
            raise KeyError("menu")

    registry = ToolRegistry()
    registry.add_plugin(VehiclePlugin(config))
    registry.add_plugin(Broken(config))

    with capture_logs() as logs:
        words = registry.vocabulary()

    assert "Mom" in words and "妈妈" in words
    assert [e["event"] for e in logs] == ["plugin-vocabulary-failed"]
