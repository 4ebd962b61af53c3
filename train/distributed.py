"""One rank of a multi-GPU fine-tuning run: its process group, averaged gradients, a shared stop.

torchrun starts one worker per GPU (see :mod:`train.launch`). Coqui's trainer (0.4.0) cannot
run them as one training by itself: its DDP setup asserts CUDA, and it keeps the module inside
its ``DistributedDataParallel`` wrapper and trains through that module, never the wrapper, so no
gradient is ever averaged and each GPU would train its own model. So each rank here sees one
device, the worker starts the process group (NCCL on GPUs, gloo on CPU ranks) before the model
is built, and:

- XTTS's loader shards the training set by rank (its sampler is a ``DistributedSampler`` once a
  process group exists); :func:`reshuffle` gives each epoch its own order;
- the weights start equal (:func:`broadcast_weights`) and :class:`GradientAverager` averages
  every gradient over the ranks right before the optimizer steps, so they stay equal;
  :func:`check_in_sync` proves it at every save, and fails the run if they drifted;
- a cancel stops every rank at the same step (:func:`agree`), since a rank that stops alone
  leaves the others waiting in a collective.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from train.launch import CPU_RANKS_ENV, GPUS_ENV

log = logging.getLogger("train.worker")
PR_SET_PDEATHSIG = 1  # prctl option: the signal this process gets when its parent dies
BUCKET_ELEMENTS = 1 << 24  # gradients go over the wire in flat buckets of up to 64 MB (fp32)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run, from the variables torchrun sets."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> Ranks:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))

    @property
    def main(self) -> bool:
        """Rank 0 writes the run's files (progress, samples, checkpoints); the others only train."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def select_device(ranks: Ranks) -> str:
    """Before torch touches CUDA: show this rank only its own GPU (or none on CPU ranks); returns it."""
    if os.environ.get(CPU_RANKS_ENV) == "1":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    gpus = os.environ[GPUS_ENV].split(",")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[ranks.local_rank]
    return f"cuda:{gpus[ranks.local_rank]}"


def stop_with_launcher() -> None:
    """Ask Linux for a SIGINT when torchrun dies, so a killed launcher leaves no rank training on
    unsupervised (each rank has a session of its own, out of reach of a kill of torchrun's group)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGINT))


def start(ranks: Ranks, device: str) -> None:
    """Join the process group torchrun's rendezvous describes (``env://``)."""
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        torch.cuda.set_device(0)  # the only GPU this rank sees
    dist.init_process_group("gloo" if device == "cpu" else "nccl", rank=ranks.rank, world_size=ranks.world_size)


def stop() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _wire_device() -> Any:
    """Where collective tensors live: the GPU for NCCL, the CPU for gloo."""
    import torch
    import torch.distributed as dist

    return torch.device("cuda", 0) if dist.get_backend() == "nccl" else torch.device("cpu")


def agree(requested: bool) -> bool:
    """True on every rank when any rank asks to stop (a collective: every rank must call it)."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return requested
    flag = torch.tensor([1.0 if requested else 0.0], device=_wire_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def broadcast_weights(module: Any) -> None:
    """Give every rank rank 0's parameters and buffers."""
    import torch
    import torch.distributed as dist

    wire = _wire_device()
    for tensor in module.state_dict().values():
        if isinstance(tensor, torch.Tensor):
            sent = tensor if tensor.device == wire else tensor.to(wire)
            dist.broadcast(sent, src=0)
            if sent is not tensor:
                tensor.copy_(sent)


def _buckets(tensors: list[Any]) -> Iterator[list[Any]]:
    """Consecutive tensors of one dtype, up to :data:`BUCKET_ELEMENTS` each."""
    bucket: list[Any] = []
    size = 0
    for tensor in tensors:
        if bucket and (size + tensor.numel() > BUCKET_ELEMENTS or tensor.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(tensor)
        size += tensor.numel()
    if bucket:
        yield bucket


class GradientAverager:
    """Averages the gradients of ``module``'s trainable parameters over the ranks.

    Installed as the model's ``before_gradient_clipping`` hook, which the trainer calls after the
    backward pass of the micro-batch that completes a step and before clipping and the optimizer
    step (with fp16 loss scaling it would run only with clipping and after unscaling, so
    multi-GPU mixed precision uses bf16, which needs no scaler). Parameters go in one fixed order
    on every rank; one that got no gradient on some rank counts as zero there.
    """

    def __init__(self, module: Any, world_size: int) -> None:
        self.parameters = [p for p in module.parameters() if p.requires_grad]
        self.world_size = world_size

    def __call__(self) -> None:
        import torch
        import torch.distributed as dist

        device = self.parameters[0].device
        present = torch.tensor([p.grad is not None for p in self.parameters], dtype=torch.float32, device=device)
        dist.all_reduce(present)
        grads = []
        for parameter, count in zip(self.parameters, present.tolist(), strict=True):
            if count:
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
                grads.append(parameter.grad)
        for bucket in _buckets(grads):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for grad in bucket:
                grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
                offset += grad.numel()


def check_in_sync(module: Any, step: int, ranks: Ranks) -> None:
    """Compare a fingerprint of the weights over the ranks; raise if any rank's differ."""
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        parameters = [p.detach() for p in module.parameters()]
        local = torch.stack(
            [
                torch.stack([p.double().sum() for p in parameters]).sum(),
                torch.stack([p.double().square().sum() for p in parameters]).sum(),
            ]
        ).to(_wire_device())
    gathered = [torch.zeros_like(local) for _ in range(ranks.world_size)]
    dist.all_gather(gathered, local)
    if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
        raise RuntimeError(
            f"The weights of the {ranks.world_size} ranks differ at step {step}: their gradients were not averaged."
        )
    if ranks.main:
        log.info("weights identical on %d ranks at step %d", ranks.world_size, step)


def reshuffle(trainer: Any) -> None:
    """A new order of each rank's shard every epoch (a ``DistributedSampler`` repeats it otherwise)."""
    from torch.utils.data.distributed import DistributedSampler

    sampler = getattr(trainer.train_loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(int(trainer.epochs_done))
