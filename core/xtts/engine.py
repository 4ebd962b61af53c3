"""The resident XTTS engine: one model per process, loaded once, used inside the device slot.

Every tab and API route shares the one :class:`XTTSEngine`. Its device work (loading,
encoding a voice, each synthesised chunk, a checkpoint swap) runs inside the
:class:`~core.device.DeviceScheduler` slot, because XTTS keeps per-call state on the model
(the GPT's cached prefix) and the seed of a take lives in torch's random state; the engine
registers its model with the scheduler's registry so training can move it off the GPU.

Loading lives in :mod:`core.xtts.loading`, the checkpoint weight swap in
:mod:`core.xtts.weights`, the latent cache in :mod:`core.xtts.latents`.
"""

from __future__ import annotations

import contextlib
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

from core import locks, model_files
from core.constants import XTTS_OUTPUT_RATE
from core.device import DeviceScheduler, chunk_seed, out_of_memory_as
from core.errors import Cancelled, InvalidInput, ModelUnavailable
from core.model_files import ProgressCallback
from core.xtts.batch_decode import BatchTimes, Deliver, Row, RowResult, row_bytes, synthesize_rows, tokenize
from core.xtts.batching import Batcher
from core.xtts.latents import Conditioning, LatentCache, cache_key
from core.xtts.loading import EngineState, EngineStatus, load_xtts, model_identity, parameter_bytes, unloaded_status
from core.xtts.profiles import SynthesisParams
from core.xtts.weights import CheckpointWeights

log = logging.getLogger(__name__)

PAUSE_SECONDS = 0.12  # silence between synthesised chunks
MODEL = "xtts"  # the engine's name in the device registry
GPU_BATCH_WINDOW_MS = 30.0  # the default wait for companions on CUDA; 0 (off) on the CPU


def default_batch_window_ms(device: str, *, zerogpu: bool = False) -> float:
    """Batching pays on a GPU (the GPT's steps are memory-bound); on the CPU the vocoder is
    compute-bound and batching rows only makes each caller wait for the others. On ZeroGPU each
    GPU call belongs to the request that made it, so rows of several requests are not mixed."""
    return GPU_BATCH_WINDOW_MS if device.startswith("cuda") and not zerogpu else 0.0


@dataclass(frozen=True)
class VoiceSpec:
    """What to speak with: a built-in speaker of the model, or reference clips.

    ``latents_dir`` is where a library voice keeps its own latents (one file per model);
    without it, latents go to the shared cache.
    """

    speaker: str | None = None
    clips: tuple[Path, ...] = ()
    latents_dir: Path | None = None


def _pause() -> np.ndarray:
    return np.zeros(int(XTTS_OUTPUT_RATE * PAUSE_SECONDS), dtype=np.float32)


class XTTSEngine:
    """Owns the XTTS model, its checkpoint weights and the conditioning-latent cache."""

    def __init__(
        self,
        *,
        latents_dir: Path,
        device: str = "cpu",
        scheduler: DeviceScheduler | None = None,
        model_dir: Path | None = None,
        default_model_dir: Path | None = None,
        hub_url: str = "https://huggingface.co",
        zerogpu: bool = False,
        batch_window_ms: float | None = None,
    ) -> None:
        """``scheduler`` is the studio's shared one; without it the engine gets one of its own for
        ``device`` (and ``zerogpu``), as a script or a test that only needs XTTS would.

        ``batch_window_ms``: how long a chunk that arrives while others wait or run may wait for
        more to batch with (0: no batching; ``None``: 30 ms on CUDA, off on the CPU and ZeroGPU)."""
        if model_dir is None and default_model_dir is None:
            raise ValueError("give model_dir or default_model_dir")
        self.scheduler = scheduler or DeviceScheduler(device, zerogpu=zerogpu)
        self.device = self.scheduler.device
        self.hub_url = hub_url
        self._model_dir = model_dir
        self._default_model_dir = default_model_dir
        self._model: Any = None
        self._config: Any = None
        self._loaded_dir: Path | None = None
        self.weights: CheckpointWeights | None = None
        self.model_id: str | None = None
        self.latents = LatentCache(latents_dir)
        self._in_use: locks.Hold | None = None  # the active checkpoint's in-use marker
        self.load_count = 0
        self.encode_count = 0
        self._placed_on = self.device
        self.scheduler.models.register(
            MODEL, estimate_bytes=self._estimate, offload=self._to_host, reload=self._to_device, order=90
        )
        on_device = self.scheduler.on_device
        self._infer = on_device(self._infer_rows)
        self._infer_stream = on_device(self._stream_chunk)
        if batch_window_ms is None:
            batch_window_ms = default_batch_window_ms(self.device, zerogpu=self.scheduler.zerogpu)
        self.batch_times = BatchTimes()
        self.batcher = Batcher(
            self.scheduler, self._run_rows, job=MODEL, window_s=batch_window_ms / 1000, max_rows=self._max_rows
        )

    # ---- loading -------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        """The folder the engine loads from (the default XTTS v2 folder unless --model-dir)."""
        return self._model_dir or self._default_model_dir  # type: ignore[return-value]

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def active_checkpoint(self) -> Path | None:
        """The fine-tuned checkpoint whose weights are in use (``None``: the base model)."""
        return self.weights.active if self.weights is not None else None

    def status(self) -> EngineStatus:
        if not self.loaded:
            return unloaded_status(
                self.model_dir, custom=self._model_dir is not None, device=self.device, hub_url=self.hub_url
            )
        active = self.active_checkpoint
        using = f" with the fine-tuned weights of {active}" if active else ""
        where = self._placed_on if self._placed_on == self.device else f"{self._placed_on} while training runs"
        return EngineStatus(
            EngineState.LOADED, self._loaded_dir, self.device, self.model_id,
            f"XTTS loaded from {self._loaded_dir}{using} on {where}.", checkpoint=active,
        )  # fmt: skip

    def ensure_loaded(self, progress: ProgressCallback | None = None) -> None:
        """Load the model once; later calls return at once. Downloads XTTS v2 if needed."""
        if self._model is not None:
            return
        if self._model_dir is not None:
            folder = model_files.check_model_dir(self._model_dir)
        else:  # outside the slot: a download is network work, and may take minutes
            folder = model_files.ensure_default_model(self._default_model_dir, hub_url=self.hub_url, progress=progress)  # type: ignore[arg-type]
        with self.scheduler.slot(MODEL):
            if self._model is not None:
                return
            if progress is not None:
                progress(1.0, f"Loading XTTS from {folder}")
            target = self.scheduler.models.target_device()
            self._model, self._config = load_xtts(folder, target)
            self._loaded_dir, self._placed_on = folder, target
            self.weights = CheckpointWeights(self._model, folder)
            self.model_id = model_identity(folder)
            self.load_count += 1
            self.scheduler.models.loaded(MODEL)

    def _require_model(self) -> Any:
        if self._model is None:
            self.ensure_loaded()
        return self._model

    def _unload(self) -> None:
        """Drop a model whose weights cannot be trusted; the next request loads it again."""
        self._model = self._config = self.weights = self.model_id = None
        self._mark_in_use(None)
        self.scheduler.models.unloaded(MODEL)

    # ---- the device registry's offload / reload ------------------------------------------
    def _estimate(self) -> int:
        return parameter_bytes(self._model) if self._model is not None else 0

    def _move(self, device: str) -> None:
        if self._model is None or self._placed_on == device:
            return
        with self._oom_guard(f"moving XTTS to {device}"):
            self._model.to(device)
        self._placed_on = device
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.info("XTTS now on %s", device)

    def _to_host(self) -> None:
        """Training needs the device: XTTS moves to the CPU and keeps working there, slower."""
        self._move("cpu")

    def _to_device(self) -> None:
        if self._model is not None:
            self._move(self.device)
            self.scheduler.models.loaded(MODEL)

    @property
    def offloaded(self) -> bool:
        """Whether the model sits on the CPU because the device is lent (to training)."""
        return self.loaded and self.scheduler.lent

    # ---- fine-tuned weights ----------------------------------------------------------------
    def activate(self, checkpoint: Path | None) -> None:
        """Make ``checkpoint``'s weights the ones every request uses (``None``: the base model)."""
        self._require_model()
        with self.scheduler.slot(MODEL):
            self._swap_to(checkpoint)

    @contextlib.contextmanager
    def borrowed(self, checkpoint: Path | None) -> Iterator[None]:
        """Use ``checkpoint`` (``None``: the base model) for the calls inside; the active weights return after.

        The slot is held throughout, so other requests wait rather than hear the borrowed weights.
        """
        self._require_model()
        with self.scheduler.slot(MODEL):
            previous = self.active_checkpoint
            self._swap_to(checkpoint)
            try:
                yield
            finally:
                self._swap_to(previous)

    def _swap_to(self, checkpoint: Path | None) -> None:
        weights = self.weights
        assert weights is not None and self._loaded_dir is not None
        if checkpoint == weights.active and (checkpoint is None or self.model_id == self._identity(checkpoint)):
            return
        try:
            with self._oom_guard("swapping checkpoint weights"):
                weights.swap_to(checkpoint)
        except ModelUnavailable:
            self._unload()
            raise
        finally:  # the id always names what the model holds now: the checkpoint, or the base after a failure
            if self.weights is not None:
                self.model_id = self._identity(self.weights.active)
            self._mark_in_use(self.weights.active if self.weights is not None else None)

    def _mark_in_use(self, checkpoint: Path | None) -> None:
        """Hold ``checkpoint``'s in-use marker shared, so no studio process sharing the folder deletes it."""
        marker = locks.in_use_marker(checkpoint) if checkpoint is not None else None
        if self._in_use is not None and self._in_use.path == marker:
            return
        if self._in_use is not None:
            self._in_use.release()
            self._in_use = None
        if marker is not None:
            try:
                self._in_use = locks.try_hold(marker, shared=True)
            except OSError as exc:  # a read-only model folder: nobody deletes it from here either
                log.warning("cannot mark %s in use: %s", checkpoint, exc)

    def _identity(self, checkpoint: Path | None) -> str:
        return model_identity(self._loaded_dir, checkpoint)  # type: ignore[arg-type]

    # ---- what the model offers -----------------------------------------------------------
    def speakers(self) -> list[str]:
        """Built-in speakers of the loaded model (empty if not loaded or none shipped)."""
        manager = getattr(self._model, "speaker_manager", None)
        return list(manager.speakers) if manager is not None else []

    def languages(self) -> list[str]:
        if self._config is None:
            from core.xtts.languages import LANGUAGES

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
        model_id = self.model_id or ""
        cached = self.latents.get(model_id, cache_key(model_id, voice.clips, settings), voice.latents_dir)
        if cached is not None:  # read without the slot: a cached voice never waits for the device
            return cached
        with self.scheduler.slot(MODEL):  # the model id must not change (a checkpoint swap) while encoding
            model_id = self.model_id or ""
            key = cache_key(model_id, voice.clips, settings)
            cached = self.latents.get(model_id, key, voice.latents_dir)
            if cached is not None:
                return cached
            with self._oom_guard("encoding the voice"):
                latent, embedding = self.scheduler.on_device(model.get_conditioning_latents)(
                    audio_path=[str(c) for c in voice.clips], **settings
                )
                self.encode_count += 1
            found = Conditioning(latent.cpu(), embedding.cpu())
            self.latents.put(model_id, key, found, voice.latents_dir)
        return found

    # ---- synthesis -----------------------------------------------------------------------
    @staticmethod
    def _oom_guard(doing: str) -> contextlib.AbstractContextManager[None]:
        return out_of_memory_as(
            f"The GPU ran out of memory while {doing}. Shorten the text chunks (a lower chunk size or the "
            "'fast' profile), stop a running training, or use --device cpu."
        )

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
        first_chunk: int = 0,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Speak each chunk and join them with a short pause; float32 mono at 24 kHz.

        Each chunk is one row for the batcher: alone in the device slot, or decoded together with
        chunks of other requests that arrive at the same time. A chunk's take depends only on its
        own seed (derived from ``seed`` and its index, counted from ``first_chunk`` when a caller
        feeds a request's chunks one at a time), never on what shares its batch. ``should_stop``
        is asked before each chunk and at each decoding step; when it answers True,
        :class:`Cancelled` is raised.
        """
        model = self._require_model()
        self._check_language(language)
        pieces: list[np.ndarray] = []
        for index, chunk in enumerate(chunks):
            if should_stop is not None and should_stop():
                raise Cancelled(f"Stopped after {index} of {len(chunks)} chunks; nothing was saved.")
            row = Row(
                tokenize(model, chunk, language),
                conditioning,
                params,
                seed=None if seed is None else chunk_seed(seed, first_chunk + index),
                should_stop=should_stop,
            )
            result = self.batcher.submit(row)
            if result.wav is None:
                raise Cancelled(f"Stopped during chunk {index + 1} of {len(chunks)}; nothing was saved.")
            if pieces:
                pieces.append(_pause())
            pieces.append(result.wav)
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

        A worker thread holds the slot for each chunk and hands pieces over a queue, so the
        consumer may resume the generator from any thread (Gradio does) and an abandoned stream
        stops the worker at its next piece. ``should_stop`` is asked before each piece; when it
        answers True the stream raises :class:`Cancelled`.
        """
        self._require_model()
        self._check_language(language)
        pieces: queue.Queue[object] = queue.Queue()
        stop = threading.Event()
        done = object()

        def work() -> None:
            try:
                for index, chunk in enumerate(chunks):
                    if index:
                        pieces.put(_pause())
                    with self.scheduler.slot(MODEL), self._oom_guard("streaming"):
                        if seed is not None:
                            self.scheduler.seed(seed, index)
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

    # ---- the calls that run on the device (wrapped for ZeroGPU) ----------------------------
    def _max_rows(self) -> int:
        """Rows one batch may hold: the device owner's memory bound over one row's estimate."""
        model = self._model
        return self.scheduler.batch_rows(row_bytes(model.args)) if model is not None else 1

    def _run_rows(self, rows: Sequence[Row], deliver: Deliver) -> list[RowResult]:
        """One batch, inside the slot (the batcher holds it)."""
        with self._oom_guard("synthesising"):
            return self._infer(rows, deliver)

    def _infer_rows(self, rows: Sequence[Row], deliver: Deliver) -> list[RowResult]:
        return synthesize_rows(self._require_model(), rows, self.batch_times, deliver)

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

    def warm_up(self) -> float:
        """One short synthesis so the first real request does not pay for lazy initialisation."""
        started = time.perf_counter()
        speaker = self.default_speaker()
        if speaker is None:
            return 0.0
        from core.xtts.profiles import PROFILES

        self.synthesize(
            ["Ready."],
            language="en" if "en" in self.languages() else self.languages()[0],
            conditioning=self.conditioning(VoiceSpec(speaker=speaker)),
            params=PROFILES["fast"],
        )
        return time.perf_counter() - started
