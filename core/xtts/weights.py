"""Fine-tuned weights in the resident model: a swap that copies only what differs, all or nothing.

A fine-tune changes some tensors (for XTTS, the GPT); the HiFiGAN decoder and the speaker
encoder stay as in the base. Swapping copies just the tensors whose values differ from the
base file, and swapping back restores just those from it, so nothing that did not change is
reloaded. A swap is a transaction: if a copy fails half-way (the device runs out of memory,
a tensor cannot be copied), every tensor touched is restored from the base and the base is
what the model holds, never a mix of two checkpoints.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from core.errors import InvalidInput, ModelUnavailable, StudioError
from core.xtts import checkpoint_io

log = logging.getLogger(__name__)


class SwapFailed(StudioError):
    """A checkpoint's weights could not be put in place; the base model's weights were restored."""


def weight_norm_names(state: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


def _same_values(tensor: torch.Tensor, original: torch.Tensor) -> bool:
    try:
        return torch.equal(tensor.to(original.dtype), original)
    except RuntimeError:  # a tensor that cannot be compared (another layout) is treated as changed
        return False


class CheckpointWeights:
    """Which weights the resident model holds beyond the base, and the swap between checkpoints."""

    def __init__(self, model: Any, base_dir: Path) -> None:
        self._model = model
        self._base_file = base_dir / "model.pth"
        self.active: Path | None = None
        self.swapped: set[str] = set()  # tensors that do not hold the base model's values now
        self.changed_keys: dict[tuple[str, int, int], frozenset[str]] = {}
        self.swaps = 0

    def _read_base(self) -> dict[str, torch.Tensor]:
        try:
            return checkpoint_io.read_state_dict(self._base_file)
        except InvalidInput:  # a trusted original file in a legacy layout: Coqui's own loader reads it
            return self._model.get_compatible_checkpoint_state_dict(self._base_file)

    def _changed_against_base(
        self,
        checkpoint: Path,
        target: dict[str, torch.Tensor],
        base: dict[str, torch.Tensor],
        params: dict[str, torch.Tensor],
    ) -> frozenset[str]:
        """The tensors of ``checkpoint`` whose values differ from the base's (remembered per file).

        Only tensors the base file holds can be swapped, since only those can be restored; the rest
        of the model (inference-only views built from them at load) follows them.
        """
        stamp = checkpoint_io.file_stamp(checkpoint)
        known = self.changed_keys.get(stamp)
        if known is None:
            known = frozenset(
                key
                for key, tensor in target.items()
                if key in params and key in base and not _same_values(tensor, base[key])
            )
            self.changed_keys[stamp] = known
        return known

    def _target(self, checkpoint: Path, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        target = weight_norm_names(checkpoint_io.read_state_dict(checkpoint), params)
        mismatched = [k for k, t in target.items() if k in params and tuple(t.shape) != tuple(params[k].shape)]
        if mismatched or not any(k in params for k in target):
            raise InvalidInput(
                f"{checkpoint.name} does not fit the loaded model ({len(mismatched)} tensors have other shapes, "
                f"e.g. {mismatched[0] if mismatched else 'none shared'}); it was trained from another base. "
                "Start the studio with --model-dir on that base model to use it."
            )
        return target

    def swap_to(self, checkpoint: Path | None) -> None:
        """Make the model hold ``checkpoint``'s weights (``None``: the base's); all or nothing."""
        started = time.perf_counter()
        params = self._model.state_dict()
        base = weight_norm_names(self._read_base(), params)
        target: dict[str, torch.Tensor] = {}
        changed: frozenset[str] = frozenset()
        if checkpoint is not None:
            target = self._target(checkpoint, params)
            changed = self._changed_against_base(checkpoint, target, base, params)
        plan = [(key, base[key]) for key in sorted(self.swapped - changed)]
        plan += [(key, target[key]) for key in sorted(changed)]
        touched: list[str] = []
        try:
            with torch.no_grad():
                for key, source in plan:
                    touched.append(key)
                    params[key].copy_(source)
        except Exception as exc:
            self._restore_base(params, base, self.swapped | set(touched))
            name = checkpoint.name if checkpoint is not None else "the base model"
            raise SwapFailed(
                f"Could not put the weights of {name} in place ({exc.__class__.__name__} at {touched[-1]}, "
                f"after {len(touched) - 1} of {len(plan)} tensors); the base model's weights were restored "
                "and are in use now."
            ) from exc
        self.swapped = set(changed)
        self.active = checkpoint
        self.swaps += 1
        log.info(
            "weights of %s in place (%d tensors copied) in %.2fs",
            checkpoint or "the base model", len(plan), time.perf_counter() - started,
        )  # fmt: skip

    def _restore_base(self, params: dict[str, torch.Tensor], base: dict[str, torch.Tensor], keys: set[str]) -> None:
        try:
            with torch.no_grad():
                for key in sorted(keys):
                    params[key].copy_(base[key])
        except Exception as exc:
            raise ModelUnavailable(
                f"The model's weights could not be restored after a failed swap ({exc}); it will be loaded again."
            ) from exc
        finally:
            self.swapped = set()
            self.active = None
