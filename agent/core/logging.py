"""structlog setup: readable lines in a terminal, one JSON object per line under systemd; privacy filters."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

# Keys whose values are the driver's words: logged only at debug level or with logging.log_transcripts.
PRIVATE_TEXT_KEYS = frozenset({"transcript", "text", "reply", "partial", "utterance"})
# Keys that must never reach a log, whatever the level.
SECRET_KEYS = frozenset({"api_key", "token", "password", "secret", "authorization", "credentials"})
AUDIO_KEYS = frozenset({"pcm", "audio", "samples", "chunk"})

_log_transcripts = False


def _privacy(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        lowered = key.lower()
        if lowered in SECRET_KEYS or lowered.endswith(("_key", "_token", "_secret")):
            event[key] = "<secret>"
        elif lowered in AUDIO_KEYS or isinstance(event[key], bytes | bytearray | memoryview):
            value = event[key]
            size = len(value) if hasattr(value, "__len__") else "?"
            event[key] = f"<audio {size} bytes>"
        elif lowered in PRIVATE_TEXT_KEYS and not _log_transcripts and method != "debug":
            value = event[key]
            event[key] = f"<{len(value)} chars>" if isinstance(value, str) else "<private>"
    return event


def _use_json(fmt: str) -> bool:
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    # Under systemd stderr goes to the journal (JOURNAL_STREAM set) or is not a terminal.
    return bool(os.environ.get("JOURNAL_STREAM")) or not sys.stderr.isatty()


def setup_logging(level: str = "info", fmt: str = "auto", log_transcripts: bool = False) -> None:
    global _log_transcripts
    _log_transcripts = log_transcripts
    numeric = getattr(logging, level.upper())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _privacy,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    if _use_json(fmt):
        processors.append(structlog.processors.JSONRenderer(ensure_ascii=False))
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (httpx, piper) go to stderr at warning and above.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(name)s: %(message)s")


class _StderrLogger:
    """Writes each line to the *current* sys.stderr, and never lets a closed stream break the caller.

    A logger that keeps the stream it was created with fails once that stream is swapped or closed (test capture,
    a daemon thread logging during interpreter shutdown); a lost log line must never become an exception.
    """

    def __init__(self, *args: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        try:
            print(message, file=sys.stderr, flush=True)
        except (ValueError, OSError):
            pass

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


def get_logger(component: str) -> Any:
    # A lazy proxy: binding at import time would freeze the configuration in force before setup_logging().
    return structlog.get_logger(component=component)


def bind_turn(turn_id: str) -> None:
    """Every log line emitted while a turn runs carries its id."""
    structlog.contextvars.bind_contextvars(turn_id=turn_id)


def unbind_turn() -> None:
    structlog.contextvars.unbind_contextvars("turn_id")
