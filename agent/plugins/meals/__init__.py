"""Meal ordering from the driver's seat: search, order (with confirmation), status and cancel.

Until the service backend lands, answers come from a local fixture and say so (`"source": "fixture"`).
"""

from __future__ import annotations

import itertools
from typing import Any

from agent.plugins.base import Plugin, Tool, ToolContext, ToolResult
from agent.plugins.meals.menu import RESTAURANTS, find_item, menu_vocabulary

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
        size = "regular" if "regular" in item["prices"] else ("medium" if "medium" in item["prices"] else next(iter(item["prices"])))
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


class FixtureMeals:
    """A local stand-in for the meals service, clearly marked as such in every result."""

    def __init__(self) -> None:
        self._ids = itertools.count(1001)
        self.orders: dict[str, dict[str, Any]] = {}

    def place(self, q: dict[str, Any]) -> dict[str, Any]:
        order_id = f"M{next(self._ids)}"
        order = {**q, "order_id": order_id, "status": "preparing", "eta_minutes": 25}
        self.orders[order_id] = order
        return order

    def latest(self, order_id: str | None) -> dict[str, Any] | None:
        if order_id:
            return self.orders.get(order_id)
        return next(reversed(self.orders.values()), None)


class MealsPlugin(Plugin):
    name = "meals"
    requires_network = True

    def __init__(self, config: Any, services: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.backend = FixtureMeals()

    def vocabulary(self) -> list[str]:
        return menu_vocabulary()

    def tools(self) -> list[Tool]:
        return [
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
                    },
                    "required": ["item"],
                    "additionalProperties": False,
                },
                handler=self._order,
                requires_network=True,
                needs_confirmation=True,
                grounded=("item",),
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
            ),
        ]

    async def confirmation_prompt(self, ctx: ToolContext, name: str, args: dict[str, Any]) -> str | None:
        if name == "order_meal":
            q = quote(args)
            if q is None:
                return None
            text = describe_order(q, ctx.language)
            return f"{text}。要下单吗？" if ctx.language == "zh" else f"{text[0].upper()}{text[1:]}. Shall I order it?"
        if name == "cancel_order":
            return "要取消您的订单吗？" if ctx.language == "zh" else "Cancel your food order?"
        return None

    async def _search(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        wanted = args["query"].casefold()
        hits = [
            {"name": r["name"], "cuisine": r["cuisine"], "distance_km": r["distance_km"]}
            for r in RESTAURANTS
            if wanted in r["cuisine"] or any(wanted in i["name"] or wanted in i["name_zh"] for i in r["items"])
            or wanted in r["name"].casefold()
        ]
        if not hits:
            return ToolResult(ok=True, data={"restaurants": [], "source": "fixture"},
                              say="附近没有找到。" if ctx.language == "zh" else f"I found nothing for {args['query']} nearby.")
        top = hits[0]
        say = (f"最近的是{top['name']}，{top['distance_km']}公里。" if ctx.language == "zh"
               else f"{top['name']} is {top['distance_km']} kilometres away.")
        return ToolResult(ok=True, data={"restaurants": hits, "source": "fixture"}, say=say)

    async def _order(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        q = quote(args)
        if q is None:
            return ToolResult(ok=False, error=f"{args['item']} is not on any menu nearby",
                              say=(f"附近没有{args['item']}。" if ctx.language == "zh"
                                   else f"I couldn't find {args['item']} on any menu nearby."))
        limit = self.config.services.spend_limit
        if q["total"] > limit:
            return ToolResult(ok=False, error=f"order total {q['total']} is over the spend limit {limit}",
                              say=(f"超过了{limit:g}元的消费上限。" if ctx.language == "zh"
                                   else f"That is over your {limit:g} yuan spend limit."))
        order = self.backend.place(q)
        say = (f"已下单，大约{order['eta_minutes']}分钟送到。" if ctx.language == "zh"
               else f"Ordered. It should arrive in about {order['eta_minutes']} minutes.")
        return ToolResult(ok=True, data={"order": order, "source": "fixture"}, say=say)

    async def _status(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        order = self.backend.latest(args.get("order_id"))
        if order is None:
            return ToolResult(ok=True, data={"order": None, "source": "fixture"},
                              say="您目前没有订单。" if ctx.language == "zh" else "You have no food order right now.")
        say = (f"您的{order['item_zh']}正在制作，大约{order['eta_minutes']}分钟送到。" if ctx.language == "zh"
               else f"Your {order['item']} is {order['status']}, about {order['eta_minutes']} minutes away.")
        return ToolResult(ok=True, data={"order": order, "source": "fixture"}, say=say)

    async def _cancel(self, ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
        order = self.backend.latest(args.get("order_id"))
        if order is None:
            return ToolResult(ok=False, error="there is no order to cancel",
                              say="没有可以取消的订单。" if ctx.language == "zh" else "There is no order to cancel.")
        order["status"] = "cancelled"
        return ToolResult(ok=True, data={"order": order, "source": "fixture"},
                          say="订单已取消。" if ctx.language == "zh" else "Your order is cancelled.")
