"""The bench's spoken turns: the script through the real voice loop, each turn's stages after the end of
speech and each model call it made, read from the turn's trace. (The overhead phase wraps the model to keep
the exact prompt tokens a bare loop then continues.)"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.app.wiring import build_assistant, llm_model, load_llm
from agent.audio.sinks import WavSink
from agent.core.events import EventBus, now_ms
from agent.devtools.bench.machine import ProcSampler, resource_summary
from agent.devtools.bench.script import ScriptedTurn, SpokenTurns
from agent.devtools.bench.stats import STAGES, decode_rates, stage_breakdown, summarize_ms
from agent.devtools.scripted_mic import ScriptedMic
from agent.loop.pipeline import VoicePipeline
from agent.understanding.engine import Assistant


@dataclass
class ModelCall:
    """One generation the model ran: the prompt it continued, tokens out, ms to the first and last token."""

    prompt: tuple[int, ...] = field(repr=False)
    grammar: bool  # constrained by a JSON schema (a tool call's arguments)
    generated: int = 0
    first_ms: float | None = None
    ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": len(self.prompt),
            "generated": self.generated,
            "grammar": self.grammar,
        }
        if self.generated:
            out["first_ms"], out["ms"] = self.first_ms, self.ms
        return out


class RecordedModel:
    """The loaded language model, recording the generations it runs inside `recording()`; everything else is
    the model's own (the Assistant is built on this wrapper instead of having its model patched)."""

    def __init__(self, model: Any) -> None:
        self.inner = model
        self._into: list[ModelCall] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[ModelCall]]:
        """The generations started until the block ends (by the turn engine's worker thread); the latest
        recording gets them."""
        calls: list[ModelCall] = []
        self._into = calls
        try:
            yield calls
        finally:
            if self._into is calls:  # a barged-in turn ending late leaves the next turn's recording alone
                self._into = None

    def generate(self, tokens: Sequence[int], **kwargs: Any) -> Iterator[Any]:
        into = self._into
        if into is None:
            yield from self.inner.generate(tokens, **kwargs)
            return
        call = ModelCall(tuple(tokens), kwargs.get("json_schema") is not None)
        into.append(call)
        started = time.perf_counter()
        for step in self.inner.generate(tokens, **kwargs):
            now = time.perf_counter()
            if not call.generated:
                call.first_ms = round((now - started) * 1000, 1)
            call.generated += 1
            call.ms = round((now - started) * 1000, 1)
            yield step


async def bench_assistant(config: Any, *, events: EventBus | None = None) -> Assistant:
    """The wired Assistant (plugins, warm prompt cache) over the configured model in a RecordedModel."""
    model_id, path = await asyncio.to_thread(llm_model, config)
    model = RecordedModel(await asyncio.to_thread(load_llm, config, model_id, path))
    return await build_assistant(config, events=events, model=model)


async def spoken_turns(
    config: Any,
    script: list[ScriptedTurn],
    work: Path,
    snr_db: float,
) -> tuple[dict[str, Any], Any, Any]:
    """Run the script through the real voice loop. Returns (results, assistant, pipeline) for what follows."""
    events = EventBus()
    assistant = await bench_assistant(config, events=events)
    holder: dict[str, VoicePipeline] = {}
    mic = ScriptedMic(SpokenTurns(script, lambda: holder.get("p")), seed=3, snr_db=snr_db)
    # Playback paced like a speaker: the driver hears the whole reply before speaking again.
    sink = WavSink(work / "replies", pace_realtime=True)
    pipeline = await VoicePipeline.from_config(config, assistant, mic, sink, events=events)
    # Keep every record of the run (the pipeline keeps the last 50 by default).
    pipeline.records = collections.deque(maxlen=len(script) * 3 + 10)
    holder["p"] = pipeline
    sampler = ProcSampler("self", 0.5)
    sampler.sample()
    sampling = asyncio.create_task(sampler.run(), name="bench-proc-sampler")
    run_started = now_ms()
    try:
        await pipeline.run()
    finally:
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        sampler.sample()
    plugin_of = {tool.name: tool.plugin for tool in assistant.registry}
    records = {r.index: r for r in pipeline.turns}
    turns_out = []
    for i, turn in enumerate(script):
        rec = records.get(turn.turn_before + 1)
        item: dict[str, Any] = {
            "n": i + 1,
            "kind": turn.kind,
            "voice": turn.voice,
            "said": turn.text,
            "trigger": turn.trigger,
            "wake_missed": turn.wake_missed,
        }
        if rec is None or turn.speech_end_ms is None:
            item["outcome"] = "not-started"
            turns_out.append(item)
            continue
        marks = dict(rec.trace.marks)  # the loop's and the turn engine's milestones, on one clock
        stages = stage_breakdown(marks, turn.speech_end_ms)
        total = marks["first_audio"] - turn.speech_end_ms if "first_audio" in marks else None
        item.update(
            {
                "outcome": rec.outcome,
                "heard": rec.transcript,
                "reply": rec.reply,
                "tools": [c["name"] for c in rec.tool_calls],
                "tool_plugins": sorted({plugin_of.get(c["name"], "?") for c in rec.tool_calls}),
                "end_reason": rec.end_reason,
                "at_s": round((turn.speech_end_ms - run_started) / 1000, 1),
                "load_1min": turn.load_1min,
                "end_to_first_audio_ms": None if total is None else round(total, 1),
                "vad_speech_end_offset_ms": round(marks["speech_end"] - turn.speech_end_ms, 1)
                if "speech_end" in marks
                else None,
                "stages_ms": stages,
                "model_calls": [c.as_dict() for c in rec.trace.model_calls],
            }
        )
        turns_out.append(item)
    answered = [t for t in turns_out if t.get("end_to_first_audio_ms") is not None]
    by_kind: dict[str, Any] = {}
    for kind in dict.fromkeys(t.kind for t in script):
        mine = [t for t in answered if t["kind"] == kind]
        if not mine:
            continue
        by_kind[kind] = {
            "end_to_first_audio_ms": summarize_ms(t["end_to_first_audio_ms"] for t in mine),
            "stages_ms": {
                s: summarize_ms(t["stages_ms"].get(s) for t in mine if s in t["stages_ms"])
                for s, _ in STAGES
                if any(s in t["stages_ms"] for t in mine)
            },
        }
    first_tokens = [t["stages_ms"].get("first_token") for t in answered if "first_token" in t["stages_ms"]]
    results = {
        "turns_spoken": len(script),
        "turns_answered": len(answered),
        "wake_missed": sum(t.wake_missed for t in script),
        "wake_tried": sum(t.trigger == "wake" for t in script),
        "all": summarize_ms(t["end_to_first_audio_ms"] for t in answered),
        "by_kind": by_kind,
        "first_token_after_transcript_ms": summarize_ms(first_tokens),
        "decode": decode_rates(c for t in answered for c in t.get("model_calls", [])),
        "vad_speech_end_offset_ms": summarize_ms(t.get("vad_speech_end_offset_ms") for t in answered),
        "end_reasons": dict(collections.Counter(t.get("end_reason") or "?" for t in answered)),
        "audio_lag": pipeline.status(last=0)["audio_lag"],
        "resources": resource_summary(sampler.samples),
        "turns": turns_out,
    }
    return results, assistant, pipeline
