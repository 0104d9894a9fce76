"""Text normalisation before speech: numbers, units, money, times and ids written the way a person says them.

Piper's espeak front end reads "14:30" as "fourteen thirty" and "M1001" as "M one thousand and one";
the driver should hear "two thirty p m" and "M one zero zero one". English (`en`) and Chinese (`zh`) are
supported; other languages pass through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# ---------------------------------------------------------------- English numbers

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")]
_ORDINAL_EXCEPTIONS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def number_en(n: int) -> str:
    """Cardinal number in words: 21 -> "twenty-one", 105 -> "one hundred five"."""
    if n < 0:
        return "minus " + number_en(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_en(rest)}" if rest else "")
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return f"{number_en(high)} {name}" + (f" {number_en(rest)}" if rest else "")
    raise AssertionError("unreachable")


def ordinal_en(n: int) -> str:
    words = number_en(n)
    head, sep, last = words.rpartition("-") if "-" in words.split()[-1] else words.rpartition(" ")
    if last in _ORDINAL_EXCEPTIONS:
        last = _ORDINAL_EXCEPTIONS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head}{sep}{last}"


def decimal_en(text: str) -> str:
    """ "3.5" -> "three point five"; "-2" -> "minus two"; digits after the point are read one by one."""
    negative = text.startswith(("-", "−"))
    text = text.lstrip("-−").replace(",", "")
    whole, _, frac = text.partition(".")
    words = number_en(int(whole or "0"))
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    return ("minus " + words) if negative else words


def digits_en(text: str) -> str:
    return " ".join(_ONES[int(d)] for d in text if d.isdigit())


# ---------------------------------------------------------------- Chinese numbers

_ZH_DIGITS = "零一二三四五六七八九"
_ZH_UNITS = ["", "十", "百", "千"]


def _zh_below_10000(n: int) -> str:
    out = ""
    zero_pending = False
    for power in (3, 2, 1, 0):
        digit = (n // 10**power) % 10
        if digit == 0:
            if out:
                zero_pending = True
            continue
        if zero_pending:
            out += "零"
            zero_pending = False
        out += _ZH_DIGITS[digit] + _ZH_UNITS[power]
    return out


def number_zh(n: int) -> str:
    """Cardinal number in Chinese: 21 -> 二十一, 105 -> 一百零五, 10 -> 十, 20005 -> 两万零五."""
    if n < 0:
        return "负" + number_zh(-n)
    if n == 0:
        return "零"
    parts: list[tuple[int, str]] = []
    for scale, name in ((10**8, "亿"), (10**4, "万"), (1, "")):
        if n >= scale:
            high, n = divmod(n, scale)
            parts.append((high, name))
        elif parts:
            parts.append((0, name))
    out = ""
    for i, (value, name) in enumerate(parts):
        if value == 0:
            continue
        if out and (value < 1000 or (i > 0 and parts[i - 1][0] == 0)):
            out += "零"
        out += _zh_below_10000(value) + name
    # 10-19 are read 十, 十一 ... not 一十, 一十一 (only at the very start).
    if out.startswith("一十"):
        out = out[1:]
    # A leading 2 before 千/万/亿 is said 两 (两千, 两万).
    if len(out) > 1 and out[0] == "二" and out[1] in "千万亿":
        out = "两" + out[1:]
    return out


def decimal_zh(text: str) -> str:
    negative = text.startswith(("-", "−"))
    text = text.lstrip("-−").replace(",", "")
    whole, _, frac = text.partition(".")
    words = number_zh(int(whole or "0"))
    if frac:
        words += "点" + "".join(_ZH_DIGITS[int(d)] for d in frac)
    return ("负" + words) if negative else words


def digits_zh(text: str) -> str:
    return "".join(_ZH_DIGITS[int(d)] for d in text if d.isdigit())


def _liang(words: str) -> str:
    """Before a measure word a lone 2 is 两 (两公里, 两点), not 二."""
    return "两" if words == "二" else words


# ---------------------------------------------------------------- patterns

_NUM = r"[-−]?\d+(?:,\d{3})*(?:\.\d+)?"
_UNITS_EN: dict[str, tuple[str, str]] = {
    # written form -> (singular, plural)
    "km/h": ("kilometre per hour", "kilometres per hour"),
    "kmh": ("kilometre per hour", "kilometres per hour"),
    "mph": ("mile per hour", "miles per hour"),
    "km": ("kilometre", "kilometres"),
    "kilometers": ("kilometre", "kilometres"),
    "kilometres": ("kilometre", "kilometres"),
    "kilometer": ("kilometre", "kilometres"),
    "kilometre": ("kilometre", "kilometres"),
    "m": ("metre", "metres"),
    "mi": ("mile", "miles"),
    "kg": ("kilogram", "kilograms"),
    "g": ("gram", "grams"),
    "l": ("litre", "litres"),
    "kwh": ("kilowatt hour", "kilowatt hours"),
    "kw": ("kilowatt", "kilowatts"),
    "min": ("minute", "minutes"),
    "mins": ("minute", "minutes"),
    "h": ("hour", "hours"),
    "hr": ("hour", "hours"),
    "hrs": ("hour", "hours"),
    "s": ("second", "seconds"),
    "sec": ("second", "seconds"),
    "secs": ("second", "seconds"),
    "%": ("percent", "percent"),
    "yuan": ("yuan", "yuan"),
    "rmb": ("yuan", "yuan"),
    "cny": ("yuan", "yuan"),
    "元": ("yuan", "yuan"),
    "块": ("yuan", "yuan"),
    "usd": ("dollar", "dollars"),
    "dollars": ("dollar", "dollars"),
    "dollar": ("dollar", "dollars"),
    "eur": ("euro", "euros"),
    "公里": ("kilometre", "kilometres"),
    "分钟": ("minute", "minutes"),
    "小时": ("hour", "hours"),
}
_UNITS_ZH: dict[str, str] = {
    "km/h": "公里每小时",
    "kmh": "公里每小时",
    "km": "公里",
    "kilometers": "公里",
    "kilometres": "公里",
    "kilometer": "公里",
    "kilometre": "公里",
    "公里": "公里",
    "m": "米",
    "米": "米",
    "kg": "公斤",
    "公斤": "公斤",
    "l": "升",
    "升": "升",
    "kwh": "度电",
    "min": "分钟",
    "mins": "分钟",
    "minutes": "分钟",
    "minute": "分钟",
    "分钟": "分钟",
    "h": "小时",
    "hr": "小时",
    "hours": "小时",
    "hour": "小时",
    "小时": "小时",
    "s": "秒",
    "秒": "秒",
    "yuan": "元",
    "rmb": "元",
    "cny": "元",
    "元": "元",
    "块": "块",
    "块钱": "块钱",
    "dollars": "美元",
    "usd": "美元",
    "个": "个",
    "份": "份",
    "杯": "杯",
}
# Currency symbols before the number.
_CURRENCY_PREFIX = {
    "¥": ("yuan", "元"),
    "￥": ("yuan", "元"),
    "$": ("dollars", "美元"),
    "€": ("euros", "欧元"),
    "RMB": ("yuan", "元"),
    "CNY": ("yuan", "元"),
}

_TEMP = re.compile(
    rf"({_NUM})\s*(?:°\s*([CF])?|℃|℉|\s(?:degrees?|度)(?:\s*(celsius|fahrenheit))?|度)", re.IGNORECASE
)
_TIME = re.compile(
    r"(?<![\d:])([01]?\d|2[0-3])[:：]([0-5]\d)(?::[0-5]\d)?(?:\s*([aApP])\.?\s*[mM]\.?)?(?![\d:])"
)
_MONEY_PREFIX = re.compile(rf"(¥|￥|\$|€|\bRMB\s?|\bCNY\s?)({_NUM})")
_ID = re.compile(r"(?<![A-Za-z0-9])([A-Z]{1,4})-?(\d{3,})(?![A-Za-z0-9])")
_PHONE = re.compile(r"\+?\d[\d\s-]{7,}\d")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_LONE_NUM = re.compile(rf"(?<![\w.]){_NUM}(?![\w])|(?<=[\u4e00-\u9fff]){_NUM}|{_NUM}(?=[\u4e00-\u9fff])")


def _unit_pattern(units: dict[str, object]) -> re.Pattern[str]:
    # Longest first so "km/h" wins over "km"; word units need a word boundary, symbols and CJK do not.
    names = sorted(units, key=len, reverse=True)
    alts = []
    for name in names:
        esc = re.escape(name)
        alts.append(esc + (r"\b" if name[-1].isascii() and name[-1].isalpha() else ""))
    return re.compile(rf"({_NUM})\s?({'|'.join(alts)})", re.IGNORECASE)


_UNIT_EN = _unit_pattern(_UNITS_EN)
_UNIT_ZH = _unit_pattern(_UNITS_ZH)


def _is_one(num: str) -> bool:
    return num.lstrip("-−") in ("1", "1.0")


# ---------------------------------------------------------------- English


def _time_en(m: re.Match[str]) -> str:
    hour, minute, ampm = int(m.group(1)), int(m.group(2)), m.group(3)
    if ampm:
        suffix = "a m" if ampm.lower() == "a" else "p m"
        hour12 = hour % 12 or 12
    else:
        suffix = "a m" if hour < 12 else "p m"
        hour12 = hour % 12 or 12
    if minute == 0:
        spoken_min = ""
    elif minute < 10:
        spoken_min = f" oh {_ONES[minute]}"
    else:
        spoken_min = f" {number_en(minute)}"
    return f"{number_en(hour12)}{spoken_min} {suffix}"


def _temp_en(m: re.Match[str]) -> str:
    num = m.group(1)
    scale = (m.group(2) or m.group(3) or "").lower()
    if "℉" in m.group(0):
        scale = "f"
    unit = "degree" if _is_one(num) else "degrees"
    return f"{decimal_en(num)} {unit}" + (" fahrenheit" if scale.startswith("f") else "")


def _unit_en(m: re.Match[str]) -> str:
    num, unit = m.group(1), m.group(2).lower()
    singular, plural = _UNITS_EN[unit]
    return f"{decimal_en(num)} {singular if _is_one(num) else plural}"


def _money_en(m: re.Match[str]) -> str:
    symbol, num = m.group(1).strip(), m.group(2)
    name = _CURRENCY_PREFIX[symbol.upper() if symbol.isalpha() else symbol][0]
    whole, _, cents = num.partition(".")
    if name != "yuan" and len(cents) == 2:
        # "$12.50" is "twelve dollars fifty", not "twelve point five zero dollars".
        main = f"{number_en(int(whole.replace(',', '') or '0'))} {name.rstrip('s') if whole == '1' else name}"
        return main + (f" {number_en(int(cents))}" if int(cents) else "")
    if _is_one(num):
        name = name.rstrip("s") if name != "yuan" else name
    return f"{decimal_en(num)} {name}"


def normalize_en(text: str) -> str:
    text = _TIME.sub(_time_en, text)
    text = _TEMP.sub(_temp_en, text)
    text = _MONEY_PREFIX.sub(_money_en, text)
    text = _ID.sub(lambda m: f"{' '.join(m.group(1))} {digits_en(m.group(2))}", text)
    text = _PHONE.sub(lambda m: ("plus " if m.group(0).startswith("+") else "") + digits_en(m.group(0)), text)
    text = _UNIT_EN.sub(_unit_en, text)
    text = _ORDINAL.sub(lambda m: ordinal_en(int(m.group(1))), text)
    text = _LONE_NUM.sub(lambda m: decimal_en(m.group(0)), text)
    return text


# ---------------------------------------------------------------- Chinese


def _time_zh(m: re.Match[str]) -> str:
    hour, minute, ampm = int(m.group(1)), int(m.group(2)), m.group(3)
    prefix = ""
    if ampm:
        prefix = "上午" if ampm.lower() == "a" else "下午"
        hour = hour % 12 or 12
    spoken_hour = _liang(number_zh(hour))
    if minute == 0:
        return f"{prefix}{spoken_hour}点"
    spoken_min = ("零" + _ZH_DIGITS[minute]) if minute < 10 else number_zh(minute)
    return f"{prefix}{spoken_hour}点{spoken_min}分"


def _temp_zh(m: re.Match[str]) -> str:
    num = m.group(1)
    scale = (m.group(2) or m.group(3) or "").lower()
    if "℉" in m.group(0):
        scale = "f"
    if num.startswith(("-", "−")):
        words = "零下" + decimal_zh(num.lstrip("-−"))
    else:
        words = decimal_zh(num)
    return ("华氏" if scale.startswith("f") else "") + words + "度"


def _unit_zh(m: re.Match[str]) -> str:
    num, unit = m.group(1), m.group(2).lower()
    words = decimal_zh(num)
    return _liang(words) + _UNITS_ZH[unit]


def _money_zh(m: re.Match[str]) -> str:
    symbol, num = m.group(1).strip(), m.group(2)
    name = _CURRENCY_PREFIX[symbol.upper() if symbol.isalpha() else symbol][1]
    return decimal_zh(num) + name


def normalize_zh(text: str) -> str:
    text = _TIME.sub(_time_zh, text)
    text = _TEMP.sub(_temp_zh, text)
    text = _MONEY_PREFIX.sub(_money_zh, text)
    text = _ID.sub(lambda m: f"{m.group(1)}{digits_zh(m.group(2))}", text)
    text = _PHONE.sub(lambda m: ("加" if m.group(0).startswith("+") else "") + digits_zh(m.group(0)), text)
    # Ordinals first: 第2个 is 第二个, never 第两个.
    text = re.sub(r"第(\d+)", lambda m: "第" + number_zh(int(m.group(1))), text)
    text = _UNIT_ZH.sub(_unit_zh, text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s?%", lambda m: "百分之" + decimal_zh(m.group(1)), text)
    text = _LONE_NUM.sub(lambda m: decimal_zh(m.group(0)), text)
    return text


_NORMALIZERS: dict[str, Callable[[str], str]] = {"en": normalize_en, "zh": normalize_zh}


def normalize(text: str, language: str = "en") -> str:
    """Spoken form of `text` for a TTS voice in `language` ("en", "zh"; others unchanged)."""
    fn = _NORMALIZERS.get(language.split("-")[0].split("_")[0].lower())
    return fn(text) if fn else text
