"""What the demo prints as the drive happens (each turn, the tunnel, the link, the outbox, announcements, one
JSON object each with --json) and the summary it ends with."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from agent.core.events import EventBus, now_ms
from agent.loop.pipeline import VoicePipeline


def _fmt_latency(lat: dict[str, float]) -> str:
    labels = (
        ("transcript_final", "transcript"),
        ("first_token", "first token"),
        ("tool_done", "tool done"),
        ("first_audio", "first audio"),
    )
    parts = [f"{label} +{lat[key]:.0f}" for key, label in labels if key in lat]
    return "end of speech → " + " → ".join(parts) + " ms" if parts else "(no latency: no speech end)"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _outbox_line(call: dict[str, Any]) -> str | None:
    """What a tool call did to the outbox, or where a read-only answer came from."""
    result = call.get("result") or {}
    entry = result.get("outbox")
    if isinstance(entry, dict) and entry.get("key"):
        why = " (queued: offline)" if result.get("queued") else ""
        return (
            f"outbox › entry {entry['id']} {entry['state']}{why}, key {entry['key']}, "
            f"{_count(entry['attempts'], 'attempt')}"
        )
    if result.get("source") == "cache":
        return f"status › last known, {result.get('age_seconds', 0)} s old (offline)"
    return None


def print_record(record: dict[str, Any], wav: Path | None, out: Any = sys.stdout) -> None:
    print(
        f"\n— turn {record['index']} ({record['trigger']}{', barge-in' if record['barge_in'] else ''}) —",
        file=out,
    )
    print(f"heard  › {record['transcript'] if record['transcript'] is not None else '(nothing)'}", file=out)
    for call in record["tool_calls"]:
        print(
            f"tool   › {call['name']} {json.dumps(call['arguments'], ensure_ascii=False)}  [{call['status']}]",
            file=out,
        )
        line = _outbox_line(call)
        if line:
            print(line, file=out)
    print(f"car    › {record['reply'] or '(silent: ' + record['outcome'] + ')'}", file=out)
    print(f"         {_fmt_latency(record['latency_ms'])}", file=out)
    if wav is not None:
        print(f"         reply audio: {wav}", file=out)


class DriveReport:
    """Follows the drive's events, prints them, and keeps what the summary needs: the turns as printed, the
    scenes, what the outbox delivered, the announcements, and who spoke when."""

    def __init__(self, *, out_dir: Path, as_json: bool, service: Any, store: Any, sink: Any) -> None:
        self.out_dir = out_dir
        self.as_json = as_json
        self.service = service  # the reference service: how often it saw each idempotency key
        self.store = store  # the outbox store: a delivered entry's result
        self.sink = sink  # the WavSink the car plays into: each reply's file is moved next to the turn
        self.printed: list[dict[str, Any]] = []
        self.scenes: list[dict[str, Any]] = []
        self.announcements: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.speaking: list[dict[str, Any]] = []  # who spoke when (monotonic ms): turns and announcements
        self.queued_keys: list[str] = []
        self.drive_start_ms = now_ms()
        self._announcement_playback: dict[str, int] = {}
        self._texts: dict[Any, str] = {}

    def emit(self, kind: str, text_lines: list[str], **data: Any) -> None:
        if self.as_json:
            print(json.dumps({"event": kind, **data}, ensure_ascii=False), flush=True)
        else:
            for text in text_lines:
                print(text)
            sys.stdout.flush()

    def scene_started(self, name: str) -> None:
        self.scenes.append({"name": name, "at": time.monotonic(), "at_ms": now_ms()})

    def since_scene_s(self) -> float:
        return round(time.monotonic() - self.scenes[-1]["at"], 1) if self.scenes else 0.0

    def rel_ms(self, at_ms: float) -> float:
        """Milliseconds since the drive started (the summary's time line)."""
        return round(at_ms - self.drive_start_ms, 1)

    def _take_playback(self, playback: int | None, name: str) -> Path | None:
        files = self.sink.files
        if playback is None or playback > len(files) or not files[playback - 1].exists():
            return None
        wav = self.out_dir / name
        files[playback - 1].replace(wav)
        return wav

    async def on_turn(self, record: dict[str, Any], pipeline: VoicePipeline) -> None:
        await asyncio.sleep(0)  # let the sink close the file
        playback = next((r.playback_index for r in pipeline.turns if r.index == record["index"]), None)
        wav = self._take_playback(playback, f"turn{record['index']:02d}-reply.wav")
        record["reply_wav"] = str(wav) if wav else None
        for call in record["tool_calls"]:
            entry = (call.get("result") or {}).get("outbox")
            if isinstance(entry, dict) and entry.get("state") in ("pending", "in-flight"):
                self.queued_keys.append(entry["key"])
        self.printed.append(record)
        if self.as_json:
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            print_record(record, wav)
            sys.stdout.flush()

    async def on_delivered(self, data: dict[str, Any], at_ms: float) -> None:
        entry = await asyncio.to_thread(self.store.get, data["entry_id"])
        counts = (await asyncio.to_thread(self.service.key_counts)).get(entry.key, {})
        order = ((entry.result or {}).get("order") or {}).get("id")
        item = {
            "entry_id": entry.id,
            "action": entry.action,
            "state": entry.state,
            "key": entry.key,
            "attempts": entry.attempts,
            "order_id": order,
            "service_key_count": counts,
            "seconds_after_scene": self.since_scene_s(),
            "at_ms": self.rel_ms(at_ms),
        }
        self.deliveries.append(item)
        self.emit(
            "outbox",
            [
                f"outbox › entry {entry.id} {entry.state} {self.since_scene_s()} s after the tunnel"
                f"{f', order {order}' if order else ''} ({_count(entry.attempts, 'attempt')})",
                f"         idempotency key {entry.key}: the service saw "
                f"{_count(counts.get('requests', 0), 'request')}, {_count(counts.get('replays', 0), 'replay')}, "
                f"{_count(counts.get('effects', 0), 'order')} for it",
            ],
            **item,
        )

    def on_spoken(self, data: dict[str, Any], at_ms: float) -> None:
        started = next((s for s in reversed(self.speaking) if s["who"] == "announcement"), None)
        index = len(self.announcements) + 1
        playback = self._announcement_playback.pop("index", None)
        wav = self._take_playback(playback, f"announcement{index:02d}.wav")
        text = data.get("text") or ""
        item = {
            "index": index,
            "id": data.get("id"),
            "text": text,
            "reply_wav": str(wav) if wav else None,
            "start_ms": started["start_ms"] if started else None,
            "end_ms": self.rel_ms(at_ms),
            "after_turn": self.printed[-1]["index"] if self.printed else None,
            "seconds_after_scene": self.since_scene_s(),
        }
        self.announcements.append(item)
        self.emit(
            "announcement",
            [
                f"\n— announcement (the car is quiet, {item['seconds_after_scene']} s after the tunnel) —",
                f"car    › {text}",
                *([f"         reply audio: {wav}"] if wav else []),
            ],
            **item,
        )

    async def follow(self, events: EventBus, pipeline: VoicePipeline) -> None:
        """Report the drive's events until cancelled."""
        async for event in events.subscribe():
            data = dict(event.data)
            if event.type == "turn-record":
                await self.on_turn(data, pipeline)
            elif event.type == "state":
                if data.get("state") == "speaking":
                    who = "announcement" if data.get("turn") is None else f"turn {data['turn']}"
                    start_ms = self.rel_ms(event.timestamp_ms)
                    self.speaking.append({"who": who, "start_ms": start_ms, "end_ms": None})
                    if who == "announcement":
                        self._announcement_playback["index"] = pipeline.playbacks
                elif (
                    data.get("previous") == "speaking"
                    and self.speaking
                    and self.speaking[-1]["end_ms"] is None
                ):
                    self.speaking[-1]["end_ms"] = self.rel_ms(event.timestamp_ms)
            elif event.type == "connectivity":
                self.emit(
                    "connectivity",
                    [
                        f"link   › {data['service']} {'online' if data['online'] else 'offline'}"
                        f"{f' ({self.since_scene_s()} s after the tunnel)' if self.scenes else ''}"
                    ],
                    **data,
                )
            elif event.type == "outbox" and data.get("state") == "delivered":
                await self.on_delivered(data, event.timestamp_ms)
            elif event.type == "outbox":
                self.emit(
                    "outbox",
                    [f"outbox › entry {data['entry_id']} {data['state']}: {data.get('error')}"],
                    **data,
                )
            elif event.type == "announcement":
                self._texts[data.get("id")] = data.get("text", "")
            elif event.type in ("announcement-spoken", "announcement-interrupted"):
                if event.type == "announcement-spoken":
                    self.on_spoken({**data, "text": self._texts.get(data.get("id"), "")}, event.timestamp_ms)

    def summary(
        self,
        *,
        status: dict[str, Any],
        driver_repeats: int,
        cabin_recording: Path,
        entries: list[dict[str, Any]],
        key_counts: dict[str, Any],
        wall_seconds: float,
    ) -> dict[str, Any]:
        """The drive in numbers; `status` is the pipeline's at the end, `entries` the outbox's."""
        turn_spans = [s for s in self.speaking if s["who"] != "announcement"]
        for item in self.announcements:
            spans = (s for s in self.speaking if s["who"] == "announcement")
            span = next((s for s in spans if s["start_ms"] == item["start_ms"]), None)
            item["over_a_reply"] = span is None or any(
                t["start_ms"] < (span["end_ms"] or float("inf"))
                and span["start_ms"] < (t["end_ms"] or float("inf"))
                for t in turn_spans
            )
        with_audio = [
            r["latency_ms"]["first_audio"]
            for r in self.printed
            if r["outcome"] == "replied" and "first_audio" in r.get("latency_ms", {})
        ]
        return {
            "turns": len(self.printed),
            "replied": sum(r["outcome"] == "replied" for r in self.printed),
            "tool_calls": sum(len(r["tool_calls"]) for r in self.printed),
            "median_speech_end_to_first_audio_ms": (
                round(statistics.median(with_audio)) if with_audio else None
            ),
            "speech_end_to_first_audio_ms": with_audio,
            "audio_lag": status["audio_lag"],
            "wake_real_time_factor": status["wake"]["real_time_factor"],
            "driver_repeats": driver_repeats,
            "cabin_recording": str(cabin_recording),
            "scenes": [s["name"] for s in self.scenes],
            "outbox": [
                {k: e[k] for k in ("id", "action", "state", "key", "attempts", "summary", "last_error")}
                | {"service_key_count": key_counts.get(e["key"], {"requests": 0, "replays": 0, "effects": 0})}
                for e in entries
            ],
            "queued_offline": self.queued_keys,
            "deliveries": self.deliveries,
            "announcements": self.announcements,
            # Who spoke when, in ms since the drive started: every reply and announcement.
            "speaking": self.speaking,
            "wall_seconds": wall_seconds,
        }


def print_summary(summary: dict[str, Any], *, requests: int, vad: Any, out_dir: Path) -> None:
    median = summary["median_speech_end_to_first_audio_ms"]
    print(
        f"\n{summary['replied']}/{requests} requests answered, {summary['tool_calls']} tool calls; "
        f"median end of speech → first audio {median if median is not None else '—'} ms "
        f"(includes the pause that ends a request: {vad.pause_ms} ms when its words are whole, else "
        f"{vad.silence_ms} ms); "
        f"replies in {out_dir}/, cabin recording {summary['cabin_recording']}; {summary['wall_seconds']} s"
    )
    for e in summary["outbox"]:
        c = e["service_key_count"]
        print(
            f"outbox: {e['action']} {e['state']} after {_count(e['attempts'], 'attempt')}, key {e['key']}; "
            f"service: {_count(c['requests'], 'request')}, {_count(c['effects'], 'order')} for that key"
        )
    lag = summary["audio_lag"]
    print(
        "mic loop: chunks handled after capture, max "
        + ", ".join(
            f"{state} {lag[state]['max_lag_ms']:.0f} ms" for state in ("idle", "thinking", "speaking")
        )
        + f"; wake engine real-time factor {summary['wake_real_time_factor']}"
    )
