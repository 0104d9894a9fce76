"""The outside timer's reply watch: it wakes when the daemon's next reply file appears, not before."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agent.devtools.outside import ReplyWatch


def test_the_watch_returns_the_new_reply_when_it_appears(tmp_path: Path) -> None:
    (tmp_path / "reply_001.wav").write_bytes(b"")
    watch = ReplyWatch(tmp_path)
    made: list[float] = []

    def reply_later() -> None:
        time.sleep(0.2)
        made.append(time.monotonic())
        (tmp_path / "reply_002.wav").write_bytes(b"")

    try:
        threading.Thread(target=reply_later).start()
        at, name = watch.wait({"reply_001.wav"}, timeout_s=5)
    finally:
        watch.close()
    assert name == "reply_002.wav"
    assert at is not None and made and 0 <= at - made[0] < 0.1


def test_no_new_reply_times_out(tmp_path: Path) -> None:
    (tmp_path / "reply_001.wav").write_bytes(b"")
    watch = ReplyWatch(tmp_path)
    try:
        assert watch.wait({"reply_001.wav"}, timeout_s=0.2) == (None, None)
    finally:
        watch.close()
