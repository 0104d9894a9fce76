"""A drive through the real daemon: consecutive spoken requests in road noise, one of them misheard.

What issue 9 found: after one refused or misheard request, every later request was refused (1 of 12 acted).
Here the daemon (`python -m agent run --input raw:FIFO`, the dev profile's 1.5B model, whisper, Piper) hears
thirteen requests in a row over 20 dB road noise, each after a push-to-talk press on the control socket, in
voices it never trained on. A request "acts" when its turn made a tool call (ran it, or asked for what was
missing); at least 11 of the 12 vehicle requests must, and the misheard one must not poison the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from helpers.daemon import RATE_HZ, Daemon, Microphone, daemon_env
from helpers.notify import NotifySocket, notify_address
from helpers.real import store_model

LLM = "qwen2.5-coder-1.5b-instruct-q4_k_m"  # the model a head unit runs by default
SNR_DB = 20.0
TURN_TIMEOUT_S = 90.0
DRIVE = [  # (voice, what the driver says, a vehicle request that must act)
    ("piper", "set the temperature to twenty one degrees", True),
    ("espeak:en-us+m3", "don't forget to turn the airport", False),  # a mishearing, as whisper wrote one
    ("piper", "play something by Miles Davis", True),
    ("espeak:en-gb+f3", "warm it up to twenty five", True),
    ("piper", "call mom", True),
    ("espeak:en-us+m5", "navigate to the airport", True),
    ("piper", "turn the fan up to four", True),
    ("espeak:en-gb-x-rp+m2", "skip this song", True),
    ("piper", "take me home", True),
    ("espeak:en-us+f2", "turn off the air conditioning", True),
    ("piper", "play some jazz", True),
    ("espeak:en-gb+m3", "make it two degrees cooler", True),
    ("piper", "call Sarah", True),
]


def road(level_dbfs: float, seed: int = 7):
    from agent.devtools.road_noise import road_noise

    noise = road_noise(60.0, RATE_HZ, seed=seed) * 32768 * 10 ** (level_dbfs / 20)
    at = [0]

    def block(n: int) -> np.ndarray:
        idx = (at[0] + np.arange(n)) % len(noise)
        at[0] = (at[0] + n) % len(noise)
        return noise[idx]

    return block


@pytest.mark.model
def test_twelve_spoken_requests_in_a_row_in_road_noise_one_misheard(tmp_path: Path) -> None:
    from agent.core.config import Config
    from agent.devtools.voices import SPEECH_DBFS, Voices, demo_cache_dir

    for model_id in (LLM, "whisper-tiny.en", "piper-en_US-joe-medium"):
        store_model(model_id)  # skipped locally, failed in CI when missing
    voices = Voices(Config(), cache=demo_cache_dir())
    clips = [voices.say(voice, text) for voice, text, _ in DRIVE]
    # The persisted prompt cache of this machine: the 1.5B's prefix takes minutes to compute cold.
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    fifo = tmp_path / "mic.fifo"
    os.mkfifo(fifo)
    notify = NotifySocket(notify_address(tmp_path, "path"))
    env = daemon_env(tmp_path, notify.address, cache, CABIN_AGENT__LLM__MODEL=LLM,
                     CABIN_AGENT__WAKE__ENGINE="none")
    log_path = tmp_path / f"daemon-{uuid.uuid4().hex[:6]}.log"
    log_file = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--input", f"raw:{fifo}", "--output",
                             f"wav:{tmp_path / 'replies'}"], cwd=Path(__file__).resolve().parents[2], env=env,
                            stdout=log_file, stderr=subprocess.STDOUT)
    daemon = Daemon(proc, time.monotonic(), notify, tmp_path / "control.sock", log_path, tmp_path / "replies", env)
    daemon.cleanup += [notify.close, log_file.close]
    daemon.microphone = Microphone(fifo, background=road(SPEECH_DBFS - SNR_DB))
    turns = []
    try:
        daemon.wait_ready()
        for (voice, text, _), clip in zip(DRIVE, clips, strict=True):
            before = daemon.control("status")["pipeline"]["turns"]
            daemon.control("ptt")
            time.sleep(0.3)
            daemon.microphone.say(clip)
            end = time.monotonic() + TURN_TIMEOUT_S
            turn = None
            while time.monotonic() < end:
                time.sleep(0.5)
                status = daemon.control("status")
                if status["pipeline"]["turns"] > before and status["pipeline"]["state"] == "idle":
                    turn = status["pipeline"]["last_turns"][-1]
                    break
            assert turn is not None, f"{text!r}: no finished turn\n{daemon.log_tail()}"
            turns.append(turn)
            print(f"{voice:22} {text!r:45} heard {turn['transcript']!r:45} -> "
                  f"{[c['name'] + ':' + c['status'] for c in turn['tool_calls']]} {turn['reply']!r}")
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    acted = [bool(t["tool_calls"]) for (_, _, vehicle), t in zip(DRIVE, turns, strict=True) if vehicle]
    assert sum(acted) >= 11, f"{sum(acted)} of {len(acted)} vehicle requests acted"
    # The requests after the misheard one act as they would in a fresh session.
    assert all(acted[1:4]), acted

