"""From the driver's words to an order the service can take: lines matched to the catalogue, one restaurant,
sizes and counts as said, a price, or the one question that must be asked first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.core.words import numbers_in, string_grounded
from agent.plugins.base import Question
from agent.plugins.meals.catalogue import Catalogue, MenuItem, Restaurant, norm

SIZE_EN = {"small": "small", "medium": "medium", "large": "large", "regular": ""}
SIZE_ZH = {"small": "小份", "medium": "中份", "large": "大份", "regular": ""}
DRINK_SIZE_ZH = {"small": "小杯", "medium": "中杯", "large": "大杯", "regular": ""}
DRINK_CUISINES = frozenset({"coffee", "bubble tea"})


@dataclass
class Line:
    """One line of an order as understood so far: what was asked for, and what it matched."""

    said: str
    quantity: int = 1
    size: str | None = None  # as said (may not be sold for the item)
    item: MenuItem | None = None
    choices: tuple[MenuItem, ...] = ()  # several items fit what was said: the driver picks

    def as_args(self) -> dict[str, Any]:
        out: dict[str, Any] = {"item": self.item.name if self.item else self.said}
        if self.quantity != 1:
            out["quantity"] = self.quantity
        if self.size:
            out["size"] = self.size
        return out


@dataclass
class Quote:
    restaurant: Restaurant
    lines: list[dict[str, Any]]  # {"name", "name_zh", "size", "quantity", "price"}
    total: float
    currency: str = "CNY"
    notes: list[str] = field(default_factory=list)

    def body_items(self) -> list[dict[str, Any]]:
        return [{"name": ln["name"], "size": ln["size"], "quantity": ln["quantity"]} for ln in self.lines]

    def as_dict(self) -> dict[str, Any]:
        return {"restaurant": self.restaurant.name, "restaurant_zh": self.restaurant.name_zh,
                "restaurant_id": self.restaurant.id, "lines": self.lines, "total": self.total}


@dataclass
class Outcome:
    """What preparing an order came to: a quote, a question, or a problem to tell the driver."""

    lines: list[Line]
    restaurant: Restaurant | None = None
    quote: Quote | None = None
    question: Question | None = None
    problem: str | None = None
    applies: bool = True  # False: nothing asked for is on any menu (flowers, a table for two)

    def arguments(self, extra: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments in the catalogue's names (what the eval and the history see)."""
        if not self.lines:
            return {**extra, **({"restaurant": self.restaurant.name} if self.restaurant else {})}
        first, *more = self.lines
        args = {**extra, **first.as_args()}
        if self.restaurant is not None:
            args["restaurant"] = self.restaurant.name
        if more:
            args["more_items"] = [ln.as_args() for ln in more]
        else:
            args.pop("more_items", None)
        return args


def lines_from_arguments(args: dict[str, Any]) -> list[Line]:
    raw = [args] if args.get("item") else []
    raw += [x for x in args.get("more_items") or [] if isinstance(x, dict) and x.get("item")]
    lines = []
    for x in raw:
        quantity = x.get("quantity")
        lines.append(Line(str(x["item"]), int(quantity) if isinstance(quantity, int) and quantity > 0 else 1,
                          x.get("size") if isinstance(x.get("size"), str) else None))
    return lines


def _said_count(quantity: int, utterance: str) -> int:
    """A count the model wrote is kept only if the driver said that number (and not as "16 ounce")."""
    if quantity == 1:
        return 1
    text = norm(utterance)
    if f"{quantity} ounce" in text or f"{quantity} oz" in text:
        return 1
    return quantity if float(quantity) in numbers_in(utterance) else 1


def prepare_order(catalogue: Catalogue, args: dict[str, Any], utterance: str | None, language: str) -> Outcome:
    """Match what the driver asked for to the catalogue and price it, or say what must be asked first.

    `utterance` is what the driver said, which the arguments are checked against; None when the arguments are
    the car's own already (a confirmed order priced again, the last order repeated)."""
    said = utterance is not None
    utterance = utterance or ""
    zh = language == "zh"
    restaurant = catalogue.restaurant_mentioned(utterance) if said else None
    if restaurant is None and args.get("restaurant") and (
            not said or string_grounded(str(args["restaurant"]), utterance)):
        restaurant = catalogue.restaurant_named(str(args["restaurant"]))
    mentions = catalogue.mentions(utterance, restaurant)
    # A line that is only the restaurant's name ("樱花寿司" written as an item) is not a dish.
    lines = [ln for ln in lines_from_arguments(args)
             if not (catalogue.restaurant_named(ln.said) and not catalogue.best(ln.said, restaurant)
                     or (restaurant is not None and norm(ln.said) in map(norm, restaurant.names)))]
    size_said = not said or catalogue.size_word(utterance) is not None
    for line in lines:
        line.quantity = _said_count(line.quantity, utterance) if said else line.quantity
        if not size_said:
            line.size = None  # a size nobody said is the model's guess: the item's default, or a question
    # What the driver named wins over the model's spelling ("iced americos", "coffee" for 拿铁): pair each line
    # with the mention it names, then the rest in order; mentions left over are lines the model missed.
    paired: dict[int, int] = {}
    for li, line in enumerate(lines):
        names = {norm(item.name) for _, item in catalogue.match(line.said, restaurant)[:8]}
        for mi, m in enumerate(mentions):
            if mi not in paired.values() and (norm(m.item.name) in names or m.item.name_zh in line.said):
                paired[li] = mi
                break
    free = [mi for mi in range(len(mentions)) if mi not in paired.values()]
    for li in range(len(lines)):
        scored = catalogue.match(lines[li].said, restaurant)
        # A line that names no dish outright ("coffee" written for 拿铁) takes the next dish the driver named.
        if li not in paired and free and (not scored or scored[0][0] < 3.0):
            paired[li] = free.pop(0)
    for li, mi in paired.items():
        m, line = mentions[mi], lines[li]
        line.item = m.item
        line.quantity = m.quantity or line.quantity
        line.size = m.size or line.size
    for line in lines:
        if line.item is None:
            top = catalogue.best(line.said, restaurant)
            if len(top) == 1:
                line.item = top[0]
            elif len(top) > 1:
                line.choices = tuple(top[:5])
    # The model repeating a dish the driver named once ("two lattes, sorry, three") is one line, not two.
    named_once = {norm(m.item.name) for m in mentions
                  if sum(norm(x.item.name) == norm(m.item.name) for x in mentions) == 1}
    deduped: list[Line] = []
    for li, line in enumerate(lines):
        key = norm(line.item.name) if line.item else None
        if li not in paired and key in named_once and any(d.item and norm(d.item.name) == key for d in deduped):
            continue
        deduped.append(line)
    lines = deduped
    for mi in range(len(mentions)):
        if mi not in paired.values():
            m = mentions[mi]
            if not any(ln.item is not None and norm(ln.item.name) == norm(m.item.name) for ln in lines):
                lines.append(Line(m.item.name, m.quantity or 1, m.size, m.item))
    # A size the driver said once, for a single-line order, belongs to that line ("large, please").
    if len(lines) == 1 and lines[0].size is None:
        lines[0].size = catalogue.size_word(utterance)

    outcome = Outcome(lines, restaurant)
    if not lines:
        where = restaurant.name_zh if zh and restaurant else restaurant.name if restaurant else None
        outcome.question = Question("item", (f"您想从{where}点什么？" if where else "您想点什么？") if zh
                                    else (f"What would you like from {where}?" if where
                                          else "What would you like to order?"))
        return outcome
    for line in lines:
        if line.item is None and line.choices:
            names = [(c.name_zh if zh else c.name) for c in line.choices]
            text = (f"您要哪一种：{'、'.join(names)}？" if zh
                    else f"Which one would you like: {_or_list(names)}?")
            outcome.question = Question("choice", text, tuple(c.name for c in line.choices))
            return outcome
        if line.item is None:
            outcome.problem = (f"附近的菜单上没有{line.said}。" if zh
                               else f"I couldn't find {line.said} on any menu nearby.")
            outcome.applies = any(ln.item is not None or ln.choices for ln in lines)
            return outcome

    chosen = restaurant or _restaurant_for(catalogue, lines)
    if chosen is None:
        names = "、".join(ln.item.name_zh for ln in lines) if zh else _and_list([ln.item.name for ln in lines])
        outcome.problem = (f"没有一家店同时有{names}，一次只能从一家店点。" if zh
                           else f"No single restaurant has {names}; I can order from one restaurant at a time.")
        return outcome
    outcome.restaurant = chosen
    for line in lines:
        if line.item.restaurant_id != chosen.id:
            same = next((i for i in chosen.items if norm(i.name) == norm(line.item.name)), None)
            if same is None:
                name = line.item.name_zh if zh else line.item.name
                outcome.problem = (f"{chosen.name_zh}没有{name}。" if zh else f"{chosen.name} doesn't have {name}.")
                return outcome
            line.item = same
    for line in lines:
        size = line.item.size_for(line.size)
        if size is None:
            sizes = [s for s in line.item.prices if s != "regular"]
            name = line.item.name_zh if zh else line.item.name
            if line.size and line.size not in line.item.prices:
                text = (f"{name}没有{SIZE_ZH.get(line.size, line.size)}，要{'、'.join(SIZE_ZH[s] for s in sizes)}？" if zh
                        else f"The {name} doesn't come in {line.size}. {_or_list(sizes).capitalize()}?")
            else:
                text = (f"{name}要多大的：{'、'.join(SIZE_ZH[s] for s in sizes)}？" if zh
                        else f"What size {name}: {_or_list(sizes)}?")
            outcome.question = Question("size", text, tuple(sizes))
            return outcome
        line.size = size
    if not chosen.open:
        outcome.problem = (f"{chosen.name_zh}现在没营业。" if zh else f"{chosen.name} is closed right now.")
        return outcome
    priced = [{"name": ln.item.name, "name_zh": ln.item.name_zh, "size": ln.size, "quantity": ln.quantity,
               "price": ln.item.prices[ln.size]} for ln in lines]
    total = round(sum(p["price"] * p["quantity"] for p in priced), 2)
    outcome.quote = Quote(chosen, priced, int(total) if float(total).is_integer() else total, catalogue.currency)
    return outcome


def _restaurant_for(catalogue: Catalogue, lines: list[Line]) -> Restaurant | None:
    """The nearest open restaurant that sells every line (by name), else the nearest that does."""
    names = [norm(ln.item.name) for ln in lines]
    fits = [r for r in catalogue.restaurants if all(any(norm(i.name) == n for i in r.items) for n in names)]
    fits.sort(key=lambda r: (not r.open, r.distance_km))
    return fits[0] if fits else None


def describe(quote: Quote, language: str) -> str:
    """ "a large pepperoni pizza and two colas from Luigi's Pizzeria, 105 yuan" / 路易吉披萨的一份大份…，105元"""
    if language == "zh":
        parts = []
        # Drinks from a café or a tea house come in cups (两杯大杯拿铁), the rest in portions (一份大份披萨).
        cups = quote.restaurant.cuisine in DRINK_CUISINES
        for ln in quote.lines:
            size = (DRINK_SIZE_ZH if cups else SIZE_ZH).get(ln["size"], "")
            count = _ZH_COUNTS.get(ln["quantity"], str(ln["quantity"]))
            parts.append(f"{count}{'杯' if cups else '份'}{size}{ln['name_zh']}")
        return f"{quote.restaurant.name_zh}的{'、'.join(parts)}，{quote.total}元"
    parts = []
    for ln in quote.lines:
        size = SIZE_EN.get(ln["size"], ln["size"])
        name = ln["name"]
        if ln["quantity"] > 1:
            name = name if name.endswith("s") else name + "s"
            parts.append(f"{_count_word(ln['quantity'])} {size + ' ' if size else ''}{name}")
        else:
            article = "an" if (size or name)[:1] in "aeiou" else "a"
            parts.append(f"{article} {size + ' ' if size else ''}{name}")
    return f"{_and_list(parts)} from {quote.restaurant.name}, {quote.total} yuan"


_ZH_COUNTS = {1: "一", 2: "两", 3: "三", 4: "四", 5: "五", 6: "六", 7: "七", 8: "八", 9: "九", 10: "十"}


def _count_word(n: int) -> str:
    return {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}.get(n, str(n))


def _and_list(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _or_list(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
