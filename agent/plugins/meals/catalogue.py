"""The menus the car orders from, as the meals service serves them, and how the driver's words name an item.

Nothing here is built into the car: the catalogue comes from `GET /catalogue` and is kept on the device with its
age, so a tunnel does not empty the menu. Matching knows English names, aliases and Chinese names, sizes said in
either language (大杯, venti, 16 ounce) and the counts in front of an item ("two large lattes", 两杯拿铁).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from agent.core.words import zh_number

_CJK = re.compile(r"[\u3400-\u9fff]")
_ZH_COUNT = re.compile(r"([零一二两俩三四五六七八九十]+|\d+)\s*(?:杯|份|个|碗|瓶|罐|盒|块|只|串|张|根|听|打|盘|笼|袋)")
_EN_COUNT_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "couple": 2, "pair": 2, "dozen": 12, "single": 1, "double": 2, "triple": 3,
}
_UNIT_AFTER = re.compile(r"^\s*(?:ounce|ounces|oz|ml|inch|inches|degrees?|percent|minutes?)\b")


def norm(text: str) -> str:
    """Casefold, NFKC, curly quotes and possessives away, punctuation to spaces."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("’", "'")
    text = re.sub(r"'s\b", "s", text)
    text = re.sub(r"[^\w\u3400-\u9fff]+", " ", text)
    return " ".join(text.split())


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ches", "shes", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _stem(text: str) -> str:
    return " ".join(_singular(w) for w in norm(text).split())


@dataclass(frozen=True)
class MenuItem:
    restaurant_id: str
    name: str
    name_zh: str
    prices: dict[str, float]
    aliases: tuple[str, ...] = ()
    default_size: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, self.name_zh, *self.aliases)

    def size_for(self, wanted: str | None) -> str | None:
        """The size to order: the one asked for if sold, the default, the only one; None: must be asked."""
        if wanted in self.prices:
            return wanted
        if wanted is not None and len(self.prices) > 1 and wanted != "regular":
            return None  # asked for a size this item does not come in: ask rather than guess
        if self.default_size in self.prices:
            return self.default_size
        if len(self.prices) == 1:
            return next(iter(self.prices))
        if "regular" in self.prices:
            return "regular"
        return None


@dataclass(frozen=True)
class Restaurant:
    id: str
    name: str
    name_zh: str
    cuisine: str
    distance_km: float
    items: tuple[MenuItem, ...]
    aliases: tuple[str, ...] = ()
    cuisine_zh: str = ""
    open: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, self.name_zh, *self.aliases)


@dataclass(frozen=True)
class Mention:
    """An item named in the driver's words, with what was said right in front of it."""

    item: MenuItem
    start: int
    end: int
    quantity: int | None = None
    size: str | None = None
    alternatives: tuple[MenuItem, ...] = ()  # other restaurants' items with the same name


@dataclass
class Catalogue:
    restaurants: list[Restaurant]
    sizes: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    version: str = ""
    currency: str = "CNY"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Catalogue:
        restaurants = []
        for r in data.get("restaurants") or []:
            items = tuple(
                MenuItem(
                    restaurant_id=r["id"], name=i["name"], name_zh=i.get("name_zh", ""),
                    prices={k: float(v) for k, v in i["prices"].items()}, aliases=tuple(i.get("aliases", ())),
                    default_size=i.get("default_size"),
                )
                for i in r.get("items") or []
            )
            restaurants.append(Restaurant(
                id=r["id"], name=r["name"], name_zh=r.get("name_zh", ""), cuisine=r.get("cuisine", ""),
                distance_km=float(r.get("distance_km", 0)), items=items, aliases=tuple(r.get("aliases", ())),
                cuisine_zh=r.get("cuisine_zh", ""), open=bool(r.get("open", True)),
            ))
        return cls(restaurants, dict(data.get("sizes") or {}), str(data.get("version", "")),
                   str(data.get("currency", "CNY")))

    # ------------------------------------------------------------ lookups

    def restaurant(self, restaurant_id: str) -> Restaurant | None:
        return next((r for r in self.restaurants if r.id == restaurant_id), None)

    def items(self) -> list[MenuItem]:
        return [i for r in self.restaurants for i in r.items]

    def vocabulary(self) -> list[str]:
        """Words recognition is biased toward: restaurant and item names in both languages."""
        words: list[str] = []
        for r in self.restaurants:
            words += [r.name, r.name_zh, r.cuisine]
            words += [n for i in r.items for n in (i.name, i.name_zh)]
        return [w for w in words if w]

    # ------------------------------------------------------------ the driver's words

    def size_word(self, text: str) -> str | None:
        """The size said in `text` ("large", "venti", "16 ounce", 大杯), None when none was."""
        found = self._sizes_in(norm(text))
        return found[0][2] if found else None

    def _sizes_in(self, text: str) -> list[tuple[int, int, str]]:
        spans = []
        for size, words in self.sizes.items():
            for word in [*words.get("en", []), *words.get("zh", [])]:
                w = norm(word)
                if not w:
                    continue
                pattern = re.escape(w) if _CJK.search(w) else rf"(?<![\w]){re.escape(w)}(?![\w])"
                spans += [(m.start(), m.end(), size) for m in re.finditer(pattern, text)]
        # Longest first, so "extra large" wins over "large" and 超大杯 over 大杯.
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        kept: list[tuple[int, int, str]] = []
        for span in spans:
            if not kept or span[0] >= kept[-1][1]:
                kept.append(span)
        return kept

    def restaurant_named(self, text: str) -> Restaurant | None:
        """The restaurant `text` names (its name, an alias, its Chinese name, or a close misspelling)."""
        t = norm(text)
        if not t:
            return None
        best: tuple[int, Restaurant] | None = None
        for r in self.restaurants:
            if t == norm(r.id):
                return r
            for name in r.names:
                n = norm(name)
                if not n:
                    continue
                if n == t:
                    score = 3
                elif _contains_words(t, n) or (len(t) >= 4 and _contains_words(n, t)):
                    score = 2
                elif difflib.SequenceMatcher(None, t, n).ratio() >= 0.82:
                    score = 1
                else:
                    continue
                if best is None or score > best[0]:
                    best = (score, r)
        return best[1] if best else None

    def restaurant_mentioned(self, text: str) -> Restaurant | None:
        """A restaurant named anywhere in a whole utterance."""
        t = norm(text)
        for r in sorted(self.restaurants, key=lambda r: -max(len(norm(n)) for n in r.names)):
            if any(norm(n) and _contains_words(t, norm(n)) for n in r.names):
                return r
        return None

    def match(self, words: str, restaurant: Restaurant | None = None) -> list[tuple[float, MenuItem]]:
        """Items that `words` may name with how well, best first: exact names and aliases, then names the words
        contain, then words the names contain, then close spellings ("iced americos")."""
        w = _stem(words)
        if not w:
            return []
        pool = list(restaurant.items) if restaurant else self.items()
        scored: list[tuple[float, MenuItem]] = []
        for item in pool:
            best = 0.0
            for name in item.names:
                n = _stem(name)
                if not n:
                    continue
                if n == w:
                    best = max(best, 4.0)
                elif _contains_words(w, n):
                    # the driver's words contain the name: longer names explain more of what was said
                    best = max(best, 3.0 + min(len(n) / max(len(w), 1), 0.99))
                elif _contains_words(n, w):
                    best = max(best, 2.0 + min(len(w) / max(len(n), 1), 0.99))
                else:
                    ratio = difflib.SequenceMatcher(None, w, n).ratio()
                    if ratio >= 0.8:
                        best = max(best, 1.0 + ratio - 0.8)
            if best:
                scored.append((best, item))
        scored.sort(key=lambda s: -s[0])
        return scored

    def best(self, words: str, restaurant: Restaurant | None = None) -> list[MenuItem]:
        """The items that fit `words` best, one per dish name: one means a match, several mean "which one?"."""
        scored = self.match(words, restaurant)
        if not scored:
            return []
        top = scored[0][0]
        # Words that are part of several names ("pizza") fit each of them as well: that is a question.
        floor = 2.0 if 2.0 <= top < 3.0 else top - 1e-9
        out: list[MenuItem] = []
        for score, item in scored:
            if score < floor:
                break
            if all(_stem(o.name) != _stem(item.name) for o in out):
                out.append(item)
        return out

    def mentions(self, text: str, restaurant: Restaurant | None = None) -> list[Mention]:
        """Items named in an utterance, in order, longest names first, each with its count and size words."""
        t = norm(text)
        pool = list(restaurant.items) if restaurant else self.items()
        spans: list[tuple[int, int, MenuItem]] = []
        for item in pool:
            for name in item.names:
                n = norm(name)
                if len(n) < 2:
                    continue
                forms = {n, _stem(n)} if not _CJK.search(n) else {n}
                for form in forms:
                    pattern = (re.escape(form) if _CJK.search(form)
                               else rf"(?<![\w]){re.escape(form)}(?:s|es)?(?![\w])")
                    spans += [(m.start(), m.end(), item) for m in re.finditer(pattern, t)]
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        kept: list[tuple[int, int, MenuItem]] = []
        for span in spans:
            if kept and span[0] < kept[-1][1]:
                continue
            kept.append(span)
        # Restaurant names ("Bean There Coffee") are not dishes.
        names = [(m.start(), m.end()) for r in self.restaurants for n in r.names if norm(n)
                 for m in re.finditer(re.escape(norm(n)), t)]
        kept = [s for s in kept if not any(a <= s[0] and s[1] <= b and (b - a) > (s[1] - s[0]) for a, b in names)]
        out: list[Mention] = []
        previous_end = 0
        for n, (start, end, item) in enumerate(kept):
            before = t[previous_end:start]
            after = t[end : kept[n + 1][0] if n + 1 < len(kept) else len(t)]
            same_name = tuple(i for i in pool if i is not item and _stem(i.name) == _stem(item.name))
            count = _corrected_count(after) or _count_before(before)
            out.append(Mention(item, start, end, count, self._size_before(before, t[end:]), same_name))
            previous_end = end
        return out

    def _size_before(self, before: str, after: str) -> str | None:
        sizes = self._sizes_in(before)
        if sizes:
            return sizes[-1][2]
        # "a latte, large" / 拿铁要大杯: a size right after the item counts too.
        tail = self._sizes_in(after[:12])
        return tail[0][2] if tail and tail[0][0] <= 6 else None


def _contains_words(text: str, name: str) -> bool:
    if _CJK.search(name):
        return name in text
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text) is not None


_CORRECTION = re.compile(r"^\s*(?:sorry|no|i mean|actually|wait|make that|make it|不对|不是|哦不|应该是|改成)\s+"
                         r"(\w+)")


def _corrected_count(after: str) -> int | None:
    """ "two lattes, sorry, three": the count said after a correction right behind the item."""
    m = _CORRECTION.match(after)
    if m is None:
        return None
    word = m.group(1)
    if word.isdigit():
        return int(word)
    if word in _EN_COUNT_WORDS and word not in ("a", "an", "single", "double", "triple"):
        return _EN_COUNT_WORDS[word]
    value = zh_number(re.sub(r"[杯份个碗瓶]$", "", word)) if re.match(r"[一二两三四五六七八九十]", word) else None
    return int(value) if value else None


def _count_before(before: str) -> int | None:
    """The count said right before an item: "two large", "a couple of", 两杯, "2x"."""
    tail = before[-14:]
    m = None
    for m in _ZH_COUNT.finditer(tail):
        pass
    if m is not None:
        raw = m.group(1)
        value = int(raw) if raw.isdigit() else zh_number(raw)
        return int(value) if value else None
    words = tail.split()
    for i in range(len(words) - 1, -1, -1):
        word = words[i]
        if word in ("and", "with", "plus", "also", "和", "还有", "再"):
            break
        if word.isdigit():
            rest = " ".join(words[i + 1 :])
            if _UNIT_AFTER.match(" " + rest):
                continue  # "16 ounce": a size, not sixteen drinks
            return int(word)
        if word in _EN_COUNT_WORDS and word not in ("single", "double", "triple"):
            return _EN_COUNT_WORDS[word]
    return None
