"""Logging as the journal sees it: one JSON object per line under systemd, and nothing private in it.

Each case runs in a fresh interpreter: structlog's configuration is process-wide, and the TTY / JOURNAL_STREAM
decision is taken from the real stderr.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import textwrap

import pytest

RUN_TIMEOUT_S = 30


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NO_COLOR", "FORCE_COLOR")}
    base.update(extra)
    return base


def run(body: str, *, stderr=subprocess.PIPE, **extra_env: str) -> str:
    header = "from agent.core.logging import setup_logging, get_logger, bind_turn, unbind_turn\n"
    script = header + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=stderr, text=True,
                          env=env(**extra_env), timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    return done.stderr or ""


def json_lines(stderr: str) -> list[dict]:
    lines = stderr.splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # every line must be one JSON object


# ---------------------------------------------------------------- format


def test_without_a_terminal_each_line_is_a_json_object_with_the_journal_fields():
    stderr = run("""
        setup_logging("info", "auto")
        log = get_logger("wake")
        log.info("wake-detected", score=0.91)
        bind_turn("a1b2c3")
        get_logger("turn").warning("tool-timeout", tool="order_meal")
        unbind_turn()
        log.info("listening")
    """)

    first, second, third = json_lines(stderr)
    assert first["event"] == "wake-detected" and first["component"] == "wake" and first["level"] == "info"
    assert first["score"] == 0.91
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert "turn_id" not in first
    assert (second["event"], second["component"], second["level"], second["turn_id"]) == (
        "tool-timeout", "turn", "warning", "a1b2c3")
    assert "turn_id" not in third, "the turn id is unbound when the turn ends"


def test_journal_stream_means_json_even_on_a_terminal():
    lines = run_on_a_terminal('setup_logging("info", "auto")\nget_logger("daemon").info("ready")\n',
                              JOURNAL_STREAM="8:12345")

    [record] = [json.loads(line) for line in lines]
    assert (record["event"], record["component"]) == ("ready", "daemon")


def test_a_terminal_gets_readable_console_lines():
    lines = run_on_a_terminal('setup_logging("info", "auto")\nget_logger("daemon").info("ready", port=3)\n')

    [line] = lines
    assert "ready" in line and "port" in line
    assert not line.lstrip().startswith("{")


def run_on_a_terminal(body: str, **extra_env: str) -> list[str]:
    """Run with stderr on a pseudo-terminal, as when a developer starts the agent in a shell."""
    controller, terminal = pty.openpty()
    try:
        script = "from agent.core.logging import setup_logging, get_logger\n" + body
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=terminal,
                                env=env(TERM="dumb", NO_COLOR="1", **extra_env))
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(RUN_TIMEOUT_S) == 0
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return [line for line in text.splitlines() if line.strip()]


def test_json_can_be_forced_and_levels_filter():
    stderr = run("""
        setup_logging("warning", "json")
        log = get_logger("asr")
        log.info("partial-result")
        log.warning("model-slow", seconds=2.5)
    """)

    [record] = json_lines(stderr)
    assert record["event"] == "model-slow" and record["level"] == "warning"


# ---------------------------------------------------------------- privacy


def test_the_drivers_words_are_redacted_at_info():
    stderr = run("""
        setup_logging("info", "json")
        get_logger("turn").info("turn-finished", text="call my ex", transcript="call my ex",
                                reply="Calling Sam.", utterance="call my ex", tools=["call_contact"])
    """)

    [record] = json_lines(stderr)
    assert "call my ex" not in stderr and "Calling Sam" not in stderr
    assert record["text"] == "<10 chars>"
    assert record["reply"] == "<12 chars>"
    assert record["tools"] == ["call_contact"], "what the car did is still logged"


def test_the_drivers_words_are_logged_when_configured():
    stderr = run("""
        setup_logging("info", "json", log_transcripts=True)
        get_logger("turn").info("turn-finished", text="order a latte", reply="Shall I order it?")
    """)

    [record] = json_lines(stderr)
    assert record["text"] == "order a latte" and record["reply"] == "Shall I order it?"


def test_the_drivers_words_are_shown_at_debug():
    stderr = run("""
        setup_logging("debug", "json")
        log = get_logger("asr")
        log.debug("transcript-final", transcript="导航回家")
        log.info("transcript-final", transcript="导航回家")
    """)

    at_debug, at_info = json_lines(stderr)
    assert at_debug["transcript"] == "导航回家", "non-ASCII is written as is, not escaped"
    assert at_info["transcript"] == "<4 chars>"


@pytest.mark.parametrize("level", ["debug", "info"])
def test_secrets_are_never_logged_whatever_the_level(level):
    stderr = run(f"""
        setup_logging("debug", "json", log_transcripts=True)
        getattr(get_logger("services"), "{level}")(
            "request", api_key="sk-live-1", refresh_token="rt-2", Authorization="Bearer xyz",
            password="hunter2", meals_secret="s-3", token="t-4", service="meals")
    """)

    [record] = json_lines(stderr)
    for secret in ("sk-live-1", "rt-2", "Bearer xyz", "hunter2", "s-3", "t-4"):
        assert secret not in stderr
    for key in ("api_key", "refresh_token", "Authorization", "password", "meals_secret", "token"):
        assert record[key] == "<secret>", key
    assert record["service"] == "meals"


def test_secrets_bound_to_the_context_are_redacted_too():
    stderr = run("""
        import structlog
        setup_logging("info", "json")
        structlog.contextvars.bind_contextvars(deliveries_api_key="dk-9")
        get_logger("services").info("probe")
    """)

    [record] = json_lines(stderr)
    assert "dk-9" not in stderr and record["deliveries_api_key"] == "<secret>"


def test_audio_bytes_are_never_logged_raw():
    stderr = run("""
        setup_logging("debug", "json", log_transcripts=True)
        get_logger("audio").debug("chunk-dropped", pcm=b"\\x01\\x02" * 800, frame=bytearray(b"\\x7f" * 10),
                                  view=memoryview(b"abc"), samples=[1, 2, 3])
    """)

    [record] = json_lines(stderr)
    assert record["pcm"] == "<audio 1600 bytes>"
    assert record["frame"] == "<audio 10 bytes>"
    assert record["view"] == "<audio 3 bytes>"
    assert record["samples"].startswith("<audio")
    assert "\\u0001" not in stderr and "\\x01" not in stderr


def test_an_exception_is_logged_as_text_inside_the_json_line():
    stderr = run("""
        setup_logging("info", "json")
        try:
            raise ValueError("grammar compile failed")
        except ValueError:
            get_logger("llm").exception("warm-failed")
    """)

    [record] = json_lines(stderr)
    assert record["level"] == "error"
    assert "ValueError: grammar compile failed" in record["exception"]
