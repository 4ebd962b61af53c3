"""The hallucination guard: checks one rendered take of a segment before it is kept.

Built on the checkpoint scorer (``train.scoring``): the same Whisper, the same text
normalisation and WER/CER, the same length ratios. A take fails when its words differ from
the text, its length per character is out of the voice's band (truncated or run-on), a
phrase repeats (a loop), there is sound after the last word, or samples clip.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from core.audio import decode
from core.errors import InvalidInput
from train.scoring import RUN_ON_ABOVE, TRUNCATED_BELOW, error_rates, normalise_text
from train.transcribe import WHISPER_RATE, Whisper

T = TypeVar("T")

DEFAULT_NORM = (0.04, 0.12)  # seconds per character of ordinary speech, slow to fast
FRAME_S = 0.02


@dataclass(frozen=True)
class VerifySettings:
    max_wer: float = 0.35
    max_cer: float = 0.25
    norm: tuple[float, float] = DEFAULT_NORM
    repeat_n: int = 3  # the shortest phrase, in words, whose repetition counts as a loop
    max_trailing_s: float = 0.6
    silence_ratio: float = 0.1  # a frame is sound when its RMS is above this share of the speech's RMS
    clip_level: float = 0.999
    max_clipped: float = 0.001


@dataclass
class TakeCheck:
    passed: bool
    reasons: list[str]
    transcript: str
    wer: float
    cer: float
    seconds_per_char: float
    repeat: float  # share of the transcript's n-grams said more often than the text has them
    trailing_s: float
    clipped: float  # share of samples at full scale

    @property
    def score(self) -> float:
        """Lower is better: failed checks first, then how far the words are off."""
        return len(self.reasons) + self.wer + self.cer


def voice_norm(seconds_per_char_values: Sequence[float]) -> tuple[float, float]:
    """A voice's seconds-per-character band from its accepted takes, around their median."""
    values = [float(v) for v in seconds_per_char_values if v > 0]
    if not values:
        raise InvalidInput("A voice's length norm needs at least one accepted take.")
    median = float(np.median(values))
    return median * TRUNCATED_BELOW, median * RUN_ON_ABOVE


def repeat_score(reference: str, hypothesis: str, n: int = 3) -> float:
    """Share of the hypothesis' ``n``-grams that occur more often than in the reference (0 when none)."""

    def grams(text: str) -> Counter[tuple[str, ...]]:
        words = normalise_text(text).split()
        return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))

    said, written = grams(hypothesis), grams(reference)
    total = sum(said.values())
    if not total:
        return 0.0
    return sum(max(0, count - written[gram]) for gram, count in said.items() if count > 1) / total


def _frame_rms(audio: np.ndarray, rate: int) -> np.ndarray:
    size = max(1, int(rate * FRAME_S))
    frames = len(audio) // size
    if not frames:
        return np.zeros(0, dtype=np.float32)
    return np.sqrt(np.mean(audio[: frames * size].reshape(frames, size) ** 2, axis=1))


class TakeVerifier:
    """Verifies takes with a resident Whisper; ``norm`` overrides the length band for one voice."""

    def __init__(
        self,
        whisper: Whisper,
        whisper_model: str,
        *,
        settings: VerifySettings | None = None,
        norm: tuple[float, float] | None = None,
    ) -> None:
        self.whisper = whisper
        self.whisper_model = whisper_model
        self.settings = settings or VerifySettings()
        self.norm = norm or self.settings.norm

    def verify(self, audio: Path | np.ndarray, rate: int | None, text: str, language: str) -> TakeCheck:
        """Checks ``audio`` (a file, or samples at ``rate``) against the ``text`` it should say."""
        import soxr

        if isinstance(audio, Path):
            decoded = decode(audio)
            samples, rate = decoded.mono(), decoded.sample_rate
        else:
            if not rate:
                raise InvalidInput("Audio given as samples needs its sample rate.")
            samples = np.asarray(audio, dtype=np.float32)
            samples = samples.mean(axis=1) if samples.ndim == 2 else samples
        if not normalise_text(text):
            raise InvalidInput("A take can only be verified against some text.")
        s = self.settings
        clipped = float(np.mean(np.abs(samples) >= s.clip_level)) if len(samples) else 0.0
        audio16k = soxr.resample(samples, rate, WHISPER_RATE).astype(np.float32) if rate != WHISPER_RATE else samples
        words = self.whisper.transcribe(audio16k, model=self.whisper_model, language=language).words
        transcript = "".join(w.text for w in words).strip()
        wer, cer = error_rates(text, transcript, language)
        duration = len(audio16k) / WHISPER_RATE
        spoken = (words[-1].end - words[0].start) if words else duration
        seconds_per_char = spoken / len(normalise_text(text, language))
        repeat = repeat_score(text, transcript, s.repeat_n)
        trailing = self._trailing(audio16k, words[-1].end if words else 0.0)

        reasons = []
        if wer > s.max_wer or cer > s.max_cer:
            reasons.append(f"words differ from the text (WER {wer:.2f}, CER {cer:.2f})")
        low, high = self.norm
        if seconds_per_char < low:
            reasons.append(f"too short for the text: likely truncated ({seconds_per_char:.3f} s/char)")
        elif seconds_per_char > high:
            reasons.append(f"too long: run-on or babble ({seconds_per_char:.3f} s/char)")
        if repeat > 0:
            reasons.append("a phrase repeats (looped)")
        if trailing > s.max_trailing_s:
            reasons.append(f"noise after the last word ({trailing:.1f} s)")
        if clipped > s.max_clipped:
            reasons.append(f"clipped ({clipped:.1%} of samples at full scale)")
        return TakeCheck(
            passed=not reasons, reasons=reasons, transcript=transcript, wer=wer, cer=cer,
            seconds_per_char=seconds_per_char, repeat=repeat, trailing_s=trailing, clipped=clipped,
        )  # fmt: skip

    def _trailing(self, audio16k: np.ndarray, last_word_end: float) -> float:
        """Seconds of sound after ``last_word_end``: frames louder than a share of the speech's RMS."""
        rms = _frame_rms(audio16k, WHISPER_RATE)
        cut = int(last_word_end / FRAME_S)
        speech = rms[:cut]
        reference = float(np.sqrt(np.mean(speech**2))) if cut > 0 and len(speech) else float(rms.max(initial=0.0))
        after = rms[cut:]
        loud = np.flatnonzero(after > max(reference * self.settings.silence_ratio, 1e-4))
        return 0.0 if not len(loud) else float((loud[-1] + 1) * FRAME_S)


@dataclass
class Take(Generic[T]):
    """The kept take of a segment: the one that passed, or the best of those that did not."""

    audio: T
    check: TakeCheck
    seed: int
    attempts: int
    checks: list[TakeCheck]  # every take verified, in order

    @property
    def flagged(self) -> bool:
        return not self.check.passed


def take_seed(segment_seed: int, attempt: int) -> int:
    """The seed of retry ``attempt`` (0 is the segment's own seed), kept within 32 bits."""
    return (segment_seed + attempt * 7919) % 2**32


def best_take(render: Callable[[int], T], verify: Callable[[T], TakeCheck], attempts: int, *, seed: int = 0) -> Take[T]:
    """Renders up to ``attempts`` takes, stops at the first that passes, else keeps the lowest score."""
    if attempts < 1:
        raise InvalidInput("At least one attempt is needed to render a take.")
    tried: list[tuple[T, TakeCheck, int]] = []
    for attempt in range(attempts):
        attempt_seed = take_seed(seed, attempt)
        audio = render(attempt_seed)
        tried.append((audio, verify(audio), attempt_seed))
        if tried[-1][1].passed:
            break
    audio, check, kept_seed = tried[-1] if tried[-1][1].passed else min(tried, key=lambda t: t[1].score)
    return Take(audio, check, kept_seed, len(tried), [c for _, c, _ in tried])
