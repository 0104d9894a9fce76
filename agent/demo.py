"""The simulated drive: a scripted sequence of driver requests through the real pipeline, replies written to WAV."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

# What a driver says on a short trip: vehicle functions, a service request, a confirmation, a question.
DRIVE = [
    ("en", "set the temperature to twenty one degrees"),
    ("en", "take me home"),
    ("en", "play some jazz"),
    ("en", "I'd like a large pepperoni pizza"),
    ("en", "yes please"),
    ("en", "where is my package"),
    ("en", "what's the meaning of life"),
    ("zh", "把温度调到二十二度"),
    ("zh", "给妈妈打电话"),
]


async def text_drive(config: Any, out_dir: Path, as_json: bool) -> list[dict[str, Any]]:
    from agent.runtime import build_assistant
    from agent.turn_cli import print_turn, speak_to_wav

    assistant = await build_assistant(config)
    print(f"model {assistant.model.model_id}; prompt cache {assistant.warm_info.get('source')} "
          f"({assistant.warm_info.get('ms', 0):.0f} ms)", file=sys.stderr)
    records = []
    try:
        for index, (language, text) in enumerate(DRIVE, 1):
            result = await assistant.turn(text)
            wav = out_dir / f"turn{index:02d}-reply.wav"
            try:
                seconds = await speak_to_wav(config, result.reply, result.language, wav)
            except Exception as err:  # no voice for this language on this machine: say so, keep driving
                seconds, wav = 0.0, None
                print(f"  (no reply audio: {err})", file=sys.stderr)
            record = {**result.as_dict(), "reply_wav": str(wav) if wav else None, "reply_seconds": round(seconds, 2)}
            records.append(record)
            if as_json:
                print(json.dumps(record, ensure_ascii=False))
            else:
                print(f"\n— turn {index} —")
                print_turn(result)
                if wav:
                    print(f"         reply audio: {wav} ({seconds:.1f} s)")
    finally:
        await assistant.close()
    return records


def register(app: typer.Typer) -> None:
    from agent.cli import get_config

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option("--out", help="Where the car's spoken replies are written.")] = Path("demo-out"),
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per turn.")] = False,
    ) -> None:
        """A simulated drive through the real pipeline on the embedded defaults (no microphone needed)."""
        config = get_config()
        out.mkdir(parents=True, exist_ok=True)
        asyncio.run(text_drive(config, out, as_json))
