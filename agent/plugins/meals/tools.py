"""The meals tools as the model sees them: names, descriptions, parameters, grounding cues and examples in
both languages. The plugin gives each its handler."""

from __future__ import annotations

from typing import Any

from agent.plugins.base import Handler, Tool, ToolExample

SIZES = ["small", "medium", "large", "regular"]

_LINE = {
    "type": "object",
    "properties": {
        "item": {"type": "string", "minLength": 1, "maxLength": 80},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 20},
        "size": {"type": "string", "enum": SIZES},
    },
    "required": ["item"],
    "additionalProperties": False,
}


def _ex(utterance: str, **arguments: Any) -> ToolExample:
    return ToolExample(utterance, arguments)


ORDER_EXAMPLES = (
    _ex("order me a large latte", item="latte", size="large"),
    _ex("could I get an iced americano", item="iced americano"),
    _ex("I'd like two cheeseburgers and large fries", item="cheeseburger", quantity=2,
        more_items=[{"item": "fries", "size": "large"}]),
    _ex("get me a pepperoni pizza from Luigi's", item="pepperoni pizza", restaurant="Luigi's"),
    _ex("can you order some food for me"),
    _ex("帮我点两杯拿铁", item="拿铁", quantity=2),
    _ex("我要一份牛肉面和一个葱油饼", item="牛肉面", more_items=[{"item": "葱油饼"}]),
    _ex("来杯大杯珍珠奶茶", item="珍珠奶茶", size="large"),
)
SEARCH_EXAMPLES = (
    _ex("find a noodle place nearby", query="noodle"),
    _ex("is there any sushi around here", query="sushi"),
    _ex("find me somewhere to grab lunch", query="lunch"),
    _ex("附近有什么火锅店", query="火锅"),
)
STATUS_EXAMPLES = (_ex("where's my food"), _ex("how long until the pizza gets here"), _ex("外卖到哪了"),
                   _ex("点的咖啡还要多久"))
CANCEL_EXAMPLES = (_ex("cancel my order"), _ex("把刚才的订单取消"))
REPEAT_EXAMPLES = (_ex("same as last time"), _ex("order what I had yesterday again"), _ex("再来一份上次点的"))


def meal_tools(*, search: Handler, order: Handler, status: Handler, cancel: Handler) -> list[Tool]:
    """The five meals tools; `order` serves both order_meal and repeat_last_order."""
    return [
        Tool(
            name="search_restaurants",
            description="find restaurants, cafés or a dish near the car",
            parameters={
                "type": "object",
                "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 80}},
                "required": ["query"],
                "additionalProperties": False,
            },
            handler=search,
            requires_network=True,
            grounded=("query",),
            examples=SEARCH_EXAMPLES,
            questions={"query": ("What are you looking for?", "您想找什么？")},
        ),
        Tool(
            name="order_meal",
            description="order food or drinks for delivery (only food and drinks: not flowers, tickets or "
            "table bookings): the item as the driver named it, how many, its size, optionally the restaurant "
            "and more items of the same order",
            parameters={
                "type": "object",
                "properties": {
                    **_LINE["properties"],
                    "restaurant": {"type": "string", "minLength": 1, "maxLength": 80},
                    # A saved place ("office") or an address; default the current destination, else home.
                    "delivery_address": {"type": "string", "minLength": 1, "maxLength": 120},
                    "more_items": {"type": "array", "items": _LINE, "maxItems": 8},
                },
                "additionalProperties": False,
            },
            handler=order,
            requires_network=True,
            needs_confirmation=True,
            grounded=("delivery_address",),
            cues={
                "delivery_address": ("deliver", "delivered", "send it to", "bring it to", "address",
                                     "送到", "送去", "地址"),
            },
            examples=ORDER_EXAMPLES,
        ),
        Tool(
            name="repeat_last_order",
            description="order again the same as the driver's last food order",
            parameters={"type": "object", "properties": {}, "additionalProperties": False},
            handler=order,
            requires_network=True,
            needs_confirmation=True,
            examples=REPEAT_EXAMPLES,
        ),
        Tool(
            name="order_status",
            description="where the driver's food order is and when it arrives",
            parameters={
                "type": "object",
                "properties": {"order_id": {"type": "string", "maxLength": 40}},
                "additionalProperties": False,
            },
            handler=status,
            requires_network=True,
            grounded=("order_id",),
            examples=STATUS_EXAMPLES,
        ),
        Tool(
            name="cancel_order",
            description="cancel the driver's food order",
            parameters={
                "type": "object",
                "properties": {"order_id": {"type": "string", "maxLength": 40}},
                "additionalProperties": False,
            },
            handler=cancel,
            requires_network=True,
            needs_confirmation=True,
            grounded=("order_id",),
            examples=CANCEL_EXAMPLES,
        ),
    ]
