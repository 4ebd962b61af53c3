"""Reading XTTS weights safely, whatever wrote them: Coqui's trainer, an export, a download.

Every file goes through ``torch.load(weights_only=True)`` (or safetensors), so a pickle that
would run code is refused, never executed. Trainer checkpoints carry the DVAE, mel
spectrogram layers, optimizer and scheduler beside the model; :func:`read_state_dict`
returns only what an inference ``Xtts`` holds, under its own names.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core import fs
from core.errors import InvalidInput

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
TRAINING_ONLY = ("dvae", "torch_mel_spectrogram_style_encoder", "torch_mel_spectrogram_dvae")


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint says about itself, read without materialising its tensors."""

    step: int | None
    epoch: int | None
    tensors: int


def _refusal(path: Path, exc: BaseException) -> InvalidInput:
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        return InvalidInput(
            f"{path.name} was refused: it holds Python objects that would run code when loaded, and a model "
            "file needs only tensors. It was not loaded. Use checkpoints written by Coqui's trainer or this studio."
        )
    if isinstance(exc, (EOFError, zipfile.BadZipFile)) or "central directory" in text or "zip archive" in text:
        return InvalidInput(
            f"{path.name} is damaged or incomplete (the file ends early or is not a PyTorch checkpoint); "
            "a copy, download or save was probably cut short."
        )
    return InvalidInput(f"{path.name} could not be read as a checkpoint: {exc.__class__.__name__}: {text[:200]}")


def load_file(path: Path) -> Any:
    """The file's top-level object, tensors memory-mapped where the format allows."""
    if not path.is_file():
        raise InvalidInput(f"There is no checkpoint file at {path}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file as load_safetensors

            return {"model": load_safetensors(str(path), device="cpu")}
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:
        raise _refusal(path, exc) from exc


def _model_dict(path: Path, data: Any) -> dict[str, torch.Tensor]:
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        raise InvalidInput(f"{path.name} is not an XTTS checkpoint: it holds no model weights.")
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not any(k.startswith(("gpt.", "xtts.gpt.")) for k in tensors):
        raise InvalidInput(f"{path.name} is not an XTTS checkpoint: it has no GPT weights.")
    return tensors


def read_header(path: Path) -> CheckpointHeader:
    data = load_file(path)
    tensors = _model_dict(path, data)
    step = data.get("step") if isinstance(data, dict) else None
    epoch = data.get("epoch") if isinstance(data, dict) else None
    return CheckpointHeader(
        step if isinstance(step, int) else None, epoch if isinstance(epoch, int) else None, len(tensors)
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The inference model's weights in ``path``: trainer prefixes removed, training-only parts dropped."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in _model_dict(path, load_file(path)).items():
        name = key.removeprefix("xtts.")
        if name.split(".", 1)[0] not in TRAINING_ONLY:
            state[name] = tensor
    return state


def write_model(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """Save ``{"model": state}`` atomically: the layout Coqui's ``Xtts.load_checkpoint`` reads."""
    payload = {"model": {k: v.detach().cpu().contiguous() for k, v in state.items()}}
    return fs.write_with(path, lambda handle: torch.save(payload, handle))


def file_stamp(path: Path) -> tuple[str, int, int]:
    """Identity of a file on disk that changes when it is rewritten (without hashing gigabytes)."""
    stat = os.stat(path)
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
