"""The machine the bench runs on and what a process costs it: CPU model, load, engine versions, and CPU ticks
and memory read from /proc/<pid>."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import socket
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ENGINE_PACKAGES = (
    "llama_cpp_python",
    "faster-whisper",
    "ctranslate2",
    "piper-tts",
    "onnxruntime",
    "pocketsphinx",
    "vosk",
    "webrtcvad-wheels",
    "numpy",
)


@dataclass(frozen=True)
class ProcSample:
    """One reading of /proc/<pid>: CPU ticks used so far (all threads), resident and peak memory."""

    at_s: float
    cpu_ticks: int
    rss_kb: int | None
    hwm_kb: int | None
    # RSS split: anonymous memory (heap, KV cache, repacked weights) vs file pages (the mmapped GGUF,
    # libraries); file pages are shared and reclaimable, so they say less about memory pressure.
    anon_kb: int | None = None
    file_kb: int | None = None


def parse_proc_stat(text: str) -> int:
    """utime + stime clock ticks from /proc/<pid>/stat (the command name may hold spaces and parentheses)."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]) + int(rest[12])


def parse_proc_status(text: str, key: str) -> int | None:
    """A `kB` value such as VmRSS or VmHWM from /proc/<pid>/status."""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def read_proc(pid: int | str = "self") -> ProcSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    status = Path(f"/proc/{pid}/status").read_text()
    return ProcSample(
        time.monotonic(),
        parse_proc_stat(stat),
        parse_proc_status(status, "VmRSS"),
        parse_proc_status(status, "VmHWM"),
        parse_proc_status(status, "RssAnon"),
        parse_proc_status(status, "RssFile"),
    )


def cpu_percent(first: ProcSample, last: ProcSample, ticks_per_s: int | None = None) -> float | None:
    """CPU used between two samples, in % of one core (200 % = both cores of this machine busy)."""
    hz = ticks_per_s or os.sysconf("SC_CLK_TCK")
    seconds = last.at_s - first.at_s
    if seconds <= 0:
        return None
    return round(100.0 * (last.cpu_ticks - first.cpu_ticks) / hz / seconds, 2)


def resource_summary(samples: Sequence[ProcSample]) -> dict[str, Any]:
    if len(samples) < 2:
        return {"samples": len(samples)}
    rss = [s.rss_kb / 1024 for s in samples if s.rss_kb is not None]
    return {
        "samples": len(samples),
        "seconds": round(samples[-1].at_s - samples[0].at_s, 1),
        "cpu_percent_one_core": cpu_percent(samples[0], samples[-1]),
        "rss_mb_mean": round(statistics.fmean(rss), 1) if rss else None,
        "rss_mb_max": round(max(rss), 1) if rss else None,
        "peak_rss_mb_process": round(samples[-1].hwm_kb / 1024, 1) if samples[-1].hwm_kb else None,
        "rss_anon_mb_max": _max_mb(s.anon_kb for s in samples),
        "rss_file_mb_max": _max_mb(s.file_kb for s in samples),
    }


def _max_mb(values: Iterable[int | None]) -> float | None:
    kb = [v for v in values if v is not None]
    return round(max(kb) / 1024, 1) if kb else None


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = None
    with contextlib.suppress(OSError):
        mem_kb = parse_proc_status(Path("/proc/meminfo").read_text(), "MemTotal")
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_mb": round(mem_kb / 1024) if mem_kb else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


def engine_versions() -> dict[str, str]:
    out = {}
    for name in ENGINE_PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


class ProcSampler:
    """Samples /proc/<pid> every `interval_s` (a thread for another process, a task for our own)."""

    def __init__(self, pid: int | str = "self", interval_s: float = 0.5) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[ProcSample] = []

    def sample(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.samples.append(read_proc(self.pid))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)
