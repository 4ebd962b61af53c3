"""RVC voice conversion with everything resident: one converter, HuBERT, f0 models and indexes.

``tts_with_rvc``'s ``rvc_convert()`` builds a converter per call, so every call reloads
HuBERT, the voice model and the f0 model. Its ``RVCConverter`` keeps them, but wants
files in and out and still re-reads the ``.index`` and builds a fresh f0 extractor (so
a fresh RMVPE) whenever the voice model changes. :class:`ResidentConverter` keeps the
package's own engine (``VC``) alive and feeds it arrays, with two small subclasses:

- :class:`_SharedF0`: one f0 extractor for every voice model, holding RMVPE and FCPE
  side by side (the package's keeps one slot and drops it for pm/harvest/dio/crepe);
- :class:`_ResidentPipeline`: the package's pipeline with indexes read once per file
  version and cached, instead of ``faiss.read_index`` on every call.

The package and fairseq are imported on first use only, keeping the root logger as
the studio configured it (fairseq's import may reconfigure it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import torch

from core.audio import decode
from core.constants import SPEECH_MODEL_RATE
from core.device import DeviceScheduler
from core.errors import InvalidInput, OutOfMemory
from core.model_files import ProgressCallback
from core.outputs import OutputRecord, OutputStore
from core.rvc.models import RVCLibrary, RVCModelInfo
from core.rvc.support import SupportFiles, files_for
from core.xtts.profiles import checked_number

log = logging.getLogger(__name__)

F0_METHODS = ("rmvpe", "fcpe", "pm", "harvest", "dio", "crepe")
HUBERT_RATE = SPEECH_MODEL_RATE
MODEL = "rvc"  # the converter's name in the device registry
MAX_INPUT_SECONDS = 30 * 60
RANGES: dict[str, tuple[float, float]] = {
    "pitch": (-24, 24),
    "index_rate": (0.0, 1.0),
    "filter_radius": (0, 7),
    "resample_sr": (0, 48000),
    "rms_mix_rate": (0.0, 1.0),
    "protect": (0.0, 0.5),
}
_INTEGERS = ("pitch", "filter_radius", "resample_sr")


@dataclass(frozen=True)
class RVCParams:
    """Everything that shapes one conversion besides the model.

    ``resample_sr`` 0 keeps the model's own rate; 16000-48000 resamples the result to it.
    ``protect`` 0.5 turns protection of breaths and consonants off.
    """

    pitch: int = 0
    f0_method: str = "rmvpe"
    index_rate: float = 0.85
    filter_radius: int = 3
    resample_sr: int = 0
    rms_mix_rate: float = 0.5
    protect: float = 0.33

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RVC_PROFILES: dict[str, RVCParams] = {
    "natural": RVCParams(index_rate=0.85, filter_radius=3, rms_mix_rate=0.5, protect=0.33),
    "expressive": RVCParams(index_rate=0.90, filter_radius=2, rms_mix_rate=0.6, protect=0.25),
    "stable": RVCParams(index_rate=0.70, filter_radius=5, rms_mix_rate=0.4, protect=0.40),
}
DEFAULT_RVC_PROFILE = "natural"


def resolve_rvc_params(profile: str | None = None, **overrides: Any) -> RVCParams:
    """Start from ``profile`` and apply the overrides that are not ``None``, checking each."""
    name = (profile or DEFAULT_RVC_PROFILE).strip().lower()
    if name not in RVC_PROFILES:
        raise InvalidInput(f"Unknown RVC profile '{profile}'. Choose one of: {', '.join(RVC_PROFILES)}.")
    known = {f.name for f in fields(RVCParams)}
    unknown = set(overrides) - known
    if unknown:
        raise InvalidInput(f"Unknown RVC parameter(s): {', '.join(sorted(unknown))}.")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None or value == "":
            continue
        if key == "f0_method":
            method = str(value).strip().lower()
            if method not in F0_METHODS:
                raise InvalidInput(f"Unknown f0 method '{value}'. Choose one of: {', '.join(F0_METHODS)}.")
            changes[key] = method
            continue
        changes[key] = checked_number(key, value, RANGES[key], integer=key in _INTEGERS)
    params = replace(RVC_PROFILES[name], **changes)
    if 0 < params.resample_sr < 16000:
        raise InvalidInput("resample_sr is 0 (keep the model's rate) or between 16000 and 48000 Hz.")
    return params


@dataclass(frozen=True)
class RVCRequest:
    """RVC settings for a conversion or a TTS post-processing step."""

    model: str
    profile: str = DEFAULT_RVC_PROFILE
    overrides: dict[str, Any] | None = None

    def params(self) -> RVCParams:
        return resolve_rvc_params(self.profile, **(self.overrides or {}))


@dataclass(frozen=True)
class Conversion:
    audio: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    model: RVCModelInfo
    params: RVCParams
    seconds: float

    def metadata(self, profile: str) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "model_version": self.model.version,
            "model_sample_rate": self.model.sample_rate,
            "index": self.model.index_file if self.params.index_rate > 0 else None,
            "profile": profile,
            "params": self.params.to_dict(),
            "seconds": round(self.seconds, 3),
        }


def _import_engine() -> Any:
    """Import ``tts_with_rvc``'s engine (and fairseq) without letting them change the root logger."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        from tts_with_rvc.infer.vc import modules, pipeline
        from tts_with_rvc.infer.vc.f0 import F0Extractor
        from tts_with_rvc.runtime import RuntimeConfig
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
    logging.getLogger("fairseq").setLevel(logging.WARNING)  # it logs whole model configs at INFO
    return modules, pipeline, F0Extractor, RuntimeConfig


class ResidentConverter:
    """The package's ``VC`` kept loaded; every call runs inside the device slot.

    HuBERT loads once; the f0 models once each; a voice model reloads only when a
    different one (or a changed file) is asked for; an index is read once per file version.
    The converter is registered with the device registry: moving it off the device drops it
    (it is quick to load again), and it loads on the CPU while the device is lent to training.
    """

    def __init__(self, support: SupportFiles, *, scheduler: DeviceScheduler) -> None:
        self.support = support
        self.scheduler = scheduler
        self._vc: Any = None
        self._f0: Any = None
        self._built_for: str | None = None
        self._indexes: dict[tuple[str, int], tuple[Any, np.ndarray]] = {}
        self._model_key: tuple[str, int] | None = None
        self.loads = {"models": 0, "indexes": 0}
        scheduler.models.register(
            MODEL, estimate_bytes=self._estimate, offload=self.unload, reload=self.unload, order=20
        )

    @property
    def device(self) -> str:
        return self._built_for or self.scheduler.models.target_device()

    def _engine(self) -> Any:
        target = self.scheduler.models.target_device()
        if self._vc is not None and self._built_for != target:
            self.unload()
        if self._vc is None:
            modules, pipeline, f0_class, runtime_config = _import_engine()
            config = runtime_config(device=target)
            self._f0 = _shared_f0_class(f0_class)(
                device=config.device, rvc_dtype=config.dtype, model_store=self.support, sample_rate=16000
            )
            self._vc = _resident_vc_class(modules.VC, pipeline.Pipeline)(config, model_store=self.support)
            self._vc.shared_f0 = self._f0
            self._vc.index_for = self._index
            self._built_for = target
            self.scheduler.models.loaded(MODEL)
        return self._vc

    def unload(self) -> None:
        """Drop HuBERT, the f0 models and the voice model (indexes stay: they live on the CPU)."""
        if self._vc is None:
            return
        self._vc.unload_model(keep_hubert=False)
        self._f0.close()
        self._vc = self._f0 = self._built_for = self._model_key = None
        self.scheduler.models.unloaded(MODEL)

    def _estimate(self) -> int:
        if self._vc is None:
            return 0
        parts = [self._vc.hubert_model, self._vc.net_g, *(self._f0.models.values() if self._f0 is not None else ())]
        modules = [m for p in parts for m in (p, getattr(p, "model", None)) if isinstance(m, torch.nn.Module)]
        return sum(t.numel() * t.element_size() for m in modules for t in (*m.parameters(), *m.buffers()))

    def _index(self, path: str) -> tuple[Any, np.ndarray] | None:
        import faiss

        file = Path(path)
        key = (str(file), file.stat().st_mtime_ns)
        if key not in self._indexes:
            index = faiss.read_index(str(file))
            self._indexes = {k: v for k, v in self._indexes.items() if k[0] != key[0]}
            self._indexes[key] = (index, index.reconstruct_n(0, index.ntotal))
            self.loads["indexes"] += 1
        return self._indexes[key]

    def convert(self, audio_16k: np.ndarray, model: RVCModelInfo, params: RVCParams) -> tuple[np.ndarray, int]:
        """Convert 16 kHz mono float audio; returns float32 audio and its sample rate."""
        with self.scheduler.slot(MODEL):
            vc = self._engine()
            key = (str(model.pth), model.pth.stat().st_mtime_ns)
            if key != self._model_key:
                vc.unload_model(keep_hubert=True)
                vc.load_model(model.pth)
                self._model_key = key
                self.loads["models"] += 1
            try:
                rate, out = vc.vc_stream(
                    0,
                    audio_16k,
                    params.pitch,
                    None,
                    params.f0_method,
                    str(model.index) if model.index is not None else "",
                    "",
                    params.index_rate,
                    params.filter_radius,
                    params.resample_sr,
                    params.rms_mix_rate,
                    params.protect,
                )
            except RuntimeError as exc:
                if "out of memory" in str(exc).lower():
                    raise OutOfMemory(
                        "The device ran out of memory during RVC conversion; try a shorter clip."
                    ) from exc
                raise
        return np.asarray(out, dtype=np.float32) / 32768.0, int(rate)

    def loaded_f0_models(self) -> list[str]:
        return sorted(self._f0.models) if self._f0 is not None else []


def _shared_f0_class(base: type) -> type:
    class _SharedF0(base):  # type: ignore[misc, valid-type]
        """Keeps RMVPE and FCPE loaded side by side instead of one slot that any other method empties."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.models: dict[str, Any] = {}

        def _get_rmvpe(self) -> Any:
            if "rmvpe" not in self.models:
                self.models["rmvpe"] = super()._get_rmvpe()
            return self.models["rmvpe"]

        def _get_fcpe(self, *, f0_min: float, f0_max: float, threshold: float) -> Any:
            if "fcpe" not in self.models:
                self.models["fcpe"] = super()._get_fcpe(f0_min=f0_min, f0_max=f0_max, threshold=threshold)
            model = self.models["fcpe"]
            model.threshold = threshold
            return model

        def close(self) -> None:
            self.models.clear()
            super().close()

    return _SharedF0


def _resident_vc_class(vc_base: type, pipeline_base: type) -> type:
    class _ResidentPipeline(pipeline_base):  # type: ignore[misc, valid-type]
        """The package's pipeline with a shared f0 extractor and cached indexes."""

        def __init__(self, *args: Any, shared_f0: Any, index_for: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._f0 = shared_f0
            self._index_for = index_for
            self._cached: tuple[Any, np.ndarray] | None = None

        def close(self) -> None:
            self._cached = None  # the shared f0 models outlive any one voice model

        def pipeline(self, *args: Any, **kwargs: Any) -> Any:
            # the package reads the index inside pipeline(); give it none and hand ours to vc()
            args = list(args)
            file_index, index_rate = args[7], args[8]
            self._cached = self._index_for(file_index) if file_index and index_rate != 0 else None
            args[7] = ""
            try:
                return super().pipeline(*args, **kwargs)
            finally:
                self._cached = None

        def vc(self, *args: Any) -> Any:
            args = list(args)
            if args[7] is None and self._cached is not None:
                args[7], args[8] = self._cached
            return super().vc(*args)

    class _ResidentVC(vc_base):  # type: ignore[misc, valid-type]
        shared_f0: Any = None
        index_for: Any = None

        def load_model(self, model_path: Any) -> None:
            super().load_model(model_path)
            loaded = self._loaded
            old = loaded.pipeline
            loaded.pipeline = _ResidentPipeline(
                loaded.target_sr,
                self.config,
                model_store=self.model_store,
                shared_f0=self.shared_f0,
                index_for=self.index_for,
            )
            old.close()

    return _ResidentVC


def to_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if sample_rate == HUBERT_RATE:
        return audio
    return soxr.resample(audio, sample_rate, HUBERT_RATE).astype(np.float32)


class RVCService:
    """Conversions for the tab, the TTS pipeline and the HTTP API."""

    def __init__(
        self,
        library: RVCLibrary,
        support: SupportFiles,
        store: OutputStore,
        *,
        scheduler: DeviceScheduler | None = None,
    ) -> None:
        self.library = library
        self.support = support
        self.store = store
        self.converter = ResidentConverter(support, scheduler=scheduler or DeviceScheduler("cpu"))

    def prepare(self, model: str, params: RVCParams, progress: ProgressCallback | None = None) -> RVCModelInfo:
        """Resolve the model and make sure its support weights are here (downloading them with progress)."""
        info = self.library.get(model)
        self.support.ensure(files_for(params.f0_method if info.f0 else "none"), progress)
        return info

    def convert_array(
        self,
        audio: np.ndarray,
        sample_rate: int,
        request: RVCRequest,
        progress: ProgressCallback | None = None,
    ) -> Conversion:
        params = request.params()
        info = self.prepare(request.model, params, progress)
        if len(audio) / sample_rate > MAX_INPUT_SECONDS:
            raise InvalidInput(f"The audio is longer than {MAX_INPUT_SECONDS // 60} minutes; split it first.")
        if not np.any(np.abs(audio) > 1e-4):
            raise InvalidInput("The audio is silent; there is nothing to convert.")
        started = time.perf_counter()
        source = to_16k(audio, sample_rate)
        pieces = _split_long(source)
        converted: list[np.ndarray] = []
        rate = 0
        for number, piece in enumerate(pieces):
            if progress is not None:
                progress(number / len(pieces), f"Converting part {number + 1} of {len(pieces)}")
            out, rate = self.converter.convert(piece, info, params)
            converted.append(out)
        if progress is not None:
            progress(1.0, "Conversion done")
        audio_out = np.concatenate(converted) if converted else np.zeros(0, dtype=np.float32)
        return Conversion(audio_out, rate, info, params, time.perf_counter() - started)

    def convert_file(
        self,
        path: Path,
        request: RVCRequest,
        progress: ProgressCallback | None = None,
        *,
        source: dict[str, Any] | None = None,
    ) -> tuple[Conversion, OutputRecord]:
        """Convert any audio file ffmpeg reads and save the result with a sidecar of every parameter."""
        if not path:
            raise InvalidInput("Choose the audio to convert: upload a file, record one, or pick a TTS output.")
        decoded = decode(Path(path))
        conversion = self.convert_array(decoded.mono(), decoded.sample_rate, request, progress)
        meta = {
            "kind": "rvc",
            "text": f"rvc {conversion.model.name} {Path(path).stem}",
            "source": {"file": Path(path).name, "duration_s": round(decoded.duration, 3), **(source or {})},
            "rvc": conversion.metadata((request.profile or DEFAULT_RVC_PROFILE).strip().lower()),
        }
        return conversion, self.store.save(conversion.audio, conversion.sample_rate, meta)


_PIECE_S = 60  # long inputs go in one-minute pieces, cut at the quietest point near each boundary


def _split_long(audio: np.ndarray) -> list[np.ndarray]:
    """Cut long audio at quiet points so progress can be reported and memory stays bounded."""
    size = _PIECE_S * HUBERT_RATE
    if len(audio) <= size * 1.5:
        return [audio]
    pieces, start = [], 0
    window = HUBERT_RATE // 100
    while len(audio) - start > size * 1.5:
        lo, hi = start + size - 2 * HUBERT_RATE, start + size + 2 * HUBERT_RATE
        frames = np.abs(audio[lo:hi]).reshape(-1, window).mean(axis=1)
        cut = lo + int(np.argmin(frames)) * window
        pieces.append(audio[start:cut])
        start = cut
    pieces.append(audio[start:])
    return pieces
