"""The timeline as audio, one block at a time: the takes in place and a ducked background under them.

Only the takes that sound in the current block are held (a take is one segment, seconds
long), and the background is read from a raw decoded file through a memory map, so the
memory a mix needs does not grow with the length of the book.

Ducking: while any take sounds the background is lowered by ``duck_db``. The gain goes down
over :data:`ATTACK_S` before a take starts, so the first word is never under full music, and
comes back over :data:`RELEASE_S` after it ends, both along a raised cosine (no clicks);
between takes closer than that it stays down.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from projects.timeline import RATE, Placed, Timeline

BLOCK = 1 << 18  # about 11 s
ATTACK_S = 0.15
RELEASE_S = 0.5
FADE_S = 0.05  # a background cut off at the end of a narration fades out


def load_take(item: Placed) -> np.ndarray:
    """The take's samples, mono at :data:`RATE`, exactly ``item.frames`` long."""
    audio, rate = sf.read(str(item.path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE).astype(np.float32)
    if len(mono) < item.frames:
        mono = np.pad(mono, (0, item.frames - len(mono)))
    return mono[: item.frames]


class Mixer:
    def __init__(self, timeline: Timeline, *, background: Path | None = None, duck_db: float = 0.0) -> None:
        self.timeline = timeline
        self.background = np.memmap(background, dtype=np.float32, mode="r") if background is not None else None
        self.duck = 10 ** (-duck_db / 20)
        self._attack = max(int(ATTACK_S * RATE), 1)
        self._release = max(int(RELEASE_S * RATE), 1)

    def blocks(self, block: int = BLOCK) -> Iterator[np.ndarray]:
        """The mix from the first sample to the last, in blocks of ``block`` samples (the last shorter)."""
        items = self.timeline.items
        upcoming = 0
        near: list[Placed] = []  # takes within the ducking ramps of the block
        audio: dict[int, np.ndarray] = {}
        for start in range(0, self.timeline.frames, block):
            stop = min(start + block, self.timeline.frames)
            while upcoming < len(items) and items[upcoming].start - self._attack < stop:
                near.append(items[upcoming])
                upcoming += 1
            near = [item for item in near if item.end + self._release > start]
            out = np.zeros(stop - start, dtype=np.float32)
            for item in near:
                if item.start < stop and item.end > start:
                    samples = audio.get(id(item))
                    if samples is None:
                        samples = audio[id(item)] = load_take(item)
                    lo, hi = max(item.start, start), min(item.end, stop)
                    out[lo - start : hi - start] += samples[lo - item.start : hi - item.start]
            audio = {id(item): audio[id(item)] for item in near if id(item) in audio}
            if self.background is not None:
                out += self._background(start, stop, near)
            yield out

    def _background(self, start: int, stop: int, near: list[Placed]) -> np.ndarray:
        assert self.background is not None
        part = np.zeros(stop - start, dtype=np.float32)
        available = self.background[start : min(stop, len(self.background))]
        part[: len(available)] = available
        t = np.arange(start, stop, dtype=np.float64)
        ducked = np.zeros(len(t))
        for item in near:
            rise = np.clip((t - (item.start - self._attack)) / self._attack, 0.0, 1.0)
            fall = np.clip((item.end + self._release - t) / self._release, 0.0, 1.0)
            ducked = np.maximum(ducked, 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall)))
        gain = self.duck**ducked
        if len(self.background) > self.timeline.frames:
            fade = int(FADE_S * RATE)
            gain *= np.clip((self.timeline.frames - t) / fade, 0.0, 1.0)
        return (part * gain).astype(np.float32)
