"""Recognition helpers that need no model: usable(), bias phrases, whisper's prompt, vosk phrase snapping."""

from __future__ import annotations

import asyncio

import pytest

from agent.asr.base import EngineThread, Recognizer, Transcript, bias_phrases, usable
from agent.asr.vosk import graph_kind, snap_phrase
from agent.asr.whisper import MAX_PROMPT_CHARS, build_prompt


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        None,
        "uh",
        "Um...",
        "uh, um.",
        "[unk]",
        "[unk] [unk]",
        "?!",
        "...",
        "嗯",
        "嗯嗯啊。",
        "呃，那个",
        "[BLANK_AUDIO]",
        "(music)",
        "*cough*",
        "Hmm?",
        "음",
    ],
)
def test_unusable_transcripts(text: str | None) -> None:
    assert not usable(text)


@pytest.mark.parametrize(
    "text",
    [
        "call mom",
        "uh call mom",
        "21",
        "set it to 21 degrees",
        "打电话给妈妈",
        "嗯，打开空调",
        "[unk] cappuccino",
        "no",
        "음악 틀어 줘",
        "Thank you.",
    ],
)
def test_usable_transcripts(text: str) -> None:
    assert usable(text)


def test_bias_phrases_dedupe_clean_and_filter_script() -> None:
    words = ["Cappuccino", "cappuccino", "  iced   mocha ", "", "拿铁", "Li Wei", "李伟", "Luigi's Pizzeria"]
    assert bias_phrases(words) == ["Cappuccino", "iced mocha", "拿铁", "Li Wei", "李伟", "Luigi's Pizzeria"]
    assert bias_phrases(words, latin_only=True) == ["Cappuccino", "iced mocha", "Li Wei", "Luigi's Pizzeria"]
    assert len(bias_phrases([f"item {i}" for i in range(500)], max_phrases=50)) == 50


def test_whisper_prompt_is_a_bounded_glossary() -> None:
    assert build_prompt([]) == ""
    assert build_prompt(["latte", "cappuccino", "Li Wei"]) == "latte, cappuccino, Li Wei."
    long = build_prompt([f"menu item number {i}" for i in range(200)])
    assert len(long) <= MAX_PROMPT_CHARS and long.endswith(".")


def test_snap_phrase_picks_the_closest_grammar_phrase() -> None:
    phrases = ["엄마 에게 전화 해", "음악 틀어 줘", "에어컨 켜 줘"]
    assert snap_phrase("엄마 에게 줘 전화 해", phrases) == "엄마 에게 전화 해"
    assert snap_phrase("음악 틀어 줘", phrases) == "음악 틀어 줘"
    assert snap_phrase("완전히 다른 말", phrases) is None


def test_graph_kind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "graph").mkdir()
    assert graph_kind(tmp_path) == "unknown"
    (tmp_path / "graph" / "HCLG.fst").write_bytes(b"")
    assert graph_kind(tmp_path) == "static"
    (tmp_path / "graph" / "HCLr.fst").write_bytes(b"")
    (tmp_path / "graph" / "Gr.fst").write_bytes(b"")
    assert graph_kind(tmp_path) == "lookahead"


def test_transcript_defaults() -> None:
    t = Transcript("hello", is_final=True)
    assert t.confidence is None and t.words == () and t.timestamp_ms > 0


async def test_engine_thread_runs_off_the_loop_in_order() -> None:
    import threading

    thread = EngineThread("asr-test")
    seen: list[tuple[int, str]] = []
    loop_thread = threading.current_thread().name

    def work(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 2

    try:
        results = await asyncio.wait_for(asyncio.gather(*(thread.run(work, i) for i in range(5))), 5)
    finally:
        thread.close()
    assert results == [0, 2, 4, 6, 8]
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    assert all(name.startswith("asr-test") and name != loop_thread for _, name in seen)


def test_backends_satisfy_the_protocol() -> None:
    from agent.asr.vosk import VoskRecognizer
    from agent.asr.whisper import WhisperRecognizer

    for cls in (VoskRecognizer, WhisperRecognizer):
        for member in ("set_vocabulary", "transcribe", "aclose", "name", "sample_rate_hz"):
            assert hasattr(cls, member), (cls, member)
    assert Recognizer  # the protocol itself imports without native libraries
