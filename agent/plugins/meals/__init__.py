"""Meal ordering from the driver's seat: search, order (with a spoken, priced confirmation), status and cancel.

Talks to the meals service (docs/openapi.yaml). Orders and cancels go through the durable outbox, so an order
given in a tunnel is placed when the car is back online, exactly once. Read-only questions asked offline are
answered from the last known status with its age.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agent.errors import ServiceError
from agent.outbox.messages import outcome_text
from agent.outbox.store import CANCELLED, DELIVERED, EXPIRED, FAILED, Entry
from dataclasses import replace

from agent.plugins.base import Plugin, Tool, ToolContext, ToolResult
from agent.plugins.meals.menu import RESTAURANTS, find_item, menu_vocabulary
from agent.services.access import Queued, ServiceAccess

SIZES = ["small", "medium", "large", "regular"]
SIZE_ZH = {"small": "小份", "medium": "中份", "large": "大份", "regular": ""}


def quote(args: dict[str, Any]) -> dict[str, Any] | None:
    """Price an order against the menu: restaurant, item, size, quantity, total. None when not on the menu."""
    found = find_item(args["item"], args.get("restaurant"))
    if found is None:
        return None
    restaurant, item = found
    size = args.get("size")
    if size not in item["prices"]:
        size = (
            "regular"
            if "regular" in item["prices"]
            else ("medium" if "medium" in item["prices"] else next(iter(item["prices"])))
        )
    quantity = int(args.get("quantity", 1))
    return {
        "restaurant": restaurant["name"],
        "restaurant_zh": restaurant["name_zh"],
        "restaurant_id": restaurant["id"],
        "item": item["name"],
        "item_zh": item["name_zh"],
        "size": size,
        "quantity": quantity,
        "total": item["prices"][size] * quantity,
    }


def describe_order(q: dict[str, Any], language: str) -> str:
    if language == "zh":
        return f"{q['restaurant_zh']}的{q['quantity']}份{SIZE_ZH.get(q['size'], '')}{q['item_zh']}，{q['total']}元"
    size = "" if q["size"] == "regular" else f"{q['size']} "
    count = "a" if q["quantity"] == 1 else str(q["quantity"])
    plural = "s" if q["quantity"] > 1 and not q["item"].endswith("s") else ""
    return f"{count} {size}{q['item']}{plural} from {q['restaurant']}, {q['total']} yuan"


def _zh(ctx: ToolContext) -> bool:
    return ctx.language == "zh"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _order_id(entry: Entry | None) -> str | None:
    return ((entry.result or {}).get("order") or {}).get("id") if entry else None


# Words that come with naming a restaurant: without one of them the model may not pick (or invent) one.
RESTAURANT_CUES = (
    "from", "restaurant", "place", "从", "那家", "店",
    *sorted({w for r in RESTAURANTS for w in r["name"].casefold().replace("'s", "").split() if len(w) > 3}),
    *(r["name_zh"] for r in RESTAURANTS),
)


# What a request for each tool says (see Tool.intents); the menu's own words count for ordering and searching.
_FOOD = ("order", "food", "eat", "hungry", "lunch", "dinner", "breakfast", "snack", "drink", "coffee", "menu",
         "restaurant", "takeout", "delivery", "点", "外卖", "吃", "饿", "喝", "杯", "份", "餐", "饭", "菜单")
INTENTS: dict[str, tuple[str, ...]] = {
    "search_restaurants": (*_FOOD, "find", "nearby", "near", "around", "place", "shop", "找", "附近", "哪里有",
                           *menu_vocabulary()),
    "order_meal": (*_FOOD, *menu_vocabulary()),
    "order_status": (*_FOOD, "arrive", "where is", "how long", "status", "on its way", "coming", "到哪", "多久",
                     "送到", "送出", *menu_vocabulary()),
    "cancel_order": ("cancel", "取消", "不要了"),
}

class MealsPlugin(Plugin):
    name = "meals"
    requires_network = True

    def __init__(self, config: Any, services: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.services = services if services is not None else {}
        self.access = ServiceAccess(config, self.services)

    async def stop(self) -> None:
        await self.access.aclose()

    def vocabulary(self) -> list[str]:
        return menu_vocabulary()

    def tools(self) -> list[Tool]:
        tools = [
            Tool(
                name="search_restaurants",
                description="Find restaurants or dishes near the car, by dish or cuisine (e.g. pizza, noodles, coffee).",
                parameters={
                    "type": "object",
                    "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 80}},
                    "required": ["query"],
                    "additionalProperties": False,
                },
                handler=self._search,
                requires_network=True,
                grounded=("query",),
            ),
            Tool(
                name="order_meal",
                description="Order food or drinks for delivery: the item, how many, its size, and optionally "
                "which restaurant.",
                parameters={
                    "type": "object",
                    "properties": {
                        "item": {"type": "string", "minLength": 1, "maxLength": 80},
                        "quantity": {"type": "integer", "minimum": 1, "maximum": 20},
                        "size": {"type": "string", "enum": SIZES},
                        "restaurant": {"type": "string", "minLength": 1, "maxLength": 80},
                        # Optional: a saved place ("office") or an address; default the current destination or home.
                        "delivery_address": {"type": "string", "minLength": 1, "maxLength": 120},
                    },
                    "required": ["item"],
                    "additionalProperties": False,
                },
                handler=self._order,
                requires_network=True,
                needs_confirmation=True,
                grounded=("item", "quantity", "restaurant", "delivery_address"),
                cues={
                    "restaurant": RESTAURANT_CUES,
                    "delivery_address": ("deliver", "delivered", "send it to", "bring it to", "address",
                                         "送到", "送去", "地址"),
                    "size": (
                        "small",
                        "medium",
                        "large",
                        "regular",
                        "big",
                        "grande",
                        "tall",
                        "venti",
                        "小",
                        "中",
                        "大",
                    )
                },
            ),
            Tool(
                name="order_status",
                description="Say where the driver's food order is and when it will arrive.",
                parameters={
                    "type": "object",
                    "properties": {"order_id": {"type": "string", "maxLength": 40}},
                    "additionalProperties": False,
                },
                handler=self._status,
                requires_network=True,
                grounded=("order_id",),
            ),
            Tool(
                name="cancel_order",
                description="Cancel the driver's food order.",
                parameters={
                    "type": "object",
                    "properties": {"order_id": {"type": "string", "maxLength": 40}},
                    "additionalProperties": False,
                },
                handler=self._cancel,
                requires_network=True,
                needs_confirmation=True,
                grounded=("order_id",),
            ),
        ]
        return [replace(t, intents=INTENTS.get(t.name, t.intents)) for t in tools]

    # ------------------------------------------------------------ confirmation (asked by the turn engine)

    async def confirmation_prompt(self, ctx: ToolContext, name: str, args: dict[str, Any]) -> str | None:
        """The question the driver answers before a purchase or cancel enters the outbox. None: nothing to ask
        (unknown item, over the spend limit): the handler then explains without asking."""
        if name == "order_meal":
            q = quote(args)
            if q is None or q["total"] > self.config.services.spend_limit:
                return None
            text = describe_order(q, ctx.language)
            return f"{text}。要下单吗？" if _zh(ctx) else f"{_cap(text)}. Shall I order it?"
        if name == "cancel_order":
            latest = await asyncio.to_thread(self.access.store.latest, service="meals", action="order_meal")
            if (
                latest is not None
                and latest.state not in (FAILED, EXPIRED, CANCELLED)
                and not args.get("order_id")
            ):
                return (
                    f"要取消{latest.summary}吗？" if _zh(ctx) else f"Cancel your order of {latest.summary}?"
                )
            return "要取消您的订单吗？" if _zh(ctx) else "Cancel your food order?"
        return None

    # ------------------------------------------------------------ search (read-only)

    async def _search(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        query = args["query"].strip()
        try:
            read = await self.access.read(
                "meals", f"search:{query.casefold()}", lambda: self.access.client("meals").search(query)
            )
        except ServiceError as err:
            return ToolResult(ok=False, error=err.message, say=err.message)
        if read is None:
            return self._search_offline_menu(ctx, query)
        hits = read.data
        data = {"restaurants": hits, "source": read.source, "age_seconds": round(read.age_seconds)}
        if not hits:
            return ToolResult(
                ok=True,
                data=data,
                say="附近没有找到。" if _zh(ctx) else f"I found nothing for {query} nearby.",
            )
        top = next((h for h in hits if h.get("open", True)), hits[0])
        closed = "" if top.get("open", True) else (" (closed now)" if not _zh(ctx) else "（现在没营业）")
        if _zh(ctx):
            say = f"最近的是{top['name_zh']}，{top['distance_km']}公里{closed}。"
            if read.source == "cache":
                say = f"{read.as_of('zh')}的信息：{say}"
        else:
            say = f"{top['name']} is {top['distance_km']} kilometres away{closed}."
            if read.source == "cache":
                say = f"{_cap(read.as_of('en'))}: {say}"
        return ToolResult(ok=True, data=data, say=say)

    def _search_offline_menu(self, ctx: ToolContext, query: str) -> ToolResult:
        """Offline with nothing cached: the menu shipped with the car still knows what is around."""
        wanted = query.casefold()
        hits = [
            {
                "id": r["id"],
                "name": r["name"],
                "name_zh": r["name_zh"],
                "cuisine": r["cuisine"],
                "distance_km": r["distance_km"],
            }
            for r in sorted(RESTAURANTS, key=lambda r: r["distance_km"])
            if wanted in r["cuisine"]
            or wanted in r["name"].casefold()
            or any(wanted in i["name"] or wanted in i["name_zh"] for i in r["items"])
        ]
        data = {"restaurants": hits, "source": "offline-menu"}
        if not hits:
            return ToolResult(
                ok=True,
                data=data,
                say="离线中，附近没有找到。"
                if _zh(ctx)
                else f"I'm offline and found nothing for {query} on the saved menus.",
            )
        top = hits[0]
        say = (
            f"离线中。保存的菜单里最近的是{top['name_zh']}，{top['distance_km']}公里。"
            if _zh(ctx)
            else f"I'm offline, but from the saved menus {top['name']} is {top['distance_km']} kilometres away."
        )
        return ToolResult(ok=True, data=data, say=say)

    # ------------------------------------------------------------ order (runs after the driver said yes)

    def _delivery_address(self, wanted: str | None) -> tuple[str, str]:
        """(address sent to the service, how the driver hears it): a saved place, the current destination, home."""
        places = self.config.vehicle.places
        if wanted:
            w = wanted.casefold().strip()
            for place in places:
                if (
                    w in (place.name.casefold(), *(a.casefold() for a in place.aliases))
                    or w == f"the {place.name}"
                ):
                    return place.address, place.name
            return wanted, wanted
        vehicle = self.services.get("vehicle")
        route = None
        try:
            route = vehicle.snapshot().get("route") if vehicle is not None else None
        except Exception:
            route = None
        if route and route.get("address"):
            return route["address"], route.get("destination") or route["address"]
        home = next((p for p in places if p.name == "home"), places[0] if places else None)
        return (home.address, home.name) if home else ("home", "home")

    async def _order(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        q = quote(args)
        if q is None:
            return ToolResult(
                ok=False,
                error=f"{args['item']} is not on any menu nearby",
                say=(
                    f"附近没有{args['item']}。"
                    if _zh(ctx)
                    else f"I couldn't find {args['item']} on any menu nearby."
                ),
            )
        limit = self.config.services.spend_limit
        if q["total"] > limit:
            return ToolResult(
                ok=False,
                error=f"order total {q['total']} is over the spend limit {limit:g}",
                say=(
                    f"超过了{limit:g}元的消费上限。"
                    if _zh(ctx)
                    else f"That is {q['total']:g} yuan, over your {limit:g} yuan spend limit."
                ),
            )
        address, address_said = self._delivery_address(args.get("delivery_address"))
        body = {
            "restaurant_id": q["restaurant_id"],
            "items": [{"name": q["item"], "size": q["size"], "quantity": q["quantity"]}],
            "delivery_address": address,
            # The price the driver agreed to: the service refuses (409) rather than charge another one.
            "expected_total": q["total"],
            "currency": self.config.services.currency,
        }
        queued = await self.access.queue(
            service="meals",
            action="order_meal",
            method="POST",
            path="/orders",
            body=body,
            summary=describe_order(q, ctx.language),
            language=ctx.language,
        )
        data = {"quote": q, "delivery_address": address_said, "outbox": _outbox_view(queued.entry)}
        if queued.finished and queued.state == DELIVERED:
            order = (queued.entry.result or {}).get("order", {})
            data["order"] = order
            eta = order.get("eta_minutes", 25)
            say = (
                f"已下单，大约{eta}分钟送到{address_said}。"
                if _zh(ctx)
                else f"Ordered. It should arrive at {address_said} in about {eta} minutes."
            )
            return ToolResult(ok=True, data=data, say=say)
        if queued.finished:
            return self._finished_badly(ctx, queued, data)
        data["queued"] = True
        return ToolResult(ok=True, data=data, say=_queued_text(ctx, queued, "下单", "place the order"))

    def _finished_badly(self, ctx: ToolContext, queued: Queued, data: dict[str, Any]) -> ToolResult:
        entry = queued.entry
        reason = (entry.last_error or "").split(": ", 1)[-1]
        say = outcome_text(entry, entry.state, reason, expiry_minutes=self.config.outbox.expiry_minutes)
        return ToolResult(ok=False, data=data, error=reason or entry.state, say=say)

    # ------------------------------------------------------------ status (read-only)

    async def _status(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        store = self.access.store
        order_id = args.get("order_id")
        latest = (
            None if order_id else await asyncio.to_thread(store.latest, service="meals", action="order_meal")
        )
        if latest is not None and latest.is_open:
            offline = latest.attempts == 0 or not self.access.monitor.is_online("meals")
            waiting = (
                ("还在等网络恢复" if _zh(ctx) else "waiting for the connection")
                if offline
                else ("正在重试" if _zh(ctx) else "still being sent")
            )
            say = (
                f"{latest.summary}已排队，{waiting}，下单后会告诉您。"
                if _zh(ctx)
                else f"Your order of {latest.summary} is queued, {waiting}. I'll tell you when it's placed."
            )
            return ToolResult(ok=True, data={"outbox": _outbox_view(latest), "queued": True}, say=say)
        if latest is not None and latest.state in (FAILED, EXPIRED):
            reason = (latest.last_error or latest.state).split(": ", 1)[-1]
            say = (
                f"您上一单{latest.summary}没有下成：{reason}。"
                if _zh(ctx)
                else f"Your last order, {latest.summary}, was not placed: {reason}."
            )
            return ToolResult(ok=True, data={"outbox": _outbox_view(latest)}, say=say)
        order_id = order_id or _order_id(latest)
        if order_id is None:
            return ToolResult(
                ok=True,
                data={"order": None},
                say="您目前没有订单。" if _zh(ctx) else "You have no food order right now.",
            )
        client = self.access.client("meals")
        try:
            read = await self.access.read("meals", f"order:{order_id}", lambda: client.order(order_id))
        except ServiceError as err:
            return ToolResult(ok=False, error=err.message, say=err.message)
        if read is None:
            return ToolResult(
                ok=False,
                error="offline and no saved status",
                say="现在连不上，也没有保存的状态。"
                if _zh(ctx)
                else "I can't reach the restaurant service right now, and I have no saved status.",
            )
        order = read.data
        item = (order.get("items") or [{}])[0].get("name", "order")
        if _zh(ctx):
            say = {"cancelled": "您的订单已取消。", "delivered": "您的订单已送达。"}.get(
                order["status"],
                f"您的订单{_STATUS_ZH.get(order['status'], order['status'])}，"
                f"大约{order['eta_minutes']}分钟送到。",
            )
            if read.source == "cache":
                say = f"{read.as_of('zh')}的信息：{say}"
        else:
            say = {
                "cancelled": f"Your {item} order is cancelled.",
                "delivered": f"Your {item} was delivered.",
            }.get(
                order["status"],
                f"Your {item} is {order['status']}, about {order['eta_minutes']} minutes away.",
            )
            if read.source == "cache":
                say = f"{_cap(read.as_of('en'))}, " + say[0].lower() + say[1:]
        return ToolResult(
            ok=True,
            data={"order": order, "source": read.source, "age_seconds": round(read.age_seconds)},
            say=say,
        )

    # ------------------------------------------------------------ cancel (runs after the driver said yes)

    async def _cancel(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        store = self.access.store
        none_say = "没有可以取消的订单。" if _zh(ctx) else "There is no order to cancel."
        if args.get("order_id"):
            target, order_id, summary = (
                None,
                args["order_id"],
                (f"订单{args['order_id']}" if _zh(ctx) else f"order {args['order_id']}"),
            )
        else:
            target = await asyncio.to_thread(store.latest, service="meals", action="order_meal")
            if target is None or target.state in (FAILED, EXPIRED, CANCELLED):
                return ToolResult(ok=False, error="there is no order to cancel", say=none_say)
            order_id = _order_id(target)
            summary = (
                f"您的{target.summary.split('，')[0]}"
                if _zh(ctx)
                else f"your order of {target.summary.rsplit(', ', 1)[0]}"
            )
            if target.is_open and not target.ever_sent:
                # Never left the car: withdraw it here, nothing to tell the restaurant.
                try:
                    await asyncio.to_thread(store.cancel, target.id)
                except Exception:
                    target = await asyncio.to_thread(store.get, target.id)  # it just started sending
                else:
                    return ToolResult(
                        ok=True,
                        data={"outbox": _outbox_view(await asyncio.to_thread(store.get, target.id))},
                        say="已取消，订单还没有发出。"
                        if _zh(ctx)
                        else "Cancelled. The order had not been sent yet.",
                    )
        path = f"/orders/{order_id}/cancel" if order_id else "/orders/{order_id}/cancel"
        depends_on = None if order_id else target.key  # type: ignore[union-attr]
        queued = await self.access.queue(
            service="meals",
            action="cancel_order",
            method="POST",
            path=path,
            body={},
            summary=summary,
            language=ctx.language,
            depends_on=depends_on,
        )
        data = {"outbox": _outbox_view(queued.entry)}
        if queued.finished and queued.state == DELIVERED:
            return ToolResult(
                ok=True, data=data, say="订单已取消。" if _zh(ctx) else "Your order is cancelled."
            )
        if queued.finished and queued.state == CANCELLED:
            return ToolResult(ok=False, data=data, error="there is no order to cancel", say=none_say)
        if queued.finished:
            return self._finished_badly(ctx, queued, data)
        data["queued"] = True
        return ToolResult(ok=True, data=data, say=_queued_text(ctx, queued, "取消", "cancel it"))


_STATUS_ZH = {"placed": "已下单", "preparing": "正在制作", "on the way": "正在配送"}


def _outbox_view(entry: Entry) -> dict[str, Any]:
    return {"id": entry.id, "state": entry.state, "attempts": entry.attempts, "key": entry.key}


def _queued_text(ctx: ToolContext, queued: Queued, verb_zh: str, verb_en: str) -> str:
    if not queued.online:
        return (
            f"现在离线，已排队，恢复网络后会{verb_zh}并告诉您。"
            if _zh(ctx)
            else f"We're offline, so I've queued it. I'll {verb_en} as soon as we're back online and let you know."
        )
    return (
        "服务响应有点慢，已排队，完成后告诉您。"
        if _zh(ctx)
        else f"The service is slow to answer, so I've queued it. I'll {verb_en} and tell you when it's done."
    )
