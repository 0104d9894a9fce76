"""Commands that run turns: say, chat, eval, demo (text drive until the voice loop lands), doctor."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
