"""The real daemon under a test systemd: its environment, the cabin microphone on its FIFO, the process."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers.notify import NotifySocket
from helpers.real import store_model

LLM = "qwen2.5-coder-0.5b-instruct-q4_k_m"  # the dev profile's small model keeps the test fast
MODELS = (LLM, "whisper-tiny.en", "piper-en_US-joe-medium")  # the dev profile's stages for English
WATCHDOG_S = 2.0
RATE_HZ = 16000
BLOCK_MS = 30
READY_TIMEOUT_S = 150.0  # a cold start on two busy cores; normally 10-30 s
STOP_TIMEOUT_S = 10.0  # the unit's TimeoutStopSec= is 15


class Microphone:
    """Writes quiet cabin noise (16 kHz mono s16le) into the daemon's FIFO at real-time pace from a thread.

    `stall()` keeps the FIFO open but stops writing: to the daemon a microphone read that never returns.
    """

    def __init__(self, fifo: Path, background: Callable[[int], np.ndarray] | None = None) -> None:
        self.fifo = fifo
        # What the cabin sounds like between words: quiet noise, or road noise for tests that need it.
        self._background = background or (lambda n: self._rng.normal(0, 40, n))
        self.feeding = threading.Event()
        self.feeding.set()
        self.written_s = 0.0
        self._done = threading.Event()
        self._rng = np.random.default_rng(5)
        self._speech: list[np.ndarray] = []  # clips to say, in order, instead of noise
        self._speech_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="microphone", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = os.open(self.fifo, os.O_WRONLY)  # waits for the daemon to open its end, as a real writer would
        try:
            samples = RATE_HZ * BLOCK_MS // 1000
            started = time.monotonic()
            blocks = 0
            while not self._done.is_set():
                if not self.feeding.wait(timeout=0.1):
                    started, blocks = time.monotonic(), 0  # resume at real time, not in a burst
                    continue
                block = np.clip(self._background(samples), -32768, 32767)
                with self._speech_lock:
                    if self._speech:
                        clip = self._speech[0][:samples]
                        self._speech[0] = self._speech[0][samples:]
                        if not len(self._speech[0]):
                            self._speech.pop(0)
                        block[: len(clip)] = np.clip(block[: len(clip)] + clip, -32768, 32767)
                os.write(fd, block.astype("<i2").tobytes())
                blocks += 1
                self.written_s += BLOCK_MS / 1000
                ahead = started + blocks * BLOCK_MS / 1000 - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except (BrokenPipeError, OSError):
            pass  # the daemon closed its end (it stopped)
        finally:
            os.close(fd)

    def say(self, pcm: np.ndarray) -> float:
        """Speak a 16 kHz clip into the cabin (over the noise); returns its length in seconds."""
        with self._speech_lock:
            self._speech.append(pcm.astype(np.float64))
        return len(pcm) / RATE_HZ

    @property
    def speaking(self) -> bool:
        with self._speech_lock:
            return bool(self._speech)

    def stall(self) -> None:
        self.feeding.clear()

    def close(self) -> None:
        self._done.set()
        self.feeding.set()
        self._thread.join(
            timeout=2
        )  # a writer still blocked in open() (daemon never read) is a daemon thread


@dataclass
class Daemon:
    proc: subprocess.Popen
    started: float
    notify: NotifySocket
    control_socket: Path
    log_path: Path
    out_dir: Path
    env: dict[str, str]
    microphone: Microphone | None = None
    stopping_s: float | None = None  # SIGTERM to STOPPING=1
    exit_s: float | None = None  # SIGTERM to exit
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def log_events(self, name: str) -> list[dict]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("event") == name:
                    events.append(event)
        return events

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self) -> float:
        """STATUS=loading models, then READY=1; returns seconds from the process start to READY."""
        try:
            _, first = self.notify.wait_for(lambda m: "STATUS" in m, 30, proc=self.proc)
            assert first["STATUS"] == "loading models", self.notify.describe()
            t, ready = self.notify.wait_for(lambda m: "READY" in m, READY_TIMEOUT_S, proc=self.proc)
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- daemon log ---\n{self.log_tail()}") from None
        assert ready == {"READY": "1", "STATUS": "listening"}
        assert not self.notify.pings(until=t), "WATCHDOG=1 before READY=1"
        return t - self.started

    def control(self, cmd: str, timeout_s: float = 10.0, **args: object) -> object:
        from agent.app.control_client import request_sync

        return request_sync(self.control_socket, cmd, timeout_s=timeout_s, **args)

    def terminate(self, exit_timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM as systemd sends it: STOPPING=1 at once, then the exit within `exit_timeout_s`."""
        sent = time.monotonic()
        self.proc.terminate()
        t, _ = self.notify.wait_for(lambda m: m.get("STOPPING") == "1", 3.0, since=sent)
        self.stopping_s = t - sent
        try:
            status = self.proc.wait(timeout=exit_timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit {exit_timeout_s}s after SIGTERM\n{self.log_tail()}") from None
        self.exit_s = time.monotonic() - sent
        # Every shutdown step finished in time and without an error, and nothing failed on the way.
        for problem in ("release-failed", "release-timeout", "tasks-slow-to-stop", "task-failed"):
            assert not self.log_events(problem), (problem, self.log_events(problem))
        return status

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.microphone is not None:
            self.microphone.close()
        for step in self.cleanup:
            step()

def model_store() -> Path:
    """The real model store (the dev models), found before HOME and XDG_CACHE_HOME point into tmp."""
    from agent.core.config import Config, model_store_dir

    for model_id in MODELS:
        store_model(model_id)  # skipped locally, failed in CI when missing
    return model_store_dir(Config())


def daemon_env(
    tmp_path: Path, notify: str, cache_dir: Path, store: Path | None = None, **extra: str
) -> dict[str, str]:
    home = tmp_path / "home"
    for sub in ("state", "config", "runtime"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    (home / "runtime").chmod(0o700)
    config = tmp_path / "config.yaml"
    if not config.exists():
        config.write_text("logging:\n  format: json\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CABIN_AGENT", "WATCHDOG_", "NOTIFY_"))}
    env.update(
        {
            "HOME": str(home),
            "XDG_CACHE_HOME": str(cache_dir),
            "XDG_STATE_HOME": str(home / "state"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_RUNTIME_DIR": str(home / "runtime"),
            "CABIN_AGENT_CONFIG": str(config),
            "CABIN_AGENT__MODELS__STORE": str(store or model_store()),
            "CABIN_AGENT__LLM__MODEL": LLM,
            "CABIN_AGENT__CONTROL__SOCKET_PATH": str(tmp_path / "control.sock"),
            "CABIN_AGENT__OUTBOX__PATH": str(tmp_path / "outbox.sqlite3"),
            # Audio must beat within max(5 s, 2 x this): a stall is noticed 5 s after the last chunk.
            "CABIN_AGENT__AUDIO__RECONNECT_MAX_SECONDS": "1",
            # No services and no D-Bus in a test: a closed port, probed and found offline.
            "CABIN_AGENT__SERVICES__MEALS__BASE_URL": "http://127.0.0.1:9",
            "CABIN_AGENT__SERVICES__DELIVERIES__BASE_URL": "http://127.0.0.1:9",
            "CABIN_AGENT__CONNECTIVITY__USE_NETWORKMANAGER": "false",
            "NOTIFY_SOCKET": notify,
            "WATCHDOG_USEC": str(int(WATCHDOG_S * 1_000_000)),
        }
    )
    env.update(extra)
    return env
