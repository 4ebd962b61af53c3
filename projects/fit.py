"""Fitting a dubbed cue into its subtitle slot: XTTS's speed first, then a bounded time-stretch.

A faster XTTS take keeps natural prosody, so it is tried first; what is still too long is
shortened with ffmpeg's ``atempo`` (a time-domain stretch that keeps the pitch). Each step is
bounded by the project's settings; a cue that does not fit after both is flagged with its
overflow, never cut.
"""

from __future__ import annotations

import subprocess

import numpy as np

from core.audio import ffmpeg_tool
from core.errors import StudioError

FIT_TOLERANCE_S = 0.05  # a cue this much longer than its slot still counts as fitting


def fits(duration_s: float, slot_s: float) -> bool:
    """Whether a cue of ``duration_s`` fits ``slot_s`` within the tolerance (a slot of 0 or less: no slot)."""
    return slot_s <= 0 or duration_s <= slot_s + FIT_TOLERANCE_S


def speed_for(duration_s: float, slot_s: float, max_speed: float) -> float:
    """The XTTS speed that should bring a take of ``duration_s`` at speed 1 into ``slot_s``."""
    if fits(duration_s, slot_s):
        return 1.0
    return round(min(max_speed, duration_s / slot_s * 1.03), 3)  # XTTS's speed is not exact: aim a little short


def stretch_for(duration_s: float, slot_s: float, max_stretch: float) -> float:
    """The time-stretch factor (> 1 shortens) that fits ``duration_s`` into ``slot_s``, bounded."""
    if fits(duration_s, slot_s):
        return 1.0
    return round(min(max_stretch, duration_s / slot_s), 4)


def overflow(duration_s: float, slot_s: float) -> float:
    """Seconds by which a cue is still longer than its slot (0 when it fits within the tolerance)."""
    over = duration_s - slot_s
    return round(over, 3) if over > FIT_TOLERANCE_S else 0.0


def time_stretch(audio: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """``audio`` played ``factor`` times faster at the same pitch (ffmpeg ``atempo``), float32 mono."""
    if factor == 1.0 or not len(audio):
        return np.asarray(audio, dtype=np.float32)
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"atempo takes factors from 0.5 to 2.0, not {factor}")
    command = [
        ffmpeg_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-f", "f32le", "-ar", str(rate), "-ac", "1",
        "-i", "pipe:0", "-filter:a", f"atempo={factor:.4f}", "-f", "f32le", "-ar", str(rate), "-ac", "1", "pipe:1",
    ]  # fmt: skip
    done = subprocess.run(command, input=np.asarray(audio, dtype="<f4").tobytes(), capture_output=True, check=False)
    if done.returncode != 0:
        raise StudioError(f"ffmpeg could not time-stretch a cue: {done.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)
