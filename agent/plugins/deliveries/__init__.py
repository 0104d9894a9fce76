"""Package-delivery management: list, track, reschedule, redirect, hold at a locker.

Talks to the deliveries service (docs/openapi.yaml). Changes go through the durable outbox (exactly once, in
order, placed when back online); questions asked offline are answered from the last known status with its age.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agent.errors import ServiceError
from agent.outbox.messages import outcome_text
from agent.outbox.store import DELIVERED, Entry
from dataclasses import replace

from agent.plugins.base import Plugin, Tool, ToolContext, ToolResult
from agent.plugins.deliveries.packages import SEED_PACKAGES, find_package
from agent.services.access import Read, ServiceAccess

# Kept for callers of the old fixture module; the reference service seeds the same packages.
FIXTURE_PACKAGES = SEED_PACKAGES

_PACKAGE = {"package": {"type": "string", "maxLength": 60, "description": "which package, e.g. 'the shoes'"}}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _zh(ctx: ToolContext) -> bool:
    return ctx.language == "zh"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# What a request for each tool says (see Tool.intents).
_PARCEL = ("package", "packages", "parcel", "parcels", "delivery", "deliveries", "shipment", "courier", "shoes",
           "charger", "快递", "包裹", "送货", "物流", "配送")
INTENTS: dict[str, tuple[str, ...]] = {
    "list_deliveries": _PARCEL,
    "track_package": (*_PARCEL, "arrive", "arriving", "where", "到哪", "什么时候到"),
    "reschedule_delivery": (*_PARCEL, "reschedule", "move", "push", "postpone", "instead", "改到", "改天", "推迟", "延期"),
    "redirect_delivery": (*_PARCEL, "redirect", "send it to", "deliver", "改送", "送到"),
    "hold_at_locker": ("locker", "lockers", "hold", "pick up", "pickup", "柜", "驿站", "自提"),
}

class DeliveriesPlugin(Plugin):
    name = "deliveries"
    requires_network = True

    def __init__(self, config: Any, services: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.services = services if services is not None else {}
        self.access = ServiceAccess(config, self.services)

    async def stop(self) -> None:
        await self.access.aclose()

    def vocabulary(self) -> list[str]:
        return [p["description"] for p in SEED_PACKAGES] + [
            "package",
            "parcel",
            "locker",
            "快递",
            "包裹",
            "快递柜",
        ]

    def tools(self) -> list[Tool]:
        tools = [
            Tool(
                "list_deliveries",
                "List the driver's packages that are on their way.",
                _obj({}),
                self._list,
                requires_network=True,
            ),
            Tool(
                "track_package",
                "Say where a package is and when it will arrive.",
                _obj(dict(_PACKAGE)),
                self._track,
                requires_network=True,
            ),
            Tool(
                "reschedule_delivery",
                "Move a package delivery to another day or time window.",
                _obj(
                    {
                        **_PACKAGE,
                        "day": {"type": "string", "minLength": 1, "maxLength": 40},
                        "time_window": {"type": "string", "maxLength": 40},
                    },
                    ["day"],
                ),
                self._reschedule,
                requires_network=True,
                grounded=("day",),
            ),
            Tool(
                "redirect_delivery",
                "Deliver a package to another address instead, such as the office.",
                _obj(
                    {**_PACKAGE, "destination": {"type": "string", "minLength": 1, "maxLength": 120}},
                    ["destination"],
                ),
                self._redirect,
                requires_network=True,
                grounded=("destination",),
            ),
            Tool(
                "hold_at_locker",
                "Have a package left at a parcel locker instead of delivered to the door.",
                _obj({**_PACKAGE, "locker": {"type": "string", "maxLength": 80}}),
                self._hold,
                requires_network=True,
            ),
        ]
        return [replace(t, intents=INTENTS.get(t.name, t.intents)) for t in tools]

    # ------------------------------------------------------------ reading

    async def _packages(self) -> Read | None:
        client = self.access.client("deliveries")
        return await self.access.read("deliveries", "packages", client.packages)

    def _name(self, p: dict[str, Any], ctx: ToolContext) -> str:
        return p["description_zh"] if _zh(ctx) else f"your {p['description']}"

    def _unreachable(self, ctx: ToolContext) -> ToolResult:
        return ToolResult(
            ok=False,
            error="offline and no saved status",
            say="现在连不上快递服务，也没有保存的状态。"
            if _zh(ctx)
            else "I can't reach the delivery service right now, and I have no saved status.",
        )

    def _as_of(self, ctx: ToolContext, read: Read, say: str) -> str:
        if read.source != "cache":
            return say
        return (
            f"{read.as_of('zh')}的信息：{say}"
            if _zh(ctx)
            else f"{_cap(read.as_of('en'))}, {say[:1].lower()}{say[1:]}"
        )

    async def _list(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        try:
            read = await self._packages()
        except ServiceError as err:
            return ToolResult(ok=False, error=err.message, say=err.message)
        if read is None:
            return self._unreachable(ctx)
        packages = read.data
        if _zh(ctx):
            say = (
                f"您有{len(packages)}个包裹："
                + "，".join(f"{p['description_zh']}{p['status_zh']}" for p in packages)
                + "。"
            )
        else:
            say = (
                f"You have {len(packages)} packages: "
                + "; ".join(f"{p['description']}, {p['status']}" for p in packages)
                + "."
            )
        return ToolResult(
            ok=True,
            data={"packages": packages, "source": read.source, "age_seconds": round(read.age_seconds)},
            say=self._as_of(ctx, read, say),
        )

    async def _track(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        try:
            read = await self._packages()
        except ServiceError as err:
            return ToolResult(ok=False, error=err.message, say=err.message)
        if read is None:
            return self._unreachable(ctx)
        p = find_package(read.data, args.get("package"))
        if p is None:
            missing = args.get("package")
            say = (
                (f"没有找到{missing}。" if missing else "没有在途的包裹。")
                if _zh(ctx)
                else (
                    f"I can't find a package matching {missing}."
                    if missing
                    else "You have no packages on the way."
                )
            )
            return ToolResult(ok=True, data={"package": None, "source": read.source}, say=say)
        say = (
            f"{p['description_zh']}{p['status_zh']}，预计{p['eta']}送达。"
            if _zh(ctx)
            else f"{_cap(self._name(p, ctx))}: {p['status']}, expected {p['eta']}."
        )
        pending = [
            e
            for e in await asyncio.to_thread(
                self.access.store.list, states=("pending", "in-flight"), service="deliveries"
            )
            if e.body.get("package_id") == p["id"]
        ]
        if pending:
            say += " 有一个更改在排队。" if _zh(ctx) else " A change to it is queued until we're back online."
        return ToolResult(
            ok=True,
            data={
                "package": p,
                "source": read.source,
                "age_seconds": round(read.age_seconds),
                "queued_changes": len(pending),
            },
            say=self._as_of(ctx, read, say),
        )

    # ------------------------------------------------------------ changes (through the outbox)

    async def _change(
        self, ctx: ToolContext, args: dict[str, Any], action: str, endpoint: str, body: dict[str, Any]
    ) -> ToolResult:
        try:
            read = await self._packages()
        except ServiceError as err:
            return ToolResult(ok=False, error=err.message, say=err.message)
        if read is None:
            return self._unreachable(ctx)
        p = find_package(read.data, args.get("package"))
        if p is None:
            return ToolResult(
                ok=False,
                error="no matching package",
                say="没有找到这个包裹。" if _zh(ctx) else "I can't tell which package you mean.",
            )
        # package_id rides along in the body so the car can tell which package a queued change is for.
        body = {**body, "package_id": p["id"]}
        queued = await self.access.queue(
            service="deliveries",
            action=action,
            method="POST",
            path=f"/deliveries/{p['id']}/{endpoint}",
            body=body,
            summary=self._name(p, ctx),
            language=ctx.language,
        )
        entry = queued.entry
        data = {"package": p, "outbox": _outbox_view(entry)}
        if queued.finished:
            reason = (entry.last_error or "").split(": ", 1)[-1]
            say = outcome_text(entry, entry.state, reason, expiry_minutes=self.config.outbox.expiry_minutes)
            if entry.state == DELIVERED:
                data["package"] = (entry.result or {}).get("package", p)
                return ToolResult(ok=True, data=data, say=_cap(say.removeprefix("Done: ")))
            return ToolResult(ok=False, data=data, error=reason or entry.state, say=say)
        data["queued"] = True
        say = (
            (
                "现在离线，已排队，恢复网络后会处理并告诉您。"
                if not queued.online
                else "服务有点慢，已排队，完成后告诉您。"
            )
            if _zh(ctx)
            else (
                "We're offline, so I've queued that change. I'll send it when we're back online and let you know."
                if not queued.online
                else "The delivery service is slow; I've queued the change and will tell you."
            )
        )
        return ToolResult(ok=True, data=data, say=say)

    async def _reschedule(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        body = {"day": args["day"]}
        if args.get("time_window"):
            body["time_window"] = args["time_window"]
        return await self._change(ctx, args, "reschedule_delivery", "reschedule", body)

    async def _redirect(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        wanted = args["destination"].strip()
        destination = wanted
        for place in self.config.vehicle.places:
            names = [place.name.casefold(), *(a.casefold() for a in place.aliases)]
            if wanted.casefold().removeprefix("the ").removeprefix("my ") in names:
                destination = f"{place.address} ({place.name})"
        return await self._change(ctx, args, "redirect_delivery", "redirect", {"destination": destination})

    async def _hold(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        body = {"locker": args["locker"]} if args.get("locker") else {}
        return await self._change(ctx, args, "hold_at_locker", "locker", body)


def _outbox_view(entry: Entry) -> dict[str, Any]:
    return {"id": entry.id, "state": entry.state, "attempts": entry.attempts, "key": entry.key}
