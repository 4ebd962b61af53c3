"""The resident XTTS engine: one model per process, loaded once, used behind one lock.

Every tab and API route shares the one :class:`XTTSEngine`. GPU work is
serialised by ``_lock`` because XTTS keeps per-call state on the model (the GPT's
cached prefix), so two requests must never interleave inside it.

A fine-tuned checkpoint is used by copying its weights into the resident model
(:meth:`XTTSEngine.activate`, or :meth:`XTTSEngine.borrowed` for one render): only the
tensors that differ from the base model are copied, and swapping back restores just
those from the base file, so nothing that did not change is reloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import checkpoint_io, model_files
from core.errors import Cancelled, InvalidInput, ModelUnavailable, OutOfMemory
from core.latents import Conditioning, LatentCache, cache_key
from core.model_files import ProgressCallback
from core.profiles import SynthesisParams

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000
PAUSE_SECONDS = 0.12  # silence between synthesised chunks


@dataclass(frozen=True)
class VoiceSpec:
    """What to speak with: a built-in speaker of the model, or reference clips.

    ``latents_dir`` is where a library voice keeps its own latents (one file per model);
    without it, latents go to the shared cache.
    """

    speaker: str | None = None
    clips: tuple[Path, ...] = ()
    latents_dir: Path | None = None


@dataclass(frozen=True)
class EngineStatus:
    loaded: bool
    model_dir: Path | None
    device: str
    model_id: str | None
    message: str


def _zerogpu(fn: Callable[..., Any]) -> Callable[..., Any]:
    import spaces

    return spaces.GPU(fn)


def _model_identity(folder: Path, checkpoint: Path | None = None) -> str:
    """A short id that changes when the model files or the swapped-in weights change (without hashing GBs)."""
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for name in ("config.json", "model.pth", "vocab.json"):
        stat = (folder / name).stat()
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    if checkpoint is not None:
        digest.update(repr(checkpoint_io.file_stamp(checkpoint)).encode())
    return digest.hexdigest()[:16]


def _weight_norm_names(state: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Older files name weight-norm tensors ``weight_g``/``weight_v``; the loaded model uses parametrizations."""
    renamed = {}
    for key, tensor in state.items():
        if key not in params and key.endswith((".weight_g", ".weight_v")):
            stem, kind = key.rsplit(".", 1)
            modern = f"{stem}.parametrizations.weight.original{0 if kind == 'weight_g' else 1}"
            if modern in params:
                key = modern
        renamed[key] = tensor
    return renamed


class XTTSEngine:
    """Owns the XTTS model, its lock and the conditioning-latent cache."""

    def __init__(
        self,
        *,
        device: str,
        latents_dir: Path,
        model_dir: Path | None = None,
        default_model_dir: Path | None = None,
        hub_url: str = "https://huggingface.co",
        zerogpu: bool = False,
    ) -> None:
        if model_dir is None and default_model_dir is None:
            raise ValueError("give model_dir or default_model_dir")
        self.device = device
        self.hub_url = hub_url
        self._model_dir = model_dir
        self._default_model_dir = default_model_dir
        self._lock = threading.RLock()  # re-entrant: a borrowed checkpoint holds it across a render
        self._model: Any = None
        self._config: Any = None
        self._loaded_dir: Path | None = None
        self.model_id: str | None = None
        self.latents = LatentCache(latents_dir)
        self.active_checkpoint: Path | None = None
        self._swapped: set[str] = set()  # tensors that do not hold the base model's values now
        self._changed_keys: dict[tuple[str, int, int], frozenset[str]] = {}
        self.load_count = 0
        self.swap_count = 0
        self.encode_count = 0
        self.offloaded = False
        # On Hugging Face ZeroGPU hardware a GPU is attached only inside functions wrapped
        # by the `spaces` package; elsewhere these are the plain methods.
        on_gpu = _zerogpu if zerogpu else (lambda fn: fn)
        self._infer = on_gpu(self._infer_chunk)
        self._infer_stream = on_gpu(self._stream_chunk)
        self._encode = on_gpu(self._encode_clips)

    # ---- loading -------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        """The folder the engine loads from (the default XTTS v2 folder unless --model-dir)."""
        return self._model_dir or self._default_model_dir  # type: ignore[return-value]

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def status(self) -> EngineStatus:
        if self.loaded:
            using = f" with the fine-tuned weights of {self.active_checkpoint}" if self.active_checkpoint else ""
            return EngineStatus(
                True,
                self._loaded_dir,
                self.device,
                self.model_id,
                f"XTTS loaded from {self._loaded_dir}{using} on {self.device}.",
            )
        folder = self.model_dir
        if self._model_dir is None:
            missing = model_files.missing_files(folder, model_files.INFERENCE_FILES)
        else:
            missing = model_files.missing_files(folder)
        if missing and self._model_dir is None:
            message = (
                f"XTTS v2 is not downloaded yet ({', '.join(missing)} missing in {folder}). "
                f"It is fetched from {self.hub_url}/{model_files.XTTS_V2_REPO} on first use; "
                f"offline, put those files in {folder} or start with --model-dir."
            )
        elif missing:
            message = f"The model folder {folder} is missing {', '.join(missing)}."
        else:
            message = f"XTTS is ready to load from {folder}."
        return EngineStatus(False, folder, self.device, None, message)

    def ensure_loaded(self, progress: ProgressCallback | None = None) -> None:
        """Load the model once; later calls return at once. Downloads XTTS v2 if needed."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            if self._model_dir is not None:
                folder = model_files.check_model_dir(self._model_dir)
            else:
                folder = model_files.ensure_default_model(
                    self._default_model_dir,
                    hub_url=self.hub_url,
                    progress=progress,  # type: ignore[arg-type]
                )
            if progress is not None:
                progress(1.0, f"Loading XTTS from {folder}")
            self._load(folder)

    def _load(self, folder: Path) -> None:
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        started = time.perf_counter()
        try:
            config = XttsConfig()
            config.load_json(str(folder / "config.json"))
            model = Xtts(config)
            model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True)
            model.to(self.device)
        except torch.cuda.OutOfMemoryError as exc:
            self._free_cuda()
            raise OutOfMemory(
                f"The GPU ran out of memory loading XTTS from {folder}. Close other GPU programs "
                "(or a running training) and try again, or start with --device cpu."
            ) from exc
        except Exception as exc:
            raise ModelUnavailable(
                f"Could not load XTTS from {folder}: {exc.__class__.__name__}: {exc}. "
                "Check that the folder holds a complete XTTS checkpoint (re-download any damaged file)."
            ) from exc
        self._model, self._config, self._loaded_dir = model, config, folder
        self.active_checkpoint, self._swapped = None, set()
        self.model_id = _model_identity(folder)
        self.load_count += 1
        log.info("XTTS loaded from %s on %s in %.1fs", folder, self.device, time.perf_counter() - started)

    # ---- fine-tuned weights ----------------------------------------------------------------
    def activate(self, checkpoint: Path | None) -> None:
        """Make ``checkpoint``'s weights the ones every request uses (``None``: the base model)."""
        self._require_model()
        with self._lock:
            self._swap_to(checkpoint)

    @contextlib.contextmanager
    def borrowed(self, checkpoint: Path | None) -> Iterator[None]:
        """Use ``checkpoint`` (``None``: the base model) for the calls inside; the active weights return after.

        The lock is held throughout, so other requests wait rather than hear the borrowed weights.
        """
        self._require_model()
        with self._lock:
            previous = self.active_checkpoint
            self._swap_to(checkpoint)
            try:
                yield
            finally:
                self._swap_to(previous)

    def _swap_to(self, checkpoint: Path | None) -> None:
        if checkpoint == self.active_checkpoint and (checkpoint is None or self.model_id == self._identity(checkpoint)):
            return
        started = time.perf_counter()
        params = self._model.state_dict()
        base_file = self._loaded_dir / "model.pth"
        base = _weight_norm_names(self._read_base(base_file), params)
        target: dict[str, torch.Tensor] = {}
        changed: frozenset[str] = frozenset()
        if checkpoint is not None:
            target = _weight_norm_names(checkpoint_io.read_state_dict(checkpoint), params)
            mismatched = [k for k, t in target.items() if k in params and tuple(t.shape) != tuple(params[k].shape)]
            if mismatched or not any(k in params for k in target):
                raise InvalidInput(
                    f"{checkpoint.name} does not fit the loaded model ({len(mismatched)} tensors have other shapes, "
                    f"e.g. {mismatched[0] if mismatched else 'none shared'}); it was trained from another base. "
                    "Start the studio with --model-dir on that base model to use it."
                )
            changed = self._changed_against_base(checkpoint, target, base, params)
        with torch.no_grad(), self._oom_guard("swapping checkpoint weights"):
            for key in self._swapped - changed:
                params[key].copy_(base[key])
            for key in changed:
                params[key].copy_(target[key])
        self._swapped = set(changed)
        self.active_checkpoint = checkpoint
        self.model_id = self._identity(checkpoint)
        self.swap_count += 1
        log.info(
            "weights of %s in place (%d tensors copied) in %.2fs",
            checkpoint or "the base model", len(changed), time.perf_counter() - started,
        )  # fmt: skip

    def _identity(self, checkpoint: Path | None) -> str:
        return _model_identity(self._loaded_dir, checkpoint)  # type: ignore[arg-type]

    def _read_base(self, path: Path) -> dict[str, torch.Tensor]:
        try:
            return checkpoint_io.read_state_dict(path)
        except InvalidInput:  # a trusted original file in a legacy layout: Coqui's own loader reads it
            return self._model.get_compatible_checkpoint_state_dict(path)

    def _changed_against_base(
        self,
        checkpoint: Path,
        target: dict[str, torch.Tensor],
        base: dict[str, torch.Tensor],
        params: dict[str, torch.Tensor],
    ) -> frozenset[str]:
        """The tensors of ``checkpoint`` whose values differ from the base's (remembered per file)."""
        stamp = checkpoint_io.file_stamp(checkpoint)
        known = self._changed_keys.get(stamp)
        if known is None:
            changed = set()
            for key, tensor in target.items():
                if key not in params:
                    continue
                original = base.get(key)
                if original is None or not torch.equal(tensor.to(original.dtype), original):
                    changed.add(key)
            known = self._changed_keys[stamp] = frozenset(changed)
        return known

    def release_gpu(self) -> None:
        """Move the model to the CPU (training needs the GPU); it keeps working there, slower."""
        with self._lock:
            if self._model is not None and self.device != "cpu" and not self.offloaded:
                self._model.to("cpu")
                self.offloaded = True
                self._free_cuda()
                log.info("XTTS moved to the CPU while training runs")

    def reclaim_gpu(self) -> None:
        with self._lock:
            if self._model is not None and self.offloaded:
                with self._oom_guard("moving XTTS back to the GPU"):
                    self._model.to(self.device)
                self.offloaded = False
                log.info("XTTS back on %s", self.device)

    def _require_model(self) -> Any:
        if self._model is None:
            self.ensure_loaded()
        return self._model

    # ---- what the model offers -----------------------------------------------------------
    def speakers(self) -> list[str]:
        """Built-in speakers of the loaded model (empty if not loaded or none shipped)."""
        manager = getattr(self._model, "speaker_manager", None)
        return list(manager.speakers) if manager is not None else []

    def languages(self) -> list[str]:
        if self._config is None:
            from core.languages import LANGUAGES

            return list(LANGUAGES)
        return list(self._config.languages)

    def default_speaker(self) -> str | None:
        names = self.speakers()
        return names[0] if names else None

    # ---- conditioning --------------------------------------------------------------------
    def _encoding_settings(self) -> dict[str, object]:
        cfg = self._config
        return {
            "gpt_cond_len": cfg.gpt_cond_len,
            "gpt_cond_chunk_len": cfg.gpt_cond_chunk_len,
            "max_ref_length": cfg.max_ref_len,
            "sound_norm_refs": cfg.sound_norm_refs,
        }

    def conditioning(self, voice: VoiceSpec) -> Conditioning:
        """Latents for ``voice``; reference clips are encoded once per model and then cached."""
        model = self._require_model()
        if voice.speaker is not None:
            manager = getattr(model, "speaker_manager", None)
            if manager is None or voice.speaker not in manager.speakers:
                known = ", ".join(self.speakers()) or "none"
                raise InvalidInput(f"Unknown voice '{voice.speaker}'. Built-in voices: {known}.")
            entry = manager.speakers[voice.speaker]
            return Conditioning(entry["gpt_cond_latent"], entry["speaker_embedding"])
        if not voice.clips:
            raise InvalidInput("A voice needs a built-in speaker or at least one reference clip.")
        for clip in voice.clips:
            if not clip.is_file():
                raise InvalidInput(f"The reference clip {clip} does not exist.")
        settings = self._encoding_settings()
        with self._lock:  # the model id must not change (a checkpoint swap) between lookup and encoding
            model_id = self.model_id or ""
            key = cache_key(model_id, voice.clips, settings)
            cached = self.latents.get(model_id, key, voice.latents_dir)
            if cached is not None:
                return cached
            with self._oom_guard("encoding the voice"):
                latent, embedding = model.get_conditioning_latents(audio_path=[str(c) for c in voice.clips], **settings)
                self.encode_count += 1
            found = Conditioning(latent.cpu(), embedding.cpu())
            self.latents.put(model_id, key, found, voice.latents_dir)
        return found

    # ---- synthesis -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _oom_guard(self, doing: str) -> Iterator[None]:
        try:
            yield
        except torch.cuda.OutOfMemoryError as exc:
            self._free_cuda()
            raise OutOfMemory(
                f"The GPU ran out of memory while {doing}. Shorten the text chunks (a lower chunk size or the "
                "'fast' profile), stop a running training, or use --device cpu."
            ) from exc

    def _free_cuda(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _check_language(self, language: str) -> None:
        if language not in self.languages():
            raise InvalidInput(
                f"The loaded model does not speak '{language}'. It speaks: {', '.join(self.languages())}."
            )

    def synthesize(
        self,
        chunks: Sequence[str],
        *,
        language: str,
        conditioning: Conditioning,
        params: SynthesisParams,
        seed: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Speak each chunk and join them with a short pause; float32 mono at 24 kHz.

        ``should_stop`` is asked before each chunk; when it answers True, :class:`Cancelled` is raised.
        """
        self._require_model()
        self._check_language(language)
        pause = np.zeros(int(SAMPLE_RATE * PAUSE_SECONDS), dtype=np.float32)
        pieces: list[np.ndarray] = []
        with self._lock, self._oom_guard("synthesising"):
            if seed is not None:
                torch.manual_seed(seed)
            for index, chunk in enumerate(chunks):
                if should_stop is not None and should_stop():
                    raise Cancelled(f"Stopped after {index} of {len(chunks)} chunks; nothing was saved.")
                out = self._infer(chunk, language, conditioning, params)
                if pieces:
                    pieces.append(pause)
                pieces.append(np.asarray(out["wav"], dtype=np.float32))
                if progress is not None:
                    progress(index + 1, len(chunks))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)

    def stream(
        self,
        chunks: Sequence[str],
        *,
        language: str,
        conditioning: Conditioning,
        params: SynthesisParams,
        seed: int | None = None,
        stream_chunk_tokens: int = 20,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield float32 audio pieces as XTTS produces them (sub-sentence granularity).

        A worker thread owns the lock for the whole request and hands pieces over a
        queue, so the consumer may resume the generator from any thread (Gradio
        does) and an abandoned stream stops the worker at its next piece.
        ``should_stop`` is asked before each piece; when it answers True the
        stream raises :class:`Cancelled`.
        """
        self._require_model()
        self._check_language(language)
        pieces: queue.Queue[object] = queue.Queue()
        stop = threading.Event()
        done = object()

        def work() -> None:
            try:
                with self._lock, self._oom_guard("streaming"):
                    if seed is not None:
                        torch.manual_seed(seed)
                    for index, chunk in enumerate(chunks):
                        if index:
                            pieces.put(np.zeros(int(SAMPLE_RATE * PAUSE_SECONDS), dtype=np.float32))
                        for wav in self._infer_stream(chunk, language, conditioning, params, stream_chunk_tokens):
                            if stop.is_set():
                                return
                            if should_stop is not None and should_stop():
                                raise Cancelled("Streaming stopped; nothing was saved.")
                            pieces.put(wav.detach().cpu().numpy().astype(np.float32))
            except BaseException as exc:  # handed to the consumer, raised there
                pieces.put(exc)
            finally:
                pieces.put(done)

        worker = threading.Thread(target=work, name="xtts-stream", daemon=True)
        worker.start()
        try:
            while True:
                item = pieces.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            stop.set()

    # ---- the calls that run on the GPU (wrapped for ZeroGPU) ------------------------------
    def _infer_chunk(self, chunk: str, language: str, conditioning: Conditioning, params: SynthesisParams) -> Any:
        return self._model.inference(
            chunk,
            language,
            conditioning.gpt_cond_latent,
            conditioning.speaker_embedding,
            **params.generation_kwargs(),
        )

    def _stream_chunk(
        self, chunk: str, language: str, conditioning: Conditioning, params: SynthesisParams, tokens: int
    ) -> Iterator[torch.Tensor]:
        yield from self._model.inference_stream(
            chunk,
            language,
            conditioning.gpt_cond_latent,
            conditioning.speaker_embedding,
            stream_chunk_size=tokens,
            **params.generation_kwargs(),
        )

    def _encode_clips(self, clips: list[str], settings: dict[str, object]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._model.get_conditioning_latents(audio_path=clips, **settings)

    def warm_up(self) -> float:
        """One short synthesis so the first real request does not pay for lazy initialisation."""
        started = time.perf_counter()
        speaker = self.default_speaker()
        if speaker is None:
            return 0.0
        from core.profiles import PROFILES

        self.synthesize(
            ["Ready."],
            language="en" if "en" in self.languages() else self.languages()[0],
            conditioning=self.conditioning(VoiceSpec(speaker=speaker)),
            params=PROFILES["fast"],
        )
        return time.perf_counter() - started
