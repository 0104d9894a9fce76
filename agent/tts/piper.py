"""Piper (piper-tts 1.8) speech: one ONNX voice loaded once, synthesis on a dedicated worker thread.

Piper yields one audio block per sentence; we hand them on in short chunks so a sink can stop mid-sentence,
and we ask for the next sentence only when the consumer wants more, so barge-in stops synthesis at once
(a sentence already running in the thread finishes there and is dropped).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent.audio.chunk import AudioChunk
from agent.core.events import now_ms
from agent.core.logging import get_logger
from agent.tts.base import TTS_ENGINE_FAILED, TTS_VOICE_MISSING, EngineThread, TtsError
from agent.tts.normalize import normalize

log = get_logger("tts")


class PiperTts:
    name = "piper"

    def __init__(
        self,
        model_path: Path | str,
        *,
        config_path: Path | str | None = None,
        length_scale: float | None = None,
        threads: int = 1,
        chunk_ms: int = 200,
        normalize_text: bool = True,
        warm_up: bool = True,
    ) -> None:
        """`model_path` is the voice's .onnx file (or a directory holding exactly one).

        `threads` caps onnxruntime's intra-op threads (`tts.threads`).
        """
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig, SynthesisConfig

        model = Path(model_path)
        if model.is_dir():
            found = sorted(model.glob("*.onnx"))
            if len(found) != 1:
                raise TtsError(
                    f"expected one .onnx voice in {model}, found {len(found)}",
                    code=TTS_VOICE_MISSING,
                    path=str(model),
                )
            model = found[0]
        config = Path(config_path) if config_path else Path(f"{model}.json")
        if not model.is_file() or not config.is_file():
            raise TtsError(
                f"piper voice not found at {model} (fetch it with `cabin-agent models fetch`)",
                code=TTS_VOICE_MISSING,
                path=str(model),
            )
        try:
            config_dict: dict[str, Any] = json.loads(config.read_text(encoding="utf-8"))
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            # Idle threads sleep instead of spinning: they would take cycles from the model between sentences.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = onnxruntime.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._voice = PiperVoice(session=session, config=PiperConfig.from_dict(config_dict))
        except Exception as err:
            raise TtsError(
                f"piper voice at {model} could not be loaded: {err}", code=TTS_VOICE_MISSING, path=str(model)
            ) from err
        self.model_path = model
        self.sample_rate_hz: int = self._voice.config.sample_rate
        code = str(config_dict.get("language", {}).get("code") or self._voice.config.espeak_voice or "en")
        self.language = code.replace("-", "_").split("_")[0].lower()
        self.chunk_bytes = max(2, self.sample_rate_hz * chunk_ms // 1000 * 2)
        self.normalize_text = normalize_text
        self._syn_config = SynthesisConfig(length_scale=length_scale)
        self._thread = EngineThread("tts-piper")
        if warm_up:
            # onnxruntime's first run allocates and plans (~0.5 s); pay it at load, not on the first reply.
            self.synthesize_blocking("Ready.")
        log.info(
            "piper voice loaded",
            path=str(model),
            rate=self.sample_rate_hz,
            language=self.language,
            threads=threads,
        )

    @classmethod
    async def load(cls, model_path: Path | str, **kwargs: Any) -> PiperTts:
        import asyncio

        return await asyncio.to_thread(cls, model_path, **kwargs)

    def _start(self, text: str) -> Any:
        return iter(self._voice.synthesize(text, self._syn_config))

    @staticmethod
    def _next_sentence(sentences: Any) -> bytes | None:
        piece = next(sentences, None)
        return None if piece is None else piece.audio_int16_bytes

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        spoken = normalize(text, self.language) if self.normalize_text else text
        if not spoken.strip():
            return
        log.debug("piper synthesize", text=spoken)
        try:
            sentences = await self._thread.run(self._start, spoken)
            while True:
                pcm = await self._thread.run(self._next_sentence, sentences)
                if pcm is None:
                    break
                for start in range(0, len(pcm), self.chunk_bytes):
                    yield AudioChunk(
                        pcm[start : start + self.chunk_bytes], rate=self.sample_rate_hz, timestamp_ms=now_ms()
                    )
        except TtsError:
            raise
        except Exception as err:  # CancelledError passes through
            raise TtsError(f"piper synthesis failed: {err}", code=TTS_ENGINE_FAILED) from err

    def synthesize_blocking(self, text: str) -> bytes:
        """All audio for `text` as 16-bit PCM at `sample_rate_hz` (for the CLI and benchmarks)."""
        spoken = normalize(text, self.language) if self.normalize_text else text
        return b"".join(p.audio_int16_bytes for p in self._voice.synthesize(spoken, self._syn_config))

    async def aclose(self) -> None:
        self._thread.close()
