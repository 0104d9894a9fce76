"""openWakeWord with a user-supplied model file (.onnx or .tflite); optional, imported only when selected."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.audio.chunk import AudioChunk
from agent.core.errors import WakeError
from agent.wake.base import Detection

# openWakeWord scores 80 ms frames (1280 samples at 16 kHz).
FRAME_SAMPLES = 1280


class OpenWakeWordWake:
    name = "openwakeword"

    def __init__(
        self, model_path: str | Path, phrase: str, *, threshold: float = 0.5, rate_hz: int = 16000
    ) -> None:
        path = Path(model_path).expanduser()
        # Check the file first: a missing model is the driver's (installer's) fix, whatever the package state.
        if not path.is_file():
            raise WakeError(
                f"openWakeWord model file not found: {path}", code="wake-model-missing", path=str(path)
            )
        if path.suffix not in (".onnx", ".tflite"):
            raise WakeError(
                f"openWakeWord model must be .onnx or .tflite: {path}",
                code="wake-model-invalid",
                path=str(path),
            )
        try:
            from openwakeword.model import Model
        except ImportError as err:
            raise WakeError(
                "openwakeword is not installed (pip install 'cabin-agent[openwakeword]')",
                code="wake-engine-unavailable",
            ) from err
        try:
            framework = "onnx" if path.suffix == ".onnx" else "tflite"
            self._model = Model(wakeword_models=[str(path)], inference_framework=framework)
        except Exception as err:  # noqa: BLE001 - the library raises many kinds; all mean the same to the driver
            raise WakeError(
                f"openWakeWord could not load {path}: {err}", code="wake-model-invalid", path=str(path)
            ) from err
        self.phrase = phrase
        self.threshold = threshold
        self.rate_hz = rate_hz
        self._pending = np.zeros(0, dtype=np.int16)

    def process(self, chunk: AudioChunk) -> Detection | None:
        samples = chunk.to_format(self.rate_hz, 1).as_int16()[:, 0]
        self._pending = np.concatenate([self._pending, samples])
        detection = None
        while len(self._pending) >= FRAME_SAMPLES:
            frame, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
            scores = self._model.predict(frame)
            best = max(scores.values()) if scores else 0.0
            if best >= self.threshold and detection is None:
                detection = Detection(self.phrase, self.name, chunk.timestamp_ms, score=float(best))
        if detection is not None:
            self.reset()
        return detection

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)
        self._model.reset()

    def close(self) -> None:
        pass
