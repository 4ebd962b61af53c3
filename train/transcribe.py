"""faster-whisper: voice activity (its bundled Silero VAD) and transcription with word timestamps."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import ModelUnavailable
from train.segment import Word

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

WHISPER_RATE = 16000
WHISPER_SIZES = ("tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en", "large-v3", "turbo")


@dataclass(frozen=True)
class Transcript:
    language: str
    words: list[Word]

    def to_dict(self) -> dict[str, object]:
        return {"language": self.language, "words": [[w.start, w.end, w.text, w.probability] for w in self.words]}

    @classmethod
    def from_dict(cls, data: dict) -> Transcript:
        return cls(str(data["language"]), [Word(float(a), float(b), str(t), float(p)) for a, b, t, p in data["words"]])


@functools.lru_cache(maxsize=2)
def load_whisper(model: str, device: str = "auto") -> WhisperModel:
    """A cached WhisperModel: a size name (downloaded on first use) or a local CTranslate2 folder."""
    from faster_whisper import WhisperModel

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    compute = "float16" if device.startswith("cuda") else "int8"
    local = Path(model).expanduser()
    try:
        return WhisperModel(str(local) if local.is_dir() else model, device=device, compute_type=compute)
    except Exception as exc:
        raise ModelUnavailable(
            f"Could not load the Whisper model '{model}' ({exc.__class__.__name__}: {exc}). Sizes "
            f"({', '.join(WHISPER_SIZES)}) are downloaded from Hugging Face on first use; offline, pass the "
            "path of a faster-whisper (CTranslate2) model folder instead."
        ) from exc


def speech_regions(audio16k: np.ndarray) -> list[tuple[float, float]]:
    """Voice-activity regions in seconds, from the Silero VAD that faster-whisper ships."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    stamps = get_speech_timestamps(audio16k, VadOptions(min_silence_duration_ms=300, speech_pad_ms=30))
    return [(s["start"] / WHISPER_RATE, s["end"] / WHISPER_RATE) for s in stamps]


def transcribe(audio16k: np.ndarray, *, model: str, language: str | None = None) -> Transcript:
    """Words with times and probabilities; ``language=None`` detects it."""
    whisper = load_whisper(model)
    segments, info = whisper.transcribe(
        audio16k,
        language=language,
        word_timestamps=True,
        vad_filter=True,
        beam_size=5,
        condition_on_previous_text=False,  # keeps one bad segment from derailing the rest
    )
    words = [Word(w.start, w.end, w.word, w.probability) for segment in segments for w in (segment.words or [])]
    return Transcript(info.language, words)
