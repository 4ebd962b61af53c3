"""Start, watch, cancel and resume fine-tuning runs; the training itself runs in a child process.

One training at a time. While it runs, the device is lent (every resident model moves off
it) so the child has the GPU, and it comes back when the child ends. The loan starts before
the pre-flight checks, so they measure the GPU memory the child will really have, and it is
given back if anything fails before the child runs. The child lives in its own process
group: cancel sends SIGINT (the trainer saves, then stops), then kills the group if it does
not stop in time. A crash or a ``kill -9`` of the child leaves the UI serving; the run reads
as failed and can be resumed from its last checkpoint.

One training across all replicas too: the runner that starts a child takes
``runs/.training.lock`` (see :class:`train.runs.RunStore`) and hands the locked descriptor to
the child, so the lock lasts exactly as long as the training, even if this studio restarts
meanwhile. Another replica's start is refused with "Training is running on another replica"
and keeps its own device.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from core import fs, locks
from core.errors import InvalidInput, StudioError
from core.model_files import ProgressCallback
from core.settings import resolve_device
from core.xtts.languages import LANGUAGES
from train import preflight
from train.config import DEFAULT_TEST_SENTENCES, TrainingConfig, read_config
from train.coqui_csv import TRAIN_FILE, read_metadata
from train.launch import RANKS_DIR, child_command, cpu_ranks
from train.run_state import (
    ACTIVE,
    RESUMABLE,
    Lifecycle,
    RunState,
    pid_alive,
    process_alive,
    process_start_time,
)
from train.runs import RunStore

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class TrainingRunner:
    def __init__(
        self,
        store: RunStore,
        *,
        device: str = "cpu",
        on_start: Callable[[], None] | None = None,
        on_finish: Callable[[], None] | None = None,
        prepare_base: Callable[[Path, ProgressCallback | None], Path] | None = None,
        python: str = sys.executable,
    ) -> None:
        """``on_start`` lends the device to training and ``on_finish`` takes it back; ``python``
        runs the child (``python -m train.worker RUN_DIR``)."""
        self.store = store
        self.device = resolve_device(device)
        self.on_start = on_start or (lambda: None)
        self.on_finish = on_finish or (lambda: None)
        self.prepare_base = prepare_base or (lambda base, progress: base)
        self.python = python
        self._lock = threading.Lock()
        self._children: dict[str, subprocess.Popen] = {}
        self._watchers: dict[str, threading.Thread] = {}
        self._slots: dict[str, locks.Hold] = {}

    # ---- starting ------------------------------------------------------------------------
    def with_defaults(self, config: TrainingConfig) -> TrainingConfig:
        """Fill the reference clip and test sentences a run needs for its samples."""
        dataset = Path(config.dataset)
        reference = config.reference_clip
        if not reference and (dataset / TRAIN_FILE).is_file():
            rows = read_metadata(dataset / TRAIN_FILE)
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
            self._refuse_if_busy()
            with self._training_slot() as slot:
                base = self.prepare_base(Path(config.base_model), progress)
                config = self.with_defaults(replace(config, base_model=str(base)))
                with self._device_lent():
                    found = preflight.check(config, runs_root=self.store.root, device=self.device)
                    folder = self.store.new_folder(config.run_name)
                    fs.write_text(folder / "run_config.json", config.to_json())
                    steps_per_epoch = config.steps_per_epoch(found.train_clips)
                    self.store.create(
                        folder,
                        Lifecycle.queued(
                            save_step=config.save_interval(found.train_clips), total_steps=steps_per_epoch * config.epochs,
                            params=config.__dict__, preflight=found.to_dict(),
                        ),
                    )  # fmt: skip
                    self._spawn(folder, slot)
            return folder.name

    def _refuse_if_busy(self) -> None:
        busy = self.store.active()
        if busy is None:
            return
        here = busy["run"] in self._children or pid_alive(busy.get("pid"), busy.get("pid_started"))
        if not here and self.store.training_elsewhere():
            raise InvalidInput(
                f"Training is running on another replica ({busy['run']}); one training runs at a time across "
                "the studio processes sharing this data folder. Wait for it to finish or cancel it there."
            )
        raise InvalidInput(f"A training is already running ({busy['run']}). Cancel it or wait for it to finish.")

    @contextlib.contextmanager
    def _training_slot(self) -> Iterator[locks.Hold]:
        """The slot of all replicas, held until the child ends; given up if the start fails.

        A moment's retry covers another replica that only probes the slot while reading its runs.
        """
        deadline = time.monotonic() + 1.0
        while (slot := locks.try_hold(self.store.training_lock)) is None:
            if time.monotonic() > deadline:
                raise InvalidInput(
                    "Training is running on another replica (a studio process sharing this data folder); "
                    "one training runs at a time. Wait for it to finish or cancel it there."
                )
            time.sleep(0.05)
        try:
            yield slot
        except BaseException:
            slot.release()
            raise

    @contextlib.contextmanager
    def _device_lent(self) -> Iterator[None]:
        """Lend the device for a child about to start; take it back if the start fails.

        Once the child runs, its watcher takes the device back when it ends.
        """
        try:
            self.on_start()  # a loan that fails half-way is taken back too
            yield
        except BaseException:
            self._take_back()
            raise

    def _take_back(self) -> None:
        try:
            self.on_finish()
        except Exception:
            log.exception("could not take the GPU back after training")

    def _spawn(self, folder: Path, slot: locks.Hold) -> None:
        """Start the child for the queued run in ``folder``; if it cannot start, the run is failed.

        The child inherits ``slot``'s locked descriptor; the watcher releases it when the child ends.
        """
        child: subprocess.Popen | None = None
        try:
            gpus = read_config(folder / "run_config.json").gpus
            launch = child_command(self.python, folder, gpus, device=self.device, on_cpu=cpu_ranks())
            base = {**os.environ, "PYTHONUNBUFFERED": "1"}
            env = {**(base if gpus else gpu_env(base, self.device)), **launch.env}  # a GPU list maps itself
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
            with open(folder / "train.log", "ab") as sink:
                child = subprocess.Popen(
                    launch.command,
                    cwd=PROJECT_ROOT,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,  # its own process group: a cancel reaches its loader workers too
                    pass_fds=(slot.fd,),
                )
            self._slots[folder.name] = slot
            self.store.watch(folder, child.pid)
            self.store.transition(
                folder, RunState.RUNNING, pid=child.pid, pid_started=process_start_time(child.pid), started=time.time(),
                devices=launch.devices, world_size=launch.world_size,
            )  # fmt: skip
            watcher = threading.Thread(
                target=self._watch, args=(folder, child), name=f"watch-{folder.name}", daemon=True
            )
            self._children[folder.name], self._watchers[folder.name] = child, watcher
            watcher.start()
        except Exception as exc:
            self._slots.pop(folder.name, None)  # the caller gives the slot up
            if child is not None:
                self.store.unwatch(folder, child.pid)
                self._children.pop(folder.name, None)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            reason = f"The training process could not start: {exc}"
            try:
                self.store.transition(folder, RunState.FAILED, error=reason, finished=time.time())
            except Exception:
                log.exception("could not record that run %s failed to start", folder.name)
            raise StudioError(reason) from exc

    def _watch(self, folder: Path, child: subprocess.Popen) -> None:
        code = child.wait()
        try:
            self.store.settle(folder, code=code)
        except Exception:
            log.exception("could not record how run %s ended", folder.name)
        finally:
            self.store.unwatch(folder, child.pid)
            if self._children.get(folder.name) is child:
                self._children.pop(folder.name)
            slot = self._slots.pop(folder.name, None)
            if slot is not None:
                slot.release()
            self._take_back()

    def _join_watcher(self, run: str) -> None:
        """Wait until this runner's watcher of ``run`` recorded the end and took the device back."""
        watcher = self._watchers.get(run)
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=60)
            if not watcher.is_alive():
                self._watchers.pop(run, None)

    def reattach(self) -> str | None:
        """After a UI restart: give a still-running training the GPU and take it back when it ends.

        A training whose studio still runs (another replica on this machine) is that studio's.
        """
        active = self.store.active()
        if active is None or not pid_alive(active.get("pid"), active.get("pid_started")):
            return None
        owner = active.get("owner_pid")
        if owner != os.getpid() and process_alive(owner, active.get("owner_started")):
            return None
        run, pid, started = active["run"], int(active["pid"]), active.get("pid_started")
        self.on_start()

        def follow() -> None:
            while pid_alive(pid, started):
                time.sleep(1.0)
            try:
                self.store.status(run)  # records how the child ended
            except Exception:
                log.exception("could not record how run %s ended", run)
            self._take_back()

        threading.Thread(target=follow, name=f"follow-{run}", daemon=True).start()
        return run

    # ---- controlling ---------------------------------------------------------------------
    def cancel(self, run: str, *, timeout: float = 120.0) -> dict[str, Any]:
        """Ask the trainer to save and stop (SIGINT); kill its process group if it does not."""
        folder = self.store.folder(run)
        state = self.store.status(run)
        if state.get("state") not in ACTIVE:
            raise InvalidInput(f"The run {run} is not running (it is {state.get('state')}).")
        if state.get("state") == RunState.QUEUED:
            raise InvalidInput(f"The run {run} is still starting; cancel it once it runs.")
        pid, started = int(state["pid"]), state.get("pid_started")
        ranks = self._rank_processes(folder, state)
        # torchrun would pass a SIGINT on to the ranks but kill them 30 s later, perhaps mid-save,
        # so the ranks get it themselves; before they have recorded their processes, torchrun does
        for group in ranks or [pid]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while pid_alive(pid, started) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid, started):
            log.warning("run %s did not stop within %.0fs; killing its process group", run, timeout)
            for group in [pid, *self._rank_processes(folder, state)]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
        child = self._children.get(run)
        code = child.wait(timeout=30) if child is not None else None
        self.store.settle(folder, code=code, cancel_requested=True)
        self._join_watcher(run)
        return self.status(run)

    @staticmethod
    def _rank_processes(folder: Path, state: dict[str, Any]) -> list[int]:
        """The live ranks of a multi-GPU run's current attempt, as process groups (each rank leads its own)."""
        if int(state.get("world_size", 1)) < 2:
            return []
        groups = []
        for record in sorted((folder / RANKS_DIR).glob("*/rank.json")):
            try:
                rank = json.loads(record.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # being written: the fallback signal reaches it through torchrun
            if rank.get("attempt") == state.get("resumes", 0) and pid_alive(rank.get("pid"), rank.get("pid_started")):
                groups.append(os.getpgid(int(rank["pid"])))
        return groups

    def resume(self, run: str) -> str:
        """Continue a cancelled, failed or interrupted run from its last checkpoint; steps go on from there."""
        with self._lock:
            folder = self.store.folder(run)
            state = self.store.status(run)
            if state.get("state") not in RESUMABLE:
                raise InvalidInput(
                    f"Only cancelled, failed or interrupted runs can be resumed; {run} is {state.get('state')}."
                )
            self._refuse_if_busy()
            trainer_dir = self.store.trainer_dir(folder)
            if trainer_dir is None or not any(not c.best for c in self.store.checkpoints(folder)):
                raise InvalidInput(f"The run {run} has no checkpoint to resume from; start a new run instead.")
            read_config(folder / "run_config.json")
            with self._training_slot() as slot:
                self._set_aside_broken_checkpoints(folder)
                with self._device_lent():
                    owner = os.getpid()
                    self.store.transition(
                        folder, RunState.QUEUED, error=None, finished=None, resume_from=str(trainer_dir),
                        resumes=int(state.get("resumes", 0)) + 1, elapsed_before_s=float(state.get("elapsed_s", 0)),
                        owner_pid=owner, owner_started=process_start_time(owner), pid=None, pid_started=None,
                    )  # fmt: skip
                    self._spawn(folder, slot)
            return run

    def _set_aside_broken_checkpoints(self, folder: Path) -> None:
        """A process killed while saving leaves a truncated checkpoint; the trainer would resume
        from it (it picks the highest step), so rename it out of the way first."""
        for checkpoint in self.store.checkpoints(folder):
            if checkpoint.path.suffix in (".pth", ".pt") and not zipfile.is_zipfile(checkpoint.path):
                checkpoint.path.rename(checkpoint.path.with_name(checkpoint.path.name + ".partial"))
                log.warning("set aside the truncated checkpoint %s", checkpoint.path.name)

    def status(self, run: str) -> dict[str, Any]:
        """The run's state as :meth:`RunStore.status` gives it, with an ETA while it runs."""
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
                self._join_watcher(run)
                return state
            time.sleep(0.1)
        raise TimeoutError(f"run {run} still running after {timeout}s")


def gpu_env(env: dict[str, str], device: str) -> dict[str, str]:
    """``env`` for a training child that must use ``device`` (``cuda:N``) as its only GPU.

    The trainer takes the first GPU it sees; a replica started with ``--device cuda:1`` lends
    that one, so the child sees only it (counted within any ``CUDA_VISIBLE_DEVICES`` the studio had).
    """
    kind, _, index = device.partition(":")
    if kind != "cuda" or not index.isdigit():
        return env
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    chosen = visible[int(index)] if int(index) < len(visible) else index
    return {**env, "CUDA_VISIBLE_DEVICES": chosen}
