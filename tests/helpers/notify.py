"""systemd's side of sd_notify in tests: a datagram socket recording each message with its arrival time."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path


def notify_address(tmp_path: Path, kind: str) -> str:
    """A NOTIFY_SOCKET address of either form systemd uses: a path, or the abstract `@` namespace."""
    if kind == "abstract":
        return f"@cabin-agent-test-{uuid.uuid4().hex}"
    return str(tmp_path / "notify.sock")


class NotifySocket:
    """What systemd listens on: a thread records each datagram as (monotonic arrival, {key: value}).

    Two ways to read it: by arrival time (`snapshot`, `wait_for`, `pings`), which never consumes, or in order
    (`receive`, `next_with`, `collect`), which reads each message once, as the manager reads its socket.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._read = 0  # how many of `messages` the in-order readers have taken
        self._arrived = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            message = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
            with self._arrived:
                self.messages.append((time.monotonic(), message))
                self._arrived.notify_all()

    # ------------------------------------------------------------------------------------ by arrival time

    def snapshot(self, since: float = 0.0) -> list[tuple[float, dict[str, str]]]:
        with self._arrived:
            return [(t, m) for t, m in self.messages if t >= since]

    def wait_for(
        self, match: Callable[[dict[str, str]], bool], timeout_s: float, *, since: float = 0.0, proc=None
    ) -> tuple[float, dict[str, str]]:
        """The first message since `since` that matches; fails after `timeout_s` or when `proc` exits."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            for t, message in self.snapshot(since):
                if match(message):
                    return t, message
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"daemon exited {proc.returncode} while waiting; {self.describe(since)}")
            time.sleep(0.05)
        raise AssertionError(f"no matching message within {timeout_s}s; {self.describe(since)}")

    def pings(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [t for t, m in self.snapshot(since) if m.get("WATCHDOG") == "1" and t <= until]

    def describe(self, since: float = 0.0) -> str:
        return "got " + repr([m for _, m in self.snapshot(since)][-20:])

    # ------------------------------------------------------------------------------------------- in order

    def receive(self, timeout_s: float = 2.0) -> dict[str, str]:
        """The next message not read yet; TimeoutError when none arrives within `timeout_s`."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.messages) > self._read, timeout_s):
                raise TimeoutError(f"no message within {timeout_s}s")
            self._read += 1
            return self.messages[self._read - 1][1]

    def next_with(self, key: str, timeout_s: float) -> dict[str, str]:
        """Reads on until a message carries `key` (those before it are read too); fails after `timeout_s`."""
        end = time.monotonic() + timeout_s
        while (left := end - time.monotonic()) > 0:
            try:
                message = self.receive(left)
            except TimeoutError:
                break
            if key in message:
                return message
        raise AssertionError(f"no {key} within {timeout_s}s; got {self.read()}")

    def collect(self, seconds: float) -> list[dict[str, str]]:
        """Everything not read yet that arrives within `seconds`, in order."""
        time.sleep(seconds)
        with self._arrived:
            got = [m for _, m in self.messages[self._read :]]
            self._read = len(self.messages)
        return got

    def read(self) -> list[dict[str, str]]:
        """The messages the in-order readers have taken so far."""
        with self._arrived:
            return [m for _, m in self.messages[: self._read]]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self.sock.close()
