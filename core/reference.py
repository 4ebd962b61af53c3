"""Checks for voice-cloning reference clips, each failure saying what is wrong with which clip."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import fs
from core.audio import XTTS_REFERENCE_RATE, ClipStats, analyse, decode, prepare_reference
from core.constants import SPEECH_MODEL_RATE
from core.errors import InvalidInput
from core.outputs import wav_bytes

MIN_SPEECH_S = 3.0
MIN_CLIP_S = 1.0
MIN_CLIP_SPEECH_S = 0.5
MAX_TOTAL_S = 300.0
MIN_SAMPLE_RATE = SPEECH_MODEL_RATE
MAX_SILENCE_RATIO = 0.8
MAX_CLIPPED_RATIO = 0.001
PREPARED_TTL_S = 3600.0  # how long prepared clips of a check stay for listening


@dataclass
class CheckedClip:
    """One uploaded clip: its measurements, the prepared audio, and what is wrong with it."""

    source: Path
    stats: ClipStats | None
    prepared: np.ndarray | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def prepared_seconds(self) -> float:
        return 0.0 if self.prepared is None else len(self.prepared) / XTTS_REFERENCE_RATE

    @property
    def verdict(self) -> str:
        """``ok``, or the problems without the clip's name in front."""
        return "ok" if self.ok else "; ".join(p.split(": ", 1)[-1] for p in self.problems)


def check_clip(path: Path, *, display_name: str | None = None) -> CheckedClip:
    name = display_name or path.name
    try:
        decoded = decode(path)
    except InvalidInput as exc:
        return CheckedClip(path, None, None, [str(exc)])
    stats = analyse(decoded)
    problems: list[str] = []
    if stats.sample_rate < MIN_SAMPLE_RATE:
        problems.append(
            f"{name}: the sample rate is {stats.sample_rate} Hz; at least {MIN_SAMPLE_RATE} Hz is needed "
            "(phone-quality audio makes a muffled voice)."
        )
    problems.extend(_length_problems(name, stats))
    if stats.clipped_ratio > MAX_CLIPPED_RATIO:
        problems.append(
            f"{name}: the audio is clipped ({stats.clipped_ratio:.2%} of samples at full scale); "
            "record it again at a lower level."
        )
    prepared = prepare_reference(decoded) if not problems else None
    return CheckedClip(path, stats, prepared, problems)


def _length_problems(name: str, stats: ClipStats) -> list[str]:
    """Too short, or too little speech in it: a short clip is called short, never silent."""
    if stats.duration_s < MIN_CLIP_S:
        return [
            f"{name}: the clip is too short ({stats.duration_s:.1f} s); each clip must be at least {MIN_CLIP_S:.0f} s "
            "long (6 to 30 s of clean speech in total works best)."
        ]
    if stats.silence_ratio > MAX_SILENCE_RATIO:
        return [
            f"{name}: the clip is mostly silence ({stats.silence_ratio:.0%} silent, {stats.speech_s:.1f} s of speech)."
        ]
    if stats.speech_s < MIN_CLIP_SPEECH_S:
        return [
            f"{name}: the clip holds only {stats.speech_s:.1f} s of speech; each clip needs at least "
            f"{MIN_CLIP_SPEECH_S:.1f} s of it."
        ]
    return []


def check_clips(paths: Sequence[Path], *, names: Sequence[str] | None = None) -> list[CheckedClip]:
    if not paths:
        raise InvalidInput("Add at least one reference clip (upload a file or record one).")
    return [check_clip(p, display_name=names[i] if names else None) for i, p in enumerate(paths)]


def require_usable(clips: Sequence[CheckedClip]) -> None:
    """Raise one :class:`InvalidInput` listing every problem, including the totals."""
    problems = [p for clip in clips for p in clip.problems]
    usable = [c for c in clips if c.ok and c.stats is not None]
    speech = sum(c.stats.speech_s for c in usable)  # type: ignore[union-attr]
    total = sum(c.stats.duration_s for c in clips if c.stats is not None)
    if not problems and speech < MIN_SPEECH_S:
        problems.append(
            f"Too short: {speech:.1f} s of speech in total; at least {MIN_SPEECH_S:.0f} s is needed "
            "(6 to 30 s of clean speech works best)."
        )
    if total > MAX_TOTAL_S:
        problems.append(f"Too long: {total / 60:.1f} minutes in total; at most {MAX_TOTAL_S / 60:.0f} minutes.")
    if problems:
        raise InvalidInput("The reference audio cannot be used:\n- " + "\n- ".join(problems))


def save_prepared(clips: Sequence[CheckedClip], root: Path, *, ttl_s: float = PREPARED_TTL_S) -> list[Path | None]:
    """Write each clip's prepared audio (``None`` where there is none) into a fresh folder under ``root``.

    They are for listening beside the originals, so folders older than ``ttl_s`` are removed first.
    """
    if root.is_dir():
        for old in root.iterdir():
            with contextlib.suppress(FileNotFoundError):  # another replica may tidy the same folder
                if time.time() - old.stat().st_mtime > ttl_s:
                    shutil.rmtree(old, ignore_errors=True)
    folder = root / secrets.token_hex(4)
    saved: list[Path | None] = []
    for index, clip in enumerate(clips):
        if clip.prepared is None:
            saved.append(None)
            continue
        saved.append(fs.write_bytes(folder / f"{index + 1:02d}.wav", wav_bytes(clip.prepared, XTTS_REFERENCE_RATE)))
    return saved
