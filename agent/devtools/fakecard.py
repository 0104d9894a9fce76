"""A sound card made of files, for tests and the demo: ALSA's `file` plugin behind PortAudio and sounddevice.

Capture reads `in.raw` (16 kHz mono S16_LE), playback writes `out_<rate>_<channels>_<format>.raw`.
PortAudio reads the ALSA configuration when it initialises, so `activate()` (or the environment from `env()`
given to a subprocess) must happen BEFORE sounddevice is imported. The plugin does not pace either direction and
repeats the last input block forever at end of file: pad the input with silence and pace in the reader
(`MicSource(pace_realtime=True)`, `SpeakerSink(pace_realtime=True)`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.core.errors import AudioError

SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
CAPTURE_PCM = "card_in"
PLAYBACK_PCM = "card_out"


@dataclass
class FakeCard:
    """Writes `asound.conf` in `directory`; `card_in` / `card_out` become sounddevice devices (and the default)."""

    directory: Path
    capture_rate_hz: int = 16000
    playback_rate_hz: int = 22050
    capture_pcm: str = CAPTURE_PCM
    playback_pcm: str = PLAYBACK_PCM

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    @property
    def config_path(self) -> Path:
        return self.directory / "asound.conf"

    @property
    def input_path(self) -> Path:
        return self.directory / "in.raw"

    def output_path(self, channels: int = 1, fmt: str = "S16_LE") -> Path:
        return self.directory / f"out_{self.playback_rate_hz}_{channels}_{fmt}.raw"

    def asound_conf(self, *, with_capture: bool = True) -> str:
        d = self.directory
        lines = [
            f'pcm.{self.playback_pcm}_raw {{ type file  slave.pcm "null"  file "{d}/out_%r_%c_%f.raw"  format "raw" }}',
            f'pcm.{self.playback_pcm} {{ type plug  slave {{ pcm "{self.playback_pcm}_raw" format S16_LE '
            f"rate {self.playback_rate_hz} channels 1 }} }}",
        ]
        if with_capture:
            lines += [
                f'pcm.{self.capture_pcm}_raw {{ type file  slave.pcm "null"  file "/dev/null"  '
                f'infile "{self.input_path}"  format "raw" }}',
                f'pcm.{self.capture_pcm} {{ type plug  slave {{ pcm "{self.capture_pcm}_raw" format S16_LE '
                f"rate {self.capture_rate_hz} channels 1 }} }}",
                f'pcm.!default {{ type asym  playback.pcm "{self.playback_pcm}"  capture.pcm "{self.capture_pcm}" }}',
            ]
        else:
            lines.append(f'pcm.!default {{ type plug  slave.pcm "{self.playback_pcm}" }}')
        lines.append("ctl.!default { type hw card 0 }")
        return "\n".join(lines) + "\n"

    def write(self, *, with_capture: bool = True) -> Path:
        """(Re)write the configuration; `with_capture=False` makes the capture device disappear."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(self.asound_conf(with_capture=with_capture))
        tmp.replace(self.config_path)
        # ALSA reloads its configuration only when a file's mtime changes; two rewrites within a second
        # must still look different.
        stamp = time.time()
        os.utime(self.config_path, (stamp, stamp))
        return self.config_path

    def write_input(
        self, pcm: bytes | np.ndarray, *, lead_seconds: float = 0.0, pad_seconds: float = 2.0
    ) -> Path:
        """Capture input as 16-bit mono raw at `capture_rate_hz`, with silence before and after.

        The trailing silence matters: at end of file the plugin repeats the last block forever.
        """
        if isinstance(pcm, np.ndarray):
            pcm = pcm.astype("<i2").tobytes()
        lead = bytes(2 * int(lead_seconds * self.capture_rate_hz))
        pad = bytes(2 * int(pad_seconds * self.capture_rate_hz))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.input_path.write_bytes(lead + pcm + pad)
        return self.input_path

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a subprocess that will import sounddevice."""
        env = dict(os.environ if base is None else base)
        env["ALSA_CONFIG_PATH"] = f"{SYSTEM_ALSA_CONF}:{self.config_path}"
        return env

    def activate(self) -> None:
        """Point this process's ALSA at the card. Must run before sounddevice (PortAudio) is imported."""
        if "sounddevice" in sys.modules:
            raise AudioError(
                "sounddevice is already imported: PortAudio has read the ALSA configuration; "
                "activate the fake card first or use env() for a subprocess",
                code="audio-fakecard-too-late",
            )
        os.environ["ALSA_CONFIG_PATH"] = f"{SYSTEM_ALSA_CONF}:{self.config_path}"

    def read_output(self, channels: int = 1, fmt: str = "S16_LE") -> np.ndarray:
        path = self.output_path(channels, fmt)
        if not path.exists():
            return np.zeros(0, dtype=np.int16)
        return np.frombuffer(path.read_bytes(), dtype="<i2")
