"""The vehicle-state adapter the vehicle tools act on, and a simulated backend until a CAN/VHAL one exists."""

from __future__ import annotations

import difflib
import threading
import time
import unicodedata
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class VehicleAdapter(Protocol):
    def set_climate(
        self, *, temperature_c: float | None, zone: str, fan_level: int | None, ac: bool | None
    ) -> dict[str, Any]: ...
    def navigate(self, label: str, address: str) -> dict[str, Any]: ...
    def play(self, query: str, kind: str) -> dict[str, Any]: ...
    def media_control(self, action: str) -> dict[str, Any]: ...
    def call(self, name: str, number: str) -> dict[str, Any]: ...
    def snapshot(self) -> dict[str, Any]: ...


class SimulatedVehicle:
    """In-memory vehicle state. Thread-safe because tools may run off the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.climate: dict[str, Any] = {
            "zones": {"driver": 22.0, "passenger": 22.0, "rear": 22.0},
            "fan_level": 2,
            "ac": True,
        }
        self.route: dict[str, Any] | None = None
        self.media: dict[str, Any] = {"playing": False, "query": None, "kind": None, "volume": 5}
        self.calls: list[dict[str, Any]] = []

    def set_climate(
        self, *, temperature_c: float | None, zone: str, fan_level: int | None, ac: bool | None
    ) -> dict[str, Any]:
        with self._lock:
            if temperature_c is not None:
                zones = ["driver", "passenger", "rear"] if zone == "all" else [zone]
                for name in zones:
                    self.climate["zones"][name] = float(temperature_c)
            if fan_level is not None:
                self.climate["fan_level"] = fan_level
            if ac is not None:
                self.climate["ac"] = ac
            return {"zones": dict(self.climate["zones"]), "fan_level": self.climate["fan_level"], "ac": self.climate["ac"]}

    def navigate(self, label: str, address: str) -> dict[str, Any]:
        with self._lock:
            self.route = {"destination": label, "address": address, "started_at": time.time()}
            return dict(self.route)

    def play(self, query: str, kind: str) -> dict[str, Any]:
        with self._lock:
            self.media.update(playing=True, query=query, kind=kind)
            return dict(self.media)

    def media_control(self, action: str) -> dict[str, Any]:
        with self._lock:
            if action == "pause":
                self.media["playing"] = False
            elif action == "resume":
                self.media["playing"] = True
            elif action == "volume_up":
                self.media["volume"] = min(10, self.media["volume"] + 1)
            elif action == "volume_down":
                self.media["volume"] = max(0, self.media["volume"] - 1)
            return dict(self.media)

    def call(self, name: str, number: str) -> dict[str, Any]:
        with self._lock:
            call = {"name": name, "number": number, "started_at": time.time()}
            self.calls.append(call)
            return call

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"climate": self.climate, "route": self.route, "media": self.media, "calls": len(self.calls)}


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().strip()
    for prefix in ("my ", "the "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return text.strip(" .,!?，。！？")


def _sound(text: str) -> str:
    """How a Chinese name sounds (toneless pinyin): a recogniser writes 张民 for 张敏, 李为 for 李伟."""
    from pypinyin import lazy_pinyin

    return " ".join(lazy_pinyin(text))


def _cjk(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" for ch in text)


def _within(part: str, whole: str) -> bool:
    """`part` is a word or words of `whole` (any substring for Chinese): "her" is not in "mother"."""
    if _cjk(part):
        return part in whole
    return f" {part} " in f" {whole} "


# What may stand around a saved name without making it another place: "my home", "我家", "回公司", "the office".
_AROUND_EN = {"my", "our", "the", "a", "to", "at", "back", "please", "place"}
_AROUND_ZH = set("我的咱们回去到")


def _names_it(name: str, target: str) -> bool:
    """`target` names `name` with at most a possessive or a "back to" around it: 我家 is 家, but 那家星巴克 and 宜家
    are not home, and "home depot" is not home."""
    if not _within(name, target):
        return False
    if _cjk(name):
        rest = target.replace(name, "", 1)
        return all(ch in _AROUND_ZH or ch.isspace() for ch in rest)
    rest = f" {target} ".replace(f" {name} ", " ", 1).split()
    return all(word in _AROUND_EN for word in rest)


def named_in(words: str, candidates: list[tuple[str, list[str], T]]) -> T | None:
    """The candidate whose name or alias is said somewhere in a whole sentence ("deliver it to the office",
    "送到公司"); a one-character Chinese alias (家) is too common inside other words to count."""
    said = _norm(words)
    for _, names, item in candidates:
        if any(_within(n, said) for n in map(_norm, names) if n and not (_cjk(n) and len(n) < 2)):
            return item
    return None


def match_name(wanted: str, candidates: list[tuple[str, list[str], T]]) -> T | None:
    """Exact (case-insensitive) name or alias first, then a candidate whose name contains the words asked for,
    then one that sounds the same (Chinese) or is spelt nearly the same (Sara, Li Way)."""
    target = _norm(wanted)
    if not target:
        return None
    for _, names, item in candidates:
        if any(_norm(n) == target for n in names):
            return item
    for _, names, item in candidates:
        if any(_within(target, _norm(n)) or _names_it(_norm(n), target) for n in names if _norm(n)):
            return item
    if _cjk(target):
        sound = _sound(target)
        for _, names, item in candidates:
            if any(_cjk(n) and _sound(_norm(n)) == sound for n in names):
                return item
        return None
    scored = [
        (difflib.SequenceMatcher(None, target, _norm(n)).ratio(), item)
        for _, names, item in candidates for n in names if not _cjk(n)
    ]
    best = max(scored, key=lambda s: s[0], default=(0.0, None))
    return best[1] if best[0] >= 0.82 else None
