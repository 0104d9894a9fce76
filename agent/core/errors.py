"""Typed errors with kebab-case codes, and the process exit status each kind maps to."""

from __future__ import annotations

from typing import Any

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 64
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CONFIG = 78


class CabinError(Exception):
    """Base of every error the agent raises on purpose.

    `code` is a stable kebab-case identifier (for logs, the control socket and tests);
    `context` carries the facts (key path, file, model id) that make the message actionable.
    """

    code = "cabin-error"
    exit_status = EX_FAILURE

    def __init__(self, message: str, *, code: str | None = None, **context: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.context = context

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ConfigError(CabinError):
    """The configuration is invalid; the daemon must not start (and systemd must not restart it)."""

    code = "config-invalid"
    exit_status = EX_CONFIG


class ModelError(CabinError):
    """A model is missing, corrupt or cannot be fetched; the message names the file and the fix."""

    code = "model-missing"
    exit_status = EX_NOINPUT


class LlmError(CabinError):
    code = "llm-failed"
    exit_status = EX_SOFTWARE


class ToolError(CabinError):
    """A tool call could not run. The message is short and readable: the model and the driver may see it."""

    code = "tool-failed"


class AudioError(CabinError):
    code = "audio-failed"
    exit_status = EX_UNAVAILABLE


class AsrError(CabinError):
    code = "asr-failed"


class TtsError(CabinError):
    code = "tts-failed"


class WakeError(CabinError):
    code = "wake-failed"


class ServiceError(CabinError):
    """A backend service call failed. `retryable` separates timeouts/5xx from permanent 4xx."""

    code = "service-failed"

    def __init__(self, message: str, *, retryable: bool, status: int | None = None, **context: Any) -> None:
        super().__init__(message, status=status, **context)
        self.retryable = retryable
        self.status = status
