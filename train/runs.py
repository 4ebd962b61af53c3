"""Training runs on disk: ``outputs/runs/<run>/`` and its ``run.json``, losses and checkpoints.

The child process writes ``run.json`` (atomically); the UI only reads it, and marks a run
failed when its recorded process is gone while the file still says it is running (a
``kill -9``, a crash, a reboot). A restarted UI therefore re-attaches to whatever runs.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import fs, plots
from core.errors import InvalidInput
from core.fs import child

ACTIVE = ("queued", "running")
LOSS_TAGS = {
    "TrainIterStats/loss_text_ce": "train text CE",
    "TrainIterStats/loss_mel_ce": "train mel CE",
    "EvalStats/avg_loss": "eval loss",
}
_CHECKPOINT = re.compile(r"^(checkpoint|best_model)_(\d+)\.(pth|pt|safetensors)$")


def pid_alive(pid: int | None) -> bool:
    """True when ``pid`` is a live training worker (not a zombie, not a recycled pid)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return b"train.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (not Linux): trust kill(0)


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

    def folder(self, run: str) -> Path:
        name = (run or "").strip() if isinstance(run, str) else ""
        try:
            path = child(self.root, name, what="run name")
        except InvalidInput:
            raise InvalidInput(f"'{run}' is not a run name.") from None
        if name.startswith(".") or not (path / "run.json").is_file():
            raise InvalidInput(f"There is no training run '{name}'.")
        return path

    def new_folder(self, base: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^\w-]+", "-", base.casefold()).strip("-_") or "run"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.root / f"{stem}-{stamp}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = self.root / f"{stem}-{stamp}-{suffix}"
        path.mkdir()
        return path

    def read(self, folder: Path) -> dict[str, Any]:
        try:
            return json.loads((folder / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"The run {folder.name} has an unreadable run.json: {exc}") from exc

    def write(self, folder: Path, **changes: Any) -> dict[str, Any]:
        state = self.read(folder) if (folder / "run.json").is_file() else {}
        state.update(changes, updated=time.time())
        fs.write_json(folder / "run.json", state)
        return state

    def status(self, run: str) -> dict[str, Any]:
        """The run's state, corrected when its process died without saying so."""
        folder = self.folder(run)
        state = self.read(folder)
        if state.get("state") in ACTIVE and not pid_alive(state.get("pid")) and state.get("state") != "queued":
            state = self.write(
                folder,
                state="failed",
                error="The training process ended unexpectedly (killed or crashed). Resume it to continue.",
            )
        state["run"] = folder.name
        state["checkpoints"] = [c.to_dict() for c in self.checkpoints(folder)]
        state["samples"] = self.samples(folder)
        return state

    def list(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        runs = []
        for folder in sorted(self.root.iterdir(), reverse=True):
            if (folder / "run.json").is_file():
                try:
                    runs.append(self.status(folder.name))
                except InvalidInput:
                    continue
        return runs

    def active(self) -> dict[str, Any] | None:
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
