"""Package-delivery management: list, track, reschedule, redirect, hold at a locker.

Talks to the deliveries service (docs/openapi.yaml). Changes go through the durable outbox (exactly once, in
order, placed when back online); questions asked offline are answered from the last known status with its age.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agent.core.errors import ServiceError
from agent.outbox.entries import DELIVERED, Entry
from agent.outbox.messages import outcome_text
from agent.plugins.base import Plugin, Prepared, Question, Tool, ToolContext, ToolExample, ToolResult
from agent.plugins.deliveries.packages import find_package, matching_packages, names_a_package
from agent.plugins.vehicle.state import match_name
from agent.services.access import Read, ServiceAccess

_PACKAGE = {"package": {"type": "string", "maxLength": 60, "description": "which package, e.g. 'the shoes'"}}
# Words that are about a delivery at all, in both languages.
_DELIVERY_WORDS = ("package", "parcel", "deliver", "courier", "shipment", "locker", "快递", "包裹", "快递柜", "驿站",
                   "物流", "送货", "配送")
# Changes need to know which package; with several on the way and none named, the car asks.
_CHANGES = ("reschedule_delivery", "redirect_delivery", "hold_at_locker")


def _ex(utterance: str, **arguments: Any) -> ToolExample:
    return ToolExample(utterance, arguments)


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _zh(ctx: ToolContext) -> bool:
    return ctx.language == "zh"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


EXAMPLES = {
    "list_deliveries": (_ex("what packages are coming today"), _ex("any deliveries for me"), _ex("我有几个快递"),
                        _ex("最近有什么快递要到")),
    "track_package": (_ex("where are my shoes", package="shoes"), _ex("when does the charger arrive", package="charger"),
                      _ex("is the parcel with the lamp out for delivery yet", package="lamp"),
                      _ex("充电器的快递到哪了", package="充电器"), _ex("跑鞋什么时候到", package="跑鞋"),
                      _ex("我买的台灯到哪了", package="台灯")),
    "reschedule_delivery": (_ex("move the book delivery to Saturday", package="book", day="Saturday"),
                            _ex("can the lamp come tomorrow morning instead", package="lamp", day="tomorrow",
                                time_window="morning"),
                            _ex("快递改到明天下午送", day="明天", time_window="下午")),
    "redirect_delivery": (_ex("send the lamp to my office instead", package="lamp", destination="office"),
                          _ex("跑鞋改送到公司", package="跑鞋", destination="公司")),
    "hold_at_locker": (_ex("just leave the charger in a locker", package="charger"), _ex("快递放快递柜吧"),
                       _ex("跑鞋放丰巢柜", package="跑鞋", locker="丰巢")),
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
        kept = self._kept_packages()
        words = [w for p in kept for w in (p.get("description"), p.get("description_zh")) if w]
        return words + ["package", "parcel", "locker", "快递", "包裹", "快递柜"]

    def _kept_packages(self) -> list[dict[str, Any]]:
        try:
            kept = self.access.store.last_status("deliveries", "packages")
        except Exception:  # the store is the outbox's: trouble there must not stop recognition
            return []
        return list(kept[0]) if kept else []

    async def prepare(self, ctx: ToolContext, tool: str, arguments: dict[str, Any]) -> Prepared:
        if tool not in (*_CHANGES, "track_package"):
            return Prepared(dict(arguments))
        try:
            read = await self._packages()
        except ServiceError:
            read = None
        packages = read.data if read is not None else []
        if not packages:
            return Prepared(dict(arguments))  # the handler says it cannot reach the service
        arguments = dict(arguments)
        if tool == "redirect_delivery" and arguments.get("destination"):
            place = match_name(arguments["destination"],
                               [(p.name, [p.name, *p.aliases], p) for p in self.config.vehicle.places])
            if place is not None:
                arguments["destination"] = place.name  # a saved place by its name; the handler sends its address
        wanted = arguments.get("package")
        if wanted and not names_a_package(wanted):
            # "Where is my package?" read as a package called "package": none was named.
            arguments.pop("package")
            wanted = None
        found = matching_packages(packages, wanted)
        if wanted and not found and ctx.utterance and not matching_packages(packages, ctx.utterance) \
                and not any(w in ctx.utterance.casefold() for w in _DELIVERY_WORDS):
            # "Park the car" read as a package called "car": nothing in the words is about a delivery.
            return Prepared(dict(arguments), applies=False, problem=(
                "抱歉，这个我在车上做不到。" if _zh(ctx) else "Sorry, I can't do that in this car."))
        if len(found) != 1 and ctx.utterance:
            # The model left the package out (or named it oddly), but the driver said which: "the sneakers".
            said = matching_packages(packages, ctx.utterance)
            if len(said) == 1:
                found, wanted = said, wanted or said[0]["description"]
        if not found and not wanted:
            # "Move them to Saturday": the package the last delivery request was about.
            earlier = next((c.arguments["package"] for c in reversed(ctx.recent)
                            if c.name in (*_CHANGES, "track_package") and c.arguments.get("package")), None)
            found = matching_packages(packages, earlier) if earlier else []
            wanted = earlier if len(found) == 1 else None
        if wanted and len(found) == 1:
            return Prepared({**arguments, "package": found[0]["description"]})
        if tool == "track_package" and not wanted:
            return Prepared(dict(arguments))  # where are my packages: all of them
        if len(packages) == 1 and not wanted:
            return Prepared({**arguments, "package": packages[0]["description"]})
        options = found if len(found) > 1 else packages
        names = [p["description_zh"] if _zh(ctx) else p["description"] for p in options]
        if wanted and not found:
            text = (f"没有找到{wanted}。是哪一个：{'、'.join(names)}？" if _zh(ctx)
                    else f"I can't find {wanted}. Which one: {_or(names)}?")
        else:
            text = f"是哪个包裹：{'、'.join(names)}？" if _zh(ctx) else f"Which package: {_or(names)}?"
        return Prepared(dict(arguments), question=Question("package", text, tuple(p["description"] for p in options)))

    def fill(self, ctx: ToolContext, tool: str, arguments: dict[str, Any], question: Question,
             answer: str) -> dict[str, Any] | None:
        if question.slot != "package":
            return None
        kept = [p for p in self._kept_packages() if p["description"] in question.options]
        found = matching_packages(kept, answer)
        return {**arguments, "package": found[0]["description"]} if len(found) == 1 else None

    def tools(self) -> list[Tool]:
        return [
            Tool(
                "list_deliveries",
                "List the driver's packages that are on their way.",
                _obj({}),
                self._list,
                requires_network=True,
                examples=EXAMPLES["list_deliveries"],
            ),
            Tool(
                "track_package",
                "Say where a package is and when it will arrive.",
                _obj(dict(_PACKAGE)),
                self._track,
                requires_network=True,
                examples=EXAMPLES["track_package"],
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
                grounded=("day", "time_window"),
                examples=EXAMPLES["reschedule_delivery"],
                questions={"day": ("Which day should it come?", "改到哪天送？")},
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
                examples=EXAMPLES["redirect_delivery"],
                questions={"destination": ("Where should it go instead?", "改送到哪里？")},
            ),
            Tool(
                "hold_at_locker",
                "Have a package left at a parcel locker instead of delivered to the door.",
                _obj({**_PACKAGE, "locker": {"type": "string", "maxLength": 80}}),
                self._hold,
                requires_network=True,
                examples=EXAMPLES["hold_at_locker"],
            ),
        ]

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
        if not args.get("package") and len(read.data) > 1:
            return await self._list(ctx, args)  # "where is my package?" with several on the way: all of them
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
        # With several on the way and none named, no change goes to whichever happens to be first (prepare asks
        # which; this is for a caller that skipped it).
        p = find_package(read.data, args.get("package")) if args.get("package") or len(read.data) == 1 else None
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


def _or(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _outbox_view(entry: Entry) -> dict[str, Any]:
    return {"id": entry.id, "state": entry.state, "attempts": entry.attempts, "key": entry.key}
