"""The master WAV of an export, at a loudness target, in passes over the streamed mix.

The first pass only measures the mix; the next applies the gain the target asks for, limits
the peaks and writes the 16-bit WAV while measuring what it writes. Limiting takes a little
loudness off, so when the result is more than :data:`TOLERANCE` dB from the aim the write
is done again with the gain corrected by the secant through the last two tries (at most
:data:`MAX_WRITES` writes). With the target
``none`` the mix is written as it is, measured once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from core.errors import Cancelled
from projects.loudness import TARGETS, Limiter, Measurement, Meter
from projects.mixer import Mixer
from projects.timeline import RATE

TOLERANCE = 0.5
MAX_WRITES = 3
_WRITE_SPANS = ((0.4, 0.5), (0.9, 0.05), (0.95, 0.05))  # progress stays monotonic when a write is redone


def _stop_check(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("The export was stopped while mixing; nothing was saved.")


def _measure(mixer: Mixer, progress: Callable[[float], None], should_stop: Callable[[], bool] | None) -> Measurement:
    meter = Meter(RATE)
    done = 0
    for block in mixer.blocks():
        _stop_check(should_stop)
        meter.add(block)
        done += len(block)
        progress(done / max(mixer.timeline.frames, 1))
    return meter.result()


def _write(
    mixer: Mixer,
    wav: Path,
    limiter: Limiter | None,
    progress: Callable[[float], None],
    should_stop: Callable[[], bool] | None,
) -> Measurement:
    meter = Meter(RATE)
    done = 0
    with sf.SoundFile(str(wav), "w", samplerate=RATE, channels=1, subtype="PCM_16", format="WAV") as out:

        def put(samples: np.ndarray) -> None:
            clipped = np.clip(samples, -1.0, 1.0)
            meter.add(clipped)
            out.write(clipped)

        for block in mixer.blocks():
            _stop_check(should_stop)
            put(block if limiter is None else limiter.process(block))
            done += len(block)
            progress(done / max(mixer.timeline.frames, 1))
        if limiter is not None:
            put(limiter.flush())
    return meter.result()


def master(
    mixer: Mixer,
    wav: Path,
    target: str,
    *,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Write ``wav`` from ``mixer`` at ``target``; the measurements before and after, the gain and the passes."""
    report = progress or (lambda fraction: None)
    goal = TARGETS[target]
    if goal is None:
        measured = _write(mixer, wav, None, report, should_stop)
        return {
            "target": target,
            "gain_db": 0.0,
            "passes": 1,
            "before": measured.to_dict(),
            "after": measured.to_dict(),
        }
    before = _measure(mixer, lambda f: report(0.4 * f), should_stop)
    level = getattr(before, goal.measure)
    gain = goal.aim - level if level > -70.0 else 0.0
    previous = (0.0, level)  # (gain, what it gave): the limiter takes more the louder it is pushed
    passes = 1
    while True:
        start, span = _WRITE_SPANS[passes - 1]
        passes += 1
        limiter = Limiter(RATE, gain, goal.ceiling_db)
        after = _write(mixer, wav, limiter, lambda f, a=start, b=span: report(a + b * f), should_stop)
        reached = getattr(after, goal.measure)
        if abs(goal.aim - reached) <= TOLERANCE or passes > MAX_WRITES or level <= -70.0:
            break
        slope = (reached - previous[1]) / (gain - previous[0]) if gain != previous[0] else 1.0
        previous = (gain, reached)
        gain += (goal.aim - reached) / min(max(slope, 0.2), 1.0)
    return {
        "target": target,
        "aim": goal.aim,
        "measure": goal.measure,
        "range": [goal.low, goal.high],
        "ceiling_db": goal.ceiling_db,
        "gain_db": round(gain, 2),
        "passes": passes,
        "before": before.to_dict(),
        "after": after.to_dict(),
    }
