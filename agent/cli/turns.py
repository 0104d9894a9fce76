"""Commands that run turns through the local model: say (also from a WAV file), chat, eval."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.asr.base import usable
from agent.audio.chunk import AudioChunk
from agent.audio.sources import block_samples, read_wav, split_blocks
from agent.cli.context import command_config
from agent.core.config import Config
from agent.core.logging import get_logger
from agent.loop.stages import bias_vocabulary, load_recognizer
from agent.models.engines import resolved_config
from agent.understanding.engine import Assistant
from agent.understanding.record import TurnResult

log = get_logger("pipeline")


def print_turn(result: TurnResult, out: Any = sys.stdout) -> None:
    """The human-readable form of a turn: what the driver said, the calls, their results, the reply, timings."""
    print(f"driver › {result.text}", file=out)
    for call in result.tool_calls:
        args = json.dumps(call.arguments, ensure_ascii=False)
        print(f"tool   › {call.name} {args}  [{call.status}]", file=out)
        if call.result is not None:
            print(f"         → {json.dumps(call.result, ensure_ascii=False)[:300]}", file=out)
        if call.error:
            print(f"         ! {call.error}", file=out)
    print(f"car    › {result.reply}", file=out)
    t = result.timings_ms
    parts = [f"{label} {t[key]:.0f} ms" for key, label in
             (("first_token", "first token"), ("tool_call_complete", "call decoded"), ("tool_done", "tool done"),
              ("total", "total")) if key in t]
    print("         " + " · ".join(parts), file=out)


async def speak_to_wav(config: Any, text: str, language: str, path: Path) -> float:
    """Synthesise `text` with Piper into a WAV file; returns its duration in seconds."""
    import wave

    from agent.tts.factory import voice_file
    from agent.tts.piper import PiperTts

    tts = await PiperTts.load(voice_file(config, language))
    try:
        frames, rate = bytearray(), 22050
        async for chunk in tts.synthesize(text):
            frames += chunk.pcm
            rate = chunk.rate
    finally:
        await tts.aclose()
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(bytes(frames))
    return len(frames) / 2 / rate


async def _assistant(config: Any) -> Assistant:
    from agent.app.wiring import build_assistant

    return await build_assistant(config)


async def _iterate(chunks: Sequence[AudioChunk]) -> AsyncIterator[AudioChunk]:
    for chunk in chunks:
        yield chunk


async def transcribe_file(config: Config, path: str | Path) -> str:
    """The recognised text of a WAV file (any rate/channels), biased like the voice loop: `say --audio`."""
    from agent.plugins.loader import load_registry

    config = resolved_config(config)  # this command's wiring: the engines that will run
    audio = await asyncio.to_thread(read_wav, path, 16000)
    registry = None
    if config.asr.bias_vocabulary:
        try:
            registry = await asyncio.to_thread(load_registry, config)
        except Exception as err:  # noqa: BLE001 - recognition still works without the bias
            log.warning("vocabulary-unavailable", error=str(err))
    recognizer = await load_recognizer(config, bias_vocabulary(config, registry))
    try:
        final = ""
        async for transcript in recognizer.transcribe(
            _iterate(split_blocks(audio, block_samples(16000, 30)))
        ):
            if transcript.is_final:
                final = transcript.text
        return final.strip()
    finally:
        await recognizer.aclose()


def register(app: typer.Typer) -> None:
    @app.command()
    def say(
        ctx: typer.Context,
        text: Annotated[str | None, typer.Argument(help="What the driver says.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
        wav: Annotated[Path | None, typer.Option("--wav", help="Also write the spoken reply to this WAV file.")] = None,
        audio: Annotated[Path | None, typer.Option("--audio", help="Take the request from a WAV file.")] = None,
    ) -> None:
        """Run one turn through the local model and print the calls and the reply."""
        config = command_config(ctx)
        if (text is None) == (audio is None):
            raise typer.BadParameter("give the request as TEXT or with --audio FILE.wav (one of them)")

        async def run() -> dict[str, Any]:
            transcript = None
            spoken = text
            if audio is not None:
                transcript = await transcribe_file(config, audio)
                spoken = transcript
            assistant = await _assistant(config)
            try:
                if audio is not None and not usable(spoken or ""):
                    from agent.understanding.replies import line

                    result = _not_caught(spoken or "", config.language, line(config.language, "not_caught"))
                else:
                    result = await assistant.turn(spoken or "")
                result.transcript = transcript
                if wav is not None:
                    await speak_to_wav(config, result.reply, result.language, wav)
            finally:
                await assistant.close()
            return {"result": result, "warm": assistant.warm_info}

        out = asyncio.run(run())
        result: TurnResult = out["result"]
        if as_json:
            data = result.as_dict()
            data["prompt_cache"] = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in out["warm"].items()}
            print(json.dumps(data, ensure_ascii=False))
        else:
            print_turn(result)

    @app.command()
    def chat(ctx: typer.Context) -> None:
        """An interactive text conversation with the car (context is kept between turns)."""
        config = command_config(ctx)

        async def run() -> None:
            assistant = await _assistant(config)
            print(f"cabin-agent chat ({assistant.model.model_id}); empty line or Ctrl-D to quit.", file=sys.stderr)
            ahead: asyncio.Task[int] | None = None
            try:
                while True:
                    # While the driver types, the drive so far goes into the model's cache (as in the daemon).
                    ahead = asyncio.create_task(assistant.prepare())
                    try:
                        line_in = await asyncio.to_thread(input, "you › ")
                    except EOFError:
                        break
                    if not line_in.strip():
                        break
                    print_turn(await assistant.turn(line_in.strip()))
                    await ahead  # it gave way to the turn at its next slice
            finally:
                if ahead is not None and not ahead.done():
                    ahead.cancel()
                await assistant.close()

        asyncio.run(run())

    @app.command("eval")
    def eval_cmd(
        ctx: typer.Context,
        sets: Annotated[list[Path], typer.Argument(help="JSONL files of cases and sessions (see docs/eval.md).")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
        limit: Annotated[int | None, typer.Option("--limit", help="Only the first N cases and N sessions.")] = None,
        sample: Annotated[int | None, typer.Option("--sample", help="N cases and N sessions spread evenly over the sets.")] = None,
        lang: Annotated[str | None, typer.Option("--lang", help="Only cases in this language.")] = None,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the JSON report here.")] = None,
    ) -> None:
        """Score many turns and sessions: tool and argument accuracy per family and language, no-tool accuracy,
        session turns (also right after a refusal), latency."""
        from agent.devtools.eval_cases import load_eval
        from agent.devtools.eval_run import eval_world, evaluate
        from agent.devtools.evaluation import format_report

        config = command_config(ctx)
        cases, sessions = [], []
        for path in sets:
            found_cases, found_sessions = load_eval(path)
            cases += [c for c in found_cases if lang is None or c.lang == lang]
            sessions += [s for s in found_sessions if lang is None or s.lang == lang]
        cases, sessions = cases[:limit], sessions[:limit]
        if sample:
            cases = [cases[i * len(cases) // sample] for i in range(min(sample, len(cases)))]
            sessions = [sessions[i * len(sessions) // sample] for i in range(min(sample, len(sessions)))]

        async def run() -> Any:
            assistant = await _assistant(config)  # loads the model and warms its prompt cache once
            try:
                async with eval_world(config, assistant.model) as world:

                    def progress(done: int, total: int, score: Any = None) -> None:
                        if not as_json:
                            print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)

                    report = await evaluate(world, cases, sessions, progress)
            finally:
                await assistant.close()
            report.summary["model"] = assistant.model.model_id
            report.summary["prompt_cache"] = assistant.warm_info.get("source")
            return report

        report = asyncio.run(run())
        if not as_json:
            print(file=sys.stderr)
        text = report.to_json(indent=None)
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(report.to_json(indent=1), encoding="utf-8")
        print(text if as_json else format_report(report, verbose=True))


def _not_caught(text: str, language: str, reply: str) -> TurnResult:
    return TurnResult(turn_id="-", text=text, language=language, tool_calls=[], reply=reply, timings_ms={})
