"""The command that runs a training child: one worker, or one rank per GPU under torchrun.

One GPU (or none) runs today's worker, ``python -m train.worker RUN_DIR``. Two or more run
``python -m torch.distributed.run --standalone --nproc-per-node N -m train.worker RUN_DIR``:
torchrun gives each rank ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address,
and stops the other ranks when one fails (a rank that dies would otherwise leave the rest
waiting in a collective). Each rank narrows ``CUDA_VISIBLE_DEVICES`` to its own GPU from
``XTTS_STUDIO_GPUS``, so Coqui's trainer sees one device per process.

Coqui's own launcher (``python -m trainer.distribute``) is not used: it starts ``python3``
from ``PATH``, does not stop the other ranks when one fails, and its ranks rely on the
trainer's DDP setup, which needs CUDA and (in coqui-tts-trainer 0.4.0) trains through the
unwrapped module, so gradients are never averaged. The worker sets up the process group and
averages gradients itself (see :mod:`train.distributed`).

``XTTS_STUDIO_CPU_RANKS=1`` runs the ranks on the CPU over gloo instead of on GPUs: the same
code path, for tests and for trying the setup on a machine without GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InvalidInput

CPU_RANKS_ENV = "XTTS_STUDIO_CPU_RANKS"
GPUS_ENV = "XTTS_STUDIO_GPUS"
RANKS_DIR = "ranks"


def parse_gpus(text: str | None) -> list[int]:
    """``"0,1"`` -> ``[0, 1]``; empty -> ``[]`` (the studio's own device). Refuses what is not a GPU list."""
    parts = [p.strip() for p in (text or "").replace(" ", ",").split(",") if p.strip()]
    bad = [p for p in parts if not p.isdigit()]
    if bad:
        raise InvalidInput(
            f"GPUs must be a comma-separated list of GPU numbers such as 0,1; '{bad[0]}' is not a GPU number."
        )
    gpus = [int(p) for p in parts]
    repeated = sorted({g for g in gpus if gpus.count(g) > 1})
    if repeated:
        raise InvalidInput(f"GPU {repeated[0]} is listed twice; list each GPU once, such as 0,1.")
    return gpus


def cpu_ranks() -> bool:
    """Whether multi-GPU runs use CPU ranks over gloo (``XTTS_STUDIO_CPU_RANKS=1``)."""
    return os.environ.get(CPU_RANKS_ENV, "") == "1"


@dataclass(frozen=True)
class Launch:
    """How to start a run's child: its command line, what to add to its environment, its devices."""

    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return max(1, len(self.devices))


def child_command(python: str, run_dir: Path, gpus: list[int], *, device: str, on_cpu: bool = False) -> Launch:
    """The child for ``gpus``: ``device`` (the studio's) when none is listed, one GPU, or one rank per GPU."""
    worker = ["-m", "train.worker", str(run_dir)]
    # GPU numbers are the studio's, which may see a subset of the machine's GPUs itself
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    physical = [visible[g] if g < len(visible) else str(g) for g in gpus]
    if len(gpus) < 2:
        if not gpus or on_cpu:
            return Launch([python, *worker], devices=["cpu" if on_cpu else device])
        return Launch([python, *worker], env={"CUDA_VISIBLE_DEVICES": physical[0]}, devices=[f"cuda:{gpus[0]}"])
    env = {GPUS_ENV: ",".join(physical)}
    if on_cpu:
        env[CPU_RANKS_ENV] = "1"
    command = [
        python, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={len(gpus)}",
        f"--log-dir={run_dir / RANKS_DIR / 'launcher'}", *worker,
    ]  # fmt: skip
    return Launch(command, env=env, devices=["cpu"] * len(gpus) if on_cpu else [f"cuda:{g}" for g in gpus])
