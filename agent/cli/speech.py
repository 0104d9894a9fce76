"""Speech commands: `transcribe FILE.wav` (recognition only) and `speak TEXT --wav out.wav` (synthesis)."""

from __future__ import annotations

import asyncio
import json
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer

from agent.asr.base import usable
from agent.asr.factory import load_recognizer
from agent.audio.chunk import AudioChunk
from agent.audio.sources import block_samples, read_wav, split_blocks
from agent.cli.context import command_config
from agent.models.engines import effective_engine, require_installed
from agent.tts.factory import load_synthesizer
from agent.tts.sentences import speak_stream

BLOCK_MS = 30


def read_wav_chunks(path: Path, block_ms: int = BLOCK_MS) -> tuple[list[AudioChunk], float]:
    """A WAV as mono blocks at its own rate (engines convert at their edge) and its length in seconds."""
    whole = read_wav(path, rate_hz=None)
    return split_blocks(whole, block_samples(whole.rate, block_ms)), whole.duration_ms / 1000.0


def write_wav(path: Path, chunks: list[AudioChunk]) -> float:
    rate = chunks[0].rate if chunks else 22050
    pcm = b"".join(c.to_format(rate, 1).pcm for c in chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return len(pcm) / 2 / rate


async def _iterate(chunks: list[AudioChunk]) -> AsyncIterator[AudioChunk]:
    for chunk in chunks:
        yield chunk


def register(app: typer.Typer) -> None:
    @app.command()
    def transcribe(
        ctx: typer.Context,
        wav: Annotated[Path, typer.Argument(help="16-bit PCM WAV file (any rate, mono or stereo).")],
        engine: Annotated[str | None, typer.Option(help="vosk or whisper (default: asr.engine).")] = None,
        model: Annotated[
            Path | None, typer.Option(help="Model directory (default: from the model store).")
        ] = None,
        grammar: Annotated[bool, typer.Option("--grammar", help="vosk: decode only the vocabulary.")] = False,
        bias: Annotated[
            bool | None,
            typer.Option(
                "--bias/--no-bias", help="Bias toward plugin vocabulary (default: asr.bias_vocabulary)."
            ),
        ] = None,
        partials: Annotated[bool, typer.Option("--partials", help="Print partial results too.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    ) -> None:
        """Print the recognised text of a WAV file."""
        config = command_config(ctx)
        chosen = engine or effective_engine(config, "asr")  # "auto": the profile default's engine
        require_installed(chosen, "asr")
        blocks, seconds = read_wav_chunks(wav)
        use_bias = config.asr.bias_vocabulary if bias is None else bias

        async def run() -> dict:
            asr = await load_recognizer(config, engine=chosen, model_dir=model)
            try:
                if grammar and hasattr(asr, "set_mode"):  # vosk only; whisper has no grammar
                    asr.set_mode("grammar")
                if use_bias or grammar:
                    from agent.plugins.loader import load_registry

                    asr.set_vocabulary([*load_registry(config).vocabulary(), config.wake_phrase])
                started = time.monotonic()
                final = None
                async for t in asr.transcribe(_iterate(blocks)):
                    if t.is_final:
                        final = t
                    elif partials and not as_json:
                        typer.echo(f"… {t.text}", err=True)
                elapsed = time.monotonic() - started
            finally:
                await asr.aclose()
            text = final.text if final else ""
            return {
                "text": text,
                "usable": usable(text),
                "confidence": final.confidence if final else None,
                "engine": asr.name,
                "audio_seconds": round(seconds, 3),
                "recognition_seconds": round(elapsed, 3),
                "real_time_factor": round(elapsed / seconds, 3) if seconds else None,
            }

        result = asyncio.run(run())
        if as_json:
            typer.echo(json.dumps(result, ensure_ascii=False))
        else:
            typer.echo(result["text"])

    @app.command()
    def speak(
        ctx: typer.Context,
        text: Annotated[
            str, typer.Argument(help="What to say (numbers, units and times are spoken naturally).")
        ],
        wav: Annotated[Path, typer.Option("--wav", help="Write the speech to this WAV file.")],
        voice: Annotated[
            Path | None, typer.Option(help="Piper .onnx voice (default: from the model store).")
        ] = None,
    ) -> None:
        """Synthesise TEXT with the configured Piper voice into a WAV file."""
        config = command_config(ctx)

        async def run() -> tuple[float, float, float]:
            tts = await load_synthesizer(config, voice=voice)

            async def one_delta() -> AsyncIterator[str]:
                yield text

            started = time.monotonic()
            first: float | None = None
            chunks: list[AudioChunk] = []
            try:
                async for chunk in speak_stream(one_delta(), tts):
                    if first is None:
                        first = time.monotonic() - started
                    chunks.append(chunk)
            finally:
                await tts.aclose()
            return write_wav(wav, chunks), time.monotonic() - started, first or 0.0

        seconds, elapsed, first = asyncio.run(run())
        typer.echo(f"{wav}: {seconds:.2f} s of speech in {elapsed:.2f} s (first audio after {first:.2f} s)")
