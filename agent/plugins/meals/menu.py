"""The reference menu: restaurants near the car and what they sell (shared by the fixture and the reference service)."""

from __future__ import annotations

RESTAURANTS = [
    {
        "id": "luigis",
        "name": "Luigi's Pizzeria",
        "name_zh": "路易吉披萨",
        "cuisine": "pizza",
        "distance_km": 1.2,
        "items": [
            {"name": "pepperoni pizza", "name_zh": "意大利辣香肠披萨", "prices": {"small": 49, "medium": 69, "large": 89}},
            {"name": "margherita pizza", "name_zh": "玛格丽特披萨", "prices": {"small": 39, "medium": 59, "large": 79}},
            {"name": "garlic bread", "name_zh": "蒜香面包", "prices": {"regular": 19}},
            {"name": "cola", "name_zh": "可乐", "prices": {"regular": 8}},
        ],
    },
    {
        "id": "noodle-house",
        "name": "Lanzhou Noodle House",
        "name_zh": "兰州拉面馆",
        "cuisine": "noodles",
        "distance_km": 0.8,
        "items": [
            {"name": "beef noodles", "name_zh": "牛肉面", "prices": {"regular": 28, "large": 34}},
            {"name": "dumplings", "name_zh": "饺子", "prices": {"regular": 22}},
            {"name": "fried rice", "name_zh": "炒饭", "prices": {"regular": 25}},
        ],
    },
    {
        "id": "bean-there",
        "name": "Bean There Coffee",
        "name_zh": "豆在咖啡",
        "cuisine": "coffee",
        "distance_km": 0.5,
        "items": [
            {"name": "latte", "name_zh": "拿铁", "prices": {"small": 22, "medium": 26, "large": 30}},
            {"name": "cappuccino", "name_zh": "卡布奇诺", "prices": {"small": 22, "medium": 26, "large": 30}},
            {"name": "americano", "name_zh": "美式咖啡", "prices": {"small": 18, "medium": 22, "large": 26}},
            {"name": "iced mocha", "name_zh": "冰摩卡", "prices": {"medium": 28, "large": 32}},
            {"name": "croissant", "name_zh": "牛角包", "prices": {"regular": 15}},
        ],
    },
    {
        "id": "burger-barn",
        "name": "Burger Barn",
        "name_zh": "汉堡仓",
        "cuisine": "burgers",
        "distance_km": 2.4,
        "items": [
            {"name": "cheeseburger", "name_zh": "芝士汉堡", "prices": {"regular": 32}},
            {"name": "chicken burger", "name_zh": "鸡肉汉堡", "prices": {"regular": 30}},
            {"name": "fries", "name_zh": "薯条", "prices": {"regular": 12, "large": 16}},
        ],
    },
]


def menu_vocabulary() -> list[str]:
    words: list[str] = []
    for r in RESTAURANTS:
        words += [r["name"], r["name_zh"], r["cuisine"]]
        for item in r["items"]:
            words += [item["name"], item["name_zh"]]
    return words


def _norm(text: str) -> str:
    return " ".join(text.casefold().replace("’", "'").split())


def find_item(item: str, restaurant: str | None = None) -> tuple[dict, dict] | None:
    """The (restaurant, item) best matching what the driver asked for; None when nothing on the menu fits."""
    wanted = _norm(item)
    candidates = RESTAURANTS
    if restaurant:
        r_wanted = _norm(restaurant)
        named = [r for r in RESTAURANTS if r_wanted in _norm(r["name"]) or r_wanted in r["name_zh"]
                 or _norm(r["name"]).startswith(r_wanted.split("'")[0]) or r_wanted == r["cuisine"]]
        candidates = named or RESTAURANTS
    best: tuple[int, dict, dict] | None = None
    for r in sorted(candidates, key=lambda r: r["distance_km"]):
        for it in r["items"]:
            name, zh = _norm(it["name"]), it["name_zh"]
            if wanted in (name, zh):
                score = 3
            elif wanted in name or name in wanted or (zh and (zh in item or item in zh)):
                score = 2
            elif any(w in name.split() for w in wanted.split() if len(w) > 3):
                score = 1
            else:
                continue
            if best is None or score > best[0]:
                best = (score, r, it)
    return (best[1], best[2]) if best else None
