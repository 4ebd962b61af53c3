"""Finding and loading an XTTS checkpoint folder: what is missing, the model's identity, the load itself."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from core import model_files
from core.device import out_of_memory_as
from core.errors import ModelUnavailable, OutOfMemory
from core.xtts import checkpoint_io

log = logging.getLogger(__name__)


class EngineState(StrEnum):
    """Where the engine stands; callers branch on this, never on message text."""

    NOT_DOWNLOADED = "not_downloaded"  # the default XTTS v2 folder lacks files; first use downloads them
    INCOMPLETE = "incomplete"  # a --model-dir folder lacks files
    READY = "ready"  # the files are there; the first request (or the start-up) loads them
    LOADED = "loaded"


@dataclass(frozen=True)
class EngineStatus:
    state: EngineState
    model_dir: Path | None
    device: str
    model_id: str | None
    message: str
    checkpoint: Path | None = None  # fine-tuned weights in use, if any

    @property
    def loaded(self) -> bool:
        return self.state is EngineState.LOADED


def model_identity(folder: Path, checkpoint: Path | None = None) -> str:
    """A short id that changes when the model files or the swapped-in weights change (without hashing GBs)."""
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for name in ("config.json", "model.pth", "vocab.json"):
        stat = (folder / name).stat()
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    if checkpoint is not None:
        digest.update(repr(checkpoint_io.file_stamp(checkpoint)).encode())
    return digest.hexdigest()[:16]


def unloaded_status(folder: Path, *, custom: bool, device: str, hub_url: str) -> EngineStatus:
    """What a not-yet-loaded engine would load from ``folder``, and what is missing there."""
    missing = (
        model_files.missing_files(folder) if custom else model_files.missing_files(folder, model_files.INFERENCE_FILES)
    )
    if missing and not custom:
        message = (
            f"XTTS v2 is not downloaded yet ({', '.join(missing)} missing in {folder}). "
            f"It is fetched from {hub_url}/{model_files.XTTS_V2_REPO} on first use; "
            f"offline, put those files in {folder} or start with --model-dir."
        )
        return EngineStatus(EngineState.NOT_DOWNLOADED, folder, device, None, message)
    if missing:
        message = f"The model folder {folder} is missing {', '.join(missing)}."
        return EngineStatus(EngineState.INCOMPLETE, folder, device, None, message)
    return EngineStatus(EngineState.READY, folder, device, None, f"XTTS is ready to load from {folder}.")


def load_xtts(folder: Path, device: str) -> tuple[Any, Any]:
    """Coqui's ``Xtts`` model and its config from ``folder``, on ``device``, in eval mode."""
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    started = time.perf_counter()
    out_of_memory = out_of_memory_as(
        f"The GPU ran out of memory loading XTTS from {folder}. Close other GPU programs "
        "(or a running training) and try again, or start with --device cpu."
    )
    try:
        with out_of_memory:
            config = XttsConfig()
            config.load_json(str(folder / "config.json"))
            model = Xtts(config)
            model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True)
            model.to(device)
    except OutOfMemory:
        raise
    except Exception as exc:
        raise ModelUnavailable(
            f"Could not load XTTS from {folder}: {exc.__class__.__name__}: {exc}. "
            "Check that the folder holds a complete XTTS checkpoint (re-download any damaged file)."
        ) from exc
    log.info("XTTS loaded from %s on %s in %.1fs", folder, device, time.perf_counter() - started)
    return model, config


def parameter_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers (the registry's estimate of its device memory)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
