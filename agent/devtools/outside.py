"""Time the daemon from outside, as a driver would: raw audio into a FIFO, replies out as WAV files.

The daemon runs as its own process (`cabin-agent run --input raw:FIFO --output wav:DIR`) with nothing of this
module inside it. A writer plays 20 dB brown or road noise into the FIFO at real-time pace; for each request
it presses push-to-talk on the control socket, speaks an espeak-ng voice into the noise and notes the moment
the last voiced sample went in. The reply's first audio is the moment its WAV file appears. Transcripts and
tool calls are read back from `status` to count what was heard and what the car did.

    python -m agent.devtools.outside --out bench/results/outside [--tree DIR] [--env KEY=VALUE ...]

`--tree` runs another checkout's daemon with the same requests (before and after, in one session).
`--services` speaks service requests (parcels, orders, restaurants) to the reference service on loopback.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.devtools.bench.script import trim_silence
from agent.devtools.road_noise import active_rms
from agent.devtools.voices import espeak

RATE = 16000
BLOCK = RATE * 30 // 1000
IN_CREATE = 0x100  # <sys/inotify.h>
SPEECH_DBFS = -22.0

# Requests written for this tool (none is in the eval sets), with the words that must be heard and the
# reference transcript (numbers as digits, as whisper writes them) for the word error rate.
REQUESTS: list[tuple[str, str, list[str], str]] = [
    ("en-us", "could you make it a bit cooler, like nineteen degrees", ["cooler", "19"],
     "could you make it a bit cooler like 19 degrees"),
    ("en-gb", "take me to the nearest gas station", ["gas", "station"], "take me to the nearest gas station"),
    ("en-us+f3", "put on some norah jones", ["norah", "jones"], "put on some norah jones"),
    ("en-gb+m4", "call mom please", ["call", "mom"], "call mom please"),
    ("en-us+m7", "turn the fan down to two", ["fan", "2"], "turn the fan down to 2"),
    ("en-us+f2", "skip this song", ["skip", "song"], "skip this song"),
    ("en-gb-x-rp", "set the driver side to twenty three", ["driver", "23"], "set the driver side to 23"),
    ("en-us+m3", "navigate home", ["navigate", "home"], "navigate home"),
    ("en-gb+f4", "turn off the air conditioning", ["air", "conditioning"], "turn off the air conditioning"),
    ("en-us+f4", "pause the music", ["pause", "music"], "pause the music"),
    ("en-gb+m2", "i'm freezing, warm it up to twenty four", ["warm", "24"],
     "i'm freezing warm it up to 24"),
    ("en-us+m5", "find me a route to the airport", ["route", "airport"], "find me a route to the airport"),
]

# Service requests (`--services`): the daemon talks to the reference service on loopback. An order's first
# audio is its confirmation question, with the price the service quoted.
SERVICE_REQUESTS: list[tuple[str, str, list[str], str]] = [
    ("en-us", "where is my parcel right now", ["parcel"], "where is my parcel right now"),
    ("en-gb", "get me a large latte from bean there coffee", ["latte", "bean"],
     "get me a large latte from bean there coffee"),
    ("en-us+f3", "which deliveries are coming today", ["deliveries"], "which deliveries are coming today"),
    ("en-gb+m4", "is there any sushi place around", ["sushi"], "is there any sushi place around"),
    ("en-us+m7", "how is my food order doing", ["order"], "how is my food order doing"),
    ("en-us+f2", "i want a pepperoni pizza from luigi's", ["pepperoni", "pizza"],
     "i want a pepperoni pizza from luigi's"),
]


@dataclass
class Timed:
    voice: str
    text: str
    noise: str
    speech_s: float
    latency_ms: float | None = None
    transcript: str | None = None
    end_reason: str | None = None
    tools: list[str] = field(default_factory=list)
    acted: bool = False
    keywords_heard: int = 0
    keywords: int = 0
    word_errors: int = 0
    ref_words: int = 0
    daemon_latency_ms: dict[str, float] = field(default_factory=dict)


def spoken(text: str, voice: str) -> np.ndarray:
    """An espeak-ng voice at 16 kHz, trimmed to where the words begin and end (so "the last voiced sample" is)."""
    return trim_silence(espeak(text, voice, speed_wpm=165)).astype(np.float64)


def noise(kind: str, seconds: float, seed: int) -> np.ndarray:
    """Brown noise (a leaky integral of white noise) or a rumble-heavy road mix, unit RMS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    white = rng.normal(size=n)
    brown = np.empty(n)
    acc = 0.0
    for i, w in enumerate(white):  # leak keeps it from drifting away
        acc = 0.998 * acc + w
        brown[i] = acc
    brown -= brown.mean()
    if kind == "road":
        t = np.arange(n) / RATE
        rumble = np.sin(2 * np.pi * 38 * t) + 0.5 * np.sin(2 * np.pi * 76 * t + 1.0)
        x = brown / brown.std() + 0.8 * rumble + 0.15 * white
    else:
        x = brown
    return x / x.std()


def word_errors(ref: str, hyp: str) -> int:
    a, b = ref.split(), hyp.split()
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(b) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(b)]


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


class Control:
    """The daemon's control socket (newline-delimited JSON), as any integrator would use it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._id = 0

    def request(self, cmd: str, timeout_s: float = 10.0, **args: Any) -> Any:
        self._id += 1
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(self.path))
            s.sendall((json.dumps({"id": self._id, "cmd": cmd, **args}) + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                part = s.recv(65536)
                if not part:
                    break
                buf += part
        reply = json.loads(buf)
        if not reply.get("ok"):
            raise RuntimeError(f"{cmd}: {reply.get('error')}")
        return reply["result"]


class Cabin:
    """Writes the cabin's sound into the FIFO at real-time pace: noise, and speech when asked."""

    def __init__(self, fifo: Path, noise_kind: str, seed: int) -> None:
        self._noise = {k: noise(k, 30.0, seed + i) for i, k in enumerate(("brown", "road"))}
        self.kind = noise_kind
        self._at = 0
        self._queue: list[tuple[np.ndarray, threading.Event, list[float]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fifo = fifo
        self._level = 32768 * 10 ** (SPEECH_DBFS / 20)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def say(self, speech: np.ndarray, kind: str) -> float:
        """Speak now (blocks until the last sample went in); returns that moment (monotonic seconds)."""
        done, when = threading.Event(), []
        speech = speech * (self._level / active_rms(speech))
        with self._lock:
            self.kind = kind
            self._queue.append((speech, done, when))
        done.wait()
        return when[0]

    def _run(self) -> None:
        with open(self._fifo, "wb", buffering=0) as out:
            start = time.monotonic()
            sent = 0
            speech, done, when, pos = None, None, None, 0
            while not self._stop.is_set():
                if speech is None:
                    with self._lock:
                        if self._queue:
                            speech, done, when = self._queue.pop(0)
                            pos = 0
                nz = self._noise[self.kind]
                idx = (self._at + np.arange(BLOCK)) % len(nz)
                self._at = (self._at + BLOCK) % len(nz)
                block = nz[idx] * self._level * 10 ** (-20 / 20)  # 20 dB under the speech
                last = False
                if speech is not None:
                    part = speech[pos : pos + BLOCK]
                    block[: len(part)] += part
                    pos += BLOCK
                    last = pos >= len(speech)
                pcm = np.clip(np.round(block), -32768, 32767).astype("<i2").tobytes()
                ahead = start + sent / RATE - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                try:
                    out.write(pcm)
                except BrokenPipeError:
                    return
                sent += BLOCK
                if last and done is not None and when is not None:
                    when.append(time.monotonic())
                    done.set()
                    speech = None

    def close(self) -> None:
        self._stop.set()


class ReplyWatch:
    """When the daemon's next reply file appears. Linux inotify (through libc) wakes this process only then:
    polling the directory every few ms would itself take the daemon's cores (llama.cpp's threads stall when
    one is preempted) and slow what it measures. Elsewhere it polls every 10 ms."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, str(out_dir).encode(), IN_CREATE) >= 0:
                self._fd = fd
            elif fd >= 0:
                os.close(fd)
        except (OSError, AttributeError):
            self._fd = -1

    def _new(self, known: set[str]) -> str | None:
        return next((p.name for p in self.out_dir.glob("reply_*.wav") if p.name not in known), None)

    def wait(self, known: set[str], timeout_s: float) -> tuple[float | None, str | None]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            name = self._new(known)
            if name is not None:
                return time.monotonic(), name
            if self._fd < 0:
                time.sleep(0.01)
                continue
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                at = time.monotonic()
                os.read(self._fd, 4096)
                name = self._new(known)
                if name is not None:
                    return at, name
        return None, None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="cabin-outside-"))
    fifo, out_dir, sock = work / "mic.raw", work / "out", work / "control.sock"
    os.mkfifo(fifo)
    out_dir.mkdir()
    config = work / "config.yaml"
    service = None
    url = "http://127.0.0.1:9"  # nothing listens: the car is offline, vehicle requests only
    if args.services:
        from agent.devtools.reference_service import ReferenceService

        service = ReferenceService(work / "service.sqlite3").start()
        url = service.url
    config.write_text(
        f"language: en\ncontrol:\n  socket_path: {sock}\noutbox:\n  path: {work / 'outbox.sqlite3'}\n"
        f"services:\n  meals:\n    base_url: {url}\n  deliveries:\n    base_url: {url}\n"
        "connectivity:\n  use_networkmanager: false\n  probe_interval_seconds: 1.0\n",
        encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(e.split("=", 1) for e in args.env)}
    tree = Path(args.tree).resolve() if args.tree else Path(__file__).resolve().parents[2]
    log = open(work / "daemon.log", "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    cmd = [sys.executable, "-m", "agent", "--config", str(config), "run", "--input", f"raw:{fifo}",
           "--output", f"wav:{out_dir}"]
    daemon = subprocess.Popen(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    cabin = Cabin(fifo, "brown", seed=args.seed)
    cabin.thread.start()
    control = Control(sock)
    replies = ReplyWatch(out_dir)
    results: list[Timed] = []
    try:
        deadline = time.monotonic() + args.ready_timeout
        while True:
            if daemon.poll() is not None:
                raise RuntimeError(f"daemon exited {daemon.returncode}; see {work / 'daemon.log'}")
            try:
                if control.request("status")["state"] == "idle":
                    break
            except (OSError, RuntimeError, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("daemon not ready in time")
            time.sleep(0.5)
        if service is not None:  # the catalogue is fetched once the service is seen online
            while not all(v.get("online") for v in control.request("status")["connectivity"].values()):
                if time.monotonic() > deadline:
                    raise RuntimeError("the daemon never saw the reference service online")
                time.sleep(0.2)
            time.sleep(2.0)
        requests = (SERVICE_REQUESTS if args.services else REQUESTS)[: args.requests]
        clips = [spoken(text, voice) for voice, text, _, _ in requests]
        for i, ((voice, text, keys, ref), clip) in enumerate(zip(requests, clips, strict=True)):
            kind = "brown" if i % 2 == 0 else "road"
            while control.request("status")["state"] != "idle":
                time.sleep(0.05)
            time.sleep(1.0)
            known = {p.name for p in out_dir.glob("reply_*.wav")}
            control.request("ptt")
            time.sleep(0.3)
            ended = cabin.say(clip, kind)
            heard_at, _ = replies.wait(known, args.turn_timeout)
            t = Timed(voice, text, kind, round(len(clip) / RATE, 2))
            t.latency_ms = None if heard_at is None else round((heard_at - ended) * 1000, 1)
            while control.request("status")["state"] != "idle":
                time.sleep(0.05)
            last = control.request("status", last=1)["pipeline"]["last_turns"][-1]
            t.transcript = last.get("transcript")
            t.end_reason = last.get("end_reason")
            t.tools = [c["name"] for c in last.get("tool_calls", []) if c.get("status") == "ok"]
            t.acted = bool(t.tools)
            t.daemon_latency_ms = last.get("latency_ms", {})
            heard = words(t.transcript or "").split()
            t.keywords, t.keywords_heard = len(keys), sum(1 for k in keys if k in heard)
            t.ref_words, t.word_errors = len(ref.split()), word_errors(words(ref), words(t.transcript or ""))
            results.append(t)
            print(f"{i + 1:2d} {t.latency_ms} ms  {kind:5s} {text!r} -> {t.transcript!r} {t.tools}", flush=True)
    finally:
        cabin.close()
        replies.close()
        if service is not None:
            service.stop()
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
    lat = sorted(r.latency_ms for r in results if r.latency_ms is not None)

    def pct(q: float) -> float | None:
        return None if not lat else lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))]

    summary = {
        "requests": len(results), "p50_ms": pct(0.5), "p95_ms": pct(0.95), "max_ms": lat[-1] if lat else None,
        "acted": sum(r.acted for r in results),
        "keywords_heard": round(sum(r.keywords_heard for r in results) / max(1, sum(r.keywords for r in results)), 3),
        "wer": round(sum(r.word_errors for r in results) / max(1, sum(r.ref_words for r in results)), 3),
        "ended_at_cap": sum(1 for r in results if r.end_reason == "max-length"),
        "tree": str(tree), "env": args.env, "services": args.services, "loadavg": os.getloadavg(),
    }
    shutil.rmtree(work, ignore_errors=True) if not args.keep else None
    return {"summary": summary, "turns": [asdict(r) for r in results]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="write <label>.json here")
    ap.add_argument("--label", default="outside")
    ap.add_argument("--services", action="store_true",
                    help="service requests against the reference service on loopback instead of vehicle ones")
    ap.add_argument("--tree", default=None, help="checkout whose daemon to run (default: this one)")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the daemon (config overrides)")
    ap.add_argument("--requests", type=int, default=len(REQUESTS))
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--ready-timeout", type=float, default=900.0)
    ap.add_argument("--turn-timeout", type=float, default=60.0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (daemon log, replies)")
    args = ap.parse_args(argv)
    report = run(args)
    print(json.dumps(report["summary"], indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.label}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
