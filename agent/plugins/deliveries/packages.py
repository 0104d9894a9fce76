"""Which of the driver's packages they mean: "the shoes", 充电器, "P2", "the thing from JD"."""

from __future__ import annotations

import re
import unicodedata
from typing import Any


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"\b(the|my|a|an|packages?|parcels?|deliver(?:y|ies)|shipments?|one|with|of)\b", " ", text)
    return " ".join(re.sub(r"[^\w\u3400-\u9fff]+", " ", text).split())


def _words(text: str) -> list[str]:
    return [w.rstrip("s") for w in _norm(text).split() if len(w) > 2]


_ZH_ANY_PACKAGE = re.compile(r"(我的|那个|这个|的|包裹|快递|快件|东西)")


def names_a_package(wanted: str | None) -> bool:
    """Whether `wanted` says which package at all: "my package", "the parcel" and 我的快递 do not."""
    if not wanted:
        return False
    rest = re.sub(r"\b(it|that|this|them|those|these|thing|stuff|order|right|now|today|currently|status)\b", " ",
                  _norm(wanted))
    return bool(_ZH_ANY_PACKAGE.sub("", rest).strip())


def matching_packages(packages: list[dict[str, Any]], wanted: str | None) -> list[dict[str, Any]]:
    """Every package `wanted` may name (by id, description, Chinese description, alias or carrier)."""
    if not wanted or not _norm(wanted):
        return []
    w = _norm(wanted)
    exact = [p for p in packages if p.get("id", "").casefold() == w]
    if exact:
        return exact
    out = []
    for p in packages:
        names = [p.get("description", ""), *p.get("aliases", []), p.get("carrier", "")]
        zh = [p.get("description_zh", ""), *[a for a in p.get("aliases", []) if re.search(r"[\u3400-\u9fff]", a)]]
        said = set(_words(wanted))
        if (any(said & set(_words(n)) for n in names if n)
                or any(z and (z in wanted or (len(wanted) >= 2 and wanted in z)) for z in zh)):
            out.append(p)
    return out


def find_package(packages: list[dict[str, Any]], wanted: str | None) -> dict[str, Any] | None:
    """The package the driver means; the first one when they did not say, None when nothing matches."""
    if not packages:
        return None
    if not wanted:
        return packages[0]
    found = matching_packages(packages, wanted)
    return found[0] if found else None
