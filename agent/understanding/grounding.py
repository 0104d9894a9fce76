"""Checks that a tool call's arguments come from what the driver said, not from the model's imagination.

Small models fill every optional argument (a fan level nobody asked for, a restaurant called "home") and answer
chit-chat with a tool call carrying a made-up temperature. Optional arguments that are not grounded are dropped;
a call whose required arguments are not grounded is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.core.words import (
    cue_present,
    first_number_position,
    mention_position,
    trim_to_said,
    value_grounded,
)


def ground_arguments(tool: Any, args: dict[str, Any], utterance: str, aliases: Iterable[Iterable[str]] = ()):
    """Returns (kept arguments, names of required arguments that are not grounded)."""
    required = set(tool.parameters.get("required", []))
    kept = dict(args)
    missing: list[str] = []
    for name in tool.grounded:
        if name in kept and not value_grounded(kept[name], utterance, aliases):
            said = trim_to_said(kept[name], utterance, aliases) if isinstance(kept[name], str) else None
            if said is not None:
                kept[name] = said
            elif name in required:
                missing.append(name)
            else:
                kept.pop(name)
    for name, cues in tool.cues.items():
        if name in kept and name not in required and not cue_present(cues, utterance):
            kept.pop(name)
    return kept, missing


def prune_schema(tool: Any, utterance: str) -> dict[str, Any]:
    """The schema the arguments are decoded under for this utterance.

    Optional properties whose cue words the driver did not say are left out, and small integer ranges become
    enumerations: llama.cpp's schema grammar does not bound integers, and a model that starts "1" may go on
    writing zeros (a fan level of 10**15).
    """
    drop = {
        name for name, cues in tool.cues.items()
        if name not in tool.parameters.get("required", []) and not cue_present(cues, utterance)
    }
    properties = {}
    for name, prop in tool.parameters.get("properties", {}).items():
        if name in drop:
            continue
        low, high = prop.get("minimum"), prop.get("maximum")
        if prop.get("type") == "integer" and low is not None and high is not None and high - low <= 32:
            prop = {k: v for k, v in prop.items() if k not in ("type", "minimum", "maximum")}
            prop["enum"] = list(range(int(low), int(high) + 1))
        properties[name] = prop
    # The grammar writes properties in its schema's order, so a model that starts with what was said first
    # ("AC on, fan at 4, 20 degrees") could never write the rest: order them as the driver said them.
    said_at = {name: mention_position(utterance, (*tool.cues.get(name, ()), *tool.mentions.get(name, ())))
               for name in properties}
    first_number = first_number_position(utterance)
    for name, prop in properties.items():
        # A number with no word for what it is ("driver side 20") is where the number is.
        if said_at[name] is None and prop.get("type") in ("number", "integer") and first_number is not None:
            said_at[name] = first_number
    order = sorted(properties, key=lambda n: (said_at[n] if said_at[n] is not None else -1))
    return {**tool.parameters, "properties": {n: properties[n] for n in order}}
