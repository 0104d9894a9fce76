"""The bench's child processes: first-token probes in fresh processes (cold, after a restart) and the daemon's
start-up and idle cost (`serve()` fed cabin noise, read from /proc), and the command line they run under."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.devtools.bench.machine import ProcSampler, resource_summary
from agent.devtools.road_noise import road_noise
from agent.devtools.scripted_mic import SNR_DB, noise_level
from agent.devtools.voices import RATE, write_wav

CHILDREN = "The child processes `cabin-agent bench` starts (`probe`, `daemon`); they are not for people."


def _child_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CACHE_DIRECTORY"] = str(cache)  # the prompt cache lives here (the model store is set in the config)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    return env


def run_probe(config_path: Path, cache: Path, mode: str, timeout_s: float = 600) -> dict[str, Any]:
    """A fresh process: `cold` (no prompt cache) or `restart` (the cache file a previous process left)."""
    out = cache.parent / f"probe-{mode}.json"
    cmd = [
        sys.executable,
        "-m",
        "agent.devtools.bench",
        "probe",
        "--config",
        str(config_path),
        "--mode",
        mode,
        "--out",
        str(out),
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=_child_env(cache), capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"first-token probe ({mode}) failed: {proc.stderr.strip()[-800:]}")
    data = json.loads(out.read_text())
    data["process_s"] = round(time.monotonic() - started, 2)
    return data


async def _probe(config: Any, mode: str, text: str, second_text: str) -> dict[str, Any]:
    from agent.app.wiring import build_assistant

    assistant = await build_assistant(config, warm=(mode == "restart"))
    out: dict[str, Any] = {
        "mode": mode,
        "load_ms": round(assistant.model.load_ms, 1),
        "warm": assistant.warm_info or None,
    }
    try:
        first = await assistant.turn(text)
        out["first_turn"] = first.timings_ms
        if mode == "cold":
            # The same process then computes and saves the cache, as the daemon does at start-up.
            assistant.reset()
            assistant.model.llm.reset()
            out["warm_computed"] = await assistant.warm()
        else:
            assistant.reset()
            out["cached_turn"] = (await assistant.turn(second_text)).timings_ms
    finally:
        await assistant.close()
    return out


def run_daemon_idle(
    config_path: Path, cache: Path, work: Path, noise_wav: Path, idle_s: float, settle_s: float = 3.0
) -> dict[str, Any]:
    """`serve()` in a child process with cabin noise as its microphone: start-up to READY=1, then CPU and RSS
    from /proc/<pid> while it listens, then SIGTERM."""
    notify_path = work / "notify.sock"
    notify_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    env = _child_env(cache)
    env["NOTIFY_SOCKET"] = str(notify_path)
    cmd = [
        sys.executable,
        "-m",
        "agent.devtools.bench",
        "daemon",
        "--config",
        str(config_path),
        "--noise",
        str(noise_wav),
        "--sink-dir",
        str(work / "daemon-replies"),
    ]
    log_file = (work / "daemon.log").open("w")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    out: dict[str, Any] = {"pid": proc.pid}
    try:
        ready_s = None
        notify.settimeout(1.0)
        while time.monotonic() - started < 300 and proc.poll() is None:
            try:
                msg = notify.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            if "READY=1" in msg.split("\n"):
                ready_s = time.monotonic() - started
                break
        if ready_s is None:
            raise RuntimeError(f"daemon never became ready (exit {proc.poll()}); see {work / 'daemon.log'}")
        out["startup_to_ready_s"] = round(ready_s, 2)
        time.sleep(settle_s)
        sampler = ProcSampler(proc.pid, 1.0)
        end = time.monotonic() + idle_s
        while time.monotonic() < end and proc.poll() is None:
            sampler.sample()
            time.sleep(1.0)
        sampler.sample()
        out.update(resource_summary(sampler.samples))
        out["rss_mb_series"] = [round(s.rss_kb / 1024, 1) for s in sampler.samples if s.rss_kb]
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            out["exit_status"] = proc.wait(timeout=30)
            out["shutdown_s"] = round(time.monotonic() - stopping, 2)
        except subprocess.TimeoutExpired:
            proc.kill()
            out["exit_status"] = "killed after 30 s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        log_file.close()
    out["turns_started"] = _daemon_turns(work / "daemon.log")
    return out


def _daemon_turns(log_path: Path) -> int:
    """Requests the idle daemon started (a false wake on road noise), from its JSON log lines."""
    with contextlib.suppress(OSError):
        return sum('"turn-record"' in line for line in log_path.read_text(errors="replace").splitlines())
    return 0


async def _daemon(config: Any, noise: Path, sink_dir: Path) -> int:
    from agent.app.daemon import serve
    from agent.audio.sinks import WavSink
    from agent.audio.sources import WavSource

    return await serve(config, source=WavSource(noise, pace_realtime=True), sink=WavSink(sink_dir))


def write_noise_wav(path: Path, seconds: float, snr_db: float = SNR_DB, seed: int = 11) -> Path:
    """Cabin road noise with no one speaking, as the idle daemon's microphone."""
    level = noise_level(snr_db)
    return write_wav(path, np.clip(np.round(road_noise(seconds, RATE, seed=seed) * level), -32768, 32767))


def child_main(argv: list[str] | None = None) -> int:
    """`python -m agent.devtools.bench probe|daemon ...`: the child processes the bench starts."""
    from agent.core.config import load_config
    from agent.core.logging import setup_logging

    parser = argparse.ArgumentParser(prog="python -m agent.devtools.bench", description=CHILDREN)
    sub = parser.add_subparsers(dest="role", required=True)
    probe = sub.add_parser("probe", help="first-token probe in a fresh process")
    probe.add_argument("--config", type=Path, required=True)
    probe.add_argument("--mode", choices=("cold", "restart"), required=True)
    probe.add_argument("--out", type=Path, required=True)
    daemon = sub.add_parser("daemon", help="the daemon with a WAV file as its microphone")
    daemon.add_argument("--config", type=Path, required=True)
    daemon.add_argument("--noise", type=Path, required=True)
    daemon.add_argument("--sink-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    setup_logging("info" if args.role == "daemon" else "warning", "json")
    if args.role == "probe":
        out = asyncio.run(
            _probe(config, args.mode, "set the temperature to twenty one degrees", "navigate to work")
        )
        args.out.write_text(json.dumps(out, default=str))
        return 0
    return asyncio.run(_daemon(config, args.noise, args.sink_dir))
