"""Training runs on disk: ``outputs/runs/<run>/`` with its records, losses and checkpoints.

A run has two records (see :mod:`train.run_state`): ``run.json``, the lifecycle, written only
here in the parent, and ``progress.json``, written only by the training child. When a run's
child is gone while its lifecycle still says it runs (it exited while no studio watched it,
a ``kill -9``, a crash, a reboot), reading the run settles it: the child's own account of its
end if it left one, failed otherwise. A run left queued by a studio that is gone reads as
interrupted. A restarted UI therefore re-attaches to whatever still runs.

Several studio processes (replicas) may share ``root``. Lifecycle changes take a file lock
(``root/.runs.lock``), and the one training of all replicas holds ``root/.training.lock``
(see :mod:`train.runner`) as long as it runs: while another process holds it, a run this
process does not watch is never settled from here, since its child may live on another machine.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import fs, locks, plots
from core.errors import InvalidInput
from core.fs import child
from train.run_state import (
    ACTIVE,
    RUN_FILE,
    Lifecycle,
    Outcome,
    RunState,
    read_lifecycle,
    read_progress,
    view,
    write_lifecycle,
)

LOSS_TAGS = {
    "TrainIterStats/loss_text_ce": "train text CE",
    "TrainIterStats/loss_mel_ce": "train mel CE",
    "EvalStats/avg_loss": "eval loss",
}
_CHECKPOINT = re.compile(r"^(checkpoint|best_model)_(\d+)\.(pth|pt|safetensors)$")
UNEXPECTED_END = "The training process ended unexpectedly ({reason}). Resume it to continue."
STALE_QUEUED = (
    "The studio stopped before this run's training process started. Resume it, or start a new run "
    "if it has no checkpoint yet."
)
TRAINING_LOCK = ".training.lock"
# which runs this process watches; lifecycle changes themselves take the run's file lock
_LIFECYCLE_LOCK = threading.RLock()
# runs whose child a runner in this process waits for: that runner settles them, with the exit code
_WATCHED: dict[Path, int] = {}


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    best: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.path),
            "step": self.step,
            "best": self.best,
            "size_mb": round(self.path.stat().st_size / 1e6, 1),
        }


class RunStore:
    """Reads and writes the runs under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._loss_cache: dict[Path, tuple[tuple[tuple[str, int, float], ...], list[dict[str, Any]]]] = {}

    @property
    def training_lock(self) -> Path:
        """The file the process that runs a training holds locked while it runs (the slot of all replicas)."""
        return self.root / TRAINING_LOCK

    def training_elsewhere(self) -> bool:
        """Whether another process (a replica, or a training child that outlived its studio) holds the slot."""
        probe = locks.try_hold(self.training_lock)
        if probe is None:
            return True
        probe.release()
        return False

    def _changing(self) -> locks.FileLock:
        """Lifecycle changes are read-modify-write; the watcher, a cancel and polls of every replica may race.

        They are short, so one lock beside the runs serves them all.
        """
        return locks.FileLock(self.root / ".runs.lock", what="training runs")

    def folder(self, run: str) -> Path:
        name = (run or "").strip() if isinstance(run, str) else ""
        try:
            path = child(self.root, name, what="run name")
        except InvalidInput:
            raise InvalidInput(f"'{run}' is not a run name.") from None
        if name.startswith(".") or not (path / RUN_FILE).is_file():
            raise InvalidInput(f"There is no training run '{name}'.")
        return path

    def new_folder(self, base: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        stem = fs.slug(base, fallback="run")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.root / f"{stem}-{stamp}"
        suffix = 1
        while True:
            try:
                path.mkdir()  # atomic: two replicas starting runs the same second get different folders
                return path
            except FileExistsError:
                suffix += 1
                path = self.root / f"{stem}-{stamp}-{suffix}"

    def read(self, folder: Path) -> dict[str, Any]:
        """The run's records as one plain dict (see :func:`train.run_state.view`)."""
        lifecycle = read_lifecycle(folder)
        return view(lifecycle, read_progress(folder, lifecycle))

    def lifecycle(self, folder: Path) -> Lifecycle:
        return read_lifecycle(folder)

    def create(self, folder: Path, lifecycle: Lifecycle) -> Lifecycle:
        """Record a new run (the parent's ``run.json``)."""
        with self._changing():
            return write_lifecycle(folder, lifecycle)

    def transition(self, folder: Path, target: RunState, **changes: Any) -> Lifecycle:
        """Move the run to ``target``; :class:`~train.run_state.IllegalTransition` if its state does not allow it."""
        with self._changing():
            return write_lifecycle(folder, read_lifecycle(folder).transition(target, **changes))

    @staticmethod
    def watch(folder: Path, pid: int) -> None:
        """A runner in this process waits for the run's child ``pid`` and will settle the run."""
        with _LIFECYCLE_LOCK:
            _WATCHED[folder.resolve()] = pid

    @staticmethod
    def unwatch(folder: Path, pid: int) -> None:
        """The wait for ``pid`` is over (a later attempt's child may be watched by now)."""
        with _LIFECYCLE_LOCK:
            if _WATCHED.get(folder.resolve()) == pid:
                del _WATCHED[folder.resolve()]

    def settle(self, folder: Path, *, code: int | None = None, cancel_requested: bool = False) -> Lifecycle:
        """Turn a gone child (or a queued run whose studio is gone) into its final state, once.

        ``code`` is the child's exit status when the caller waited for it; without it the child
        counts as gone only when its recorded process is. The child's own outcome in
        ``progress.json`` wins; without one, a SIGINT exit or a requested cancel is "cancelled"
        and anything else "failed".
        """
        with self._changing():
            lifecycle = read_lifecycle(folder)
            if lifecycle.state is RunState.QUEUED:
                if lifecycle.owner_alive():
                    return lifecycle
                return write_lifecycle(
                    folder, lifecycle.transition(RunState.INTERRUPTED, error=STALE_QUEUED, finished=time.time())
                )
            if lifecycle.state is not RunState.RUNNING or (code is None and lifecycle.worker_alive()):
                return lifecycle
            progress = read_progress(folder, lifecycle)
            outcome = progress.outcome_of(lifecycle)
            finished = progress.finished if outcome else time.time()
            if outcome is Outcome.COMPLETED:
                settled = lifecycle.transition(RunState.COMPLETED, finished=finished)
            elif outcome is Outcome.FAILED:
                settled = lifecycle.transition(RunState.FAILED, error=progress.error, finished=finished)
            elif outcome is Outcome.CANCELLED or cancel_requested or code in (130, -signal.SIGINT):
                settled = lifecycle.transition(RunState.CANCELLED, finished=finished)
            else:
                if code is None:
                    reason = "killed or crashed"
                else:
                    reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                settled = lifecycle.transition(
                    RunState.FAILED, error=UNEXPECTED_END.format(reason=reason), finished=finished
                )
            return write_lifecycle(folder, settled)

    def status(self, run: str) -> dict[str, Any]:
        """The run's state, settled when its process ended without a studio watching it."""
        folder = self.folder(run)
        lifecycle = self.lifecycle(folder)
        if lifecycle.active and folder.resolve() not in _WATCHED and not self.training_elsewhere():
            lifecycle = self.settle(folder)
        state = view(lifecycle, read_progress(folder, lifecycle))
        checkpoints = self.checkpoints(folder)
        if not lifecycle.active:  # a kill may leave a checkpoint newer than the last progress report
            state["step"] = max([state["step"], *(c.step for c in checkpoints if not c.best)])
        state["run"] = folder.name
        state["checkpoints"] = [c.to_dict() for c in checkpoints]
        state["samples"] = self.samples(folder)
        return state

    def list(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        runs = []
        for folder in sorted(self.root.iterdir(), reverse=True):
            if (folder / RUN_FILE).is_file():
                try:
                    runs.append(self.status(folder.name))
                except InvalidInput:
                    continue
        return runs

    def active(self) -> dict[str, Any] | None:
        """The run that holds the training slot: running, or queued by a studio that is still up."""
        return next((run for run in self.list() if run.get("state") in ACTIVE), None)

    @staticmethod
    def trainer_dir(folder: Path) -> Path | None:
        found = sorted((folder / "trainer").glob("*/config.json"))
        return found[-1].parent if found else None

    def checkpoints(self, folder: Path) -> list[Checkpoint]:
        trainer = self.trainer_dir(folder)
        if trainer is None:
            return []
        found = []
        for path in trainer.iterdir():
            match = _CHECKPOINT.match(path.name)
            if match:
                found.append(Checkpoint(path, int(match.group(2)), match.group(1) == "best_model"))
        return sorted(found, key=lambda c: (c.step, c.best))

    @staticmethod
    def samples(folder: Path) -> dict[str, list[str]]:
        root = folder / "samples"
        if not root.is_dir():
            return {}
        steps = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
        return {p.name: sorted(str(w) for w in p.glob("*.wav")) for p in steps}

    def losses(self, folder: Path) -> list[dict[str, Any]]:
        """Rows (step, series, value) of the losses in the run's TensorBoard event files."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        trainer = self.trainer_dir(folder)
        if trainer is None:
            return []
        stamp = tuple(
            (p.name, p.stat().st_size, p.stat().st_mtime) for p in sorted(trainer.glob("events.out.tfevents.*"))
        )
        cached = self._loss_cache.get(trainer)
        if cached is not None and cached[0] == stamp:
            return cached[1]  # the tab polls every few seconds; re-read only when the events changed
        rows: list[dict[str, Any]] = []
        accumulator = EventAccumulator(str(trainer), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags = set(accumulator.Tags().get("scalars", []))
        for tag, label in LOSS_TAGS.items():
            if tag in tags:
                rows += [{"step": e.step, "series": label, "value": float(e.value)} for e in accumulator.Scalars(tag)]
        self._loss_cache[trainer] = (stamp, rows)
        return rows

    def loss_plot(self, folder: Path) -> Path | None:
        """A PNG of the loss curves (log scale: mel CE and text CE differ by orders of magnitude)."""
        rows = self.losses(folder)
        if not rows:
            return None
        target = folder / "plots" / "losses.png"
        stamp = folder / "plots" / ".losses-rows"
        fingerprint = f"{len(rows)}:{rows[-1]['step']}:{rows[-1]['value']}"
        if target.is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
            return target
        fig, ax = plots.subplots()
        for label in LOSS_TAGS.values():
            points = [(r["step"], r["value"]) for r in rows if r["series"] == label and r["value"] > 0]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, markersize=3, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        plots.save_png(fig, target)
        fs.write_text(stamp, fingerprint)
        return target

    def log_tail(self, folder: Path, lines: int = 40) -> str:
        log = folder / "train.log"
        if not log.is_file():
            return ""
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - 20000))
            text = handle.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])
