"""What the driver said, read as values: numbers in words and digits (English and Chinese), names and cue words
found in an utterance, and where each was said. Used by the turn engine and by the plugins alike."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

_EN_UNITS = {
    "zero": 0, "oh": 0, "one": 1, "a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "couple": 2, "dozen": 12,
}
_EN_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000}
_ZH_NUM_RE = re.compile(r"[零〇一二两俩三四五六七八九十百千]+(?:点[零〇一二三四五六七八九]+)?")
_DIGITS_RE = re.compile(r"\d+(?:\.\d+)?")
_HALF_RE = re.compile(r"(\d+|[零一二两三四五六七八九十]+)\s*(?:度半|点半|and a half)")
_CJK_RE = re.compile(r"[\u3400-\u9fff]")
_WORD_RE = re.compile(r"[a-z0-9']+")
_STOP_WORDS = {"the", "and", "for", "from", "with", "your", "my", "some", "please", "near", "nearest"}


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().replace("-", " ").split())


def has_cjk(text: str) -> bool:
    return bool(_CJK_RE.search(text))


def _zh_integer(text: str) -> int | None:
    total, current = 0, 0
    for ch in text:
        if ch in _ZH_DIGITS:
            current = _ZH_DIGITS[ch]
        elif ch in _ZH_UNITS:
            total += (current or 1) * _ZH_UNITS[ch]
            current = 0
        else:
            return None
    return total + current


def zh_number(text: str) -> float | None:
    """二十二 -> 22, 十八 -> 18, 二十五点五 -> 25.5, 一百二十 -> 120."""
    whole, _, frac = text.partition("点")
    value = _zh_integer(whole) if whole else 0
    if value is None:
        return None
    if frac:
        digits = "".join(str(_ZH_DIGITS[c]) for c in frac if c in _ZH_DIGITS)
        return float(f"{value}.{digits}") if digits else float(value)
    return float(value)


def numbers_in(text: str) -> set[float]:
    """Every number the driver said: digits, English number words (twenty one, a couple), Chinese numerals."""
    found: set[float] = set()
    norm = normalize(text)
    found.update(float(m) for m in _DIGITS_RE.findall(norm))
    for m in _ZH_NUM_RE.finditer(text):
        # 一点 / 一下 / 一些 are "a bit", "once", "some": not the number one.
        if m.group() == "一" and text[m.end() : m.end() + 1] in ("点", "下", "些", "会", "起", "直"):
            continue
        value = zh_number(m.group())
        if value is not None:
            found.add(value)
    # "25度半", "21 and a half", "twenty one and a half": the half counts.
    for m in _HALF_RE.finditer(norm):
        base = m.group(1)
        value = float(base) if base[0].isdigit() else zh_number(base)
        if value is not None:
            found.add(value + 0.5)
    words = _WORD_RE.findall(norm)
    i = 0
    while i < len(words):
        word = words[i]
        if word in _EN_TENS:
            value = _EN_TENS[word]
            if i + 1 < len(words) and words[i + 1] in _EN_UNITS and 0 < _EN_UNITS[words[i + 1]] < 10 \
                    and words[i + 1] not in ("a", "an"):
                value += _EN_UNITS[words[i + 1]]
                i += 1
            found.add(float(value))
        elif word in _EN_UNITS:
            found.add(float(_EN_UNITS[word]))
        if i + 1 < len(words) and words[i + 1] == "hundred" and word in _EN_UNITS:
            found.add(float(_EN_UNITS[word] * 100))
        i += 1
    # "twenty one and a half": a word number followed by "and a half"
    for m in re.finditer(r"((?:twenty|thirty|forty|fifty)(?: (?:one|two|three|four|five|six|seven|eight|nine))?|"
                         r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
                         r"sixteen|seventeen|eighteen|nineteen) and a half", norm):
        parts = m.group(1).split()
        value = sum(_EN_TENS.get(p, _EN_UNITS.get(p, 0)) for p in parts)
        found.add(float(value) + 0.5)
    return found


def string_grounded(value: str, utterance: str, aliases: Iterable[Iterable[str]] = ()) -> bool:
    """A string argument is grounded when the driver said it, a word of it, or an alias of it."""
    v, u = normalize(value), normalize(utterance)
    if not v:
        return False
    if v in u:
        return True
    if has_cjk(utterance) and not has_cjk(value):
        # The model translated a Chinese request into English ("回家" -> "home"): we cannot check the words,
        # but we can check an alias group, and otherwise give the benefit of the doubt.
        return _alias_grounded(v, u, aliases, default=True)
    if has_cjk(value):
        chars = [c for c in v if _CJK_RE.match(c)]
        pairs = {v[i : i + 2] for i in range(len(v) - 1) if all(_CJK_RE.match(c) for c in v[i : i + 2])}
        if pairs and any(p in u for p in pairs):
            return True
        if len(chars) == 1 and chars[0] in u:
            return True
        return _alias_grounded(v, u, aliases, default=False)
    content = [w for w in _WORD_RE.findall(v) if len(w) >= 3 and w not in _STOP_WORDS]
    said = [w for w in content if re.search(_cue_pattern(w), u)]
    # Most of the value's words must have been said: "your favorite pizza place" for "a pizza" was invented.
    if content and len(said) * 2 >= len(content) + (1 if len(content) > 2 else 0):
        return True
    return _alias_grounded(v, u, aliases, default=False)


def _alias_grounded(v: str, u: str, aliases: Iterable[Iterable[str]], default: bool) -> bool:
    for group in aliases:
        names = [normalize(a) for a in group]
        if any(v == n or v in n for n in names):
            return any(n and n in u for n in names)
    return default


def value_grounded(value: Any, utterance: str, aliases: Iterable[Iterable[str]] = ()) -> bool:
    if isinstance(value, bool):
        return True  # booleans are checked through cues
    if isinstance(value, int | float):
        said = numbers_in(utterance)
        return any(abs(float(value) - n) < 1e-6 for n in said)
    if isinstance(value, str):
        return string_grounded(value, utterance, aliases)
    return True


def _cue_pattern(cue: str) -> str:
    """A cue word with its common inflections: latte/lattes, arrive/arriving/arrived, noodles/noodle."""
    forms = {re.escape(cue)}
    if cue.endswith("s") and len(cue) > 3:
        forms.add(re.escape(cue[:-1]))
    if cue.endswith("e") and len(cue) > 3:
        forms.add(re.escape(cue[:-1]) + "ing")
    return rf"(?<![a-z])(?:{'|'.join(sorted(forms))})(?:s|es|d|ed|ing)?(?![a-z])"


def cue_present(cues: Iterable[str], utterance: str) -> bool:
    u = normalize(utterance)
    for cue in cues:
        c = normalize(cue)
        if has_cjk(c):
            if c in u:
                return True
        elif re.search(_cue_pattern(c), u):
            return True
    return False


def trim_to_said(value: str, utterance: str, aliases: Iterable[Iterable[str]] = ()) -> str | None:
    """The part of a wordy value the driver said: "Taylor Swift song, volume up" -> "Taylor Swift song".

    None when no part of it was said.
    """
    if has_cjk(value):
        return None
    for part in re.split(r"[,;()\[\]\"]|'(?!s\b)| - ", value):
        part = re.sub(r"'s\b", "", part).strip(" .'")
        if part and string_grounded(part, utterance, aliases):
            return part
    return None


def first_number_position(utterance: str) -> int | None:
    u = normalize(utterance)
    m = re.search(r"\d|[一二两三四五六七八九十]+度|\b(?:" + "|".join([*_EN_TENS, *[w for w in _EN_UNITS if len(w) > 2]])
                  + r")\b", u)
    return m.start() if m else None


def mention_position(utterance: str, words: Iterable[str]) -> int | None:
    """Where in the utterance the first of `words` is said (None: none of them is)."""
    u = normalize(utterance)
    found = []
    for word in words:
        w = normalize(word)
        m = re.search(re.escape(w) if has_cjk(w) else _cue_pattern(w), u) if w else None
        if m:
            found.append(m.start())
    return min(found) if found else None
