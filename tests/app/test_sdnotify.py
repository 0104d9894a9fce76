"""sd_notify against a real AF_UNIX datagram socket, in both the path and the abstract-namespace form."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.notify import NotifySocket, notify_address

from agent.app import sdnotify
from agent.app.sdnotify import Notifier, watchdog_interval_s


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(notify_address(tmp_path, request.param))
    yield listener
    listener.close()


def test_ready_status_watchdog_stopping_arrive(notify_socket: NotifySocket) -> None:
    notifier = Notifier(environ={"NOTIFY_SOCKET": notify_socket.address})
    assert notifier.enabled
    assert notifier.ready(status="listening")
    assert notify_socket.receive() == {"READY": "1", "STATUS": "listening"}
    assert notifier.status("offline: 2 orders queued")
    assert notify_socket.receive() == {"STATUS": "offline: 2 orders queued"}
    assert notifier.watchdog()
    assert notify_socket.receive() == {"WATCHDOG": "1"}
    assert notifier.stopping()
    assert notify_socket.receive() == {"STOPPING": "1"}
    assert notifier.extend_timeout(30)
    assert notify_socket.receive() == {"EXTEND_TIMEOUT_USEC": "30000000"}
    notifier.close()


def test_reloading_carries_monotonic_usec(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.address)
    assert notifier.reloading()
    message = notify_socket.receive()
    assert message["RELOADING"] == "1"
    assert int(message["MONOTONIC_USEC"]) > 0


def test_status_is_one_line_and_bounded(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.address)
    notifier.status("line one\nWATCHDOG=1\n" + "x" * 500)
    message = notify_socket.receive()
    assert list(message) == ["STATUS"]  # the injected newline did not smuggle in a second assignment
    assert len(message["STATUS"]) == sdnotify.MAX_STATUS_CHARS


def test_transient_status_is_not_remembered(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.address)
    notifier.status("listening")
    notifier.status("unhealthy: audio", remember=False)
    assert notifier.last_status == "listening"


def test_module_functions_read_the_environment(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setattr(sdnotify, "_default", None)
    assert sdnotify.ready()
    assert notify_socket.receive() == {"READY": "1"}
    assert sdnotify.watchdog()
    assert notify_socket.receive() == {"WATCHDOG": "1"}
    sdnotify.default().close()
    monkeypatch.setattr(sdnotify, "_default", None)


def test_without_notify_socket_everything_is_a_noop() -> None:
    notifier = Notifier(environ={})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False


def test_a_vanished_listener_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    assert notifier.watchdog() is False
    assert notifier.ready() is False  # still no exception on the second try


def test_unsupported_address_is_refused() -> None:
    assert Notifier("vsock:2:1234").watchdog() is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "20000000"}, 20.0),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "nonsense"}, None),
        ({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid())}, 5.0),
        ({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}, None),  # another process's watchdog
        ({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(env) == expected
