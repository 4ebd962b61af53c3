"""Start, watch, cancel and resume fine-tuning runs; the training itself runs in a child process.

One training at a time. While it runs, the resident engine moves to the CPU so the
child has the GPU, and comes back when the child ends. The child lives in its own
process group: cancel sends SIGINT (the trainer saves, then stops), then kills the
group if it does not stop in time. A crash or a ``kill -9`` of the child leaves the UI
serving; the run reads as failed and can be resumed from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from core import fs
from core.errors import InvalidInput
from core.model_files import ProgressCallback
from core.settings import resolve_device
from core.xtts.languages import LANGUAGES
from train import preflight
from train.config import DEFAULT_TEST_SENTENCES, TrainingConfig, read_config
from train.coqui_csv import read_metadata
from train.runs import ACTIVE, RunStore, pid_alive

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESUMABLE = ("cancelled", "failed", "interrupted")


class TrainingRunner:
    def __init__(
        self,
        store: RunStore,
        *,
        device: str = "cpu",
        on_start: Callable[[], None] | None = None,
        on_finish: Callable[[], None] | None = None,
        prepare_base: Callable[[Path, ProgressCallback | None], Path] | None = None,
    ) -> None:
        self.store = store
        self.device = resolve_device(device)
        self.on_start = on_start or (lambda: None)
        self.on_finish = on_finish or (lambda: None)
        self.prepare_base = prepare_base or (lambda base, progress: base)
        self._lock = threading.Lock()
        self._children: dict[str, subprocess.Popen] = {}

    # ---- starting ------------------------------------------------------------------------
    def with_defaults(self, config: TrainingConfig) -> TrainingConfig:
        """Fill the reference clip and test sentences a run needs for its samples."""
        dataset = Path(config.dataset)
        reference = config.reference_clip
        if not reference and (dataset / "metadata_train.csv").is_file():
            rows = read_metadata(dataset / "metadata_train.csv")
            reference = str(dataset / rows[0]["audio_file"]) if rows else ""
        sentences = [s.strip() for s in config.test_sentences if s.strip()] or DEFAULT_TEST_SENTENCES.get(
            config.language, DEFAULT_TEST_SENTENCES["en"]
        )
        return replace(config, reference_clip=reference, test_sentences=sentences)

    def start(self, config: TrainingConfig, *, progress: ProgressCallback | None = None) -> str:
        """Check everything, create the run folder, start the child; returns the run name."""
        if config.language not in LANGUAGES:
            raise InvalidInput(f"Unknown language '{config.language}'. Choose one of: {', '.join(LANGUAGES)}.")
        with self._lock:
            busy = self.store.active()
            if busy is not None:
                raise InvalidInput(
                    f"A training is already running ({busy['run']}). Cancel it or wait for it to finish."
                )
            base = self.prepare_base(Path(config.base_model), progress)
            config = self.with_defaults(replace(config, base_model=str(base)))
            found = preflight.check(config, runs_root=self.store.root, device=self.device)
            folder = self.store.new_folder(config.run_name)
            fs.write_text(folder / "run_config.json", config.to_json())
            steps_per_epoch = config.steps_per_epoch(found.train_clips)
            self.store.write(
                folder,
                state="queued",
                created=time.time(),
                save_step=config.save_interval(found.train_clips),
                total_steps=steps_per_epoch * config.epochs,
                step=0,
                epoch=0,
                params=config.__dict__,
                preflight=found.to_dict(),
            )
            self._spawn(folder)
            return folder.name

    def _spawn(self, folder: Path) -> None:
        self.on_start()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        with open(folder / "train.log", "ab") as sink:
            child = subprocess.Popen(
                [sys.executable, "-m", "train.worker", str(folder)],
                cwd=PROJECT_ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: a cancel reaches its loader workers too
            )
        self.store.write(folder, state="running", pid=child.pid)
        self._children[folder.name] = child
        threading.Thread(target=self._watch, args=(folder, child), name=f"watch-{folder.name}", daemon=True).start()

    def _watch(self, folder: Path, child: subprocess.Popen) -> None:
        code = child.wait()
        self._children.pop(folder.name, None)
        state = self.store.read(folder)
        if state.get("state") in ACTIVE:  # the child ended without recording how
            saved = [c.step for c in self.store.checkpoints(folder)]
            progress = {"step": max([*saved, int(state.get("step", 0))]), "finished": time.time()}
            if code in (130, -signal.SIGINT):  # the trainer's exit after saving on SIGINT, or a SIGINT before it ran
                self.store.write(folder, state="cancelled", **progress)
            else:
                reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                message = f"The training process ended unexpectedly ({reason}). Resume it to continue."
                self.store.write(folder, state="failed", error=message, **progress)
        try:
            self.on_finish()
        except Exception:
            log.exception("could not take the GPU back after training")

    def reattach(self) -> str | None:
        """After a UI restart: give a still-running training the GPU and take it back when it ends."""
        active = self.store.active()
        if active is None or not pid_alive(active.get("pid")):
            return None
        run, pid = active["run"], int(active["pid"])
        self.on_start()

        def follow() -> None:
            while pid_alive(pid):
                time.sleep(1.0)
            self.store.status(run)  # records a failure if the child died without saying so
            try:
                self.on_finish()
            except Exception:
                log.exception("could not take the GPU back after training")

        threading.Thread(target=follow, name=f"follow-{run}", daemon=True).start()
        return run

    # ---- controlling ---------------------------------------------------------------------
    def cancel(self, run: str, *, timeout: float = 120.0) -> dict[str, Any]:
        """Ask the trainer to save and stop (SIGINT); kill its process group if it does not."""
        folder = self.store.folder(run)
        state = self.store.status(run)
        if state.get("state") not in ACTIVE:
            raise InvalidInput(f"The run {run} is not running (it is {state.get('state')}).")
        pid = int(state["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            log.warning("run %s did not stop within %.0fs; killing its process group", run, timeout)
            os.killpg(pid, signal.SIGKILL)
        child = self._children.get(run)
        if child is not None:
            child.wait(timeout=30)
        if self.store.read(folder).get("state") in ACTIVE:
            self.store.write(folder, state="cancelled", finished=time.time())
        return self.store.status(run)

    def resume(self, run: str) -> str:
        """Continue a cancelled, failed or interrupted run from its last checkpoint; steps go on from there."""
        with self._lock:
            folder = self.store.folder(run)
            state = self.store.status(run)
            if state.get("state") not in RESUMABLE:
                raise InvalidInput(f"Only cancelled or failed runs can be resumed; {run} is {state.get('state')}.")
            busy = self.store.active()
            if busy is not None:
                raise InvalidInput(
                    f"A training is already running ({busy['run']}). Cancel it or wait for it to finish."
                )
            trainer_dir = self.store.trainer_dir(folder)
            if trainer_dir is None or not any(not c.best for c in self.store.checkpoints(folder)):
                raise InvalidInput(f"The run {run} has no checkpoint to resume from; start a new run instead.")
            read_config(folder / "run_config.json")
            self._set_aside_broken_checkpoints(folder)
            self.store.write(
                folder, state="queued", error=None, resume_from=str(trainer_dir), resumes=int(state.get("resumes", 0)) + 1,
                elapsed_before_s=float(state.get("elapsed_s", 0)),
            )  # fmt: skip
            self._spawn(folder)
            return run

    def _set_aside_broken_checkpoints(self, folder: Path) -> None:
        """A process killed while saving leaves a truncated checkpoint; the trainer would resume
        from it (it picks the highest step), so rename it out of the way first."""
        for checkpoint in self.store.checkpoints(folder):
            if checkpoint.path.suffix in (".pth", ".pt") and not zipfile.is_zipfile(checkpoint.path):
                checkpoint.path.rename(checkpoint.path.with_name(checkpoint.path.name + ".partial"))
                log.warning("set aside the truncated checkpoint %s", checkpoint.path.name)

    def status(self, run: str) -> dict[str, Any]:
        state = self.store.status(run)
        step, total, elapsed = (
            int(state.get("step", 0)),
            int(state.get("total_steps", 0)),
            float(state.get("elapsed_s", 0)),
        )
        if state.get("state") == "running" and step > 0 and total:
            state["eta_s"] = round(elapsed / max(step, 1) * max(total - step, 0), 1)
        return state

    def wait(self, run: str, *, timeout: float = 3600.0) -> dict[str, Any]:
        """Block until the run leaves queued/running (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.status(run)
            if state.get("state") not in ACTIVE:
                child = self._children.get(run)
                if child is not None:
                    child.wait(timeout=30)
                return state
            time.sleep(0.1)
        raise TimeoutError(f"run {run} still running after {timeout}s")
