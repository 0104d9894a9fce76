"""The demo's tunnel scene through the real voice loop and the real services side: the reference service
on loopback with its own SQLite, the outbox, the connectivity monitor and the dispatcher, wired as the daemon
wires them. A pizza ordered in the tunnel is queued, placed exactly once after it (counted by idempotency key
on the service side), and announced when the car is quiet, never over a reply.

The scripted test replaces only the local model (tests/fakes.py FakeModel, keyed by words of the transcript),
so the real Assistant, confirmation, plugins and outbox run; the `model` test runs it all with the real model.
"""

from __future__ import annotations

import asyncio
import json
import time
import wave
from pathlib import Path
from typing import Any

import pytest
from helpers.fakes import FakeModel, _last_user_message
from helpers.real import require, require_voice_models

from agent.core.config import Config

pytestmark = [pytest.mark.slow]


def _drive() -> list[Any]:
    from agent.devtools.demo.scenes import ENTER_TUNNEL, LEAVE_TUNNEL

    return [
        ("piper", "where is my package", True),
        ENTER_TUNNEL,
        ("piper", "I'd like a large pepperoni pizza", True),
        ("espeak", "yes", False),
        ("piper", "where is my package", True),
        LEAVE_TUNNEL,
        ("espeak", "what is the capital of France", True),
    ]


class _ByWords(dict):
    """A FakeModel script looked up by a piece of a word of the transcript ("Where is my package?" -> "pack")."""

    def get(self, utterance: str, default: Any = None) -> Any:
        said = utterance.lower()
        return next((out for word, out in self.items() if word in said), default)


class SlowOnSome(FakeModel):
    """Thinks `seconds` before answering an utterance with one of `words` (a busy car)."""

    def __init__(self, words: tuple[str, ...] = (), seconds: float = 0.0) -> None:
        super().__init__({})
        self.words, self.seconds = words, seconds

    def generate(self, tokens: Any, **kwargs: Any) -> Any:
        said = _last_user_message("".join(chr(t) for t in tokens)).lower()
        if any(word in said for word in self.words):
            time.sleep(self.seconds)  # the model's worker thread, not the event loop
        yield from super().generate(tokens, **kwargs)


def scripted_model(slow_words: tuple[str, ...] = (), seconds: float = 0.0) -> FakeModel:
    model = SlowOnSome(slow_words, seconds)
    model.script = _ByWords(
        {
            # "pack": whisper tiny.en hears "packet" in some of the road noise (the noise under the words
            # depends on how long the car took before), and this test is about the tunnel, not the ears.
            "pack": {"name": "track_package", "arguments": {}},
            "pizza": {"name": "order_meal", "arguments": {"item": "pepperoni pizza", "size": "large"}},
            "france": "The capital of France is Paris.",
        }
    )
    return model


def check_tunnel_scene(result: dict[str, Any], out: Path) -> None:
    records, summary = result["records"], result["summary"]
    assert summary["scenes"] == ["enter-tunnel", "leave-tunnel"]

    # One order, queued while the service was down: the car asked with the price, the "yes" queued it.
    orders = [e for e in summary["outbox"] if e["action"] == "order_meal"]
    assert len(orders) == 1, summary["outbox"]
    order = orders[0]
    assert summary["queued_offline"] == [order["key"]]
    asked = next(r for r in records if any(c["status"] == "awaiting-confirmation" for c in r["tool_calls"]))
    assert "yuan" in asked["reply"] and asked["reply"].endswith("Shall I order it?"), asked
    yes = next(r for r in records if r["index"] > asked["index"] and r["tool_calls"])
    assert yes["trigger"] == "follow-up"
    call = yes["tool_calls"][0]
    assert call["name"] == "order_meal" and call["result"]["queued"] is True
    assert call["result"]["outbox"]["state"] == "pending"
    assert "queued" in yes["reply"] and "back online" in yes["reply"], yes["reply"]

    # Delivered exactly once after the tunnel: one request and one order on the service for that key.
    assert order["state"] == "delivered"
    assert order["service_key_count"] == {"requests": 1, "replays": 0, "effects": 1}, order
    [delivery] = [d for d in summary["deliveries"] if d["key"] == order["key"]]
    assert delivery["order_id"] and delivery["service_key_count"]["effects"] == 1

    # Announced once, at a quiet moment: after the "yes" turn's reply, never over any reply; in its own WAV.
    placed = [a for a in summary["announcements"] if "placed" in a["text"]]
    assert len(placed) == 1, summary["announcements"]
    announcement = placed[0]
    assert announcement["over_a_reply"] is False
    assert announcement["after_turn"] >= yes["index"]
    wav_path = Path(announcement["reply_wav"])
    assert wav_path.parent == out and wav_path.exists()
    with wave.open(str(wav_path)) as wav:
        assert wav.getnframes() > 1.0 * wav.getframerate()


async def test_demo_tunnel_scene_scripted_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.devtools.demo.drive import spoken_drive

    config = Config()
    require_voice_models(config)
    model = scripted_model()
    out = tmp_path / "demo-out"
    result = await asyncio.wait_for(
        spoken_drive(config, out, speed=2.0, as_json=True, drive=_drive(), model=model), timeout=240
    )
    records = result["records"]
    assert [r["outcome"] for r in records] == ["replied"] * 5, records
    check_tunnel_scene(result, out)

    # The package question: fresh before the tunnel, the last known status with its age inside it.
    packages = [r for r in records if r["tool_calls"] and r["tool_calls"][0]["name"] == "track_package"]
    assert [p["tool_calls"][0]["result"]["source"] for p in packages] == ["service", "cache"]
    assert packages[1]["reply"].startswith("As of "), packages[1]["reply"]

    # --json: one object per line; scenes, link changes, the delivery and the announcement are events too.
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    kinds = [line.get("event") for line in lines]
    assert kinds.count("scene") == 2 and "announcement" in kinds and "outbox" in kinds
    assert {"event": "connectivity", "service": "meals", "online": False} in lines
    assert lines[-1]["summary"]["turns"] == 5


async def test_order_placed_during_another_reply_is_announced_after_it(tmp_path: Path) -> None:
    """The car leaves the tunnel while it is thinking about the next request: the order is placed at once, but
    the car says so only after that reply and its follow-up window, never over it."""
    from agent.devtools.demo.drive import spoken_drive
    from agent.devtools.demo.scenes import ENTER_TUNNEL, Scene

    config = Config()
    require_voice_models(config)
    drive = [
        ENTER_TUNNEL,
        ("piper", "I'd like a large pepperoni pizza", True),
        ("espeak", "yes", False),
        ("espeak", "what is the capital of France", True),
        Scene("leave-tunnel", when="now"),  # right after the driver's words: the car is busy
    ]
    model = scripted_model(slow_words=("france",), seconds=3.0)
    out = tmp_path / "demo-out"
    result = await asyncio.wait_for(
        spoken_drive(config, out, speed=2.0, as_json=True, drive=drive, model=model), timeout=240
    )
    records, summary = result["records"], result["summary"]
    assert [r["outcome"] for r in records] == ["replied"] * 3, records
    check_tunnel_scene(result, out)
    france = next(s for s in summary["speaking"] if s["who"] == f"turn {records[-1]['index']}")
    [delivery] = summary["deliveries"]
    [announcement] = summary["announcements"]
    # Placed while the car was still thinking about France, announced only once that reply was over and the
    # driver's follow-up window had closed.
    assert delivery["at_ms"] < france["start_ms"], (delivery, france)
    assert announcement["start_ms"] > france["end_ms"], (announcement, france)
    assert announcement["start_ms"] - france["end_ms"] >= 0.8 * config.wake.follow_up_seconds * 1000
    assert announcement["after_turn"] == records[-1]["index"]


@pytest.mark.model
async def test_demo_tunnel_scene_real_model(tmp_path: Path) -> None:
    """The same scene with the local model deciding the tools (dev profile), within about two minutes."""
    from agent.devtools.demo.drive import spoken_drive

    config = Config()
    require_voice_models(config)
    try:
        from agent.app.wiring import llm_model

        llm_model(config)
    except Exception as err:  # noqa: BLE001
        require(False, f"LLM missing: {err}")
    drive = [item for item in _drive() if not (isinstance(item, tuple) and "France" in item[1])]
    out = tmp_path / "demo-out"
    result = await asyncio.wait_for(
        spoken_drive(config, out, speed=2.0, as_json=True, drive=drive), timeout=240
    )
    check_tunnel_scene(result, out)
