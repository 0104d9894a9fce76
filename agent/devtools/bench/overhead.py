"""Our layers against the bare engines on the same inputs, in alternating pairs: the model's decode rate
through the turn engine vs a bare llama-cpp-python loop, Piper through our sentence streamer vs bare Piper,
recognition through our stage vs bare faster-whisper. The engines' own packages are imported when measured."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.devtools.bench.stats import paired_overhead
from agent.devtools.bench.turns import RecordedModel
from agent.devtools.voices import RATE
from agent.tts.normalize import normalize
from agent.tts.sentences import speak_stream

BLOCK_MS = 30


async def llm_overhead(assistant: Any, text: str, reps: int) -> dict[str, Any]:
    """Decode tokens/s of a spoken answer through `Assistant.turn` vs a bare llama-cpp-python loop on the
    exact prompt tokens the turn used (greedy both ways, the same number of tokens), in alternating pairs.

    Also CPU ms per token (process CPU time, all threads): on a shared machine the wall-clock rate moves
    with other people's load, the CPU our layers add does not.
    """
    model = assistant.model
    if not isinstance(model, RecordedModel):
        raise TypeError("llm_overhead needs an assistant from bench_assistant (its model records calls)")
    ours: list[tuple[float, float]] = []  # (tokens/s, CPU ms per token)
    bare: list[tuple[float, float]] = []
    details = []
    try:
        for _ in range(reps):
            assistant.reset()
            arrivals: list[tuple[float, float]] = []

            def arrived(_text: str, stamps: list[tuple[float, float]] = arrivals) -> None:
                stamps.append((time.perf_counter(), time.process_time()))

            with model.recording() as calls:
                result = await assistant.turn(text, on_text=arrived)
            # The turn's first generation is the one measured (its prompt is what the bare loop continues).
            first = calls[0] if calls else None
            n = first.generated if first is not None else 0
            if result.tool_calls or n < 8 or len(arrivals) < 2 or first is None:
                details.append({"skipped": "the model called a tool or answered too briefly", "tokens": n})
                continue
            # The first text callback can hold a few tokens back (tool-call detection): count from it.
            (w0, c0), (w1, c1) = arrivals[0], arrivals[-1]
            k = len(arrivals) - 1
            ours.append((k / (w1 - w0), 1000 * (c1 - c0) / k))
            bare.append(await asyncio.to_thread(_bare_decode, model, list(first.prompt), n))
            details.append(
                {
                    "tokens": n,
                    "ours": [round(x, 2) for x in ours[-1]],
                    "bare": [round(x, 2) for x in bare[-1]],
                    "load_avg_1min": round(os.getloadavg()[0], 2),
                }
            )
    finally:
        assistant.reset()
    measure = "decode tokens/s after the first reply text through Assistant.turn, median of alternating pairs"
    if not ours:
        # The model answered with a tool call (the turn stops at its first tokens): measure the layer the turn
        # streams every model call through (worker thread, event-loop queue) on the same prompt instead.
        measure = (
            "decode tokens/s through Assistant.stream (the turn's worker-thread/event-loop layer; the "
            "model answered this prompt with a tool call), median of alternating pairs"
        )
        prompt = await assistant.prompt_for(text)
        for _ in range(reps):
            stamps: list[tuple[float, float]] = []
            async with contextlib.aclosing(assistant.stream(prompt.tokens, max_tokens=48)) as steps:
                async for _step in steps:
                    stamps.append((time.perf_counter(), time.process_time()))
            if len(stamps) < 8:
                details.append({"skipped": "too few tokens", "tokens": len(stamps)})
                continue
            (w0, c0), (w1, c1) = stamps[0], stamps[-1]
            k = len(stamps) - 1
            ours.append((k / (w1 - w0), 1000 * (c1 - c0) / k))
            bare.append(await asyncio.to_thread(_bare_decode, model, list(prompt.tokens), len(stamps)))
            details.append(
                {
                    "tokens": len(stamps),
                    "ours": [round(x, 2) for x in ours[-1]],
                    "bare": [round(x, 2) for x in bare[-1]],
                    "load_avg_1min": round(os.getloadavg()[0], 2),
                }
            )
    out = paired_overhead([o[0] for o in ours], [b[0] for b in bare], higher_is_better=True)
    out.update(
        {
            "unit": "tok/s",
            "measure": measure,
            "cpu": {
                **paired_overhead([o[1] for o in ours], [b[1] for b in bare], higher_is_better=False),
                "unit": "CPU ms/token",
            },
            "prompt": text,
            "reps": details,
        }
    )
    return out


def _bare_decode(model: Any, tokens: list[int], n: int) -> tuple[float, float]:
    """A bare llama-cpp-python loop (generate, detokenize) for n tokens: (tokens/s, CPU ms per token)."""
    llm = model.llm
    ends = set(model.end_tokens)
    stamps: list[tuple[float, float]] = []
    for token in llm.generate(tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0):
        if token in ends:
            break
        llm.detokenize([token])
        stamps.append((time.perf_counter(), time.process_time()))
        if len(stamps) >= n:
            break
    if len(stamps) < 2:
        return 0.0, 0.0
    (w0, c0), (w1, c1) = stamps[0], stamps[-1]
    k = len(stamps) - 1
    return k / (w1 - w0), 1000 * (c1 - c0) / k


TTS_TEXT = (
    "It is twenty one degrees in the cabin now. The seats are warming up, and the fan is on low. "
    "Your next turn is in two kilometres."
)


def _bare_piper(path: Path, threads: int) -> Any:
    """The voice loaded straight into piper, with the thread caps the pipeline gives its own."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads  # as agent.loop.stages.build_stages loads the pipeline's voice
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text(encoding="utf-8")))
    return PiperVoice(session=session, config=config)


async def tts_overhead(config: Any, tts: Any, reps: int) -> dict[str, Any]:
    """Piper through our sentence streamer (`speak_stream` over `PiperTts`) vs bare Piper (`PiperVoice`
    with the same voice, thread count and normalised text): time to the first audio and to the last."""
    from piper.config import SynthesisConfig

    voice = await asyncio.to_thread(_bare_piper, Path(tts.model_path), config.tts.threads)
    syn = SynthesisConfig(length_scale=config.tts.length_scale)
    spoken = normalize(TTS_TEXT, tts.language)
    list(voice.synthesize("Ready.", syn))  # onnxruntime's first run plans; ours was warmed at load

    def bare_once() -> tuple[float, float, float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        first, samples = None, 0
        for piece in voice.synthesize(spoken, syn):
            first = first or time.perf_counter()
            samples += len(piece.audio_int16_bytes) // 2
        return (
            (first - started) * 1000,
            (time.perf_counter() - started) * 1000,
            samples / voice.config.sample_rate,
            (time.process_time() - cpu) * 1000,
        )

    async def ours_once() -> tuple[float, float, float, float]:
        async def reply() -> AsyncIterator[str]:
            for word in TTS_TEXT.split(" "):  # as the model streams it: a word at a time
                yield word + " "

        started, cpu = time.perf_counter(), time.process_time()
        first, samples = None, 0
        async for chunk in speak_stream(reply(), tts):
            first = first or time.perf_counter()
            samples += chunk.samples
        return (
            (first - started) * 1000,
            (time.perf_counter() - started) * 1000,
            samples / tts.sample_rate_hz,
            (time.process_time() - cpu) * 1000,
        )

    ours, bare = [], []
    for _ in range(reps):
        ours.append(await ours_once())
        bare.append(bare_once())
    total = paired_overhead([o[1] for o in ours], [b[1] for b in bare], higher_is_better=False)
    first = paired_overhead([o[0] for o in ours], [b[0] for b in bare], higher_is_better=False)
    cpu = paired_overhead([o[3] for o in ours], [b[3] for b in bare], higher_is_better=False)
    audio_s = statistics.median(o[2] for o in ours)
    return {
        "tts: whole reply": {
            **total,
            "unit": "ms",
            "cpu": {**cpu, "unit": "CPU ms"},
            "audio_seconds": round(audio_s, 2),
            "real_time_factor_ours": round(total["ours"] / 1000 / audio_s, 3) if audio_s else None,
            "note": "three sentences synthesised sentence by sentence (ours) vs in one call "
            "(bare Piper splits them itself)",
        },
        "tts: first audio": {**first, "unit": "ms"},
    }


async def asr_overhead(recognizer: Any, clips: list[np.ndarray], reps: int) -> dict[str, Any]:
    """Recognition through our stage (`WhisperRecognizer.transcribe` over 30 ms chunks) vs the bare
    faster-whisper model (loaded separately, same options and prompt) on the same noisy requests."""
    if getattr(recognizer, "name", "") != "whisper":
        return {
            "ours": None,
            "bare": None,
            "ratio": None,
            "overhead": None,
            "unit": "ms",
            "note": f"only the whisper engine has a bare baseline here (asr is {recognizer.name})",
        }
    from faster_whisper import WhisperModel

    # The options agent.asr.factory gives the pipeline's recognizer (int8, 2 threads).
    bare_model = WhisperModel(
        str(recognizer.model_dir), device="cpu", compute_type="int8", cpu_threads=2, local_files_only=True
    )
    prompt = recognizer.prompt or None
    list(
        bare_model.transcribe(np.zeros(8000, np.float32), language=recognizer.language)[0]
    )  # first-run set-up

    def bare_once(audio: np.ndarray) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        segments, _ = bare_model.transcribe(
            audio.astype(np.float32) / 32768.0,
            language=recognizer.language,
            beam_size=recognizer.beam_size,
            condition_on_previous_text=False,
            temperature=0.0,
            without_timestamps=False,
            initial_prompt=prompt,
        )
        " ".join(s.text for s in segments)
        return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000

    async def ours_once(audio: np.ndarray) -> tuple[float, float]:
        block = RATE * BLOCK_MS // 1000

        async def chunks() -> AsyncIterator[AudioChunk]:
            for start in range(0, len(audio), block):
                yield AudioChunk(audio[start : start + block].astype(np.int16).tobytes(), RATE)

        started, cpu = time.perf_counter(), time.process_time()
        async for _ in recognizer.transcribe(chunks()):
            pass
        return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000

    ours, bare = [], []
    for _ in range(reps):
        for audio in clips:
            ours.append(await ours_once(audio))
            bare.append(bare_once(audio))
    out = paired_overhead([o[0] for o in ours], [b[0] for b in bare], higher_is_better=False)
    out.update(
        {
            "unit": "ms",
            "cpu": {
                **paired_overhead([o[1] for o in ours], [b[1] for b in bare], higher_is_better=False),
                "unit": "CPU ms",
            },
            "clips": len(clips),
            "note": "median ms per request clip, the same clips both ways",
        }
    )
    return out
