"""Vocals apart from a music bed: detect one, then keep only the vocal stem (HT-Demucs).

Detection needs no model. A music bed keeps sounding in the pauses between sentences, and
what it leaves there is tonal: steady partials (a chord, a bass line) that stand far above the
spectrum around them and stay put from one frame to the next. Room or white noise in the pauses
has a flat spectrum whose random peaks do not persist, and clean speech has silent pauses.

Separation runs Demucs's HT-Demucs on windows of its training length (7.8 s) overlapping by a
quarter and cross-faded with its triangular weight, like ``demucs.apply.apply_model`` with
``split=True``, but resampling each window on its own: memory stays one window's worth of model
work, whatever the length of the file, and progress and stopping are checked between windows.

Weights come from Demucs's own download site on first use (resumable, like the XTTS download)
into ``models/separation``. A Demucs checkpoint is a pickle (``{"klass", "args", "kwargs",
"state", "training_args"}``); it is read with ``torch.load(weights_only=True)``, allowing only
the HTDemucs class, ``fractions.Fraction`` and NumPy's float64 scalars by name, so a file that
asks for anything else is refused before any of it runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import soxr
from scipy.ndimage import median_filter

from core.constants import SPEECH_MODEL_RATE
from core.device import DeviceScheduler, out_of_memory_as
from core.errors import Cancelled, InvalidInput, ModelUnavailable
from core.model_files import ProgressCallback, download_url

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEMUCS_URL = "https://dl.fbaipublicfiles.com/demucs"
# Each name's file on Demucs's site; the part after "-" is the start of the file's sha256.
MODELS = {
    "htdemucs": "hybrid_transformer/955717e8-8726e21a.th",
    "htdemucs_ft": "hybrid_transformer/04573f0d-f3cf25b2.th",  # the vocals member of the fine-tuned bag
}
SIZE_MB = {"htdemucs": 84, "htdemucs_ft": 84}
MODEL = "separation"  # the name in the device registry
OVERLAP = 0.25
_STOPPED = "Vocal separation was stopped."
_OUT_OF_MEMORY = (
    "The GPU ran out of memory separating vocals. Wait for other GPU work (training) to finish, "
    "or build the dataset with vocal separation off."
)

# ---- detection ------------------------------------------------------------------------------
_DETECT_RATE = SPEECH_MODEL_RATE
_FRAME_S = 0.05  # frames of about 50 ms (a power of two in samples), not overlapping
_BLOCK_FRAMES = 2048  # spectra made at a time
_GAP_PERCENTILE = 30  # the quietest 30% of frames are the candidate pauses...
_GAP_UNDER_SPEECH_DB = 6.0  # ...if they are quieter than speech by at least this much
_SILENT_UNDER_SPEECH_DB = 60.0  # a pause this far under speech (or under -90 dBFS) is silent: nothing to separate
_PEAK_DB = 10.0  # a partial stands this far above the median of the spectrum around it
_PEAK_BAND_HZ = (80.0, 5000.0)
_PARTIALS = 2  # a tonal frame holds at least this many partials that persist into a neighbour frame
_DETECT_SCORE = 0.3


@dataclass(frozen=True)
class MusicBed:
    """Whether a source has music under its speech, how sure (0..1), and why, in words."""

    score: float
    detected: bool
    reason: str


def _frames(mono: np.ndarray) -> np.ndarray:
    """Non-overlapping frames of about 50 ms at :data:`_DETECT_RATE` (a view, no copy)."""
    n = 1 << round(np.log2(_FRAME_S * _DETECT_RATE))
    return mono[: len(mono) // n * n].reshape(-1, n)


def _tonal_frames(frames: np.ndarray, judged: np.ndarray) -> np.ndarray:
    """Per judged frame: whether it holds steady partials, spectral peaks far above their surroundings
    that persist (within a bin) into the frame before or after. Peaks of noise are random and rarely persist.

    Only the judged frames and their neighbours get spectra, a block at a time, so the cost follows the
    pauses looked at, and memory holds one block of spectra (and a few bits a frame).
    """
    n = frames.shape[1]
    freqs = np.fft.rfftfreq(n, 1 / _DETECT_RATE)
    band = (freqs > _PEAK_BAND_HZ[0]) & (freqs < _PEAK_BAND_HZ[1])
    window = np.hanning(n)
    wanted = np.flatnonzero(judged)
    needed = np.unique(np.clip(np.concatenate([wanted - 1, wanted, wanted + 1]), 0, len(frames) - 1))
    near = np.zeros((len(needed), len(freqs)), dtype=bool)  # a peak within a bin, of each needed frame
    peaks = np.zeros_like(near)
    for start in range(0, len(needed), _BLOCK_FRAMES):
        rows = needed[start : start + _BLOCK_FRAMES]
        log_power = 10 * np.log10(np.abs(np.fft.rfft(frames[rows] * window, axis=1)) ** 2 + 1e-20)
        around = median_filter(log_power, size=(1, 17), mode="nearest")
        peak = (
            (log_power - around > _PEAK_DB)
            & (log_power >= np.roll(log_power, 1, axis=1))
            & (log_power >= np.roll(log_power, -1, axis=1))
            & band
        )
        peaks[start : start + len(rows)] = peak
        near[start : start + len(rows)] = peak | np.roll(peak, 1, axis=1) | np.roll(peak, -1, axis=1)
    at = np.searchsorted(needed, wanted)
    before = np.where((wanted > 0)[:, None], near[np.maximum(at - 1, 0)], False)
    after = np.where((wanted < len(frames) - 1)[:, None], near[np.minimum(at + 1, len(needed) - 1)], False)
    tonal = np.zeros(len(frames), dtype=bool)
    tonal[wanted] = (peaks[at] & (before | after)).sum(axis=1) >= _PARTIALS
    return tonal


def detect_music_bed(audio: np.ndarray, rate: int) -> MusicBed:
    """Look for a music bed in the pauses of ``audio`` (mono, or channels last)."""
    mono = (audio.mean(axis=1) if audio.ndim == 2 else audio).astype(np.float32, copy=False)
    if rate != _DETECT_RATE:
        mono = soxr.resample(mono, rate, _DETECT_RATE)
    frames = _frames(mono)
    if len(frames) < 10:
        return MusicBed(0.0, False, "no music bed: too short to tell")
    level = 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12)
    speech = float(np.percentile(level, 90))
    gaps = (level <= np.percentile(level, _GAP_PERCENTILE)) & (level < speech - _GAP_UNDER_SPEECH_DB)
    sounding = gaps & (level > max(speech - _SILENT_UNDER_SPEECH_DB, -90.0))
    if sounding.sum() < max(3, 0.2 * gaps.sum()):
        return MusicBed(0.0, False, "no music bed: the pauses are silent")
    share = float(_tonal_frames(frames, sounding)[sounding].mean())
    gap_db = float(np.median(level[sounding])) - speech
    score = share * float(np.clip((gap_db + 50.0) / 10.0, 0.0, 1.0))  # a bed 50 dB under speech does not matter
    detected = score >= _DETECT_SCORE
    what = "music bed" if detected else "no music bed"
    return MusicBed(round(score, 3), detected, f"{what}: {share:.0%} of pauses carry tonal sound at {gap_db:.0f} dB")


# ---- separation -----------------------------------------------------------------------------
def _allowed_globals() -> list[object]:
    """What Demucs's checkpoints name besides tensors: the model class, its segment (a Fraction) and
    NumPy float64 scalars among the training arguments, pickled by NumPy 1 (``numpy.core``) or 2."""
    from demucs.htdemucs import HTDemucs
    from numpy._core.multiarray import scalar

    return [HTDemucs, Fraction, np.dtype, np.dtypes.Float64DType, scalar, (scalar, "numpy.core.multiarray.scalar")]


def load_checkpoint(path: Path) -> torch.nn.Module:
    """The HT-Demucs model in a Demucs checkpoint, on the CPU, in eval mode.

    Only :func:`_allowed_globals` may be named by the pickle; anything else (a function to
    call, another class) makes ``torch.load`` refuse the file without running it.
    """
    import inspect

    import torch
    from demucs.htdemucs import HTDemucs

    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            package = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        asks = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        why = f"it asks for {asks.group(1)}, which a Demucs checkpoint never needs" if asks else "it is damaged"
        raise ModelUnavailable(
            f"Refused the separation checkpoint {path}: {why}. Nothing in it was run. "
            f"Delete it; the official weights download again on next use."
        ) from exc
    if not isinstance(package, dict) or package.get("klass") is not HTDemucs:
        raise ModelUnavailable(f"{path} is not an HT-Demucs checkpoint (expected Demucs's htdemucs format).")
    known = inspect.signature(HTDemucs).parameters  # Demucs drops arguments a newer file has, and so does this
    try:
        kwargs = {k: v for k, v in dict(package.get("kwargs", {})).items() if k in known}
        model = HTDemucs(*package.get("args", ()), **kwargs)
        model.load_state_dict(package["state"])
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as exc:
        raise ModelUnavailable(
            f"The separation checkpoint {path} does not fit HT-Demucs ({exc.__class__.__name__}: {exc}). "
            "Delete it; the official weights download again on next use."
        ) from exc
    if "vocals" not in model.sources:
        raise ModelUnavailable(f"{path} separates {', '.join(model.sources)}, not vocals.")
    return model.eval()


def _mono_mean_std(frames: np.ndarray, block: int = 1 << 16) -> tuple[float, float]:
    """Mean and standard deviation of the mono mix of ``frames`` (samples x channels), a block at a time."""
    total = squares = 0.0
    for start in range(0, len(frames), block):
        mono = frames[start : start + block].mean(axis=1, dtype=np.float64)
        total += float(mono.sum())
        squares += float(np.square(mono).sum())
    count = max(len(frames), 1)
    mean = total / count
    return mean, float(np.sqrt(max(squares / count - mean**2, 0.0)))


def _weight(length: int) -> np.ndarray:
    """Demucs's cross-fade weight: a triangle peaking mid-window, never zero."""
    half = np.arange(1, length // 2 + 1)
    return (np.concatenate([half, np.arange(length - length // 2, 0, -1)]) / max(length // 2, 1)).astype(np.float32)


class VocalSeparator:
    """HT-Demucs kept loaded between sources, run window by window inside the device slot.

    Registered with the device registry when a scheduler is given: moving it off the device drops
    it (it loads again in about a second), and while the device is lent it runs on the CPU.
    """

    def __init__(
        self,
        models_dir: Path,
        *,
        model: str = "htdemucs",
        scheduler: DeviceScheduler | None = None,
        base_url: str = DEMUCS_URL,
    ) -> None:
        if model not in MODELS:
            raise InvalidInput(f"Unknown separation model '{model}'; choose one of {', '.join(MODELS)}.")
        self.name = model
        self.folder = Path(models_dir) / "separation"
        self.base_url = base_url.rstrip("/")
        self.scheduler = scheduler
        self._model: torch.nn.Module | None = None
        self._device: str | None = None
        if scheduler is not None:
            scheduler.models.register(
                MODEL, estimate_bytes=self._estimate, offload=self.unload, reload=self.unload, order=15
            )

    @property
    def weights(self) -> Path:
        return self.folder / Path(MODELS[self.name]).name

    @property
    def url(self) -> str:
        return f"{self.base_url}/{MODELS[self.name]}"

    def _estimate(self) -> int:
        return SIZE_MB[self.name] * 2**20 * 2 if self._model is not None else 0  # float32 from half-precision

    def ensure(self, progress: ProgressCallback | None = None) -> Path:
        """The weights file, downloaded on first use (a partial download resumes)."""
        if self.weights.is_file():
            return self.weights
        try:
            download_url(self.url, self.weights, progress=progress)
        except (httpx.HTTPError, OSError) as exc:
            raise ModelUnavailable(
                f"Could not download the vocal separation model {self.name} ({SIZE_MB[self.name]} MB) from "
                f"{self.url} ({exc.__class__.__name__}: {exc}). Is this machine offline? Download that file by hand "
                f"and put it in {self.folder}, or build the dataset with vocal separation off. "
                "A partial download is kept and resumes on the next try."
            ) from exc
        expected = self.weights.stem.rpartition("-")[2]
        with open(self.weights, "rb") as handle:
            got = hashlib.file_digest(handle, "sha256").hexdigest()
        if not got.startswith(expected):
            self.weights.unlink()
            raise ModelUnavailable(
                f"The download of {self.url} is damaged (its sha256 starts {got[:8]}, not {expected}); it was "
                "deleted. Try again, or download it by hand into " + str(self.folder) + "."
            )
        return self.weights

    def unload(self) -> None:
        if self._model is not None:
            self._model = None
            self._device = None
            if self.scheduler is not None:
                self.scheduler.models.unloaded(MODEL)

    def model(self) -> torch.nn.Module:
        """The loaded model on the device it should run on now (inside the slot when scheduled)."""
        target = self.scheduler.models.target_device() if self.scheduler is not None else "cpu"
        if self._device != target:
            self.unload()
        if self._model is None:
            self._model = load_checkpoint(self.ensure()).to(target)
            self._device = target
            if self.scheduler is not None:
                self.scheduler.models.loaded(MODEL)
        return self._model

    def windows(self, length: int, rate: int) -> list[int]:
        """Where each window starts, in samples at ``rate`` (loads the model: its segment is the window)."""
        window = self._window_length(rate)
        return list(range(0, length, max(int((1 - OVERLAP) * window), 1)))

    def _window_length(self, rate: int) -> int:
        return round(float(self.model().segment) * rate)

    def vocals(
        self,
        audio: np.ndarray,
        rate: int,
        *,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """The vocal stem of ``audio`` (mono, or stereo with channels last): mono float32, same rate and length.

        Mono is fed to the model on both channels; more than two channels are mixed down to mono first.
        """
        frames = audio[:, None] if audio.ndim == 1 else audio if audio.shape[1] <= 2 else audio.mean(axis=1)[:, None]
        frames = frames.astype(np.float32, copy=False)
        report = progress or (lambda fraction, message: None)
        stop = should_stop or (lambda: False)
        out = np.zeros(len(frames), dtype=np.float32)
        mean, std = _mono_mean_std(frames)  # Demucs normalises by the mix's own level
        if std < 1e-8:
            return out
        with self._slot():
            window = self._window_length(rate)
        total = np.zeros(len(frames), dtype=np.float32)
        weight = _weight(window)
        starts = self.windows(len(frames), rate)
        report(0.0, f"Separating vocals: window 1 of {len(starts)}")
        for index, start in enumerate(starts):
            if stop():
                raise Cancelled(_STOPPED)
            chunk = (frames[start : start + window] - mean) / std
            with self._slot():
                stem = self._separate(chunk, rate)
            out[start : start + len(chunk)] += weight[: len(chunk)] * stem
            total[start : start + len(chunk)] += weight[: len(chunk)]
            report((index + 1) / len(starts), f"Separating vocals: window {index + 1} of {len(starts)}")
        out /= total
        out *= std
        out += mean
        return out

    def _slot(self) -> contextlib.AbstractContextManager[None]:
        return self.scheduler.slot(MODEL) if self.scheduler is not None else contextlib.nullcontext()

    def _separate(self, chunk: np.ndarray, rate: int) -> np.ndarray:
        """One window's vocals, mono (normalised audio in and out, at ``rate``; ``chunk`` is frames x channels)."""
        import torch

        model = self.model()
        at_model = soxr.resample(chunk, rate, model.samplerate) if rate != model.samplerate else chunk
        length = round(float(model.segment) * model.samplerate)
        mix = np.zeros((1, model.audio_channels, length), dtype=np.float32)
        mix[0, :, : min(len(at_model), length)] = at_model[:length].T  # one channel goes to both
        device = next(model.parameters()).device
        with torch.inference_mode(), out_of_memory_as(_OUT_OF_MEMORY):
            stems = model(torch.from_numpy(mix).to(device))
        vocals = stems[0, model.sources.index("vocals")].mean(dim=0).float().cpu().numpy()[: len(at_model)]
        back = soxr.resample(vocals, model.samplerate, rate) if rate != model.samplerate else vocals
        fitted = np.zeros(len(chunk), dtype=np.float32)
        fitted[: min(len(back), len(chunk))] = back[: len(chunk)]
        return fitted
