"""Loudness of a stream of audio blocks, and a look-ahead peak limiter, both in bounded memory.

:class:`Meter` measures integrated loudness exactly as :func:`core.audio.integrated_loudness`
does (BS.1770: K-weighting, 400 ms blocks every 100 ms, absolute and relative gates), plus
RMS, sample peak and true peak (4x oversampled by a 48-tap interpolator), one block at a time, so a ten-hour book is
measured without holding it. :class:`Limiter` keeps the true peak under a ceiling: the gain
each sample needs is held for :data:`HOLD_S` and smoothed over :data:`LOOKAHEAD_S`, and the
look-ahead starts lowering it before the peak arrives, so there is no click.

Targets: ``podcast`` is -16 LUFS integrated with the true peak at most -1 dBTP; ``acx`` is
ACX's audiobook rule (RMS between -23 and -18 dBFS, peak at most -3 dBFS), aimed at -20 dB
RMS. The ceilings keep a margin under those limits for what the MP3 and AAC encoders add.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import signal
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from core.audio import biquad_high_pass, biquad_high_shelf, gated_loudness

LOOKAHEAD_S = 0.005
HOLD_S = 0.02
_OVERSAMPLE = 4
_CONTEXT = 16  # samples either side that the oversampling filter needs
_SILENT_DB = -120.0


@dataclass(frozen=True)
class Target:
    name: str
    measure: str  # the Measurement field the gain aims at
    aim: float
    low: float
    high: float
    ceiling_db: float  # true peak the limiter holds


TARGETS = {
    "none": None,
    "podcast": Target("podcast", "lufs", -16.0, -17.0, -15.0, -1.5),
    "acx": Target("acx", "rms_db", -20.0, -23.0, -18.0, -3.5),
}


@dataclass(frozen=True)
class Measurement:
    lufs: float
    rms_db: float
    peak_db: float
    true_peak_db: float

    def to_dict(self) -> dict[str, float]:
        return {key: round(value, 2) for key, value in asdict(self).items()}


def _db(value: float) -> float:
    return float(20 * np.log10(value)) if value > 0 else _SILENT_DB


# a 48-tap interpolation filter in 4 phases of 12, as BS.1770-4 Annex 2 suggests for the true peak
_INTERPOLATOR = signal.firwin(12 * _OVERSAMPLE, 0.95 / _OVERSAMPLE, window=("kaiser", 8.0)) * _OVERSAMPLE
_PHASES = [np.ascontiguousarray(_INTERPOLATOR[p::_OVERSAMPLE][::-1], dtype=np.float32) for p in range(_OVERSAMPLE)]


def true_peaks(ext: np.ndarray) -> np.ndarray:
    """Per sample, the largest magnitude of the 4x oversampled signal around it (valid :data:`_CONTEXT` in)."""
    x = np.asarray(ext, dtype=np.float32)
    out = np.abs(x)
    for taps in _PHASES:
        np.maximum(out, np.abs(np.convolve(x, taps, mode="same")), out=out)
    return out


class Meter:
    """Feed blocks with :meth:`add`; :meth:`result` measures everything fed."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        shelf = biquad_high_shelf(rate, 1681.974450955533, 3.999843853973347, 0.7071752369554196)
        highpass = biquad_high_pass(rate, 38.13547087602444, 0.5003270373238773)
        self._sos = np.array([np.concatenate([b / a[0], a / a[0]]) for b, a in (shelf, highpass)])
        self._state = np.zeros((2, 2))
        self._step = int(0.1 * rate)
        self._partial = 0.0
        self._partial_n = 0
        self._steps: list[float] = []  # sum of squares of the K-weighted signal per 100 ms
        self._squares = 0.0
        self._count = 0
        self._peak = 0.0
        self._true_peak = 0.0
        self._tail = np.zeros(2 * _CONTEXT)

    def add(self, block: np.ndarray) -> None:
        x = block.astype(np.float64)
        self._squares += float(np.dot(x, x))
        self._count += len(x)
        if len(x):
            self._peak = max(self._peak, float(np.max(np.abs(x))))
        self._oversampled(x)
        weighted, self._state = signal.sosfilt(self._sos, x, zi=self._state)
        power = weighted * weighted
        head = min(self._step - self._partial_n, len(power))  # completes the 100 ms step begun before
        self._partial += float(power[:head].sum())
        self._partial_n += head
        if self._partial_n < self._step:
            return
        self._steps.append(self._partial)
        whole = (len(power) - head) // self._step * self._step
        self._steps.extend(power[head : head + whole].reshape(-1, self._step).sum(axis=1).tolist())
        self._partial = float(power[head + whole :].sum())
        self._partial_n = len(power) - head - whole

    def _oversampled(self, x: np.ndarray) -> None:
        ext = np.concatenate([self._tail, x])
        if len(ext) > 2 * _CONTEXT:
            self._true_peak = max(self._true_peak, float(true_peaks(ext)[_CONTEXT:-_CONTEXT].max()))
            self._tail = ext[-2 * _CONTEXT :]

    def result(self) -> Measurement:
        self._oversampled(np.zeros(_CONTEXT))
        steps = np.array(self._steps)
        block = int(0.4 * self.rate)
        if len(steps) >= 4 and self._count >= block:
            powers = (steps[:-3] + steps[1:-2] + steps[2:-1] + steps[3:]) / block
            lufs = gated_loudness(powers)
        else:
            lufs = -70.0
        rms = np.sqrt(self._squares / self._count) if self._count else 0.0
        return Measurement(lufs, _db(rms), _db(self._peak), _db(self._true_peak))


class Limiter:
    """Gain then limit a stream: :meth:`process` returns what is ready (it lags), :meth:`flush` the rest."""

    def __init__(self, rate: int, gain_db: float, ceiling_db: float) -> None:
        self.gain = 10 ** (gain_db / 20)
        self.ceiling = 10 ** (ceiling_db / 20)
        self._look = max(2, int(LOOKAHEAD_S * rate) // 2 * 2)
        self._hold = int(HOLD_S * rate) // 2 * 2
        self._left = self._look // 2 + self._hold + _CONTEXT
        self._right = self._look // 2 + self._look + _CONTEXT
        self._buf = np.zeros(self._left)  # the samples from _left before the next one to give out

    def process(self, block: np.ndarray) -> np.ndarray:
        self._buf = np.concatenate([self._buf, block.astype(np.float64) * self.gain])
        return self._ready(len(self._buf) - self._left - self._right)

    def flush(self) -> np.ndarray:
        pending = len(self._buf) - self._left
        self._buf = np.concatenate([self._buf, np.zeros(self._right)])
        return self._ready(pending)

    def _ready(self, count: int) -> np.ndarray:
        if count <= 0:
            return np.zeros(0, dtype=np.float32)
        ext = self._buf[: self._left + count + self._right]
        if 2 * float(np.max(np.abs(ext))) < self.ceiling:  # no true peak gets near the ceiling: nothing to limit
            out = ext[self._left : self._left + count]
            self._buf = self._buf[count:]
            return out.astype(np.float32)
        needed = np.minimum(1.0, self.ceiling / np.maximum(true_peaks(ext), 1e-12))
        # minimum over [n - hold, n + look], then the mean over [n - look/2, n + look/2]: never above `needed`
        held = minimum_filter1d(
            needed, self._hold + self._look + 1, mode="nearest", origin=(self._hold - self._look) // 2
        )
        gain = uniform_filter1d(held, self._look + 1, mode="nearest")
        out = ext[self._left : self._left + count] * gain[self._left : self._left + count]
        self._buf = self._buf[count:]
        return out.astype(np.float32)
