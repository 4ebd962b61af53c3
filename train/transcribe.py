"""faster-whisper: voice activity (its bundled Silero VAD) and transcription with word timestamps.

Transcription runs one of two ways over the same loaded model:

- sequential (``batch_size=0``): faster-whisper's own loop, seeking window by window over the VAD-kept speech;
- batched (``batch_size >= 1``): its ``BatchedInferencePipeline`` over windows cut at pauses from
  :func:`speech_regions` (real audio, pauses inside kept, so word times need no remapping). Windows do not
  overlap and decode text only (words are timed by alignment), which is what makes it faster even at batch 1.

On a CPU the model runs as several workers of one or two threads each, and the batched windows are shared
among them: Whisper's matrices are too small for many threads to share one well (two threads on one
window spend half again the CPU time of one for the same wall time), while workers on different windows
scale with the cores. This is CTranslate2's own advice for throughput on a CPU; the weights are shared.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.constants import SPEECH_MODEL_RATE
from core.device import DeviceScheduler
from core.errors import ModelUnavailable
from train.segment import Word

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

WHISPER_RATE = SPEECH_MODEL_RATE
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


WINDOW_S = 30.0  # Whisper's input length
WINDOW_PAD_S = 0.2  # audio kept either side of the speech in a window

MAX_CPU_WORKERS = 4


def default_cpu_workers() -> int:
    """Whisper workers on a CPU: one per core this process may use, at most :data:`MAX_CPU_WORKERS`."""
    return max(1, min(MAX_CPU_WORKERS, len(os.sched_getaffinity(0))))


_SIZE_MB = {"tiny": 75, "base": 145, "small": 484, "medium": 1530, "large-v3": 3090, "turbo": 1620}
MODEL = "whisper"  # the name in the device registry


def load_whisper(model: str, device: str = "cpu", workers: int = 1) -> WhisperModel:
    """A WhisperModel: a size name (downloaded on first use) or a local CTranslate2 folder.

    ``workers`` > 1 on a CPU: that many calls run at once, the cores shared among them
    (one worker keeps faster-whisper's default threads).
    """
    from faster_whisper import WhisperModel

    kind, _, index = device.partition(":")
    compute = "float16" if kind == "cuda" else "int8"
    threads = max(1, len(os.sched_getaffinity(0)) // workers) if kind == "cpu" and workers > 1 else 0
    local = Path(model).expanduser()
    try:
        return WhisperModel(
            str(local) if local.is_dir() else model, device=kind, device_index=int(index or 0), compute_type=compute,
            cpu_threads=threads, num_workers=workers if kind == "cpu" else 1,
        )  # fmt: skip
    except Exception as exc:
        raise ModelUnavailable(
            f"Could not load the Whisper model '{model}' ({exc.__class__.__name__}: {exc}). Sizes "
            f"({', '.join(WHISPER_SIZES)}) are downloaded from Hugging Face on first use; offline, pass the "
            "path of a faster-whisper (CTranslate2) model folder instead."
        ) from exc


def _estimate_bytes(model: str) -> int:
    weights = Path(model).expanduser() / "model.bin"
    if weights.is_file():
        return weights.stat().st_size
    return _SIZE_MB.get(model.removesuffix(".en"), 500) * 2**20


class Whisper:
    """faster-whisper models kept loaded (one per size), used inside the device slot.

    Registered with the device registry: moving Whisper off the device drops it (it loads
    again in seconds), and while the device is lent to training it loads on the CPU.
    """

    def __init__(self, scheduler: DeviceScheduler, *, cpu_workers: int | None = None) -> None:
        """``cpu_workers``: transcriptions run at once on a CPU (default :func:`default_cpu_workers`)."""
        if cpu_workers is not None and cpu_workers < 1:
            raise ValueError("cpu_workers must be at least 1")
        self.scheduler = scheduler
        self.cpu_workers = cpu_workers or default_cpu_workers()
        self._models: dict[str, WhisperModel] = {}
        self._device: str | None = None
        self.loads = 0
        scheduler.models.register(
            MODEL, estimate_bytes=self._estimate, offload=self.unload, reload=self.unload, order=10
        )

    def _estimate(self) -> int:
        return sum(_estimate_bytes(name) for name in self._models)

    def unload(self) -> None:
        if self._models:
            self._models.clear()
            self._device = None
            self.scheduler.models.unloaded(MODEL)

    def _model(self, name: str) -> WhisperModel:
        """The loaded model ``name`` (call inside the slot)."""
        target = self.scheduler.models.target_device()
        if self._device != target:
            self.unload()
        if name not in self._models:
            while len(self._models) >= 2:  # a third size pushes out the oldest
                self._models.pop(next(iter(self._models)))
            self._models[name] = load_whisper(name, target, self._workers(target))
            self._device = target
            self.loads += 1
            self.scheduler.models.loaded(MODEL)
        return self._models[name]

    def _workers(self, device: str) -> int:
        return self.cpu_workers if device == "cpu" else 1

    def default_beam_size(self) -> int:
        """5 on a GPU; greedy on a CPU, where beam search costs about half again the time (bench_dataset)."""
        return 5 if self.scheduler.models.target_device().startswith("cuda") else 1

    def transcribe(
        self,
        audio16k: np.ndarray,
        *,
        model: str,
        language: str | None = None,
        batch_size: int = 0,
        regions: list[tuple[float, float]] | None = None,
        beam_size: int = 5,
    ) -> Transcript:
        """Words with times and probabilities; ``language=None`` detects it.

        ``batch_size >= 1`` transcribes batched over windows of the speech ``regions`` (found here when not given).
        ``beam_size=1`` is greedy decoding: about a third less time on a CPU for a little more word error.
        """
        if batch_size < 0 or beam_size < 1:
            raise ValueError("batch_size must be 0 (sequential) or more, and beam_size 1 or more")
        if batch_size:
            return self._batched(audio16k, model, language, batch_size, regions, beam_size)
        with self.scheduler.slot(MODEL):  # segments decode lazily: consume them inside the slot
            segments, info = self._model(model).transcribe(
                audio16k,
                language=language,
                word_timestamps=True,
                vad_filter=True,
                beam_size=beam_size,
                condition_on_previous_text=False,  # keeps one bad segment from derailing the rest
            )
            words = [Word(w.start, w.end, w.word, w.probability) for segment in segments for w in (segment.words or [])]
        return Transcript(info.language, words)

    def _batched(
        self,
        audio16k: np.ndarray,
        model: str,
        language: str | None,
        batch_size: int,
        regions: list[tuple[float, float]] | None,
        beam_size: int,
    ) -> Transcript:
        from faster_whisper import BatchedInferencePipeline

        regions = speech_regions(audio16k) if regions is None else regions
        clips = speech_windows(regions, len(audio16k) / WHISPER_RATE)
        if not clips:
            return Transcript(language or "en", [])
        with self.scheduler.slot(MODEL):
            whisper = self._model(model)
            workers = min(self._workers(self._device or "cpu"), len(clips))

            def run(windows: list[tuple[float, float]], language: str | None) -> tuple[list[Word], str]:
                segments, info = BatchedInferencePipeline(whisper).transcribe(  # a pipeline keeps state: one a call
                    audio16k,
                    language=language,
                    word_timestamps=True,
                    beam_size=beam_size,
                    batch_size=batch_size,
                    clip_timestamps=[{"start": start, "end": end} for start, end in windows],
                )
                words = [Word(w.start, w.end, w.word, w.probability) for s in segments for w in (s.words or [])]
                return words, info.language

            if workers == 1:
                words, language = run(clips, language)
            else:
                words = []
                if language is None:  # detected on the first window, as the pipeline does over all of them
                    words, language = run(clips[:1], None)
                    clips = clips[1:]
                shares = [clips[i::workers] for i in range(workers)]
                with ThreadPoolExecutor(workers, thread_name_prefix="whisper") as pool:
                    for found, _ in pool.map(lambda share: run(share, language), [s for s in shares if s]):
                        words += found
            words += self._unheard(audio16k, regions, words, model, language, beam_size)
        return Transcript(language, sorted(words, key=lambda w: w.start))

    def _unheard(
        self,
        audio16k: np.ndarray,
        regions: list[tuple[float, float]],
        words: list[Word],
        model: str,
        language: str,
        beam_size: int,
    ) -> list[Word]:
        """Words of the speech regions the batched pass heard nothing in, transcribed again by Whisper's own loop.

        A batched window is decoded as one piece of text; now and then the decoder ends it early (seen
        with tiny models on a music bed) and the rest of the window's speech is lost. Whisper's loop,
        which seeks on after each segment, hears it. Call inside the slot.
        """
        missing = [(a, b) for a, b in regions if not any(w.start < b and w.end > a for w in words)]
        found: list[Word] = []
        for start, end in speech_windows(missing, len(audio16k) / WHISPER_RATE):
            log.info("Whisper's batch heard nothing in %.1f-%.1f s of speech; transcribing it again", start, end)
            segments, _ = self._model(model).transcribe(
                audio16k[int(start * WHISPER_RATE) : int(end * WHISPER_RATE)], language=language,
                word_timestamps=True, vad_filter=False, beam_size=beam_size, condition_on_previous_text=False,
            )  # fmt: skip
            found += [
                Word(start + w.start, start + w.end, w.word, w.probability)
                for segment in segments
                for w in (segment.words or [])
            ]
        return found

    def text(self, audio16k: np.ndarray, *, model: str, language: str | None) -> str:
        """Plain text of the whole audio (no VAD: a sample is speech from end to end)."""
        return self.texts([audio16k], model=model, language=language)[0]

    def texts(self, clips: Sequence[np.ndarray], *, model: str, language: str | None) -> list[str]:
        """:meth:`text` of each clip; on a CPU the workers take one clip each at a time."""
        with self.scheduler.slot(MODEL):
            whisper = self._model(model)
            multilingual = getattr(whisper.model, "is_multilingual", True)

            def one(audio16k: np.ndarray) -> str:
                segments, _ = whisper.transcribe(
                    audio16k, language=language if multilingual else None, beam_size=5, vad_filter=False,
                    condition_on_previous_text=False,
                )  # fmt: skip
                return " ".join(s.text.strip() for s in segments)

            workers = min(self._workers(self._device or "cpu"), len(clips))
            if workers <= 1:
                return [one(clip) for clip in clips]
            with ThreadPoolExecutor(workers, thread_name_prefix="whisper") as pool:
                return list(pool.map(one, clips))


def speech_windows(regions: list[tuple[float, float]], duration: float) -> list[tuple[float, float]]:
    """Consecutive speech regions grouped into windows of at most :data:`WINDOW_S` of audio, cut in pauses.

    A single region longer than a window (speech without a 0.3 s pause) is cut into equal parts.
    """
    pieces: list[tuple[float, float]] = []
    for start, end in regions:
        start, end = max(0.0, start - WINDOW_PAD_S), min(duration, end + WINDOW_PAD_S)
        parts = int(np.ceil((end - start) / WINDOW_S))
        pieces += [(start + (end - start) * i / parts, start + (end - start) * (i + 1) / parts) for i in range(parts)]
    windows: list[tuple[float, float]] = []
    for start, end in pieces:
        if windows and end - windows[-1][0] <= WINDOW_S:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((max(start, windows[-1][1]) if windows else start, end))
    return windows


def speech_regions(audio16k: np.ndarray) -> list[tuple[float, float]]:
    """Voice-activity regions in seconds, from the Silero VAD that faster-whisper ships."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    stamps = get_speech_timestamps(audio16k, VadOptions(min_silence_duration_ms=300, speech_pad_ms=30))
    return [(s["start"] / WHISPER_RATE, s["end"] / WHISPER_RATE) for s in stamps]
