"""Wake phrase spotting with a vosk model in grammar mode (the device default: it reuses the recognition model).

The recogniser may only hear the phrase and "[unk]". Some models (the small Korean one) have no "[unk]": then any
speech is forced onto the phrase, so a set of short common words the model knows stands in as garbage words.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent.audio.chunk import AudioChunk
from agent.core.errors import WakeError
from agent.core.logging import get_logger
from agent.wake.base import Detection

log = get_logger("wake")

# Garbage words for models without [unk]: short, frequent words; only those the model knows are used.
FILLER_WORDS = (
    # Korean. Multi-syllable only: one-syllable fillers (에, 저, 으...) soak up the phrase itself. Measured with
    # espeak-ng Korean in cabin noise: 4/4 "헤이 자동차" spotted and 0/7 other requests with these, 3/4 and 0/7
    # with single syllables added, 4/4 and 7/7 false with no fillers at all.
    "네",
    "아니요",
    "음악",
    "창문",
    "열어",
    "줘",
    "날씨",
    "오늘",
    "좋네요",
    "여보세요",
    "전화",
    "집",
    "그래",
    "어디",
    "뭐",
    "지금",
    "안녕하세요",
    "감사합니다",
    "괜찮아요",
    "사람",
    "시간",
    "이거",
    "저기",
    "우리",
    "정말",
    "빨리",
    "천천히",
    # Chinese
    "我们",
    "你好",
    "什么",
    "这个",
    "那个",
    "可以",
    "不要",
    "打开",
    "关闭",
    "音乐",
    "导航",
    "电话",
    "现在",
    "今天",
    # English
    "the",
    "a",
    "to",
    "and",
    "i",
    "you",
    "it",
    "is",
    "hi",
    "okay",
    "yes",
    "no",
    "can",
    "what",
    "play",
    "call",
)


class VoskWake:
    name = "vosk"

    def __init__(
        self,
        model_dir: str | Path,
        phrase: str,
        *,
        threshold: float = 0.5,
        rate_hz: int = 16000,
        model: object | None = None,
        confirm_partials: int = 2,
        fillers: tuple[str, ...] = FILLER_WORDS,
    ) -> None:
        try:
            import vosk
        except ImportError as err:
            raise WakeError("vosk is not installed", code="wake-engine-unavailable") from err
        self._vosk = vosk
        model_dir = Path(model_dir)
        if model is None:
            if not (model_dir / "am").is_dir() and not (model_dir / "final.mdl").exists():
                raise WakeError(
                    f"vosk model not found in {model_dir}", code="wake-model-missing", path=str(model_dir)
                )
            vosk.SetLogLevel(-1)
            try:
                model = vosk.Model(str(model_dir))
            except Exception as err:  # noqa: BLE001 - vosk raises bare Exception
                raise WakeError(
                    f"vosk could not load {model_dir}", code="wake-model-invalid", path=str(model_dir)
                ) from err
        self._model = model
        self.phrase = " ".join(phrase.lower().split())
        self.words = self.phrase.split()
        missing = [w for w in self.words if model.vosk_model_find_word(w) < 0]  # type: ignore[attr-defined]
        if missing:
            raise WakeError(
                f"wake phrase {phrase!r}: not in the vosk model's vocabulary: {', '.join(missing)}",
                code="wake-phrase-unknown",
                words=missing,
            )
        self.has_unk = model.vosk_model_find_word("[unk]") >= 0  # type: ignore[attr-defined]
        if self.has_unk:
            grammar = [self.phrase, "[unk]"]
        else:
            known = [w for w in fillers if w not in self.words and model.vosk_model_find_word(w) >= 0]  # type: ignore[attr-defined]
            grammar = [self.phrase, *known]
            log.info("wake-vosk-no-unk", fillers=len(known))
        # ensure_ascii=False: vosk does not decode \\uXXXX escapes, so a Korean or Chinese phrase would vanish.
        self.grammar_json = json.dumps(grammar, ensure_ascii=False)
        self.threshold = threshold
        self.rate_hz = rate_hz
        self.confirm_partials = confirm_partials
        self._recognizer = self._new_recognizer()
        self._seen = 0

    def _new_recognizer(self) -> object:
        rec = self._vosk.KaldiRecognizer(self._model, float(self.rate_hz), self.grammar_json)
        rec.SetWords(True)
        return rec

    def _contains_phrase(self, words: list[str]) -> bool:
        n = len(self.words)
        return any(words[i : i + n] == self.words for i in range(len(words) - n + 1))

    def process(self, chunk: AudioChunk) -> Detection | None:
        chunk = chunk.to_format(self.rate_hz, 1)
        rec = self._recognizer
        if rec.AcceptWaveform(chunk.pcm):  # type: ignore[attr-defined]
            result = json.loads(rec.Result())  # type: ignore[attr-defined]
            self._seen = 0
            words = result.get("result", [])
            text = [w["word"] for w in words]
            n = len(self.words)
            for i in range(len(text) - n + 1):
                if text[i : i + n] == self.words:
                    conf = min(w.get("conf", 1.0) for w in words[i : i + n])
                    if conf >= self.threshold:
                        self.reset()
                        return Detection(self.phrase, self.name, chunk.timestamp_ms, score=conf)
            return None
        partial = json.loads(rec.PartialResult()).get("partial", "").split()  # type: ignore[attr-defined]
        # A partial can flicker; the phrase must survive a few updates before we wake the car.
        self._seen = self._seen + 1 if self._contains_phrase(partial) else 0
        if self._seen >= self.confirm_partials:
            self.reset()
            return Detection(self.phrase, self.name, chunk.timestamp_ms, score=None)
        return None

    def reset(self) -> None:
        self._recognizer.Reset()  # type: ignore[attr-defined]  # keeps the compiled grammar
        self._seen = 0

    def close(self) -> None:
        self._recognizer = None  # type: ignore[assignment]
