"""Which of the car's two languages the driver spoke: Chinese when the words have Chinese characters."""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3400-\u9fff]")


def detect_language(text: str, default: str = "en") -> str:
    """zh when the utterance has Chinese characters, else en; `default` when there are no letters at all."""
    if _CJK.search(text):
        return "zh"
    return "en" if re.search(r"[A-Za-z]", text) else default
