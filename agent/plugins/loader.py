"""Finds plugins through entry points, and holds their tools in a registry that validates every call."""

from __future__ import annotations

import asyncio
import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator

from agent.core.logging import get_logger
from agent.plugins.base import Plugin, Tool, ToolContext, ToolResult

if TYPE_CHECKING:
    from agent.core.config import Config

ENTRY_POINT_GROUP = "cabin_agent.plugins"
# Used when the package runs from a source tree without its entry points installed.
BUILTIN_PLUGINS = {
    "vehicle": "agent.plugins.vehicle:VehiclePlugin",
    "meals": "agent.plugins.meals:MealsPlugin",
    "deliveries": "agent.plugins.deliveries:DeliveriesPlugin",
}

log = get_logger("plugins")


class ToolRegistry:
    """Tools by name; validates arguments against each schema so an invalid call never reaches a plugin."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        self.plugins: list[Plugin] = []

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} registered twice ({self._tools[tool.name].plugin}, {tool.plugin})")
        Draft202012Validator.check_schema(tool.parameters)
        self._tools[tool.name] = tool
        self._validators[tool.name] = Draft202012Validator(tool.parameters)

    def add_plugin(self, plugin: Plugin) -> None:
        tools = plugin.tools()
        added: list[str] = []
        try:
            for tool in tools:
                self.add(tool if tool.plugin else _with_plugin(tool, plugin.name))
                added.append(tool.name)
        except Exception:
            # All or nothing: a plugin rejected for one bad tool must not leave its other tools behind.
            for name in added:
                del self._tools[name], self._validators[name]
            raise
        self.plugins.append(plugin)

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def __iter__(self):
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> Tool:
        return self._tools[name]

    def validation_errors(self, name: str, arguments: Any) -> list[str]:
        """Empty when the call is valid; otherwise short readable reasons."""
        if name not in self._tools:
            return [f"unknown tool {name!r}"]
        if not isinstance(arguments, dict):
            return ["arguments must be an object"]
        errors = sorted(self._validators[name].iter_errors(arguments), key=lambda e: list(e.path))
        return [f"{'.'.join(map(str, e.path)) or 'arguments'}: {e.message}" for e in errors]

    def vocabulary(self) -> list[str]:
        words: list[str] = []
        for plugin in self.plugins:
            try:
                words.extend(plugin.vocabulary())
            except Exception as err:  # a broken plugin must not break recognition
                log.warning("plugin-vocabulary-failed", plugin=plugin.name, error=str(err))
        return sorted(set(words))

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext, timeout_s: float = 10.0) -> ToolResult:
        """Validate and run a tool. Plugin failures come back as a readable ToolResult, never an exception."""
        problems = self.validation_errors(name, arguments)
        if problems:
            return ToolResult(ok=False, error=f"invalid call to {name}: {'; '.join(problems)}")
        tool = self._tools[name]
        try:
            return await asyncio.wait_for(tool.handler(ctx, arguments), timeout_s)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            log.warning("tool-timeout", tool=name, timeout_s=timeout_s)
            return ToolResult(ok=False, error=f"{name} did not answer in time")
        except Exception as err:
            log.exception("tool-failed", tool=name, plugin=tool.plugin)
            return ToolResult(ok=False, error=f"{name} failed: {err}")


def _with_plugin(tool: Tool, plugin_name: str) -> Tool:
    from dataclasses import replace

    return replace(tool, plugin=plugin_name)


def _load_target(target: str) -> type[Plugin]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def discover() -> dict[str, Any]:
    """Plugin name -> loader callable, from entry points with the built-ins as a fallback."""
    found: dict[str, Any] = {name: (lambda t=target: _load_target(t)) for name, target in BUILTIN_PLUGINS.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load
    return found


def load_registry(config: Config, services: dict[str, Any] | None = None) -> ToolRegistry:
    """Instantiate the enabled plugins and register their tools. A broken plugin is logged once and skipped."""
    registry = ToolRegistry()
    wanted = config.plugins.enabled
    for name, load in sorted(discover().items()):
        if (wanted is not None and name not in wanted) or name in config.plugins.disabled:
            continue
        try:
            cls = load()
            plugin = cls(config, **({"services": services} if services is not None and _takes_services(cls) else {}))
            plugin.name = plugin.name if plugin.name != "plugin" else name
            registry.add_plugin(plugin)
        except Exception as err:
            log.error("plugin-skipped", plugin=name, error=f"{type(err).__name__}: {err}")
    return registry


def _takes_services(cls: type) -> bool:
    import inspect

    try:
        return "services" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
