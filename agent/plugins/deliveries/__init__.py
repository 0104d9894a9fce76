"""Package-delivery management: list, track, reschedule, redirect, hold at a locker.

Until the service backend lands, answers come from a local fixture and say so (`"source": "fixture"`).
"""

from __future__ import annotations

import copy
from typing import Any

from agent.plugins.base import Plugin, Tool, ToolContext, ToolResult

FIXTURE_PACKAGES = [
    {"id": "P1", "description": "running shoes", "description_zh": "跑鞋", "carrier": "SF Express",
     "status": "out for delivery", "status_zh": "派送中", "eta": "today 14:00-16:00", "destination": "home"},
    {"id": "P2", "description": "phone charger", "description_zh": "手机充电器", "carrier": "JD Logistics",
     "status": "in transit", "status_zh": "运输中", "eta": "tomorrow", "destination": "home"},
]

_PACKAGE = {"package": {"type": "string", "maxLength": 60, "description": "which package, e.g. 'the shoes'"}}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


class DeliveriesPlugin(Plugin):
    name = "deliveries"
    requires_network = True

    def __init__(self, config: Any, services: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.packages = copy.deepcopy(FIXTURE_PACKAGES)

    def vocabulary(self) -> list[str]:
        return [p["description"] for p in self.packages] + ["package", "parcel", "locker", "快递", "包裹", "快递柜"]

    def tools(self) -> list[Tool]:
        return [
            Tool("list_deliveries", "List the driver's packages that are on their way.", _obj({}),
                 self._list, requires_network=True),
            Tool("track_package", "Say where a package is and when it will arrive.", _obj(dict(_PACKAGE)),
                 self._track, requires_network=True),
            Tool("reschedule_delivery", "Move a package delivery to another day or time window.",
                 _obj({**_PACKAGE, "day": {"type": "string", "minLength": 1, "maxLength": 40},
                       "time_window": {"type": "string", "maxLength": 40}}, ["day"]),
                 self._reschedule, requires_network=True, grounded=("day",)),
            Tool("redirect_delivery", "Deliver a package to another address instead, such as the office.",
                 _obj({**_PACKAGE, "destination": {"type": "string", "minLength": 1, "maxLength": 120}},
                      ["destination"]),
                 self._redirect, requires_network=True, grounded=("destination",)),
            Tool("hold_at_locker", "Have a package left at a parcel locker instead of delivered to the door.",
                 _obj({**_PACKAGE, "locker": {"type": "string", "maxLength": 80}}),
                 self._hold, requires_network=True),
        ]

    def _find(self, wanted: str | None) -> dict[str, Any] | None:
        if not wanted:
            return self.packages[0] if self.packages else None
        w = wanted.casefold()
        for p in self.packages:
            if any(word in p["description"] for word in w.split() if len(word) > 2) or p["description_zh"] in wanted \
                    or p["id"].casefold() == w:
                return p
        return self.packages[0] if self.packages else None

    def _name(self, p: dict[str, Any], ctx: ToolContext) -> str:
        return p["description_zh"] if ctx.language == "zh" else f"your {p['description']}"

    async def _list(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        if ctx.language == "zh":
            say = f"您有{len(self.packages)}个包裹：" + "，".join(f"{p['description_zh']}{p['status_zh']}" for p in self.packages) + "。"
        else:
            say = f"You have {len(self.packages)} packages: " + "; ".join(
                f"{p['description']}, {p['status']}" for p in self.packages) + "."
        return ToolResult(ok=True, data={"packages": self.packages, "source": "fixture"}, say=say)

    async def _track(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        p = self._find(args.get("package"))
        if p is None:
            return ToolResult(ok=True, data={"package": None, "source": "fixture"},
                              say="没有在途的包裹。" if ctx.language == "zh" else "You have no packages on the way.")
        say = (f"{p['description_zh']}{p['status_zh']}，预计{p['eta']}送达。" if ctx.language == "zh"
               else f"{self._name(p, ctx).capitalize()} is {p['status']}, expected {p['eta']}.")
        return ToolResult(ok=True, data={"package": p, "source": "fixture"}, say=say)

    async def _reschedule(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        p = self._find(args.get("package"))
        if p is None:
            return ToolResult(ok=False, error="no package to reschedule")
        p["eta"] = " ".join(x for x in (args["day"], args.get("time_window", "")) if x)
        say = (f"{p['description_zh']}改到{p['eta']}送。" if ctx.language == "zh"
               else f"{self._name(p, ctx).capitalize()} will now come {p['eta']}.")
        return ToolResult(ok=True, data={"package": p, "source": "fixture"}, say=say)

    async def _redirect(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        p = self._find(args.get("package"))
        if p is None:
            return ToolResult(ok=False, error="no package to redirect")
        p["destination"] = args["destination"]
        say = (f"{p['description_zh']}改送到{args['destination']}。" if ctx.language == "zh"
               else f"{self._name(p, ctx).capitalize()} will go to {args['destination']} instead.")
        return ToolResult(ok=True, data={"package": p, "source": "fixture"}, say=say)

    async def _hold(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        p = self._find(args.get("package"))
        if p is None:
            return ToolResult(ok=False, error="no package to hold")
        p["destination"] = args.get("locker") or "the nearest locker"
        say = (f"{p['description_zh']}会放到快递柜。" if ctx.language == "zh"
               else f"{self._name(p, ctx).capitalize()} will be left at {p['destination']}.")
        return ToolResult(ok=True, data={"package": p, "source": "fixture"}, say=say)
