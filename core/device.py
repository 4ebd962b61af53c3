"""One owner for the compute device: the device slot, the admission gate and the resident models.

Every piece of device work (XTTS synthesis and voice encoding, checkpoint weight swaps, RVC
conversion, Whisper transcription, the speaker encoder) runs inside :meth:`DeviceScheduler.slot`,
so two jobs never share the device at once. Because nothing else touches torch's random state
while the slot is held, a seed set inside it (:meth:`DeviceScheduler.seed`, per chunk) gives the
same take whatever else runs at the same time.

The admission gate bounds how many requests may run or wait for the slot, for UI events and
HTTP routes alike, so a burst gets a quick "busy" instead of piling up.

The registry knows every model that can hold device memory, with an estimate of how much and a
way to move it off the device and back. Training borrows the device through :meth:`lend`
(everything resident moves off, in a defined order) and :meth:`take_back`; a memory budget
moves the least recently used models off when a load would exceed it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from core.errors import Busy, OutOfMemory

log = logging.getLogger(__name__)

_SEED_STRIDE = 1_000_003  # chunk i of a seeded request uses its own seed derived from the request's
DEFAULT_BATCH_MEMORY_BYTES = 2048 * 2**20


def chunk_seed(seed: int, index: int = 0) -> int:
    """The seed of chunk ``index`` of a request seeded with ``seed``: chunk 0 uses ``seed`` itself."""
    return seed if index == 0 else (seed * _SEED_STRIDE + index) % 2**63


class AdmissionGate:
    """Counts requests admitted and not finished (running plus waiting) against a capacity."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._depth = 0
        self._last_progress = time.monotonic()
        self._lock = threading.Lock()

    @property
    def depth(self) -> int:
        return self._depth

    def enter(self) -> None:
        with self._lock:
            if self._depth >= self.capacity:
                raise Busy(
                    f"The studio is busy: {self._depth} requests are already queued for the GPU. Try again shortly."
                )
            self._depth += 1
            self._last_progress = time.monotonic()

    def leave(self) -> None:
        with self._lock:
            self._depth = max(self._depth - 1, 0)
            self._last_progress = time.monotonic()

    def progressed(self) -> None:
        """Admitted work reports that it is moving (a chunk made, a step done)."""
        self._last_progress = time.monotonic()

    def stalled_s(self) -> float:
        """Seconds since admitted work last moved; 0 when nothing is admitted."""
        return time.monotonic() - self._last_progress if self._depth else 0.0

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()


def queue_problems(gate: AdmissionGate, *, stall_s: float) -> list[str]:
    """Why the queue is not healthy: full (new work is refused), or admitted work stopped moving."""
    problems = []
    if gate.depth >= gate.capacity:
        problems.append(f"the queue is full ({gate.depth} of {gate.capacity}); new requests are refused")
    if gate.stalled_s() > stall_s:
        problems.append(f"no queued request made progress for {gate.stalled_s():.0f} s")
    return problems


class Placement(StrEnum):
    """Where a registered model's weights are."""

    UNLOADED = "unloaded"
    ON_DEVICE = "on_device"  # on the compute device the studio was started with
    ON_HOST = "on_host"  # loaded on the CPU while the device is lent to training
    OFFLOADED = "offloaded"  # moved off the device (kept on the CPU or dropped) until taken back


@dataclass
class ResidentModel:
    """A model that can hold device memory, and how to move it off the device and back.

    ``offload`` frees the device (moves the weights to the CPU, or drops them when they are
    cheap to load again); ``reload`` puts them back on the device, or forgets a CPU copy so
    the next use loads on the device. Both run inside the device slot. Lower ``order`` goes
    first when everything is moved off.
    """

    name: str
    estimate_bytes: Callable[[], int]
    offload: Callable[[], None]
    reload: Callable[[], None]
    order: int = 50
    placement: Placement = Placement.UNLOADED
    last_used: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "placement": self.placement.value,
            "estimate_mb": round(self.estimate_bytes() / 2**20, 1),
            "order": self.order,
        }


class ModelRegistry:
    """The models that may be resident on the device; changes happen inside the device slot."""

    def __init__(self, device: str, *, budget_bytes: int | None = None) -> None:
        self.device = device
        self.budget_bytes = budget_bytes
        self.lent_to: str | None = None  # who borrowed the device (training), if anyone
        self._models: dict[str, ResidentModel] = {}
        self._lock = threading.Lock()

    def register(
        self,
        name: str,
        *,
        estimate_bytes: Callable[[], int],
        offload: Callable[[], None],
        reload: Callable[[], None],
        order: int = 50,
    ) -> None:
        with self._lock:
            self._models[name] = ResidentModel(name, estimate_bytes, offload, reload, order)

    def __contains__(self, name: str) -> bool:
        return name in self._models

    def placement(self, name: str) -> Placement:
        return self._models[name].placement

    def target_device(self) -> str:
        """Where a model that loads now should go: the CPU while the device is lent."""
        return "cpu" if self.lent_to else self.device

    def touch(self, name: str) -> None:
        model = self._models.get(name)
        if model is not None:
            model.last_used = time.monotonic()

    def loaded(self, name: str) -> None:
        """The owner put ``name``'s weights on :meth:`target_device`; keep within the budget."""
        model = self._models[name]
        model.placement = Placement.ON_HOST if self.lent_to else Placement.ON_DEVICE
        model.last_used = time.monotonic()
        if model.placement is Placement.ON_DEVICE:
            self._within_budget(keep=name)

    def unloaded(self, name: str) -> None:
        """The owner dropped ``name``'s weights."""
        self._models[name].placement = Placement.UNLOADED

    def _within_budget(self, *, keep: str) -> None:
        if self.budget_bytes is None:
            return
        others = sorted(
            (m for m in self._models.values() if m.placement is Placement.ON_DEVICE and m.name != keep),
            key=lambda m: m.last_used,
        )
        while others and self.bytes_on_device() > self.budget_bytes:
            victim = others.pop(0)
            log.info("moving %s off the device to stay within the memory budget", victim.name)
            self._move_off(victim)

    def bytes_on_device(self) -> int:
        return sum(m.estimate_bytes() for m in self._models.values() if m.placement is Placement.ON_DEVICE)

    def on_device(self) -> list[str]:
        """Names of the models holding device memory now."""
        return [m.name for m in self._models.values() if m.placement is Placement.ON_DEVICE]

    @staticmethod
    def _move_off(model: ResidentModel) -> None:
        model.offload()
        if model.placement is not Placement.UNLOADED:  # an owner that dropped its weights said so
            model.placement = Placement.OFFLOADED

    def lend(self, to: str) -> list[str]:
        """Move every resident model off the device, in order; returns their names."""
        self.lent_to = to
        moved = []
        for model in sorted(self._models.values(), key=lambda m: m.order):
            if model.placement is Placement.ON_DEVICE:
                self._move_off(model)
                moved.append(model.name)
        if moved:
            log.info("device lent to %s; moved off: %s", to, ", ".join(moved))
        _free_cuda_cache()
        return moved

    def take_back(self) -> list[str]:
        """End the loan: models moved off (or loaded on the CPU meanwhile) come back to the device.

        Each owner's ``reload`` reports where its weights went (:meth:`loaded` or :meth:`unloaded`).
        """
        self.lent_to = None
        back = []
        for model in sorted(self._models.values(), key=lambda m: -m.order):
            if model.placement in (Placement.OFFLOADED, Placement.ON_HOST):
                model.reload()
                back.append(model.name)
        return back

    def rows(self) -> list[dict[str, Any]]:
        return [m.to_dict() for m in sorted(self._models.values(), key=lambda m: m.order)]


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def out_of_memory_as(message: str) -> Iterator[None]:
    """Turn a CUDA out-of-memory error inside the block into :class:`OutOfMemory` with ``message``,
    after handing the allocator's cached blocks back so the next request has room."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        _free_cuda_cache()
        raise OutOfMemory(message) from exc


def _zerogpu(fn: Callable[..., Any]) -> Callable[..., Any]:
    import spaces

    return spaces.GPU(fn)


class DeviceScheduler:
    """The one slot for device work, the one admission gate and the registry of resident models."""

    def __init__(
        self,
        device: str,
        *,
        max_queue: int = 32,
        memory_budget_bytes: int | None = None,
        zerogpu: bool = False,
        batch_memory_bytes: int = DEFAULT_BATCH_MEMORY_BYTES,
    ) -> None:
        self.device = device
        self.batch_memory_bytes = batch_memory_bytes
        self.gate = AdmissionGate(max_queue)
        self.models = ModelRegistry(device, budget_bytes=memory_budget_bytes)
        self.zerogpu = zerogpu
        self._slot = threading.RLock()
        self._holder: str | None = None
        self._held_since = 0.0
        self.jobs: dict[str, int] = {}  # how many times each kind of job took the slot

    @contextlib.contextmanager
    def slot(self, job: str) -> Iterator[None]:
        """Hold the device for ``job`` (re-entrant in one thread: a render inside a borrowed checkpoint)."""
        with self._slot:
            outer = self._holder
            if outer is None:
                self._holder, self._held_since = job, time.monotonic()
                self.jobs[job] = self.jobs.get(job, 0) + 1
            self.models.touch(job)
            try:
                yield
            finally:
                if outer is None:
                    self._holder = None

    def holds_slot(self) -> bool:
        """Whether the calling thread holds the slot."""
        return self._slot._is_owned()  # type: ignore[attr-defined]

    def holder(self) -> tuple[str, float] | None:
        """The job holding the slot and for how many seconds, or ``None``."""
        job = self._holder
        return (job, time.monotonic() - self._held_since) if job is not None else None

    def seed(self, seed: int, index: int = 0) -> None:
        """Seed torch for chunk ``index`` of a request seeded with ``seed``; only inside the slot.

        Chunk 0 uses ``seed`` itself (the same take as seeding one plain call), later chunks a
        seed derived from it, so a chunk's take does not depend on how the request was split
        into slot holds or what ran between them.
        """
        import torch

        if not self.holds_slot():
            raise RuntimeError("seed() outside the device slot would race with other requests")
        torch.manual_seed(chunk_seed(seed, index))

    def batch_rows(self, row_bytes: int) -> int:
        """How many rows of ``row_bytes`` each one batch may hold: the batch memory setting, and on
        CUDA no more than the memory free on the device now; at least 1."""
        budget = self.batch_memory_bytes
        if self.device.startswith("cuda") and not self.lent:
            import torch

            free, _ = torch.cuda.mem_get_info(torch.device(self.device))
            budget = min(budget, free)
        return max(1, budget // max(row_bytes, 1))

    def on_device(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as it must be called to reach the GPU (wrapped by ``spaces.GPU`` on ZeroGPU hardware)."""
        return _zerogpu(fn) if self.zerogpu else fn

    def lend(self, to: str = "training") -> list[str]:
        """Free the device for another process: every registered model moves off it."""
        with self.slot("lend"):
            return self.models.lend(to)

    def take_back(self) -> list[str]:
        with self.slot("take back"):
            return self.models.take_back()

    @property
    def lent(self) -> bool:
        return self.models.lent_to is not None

    def status(self) -> dict[str, Any]:
        """Plain data for /health: the device, who holds it, the queue and the resident models."""
        held = self.holder()
        return {
            "device": self.device,
            "lent_to": self.models.lent_to,
            "busy_with": held[0] if held else None,
            "busy_for_s": round(held[1], 1) if held else 0.0,
            "queue_depth": self.gate.depth,
            "models": self.models.rows(),
        }
