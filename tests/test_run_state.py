"""The typed training state: transitions, one writer per file, old run folders, rollbacks, stale runs, start-up."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import webui
from core.device import DeviceScheduler, Placement
from core.errors import InvalidInput, StudioError
from core.settings import parse_settings
from core.xtts.engine import VoiceSpec, XTTSEngine
from core.xtts.profiles import PROFILES
from tests.conftest import ROOT
from tests.test_training import config_for, make_dataset, wait_for
from train import preflight
from train.run_state import (
    IllegalTransition,
    Lifecycle,
    Outcome,
    Progress,
    RunState,
    pid_alive,
    process_alive,
    process_start_time,
    read_progress,
    write_progress,
)
from train.runner import TrainingRunner
from train.runs import RunStore

AUDITED_WORKER = '''
import os, runpy, sys

folder = os.path.realpath(sys.argv[-1])
log = open(os.environ["WRITES_LOG"], "a", buffering=1)


def hook(event, args):
    """Note every file this process opens for writing, or moves into place, inside the run folder."""
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)
        )
        targets = [path] if writing else []
    elif event == "os.rename":
        targets = [args[1]]
    else:
        return
    for target in targets:
        if isinstance(target, (str, bytes, os.PathLike)):
            resolved = os.path.realpath(os.fsdecode(target))
            if resolved.startswith(folder + os.sep):
                log.write(os.path.relpath(resolved, folder) + "\\n")


sys.addaudithook(hook)
sys.argv = [sys.argv[0], sys.argv[-1]]
runpy.run_module("train.worker", run_name="__main__", alter_sys=True)
'''


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("state-set"))


@pytest.fixture(scope="module")
def engine(tiny_xtts: Path, tmp_path_factory: pytest.TempPathFactory) -> XTTSEngine:
    """A tiny engine loaded on its own scheduler, whose device training borrows."""
    engine = XTTSEngine(
        scheduler=DeviceScheduler("cpu"), latents_dir=tmp_path_factory.mktemp("latents"), model_dir=tiny_xtts
    )
    engine.ensure_loaded()
    return engine


def audited_python(tmp_path: Path) -> tuple[str, Path]:
    """A ``python`` for the runner that runs the real worker and logs the files it writes in its run folder."""
    script = tmp_path / "audited_worker.py"
    script.write_text(AUDITED_WORKER)
    writes = tmp_path / "child-writes.log"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nWRITES_LOG="{writes}" exec "{sys.executable}" "{script}" "$@"\n')
    python.chmod(0o755)
    return str(python), writes


def written(log: Path) -> set[str]:
    """The files the audited child wrote, a temp file of an atomic write counted as its target."""
    return {re.sub(r"^\.(.+)\.\w+\.tmp$", r"\1", name) for name in log.read_text().split()}


def say(engine: XTTSEngine) -> int:
    voice = engine.conditioning(VoiceSpec(speaker=engine.speakers()[0]))
    audio = engine.synthesize(["A short sentence."], language="en", conditioning=voice, params=PROFILES["fast"], seed=1)
    return len(audio)


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def fake_worker() -> Iterator[subprocess.Popen]:
    """A live process whose command line names train.worker, as a training child's does."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "train.worker"])
    yield process
    process.kill()
    process.wait()


def write_run(folder: Path, record: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(record))
    return folder


# ---- transitions --------------------------------------------------------------------------------
def test_transitions_follow_the_life_of_a_run() -> None:
    queued = Lifecycle.queued(total_steps=10)
    running = queued.transition(RunState.RUNNING, pid=123)
    assert running.state is RunState.RUNNING and running.pid == 123 and queued.state is RunState.QUEUED
    done = running.transition(RunState.COMPLETED)
    for target in RunState:
        with pytest.raises(IllegalTransition, match=f"from completed to {target}"):
            done.transition(target)
    for stopped in (RunState.CANCELLED, RunState.FAILED):
        assert running.transition(stopped).transition(RunState.QUEUED).state is RunState.QUEUED  # a resume
    assert queued.transition(RunState.INTERRUPTED).transition(RunState.QUEUED).state is RunState.QUEUED
    refused = [
        (queued, RunState.COMPLETED), (queued, RunState.QUEUED), (running, RunState.QUEUED),
        (running, RunState.RUNNING), (running, RunState.INTERRUPTED), (running.transition(RunState.FAILED), RunState.RUNNING),
    ]  # fmt: skip
    for record, target in refused:
        with pytest.raises(IllegalTransition):
            record.transition(target)


def test_the_records_round_trip_through_their_files(tmp_path: Path) -> None:
    lifecycle = Lifecycle.queued(params={"epochs": 3}, save_step=4).transition(RunState.RUNNING, pid=7)
    assert Lifecycle.from_dict(json.loads(json.dumps(lifecycle.to_dict()))) == lifecycle
    progress = write_progress(tmp_path, Progress(step=5, epoch=1, outcome=Outcome.CANCELLED, attempt=2))
    assert read_progress(tmp_path) == progress and sorted(p.name for p in tmp_path.iterdir()) == ["progress.json"]


def test_a_recycled_pid_is_not_the_worker(fake_worker: subprocess.Popen) -> None:
    pid = fake_worker.pid
    wait_for(lambda: b"train.worker" in Path(f"/proc/{pid}/cmdline").read_bytes(), timeout=10)
    started = process_start_time(pid)
    assert started is not None and pid_alive(pid, started) and pid_alive(pid)
    assert not pid_alive(pid, started + 1)  # same pid, another process
    assert not pid_alive(os.getpid()) and process_alive(os.getpid(), process_start_time(os.getpid()))
    assert not process_alive(dead_pid())


def test_a_child_that_fails_before_training_reports_why_and_the_parent_records_it(tmp_path: Path) -> None:
    """The real worker entry on a run whose settings are unreadable: its reason reaches the run's state."""
    store = RunStore(tmp_path / "runs")
    folder = store.new_folder("broken")
    (folder / "run_config.json").write_text("{not json")
    store.create(folder, Lifecycle.queued(total_steps=4))
    python, child_writes = audited_python(tmp_path)
    child = subprocess.Popen(
        [python, "-m", "train.worker", str(folder)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    store.transition(folder, RunState.RUNNING, pid=child.pid, pid_started=process_start_time(child.pid))
    code = child.wait(timeout=300)
    assert code == 1 and written(child_writes) == {"progress.json"}
    settled = store.settle(folder, code=code)
    assert settled.state is RunState.FAILED and settled.error is not None
    assert "Could not read the training settings" in settled.error and settled.finished is not None


# ---- old run folders ----------------------------------------------------------------------------
def old_run(root: Path, state: str = "cancelled") -> Path:
    """A run as the previous version left it: one run.json, written by the child, with its progress in it."""
    folder = root / "old-run-20250101-000000"
    trainer = folder / "trainer" / "xtts-January-01-2025"
    trainer.mkdir(parents=True)
    (trainer / "config.json").write_text("{}")
    torch.save({"model": {}, "step": 6}, trainer / "checkpoint_6.pth")
    (folder / "run_config.json").write_text(json.dumps({"dataset": str(root), "base_model": str(root)}))
    return write_run(folder, {
        "state": state, "created": 1.0, "save_step": 3, "total_steps": 30, "step": 7, "epoch": 2,
        "params": {"epochs": 10, "language": "en"}, "preflight": {"train_clips": 8, "warnings": []},
        "updated": 2.0, "pid": dead_pid(), "trainer_dir": str(trainer), "started": 1.5, "elapsed_s": 42.0,
        "finished": 3.0, "resumes": 0,
    })  # fmt: skip


def test_an_old_run_folder_lists_shows_its_checkpoints_and_resumes(tmp_path: Path) -> None:
    folder = old_run(tmp_path / "runs")
    store = RunStore(tmp_path / "runs")
    [listed] = store.list()
    assert listed["run"] == folder.name and listed["state"] == "cancelled"
    assert (listed["step"], listed["epoch"], listed["elapsed_s"], listed["total_steps"]) == (7, 2, 42.0, 30)
    assert listed["trainer_dir"].endswith("xtts-January-01-2025") and listed["preflight"]["train_clips"] == 8
    assert [(c["step"], c["best"]) for c in listed["checkpoints"]] == [(6, False)]
    assert store.read(folder)["params"]["language"] == "en" and store.active() is None

    gpu: list[str] = []
    runner = TrainingRunner(store, on_start=lambda: gpu.append("lend"), on_finish=lambda: gpu.append("back"),
                            python=str(tmp_path / "no-such-python"))  # fmt: skip
    with pytest.raises(StudioError, match="could not start"):
        runner.resume(folder.name)  # accepted: it got as far as starting the child
    state = runner.status(folder.name)
    assert state["state"] == "failed" and "could not start" in state["error"] and gpu == ["lend", "back"]
    assert state["resumes"] == 1 and state["elapsed_before_s"] == 42.0 and state["step"] == 7
    assert state["resume_from"] == listed["trainer_dir"]
    assert not (folder / "progress.json").exists()  # the parent never writes the child's file


def test_an_old_run_left_running_by_a_dead_child_reads_failed(tmp_path: Path) -> None:
    old_run(tmp_path / "runs", state="running")
    [listed] = RunStore(tmp_path / "runs").list()
    assert listed["state"] == "failed" and "ended unexpectedly" in listed["error"]


# ---- stale queued runs --------------------------------------------------------------------------
def test_a_run_left_queued_by_a_gone_studio_is_interrupted_and_blocks_nothing(
    tmp_path: Path, dataset: Path, tiny_xtts: Path
) -> None:
    root = tmp_path / "runs"
    me = os.getpid()
    stale = {
        "gone-owner": {"owner_pid": dead_pid(), "owner_started": 1},
        "recycled-owner": {"owner_pid": me, "owner_started": process_start_time(me) + 1},  # type: ignore[operator]
        "old-version": {},  # queued by a version that recorded no owner
    }
    for name, owner in stale.items():
        write_run(root / name, {"state": "queued", "created": 1.0, **owner})
    store = RunStore(root)
    assert store.active() is None
    for name in stale:
        state = store.status(name)
        assert state["state"] == "interrupted" and "studio stopped before" in state["error"], name
        assert not (root / name / "progress.json").exists()

    runner = TrainingRunner(store, python=str(tmp_path / "no-such-python"))
    with pytest.raises(StudioError, match="could not start"):  # past the busy check: nothing blocks the start
        runner.start(config_for(dataset, tiny_xtts))

    write_run(root / "starting", Lifecycle.queued().to_dict())  # queued by this (live) process
    assert store.active()["run"] == "starting"  # type: ignore[index]
    with pytest.raises(InvalidInput, match=r"already running \(starting\)"):
        runner.start(config_for(dataset, tiny_xtts))


# ---- rollbacks -------------------------------------------------------------------------------------
def test_a_preflight_failure_gives_the_lent_device_back(
    tmp_path: Path, dataset: Path, tiny_xtts: Path, engine: XTTSEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = engine.scheduler
    runner = TrainingRunner(RunStore(tmp_path / "runs"), on_start=scheduler.lend, on_finish=scheduler.take_back)
    during: list[tuple[bool, Placement]] = []

    def free_disk(path: Path) -> int:
        during.append((scheduler.lent, scheduler.models.placement("xtts")))
        return 10_000_000

    monkeypatch.setattr(preflight, "free_disk_bytes", free_disk)
    with pytest.raises(InvalidInput, match="Not enough disk space"):
        runner.start(config_for(dataset, tiny_xtts))
    assert during == [(True, Placement.OFFLOADED)]  # the checks ran with the device already lent
    assert not scheduler.lent and scheduler.models.placement("xtts") is Placement.ON_DEVICE
    assert runner.store.list() == [] and say(engine) > 0


def test_a_failed_spawn_gives_the_device_back_and_the_next_start_runs_and_resumes_in_the_old_format(
    tmp_path: Path, dataset: Path, tiny_xtts: Path, engine: XTTSEngine
) -> None:
    """The first start's python does not exist; the second runs the real worker, whose writes are logged,
    and the run it trained, rewritten as the previous version kept runs, resumes."""
    scheduler = engine.scheduler
    store = RunStore(tmp_path / "runs")
    runner = TrainingRunner(
        store, on_start=scheduler.lend, on_finish=scheduler.take_back, python=str(tmp_path / "no-such-python")
    )
    config = config_for(dataset, tiny_xtts, epochs=1, batch_size=4, save_every=1, samples=False)
    with pytest.raises(StudioError, match=r"The training process could not start: .*no-such-python"):
        runner.start(config)
    [failed] = store.list()
    assert failed["state"] == "failed" and "could not start" in failed["error"] and failed["pid"] is None
    assert not scheduler.lent and scheduler.models.placement("xtts") is Placement.ON_DEVICE
    assert say(engine) > 0  # the engine came back and still speaks
    assert sorted(p.name for p in store.folder(failed["run"]).iterdir()) == ["run.json", "run_config.json", "train.log"]

    runner.python, child_writes = audited_python(tmp_path)
    run = runner.start(config)  # the lock was released and the failed run does not count as busy
    assert run != failed["run"]
    seen: set[Placement] = set()
    while runner.status(run)["state"] in ("queued", "running"):
        seen.add(scheduler.models.placement("xtts"))
        time.sleep(0.2)
    state = runner.wait(run)
    assert state["state"] == "completed", state.get("error") or store.log_tail(store.folder(run))
    assert state["step"] == state["total_steps"] == 2 and state["error"] is None
    assert Placement.ON_DEVICE not in seen
    assert not scheduler.lent and scheduler.models.placement("xtts") is Placement.ON_DEVICE

    assert "progress.json" in written(child_writes) and "run.json" not in written(child_writes)
    progress = json.loads((store.folder(run) / "progress.json").read_text())
    assert progress["outcome"] == "completed" and progress["step"] == 2 and progress["attempt"] == 0
    lifecycle = json.loads((store.folder(run) / "run.json").read_text())
    assert lifecycle["state"] == "completed" and "step" not in lifecycle  # progress lives only in progress.json

    # the same run as the previous version would have left it after a cancel: one run.json, the child's
    folder = store.folder(run)
    old = {k: v for k, v in lifecycle.items() if k not in ("owner_pid", "owner_started", "pid_started")}
    old.update({k: progress[k] for k in ("step", "epoch", "elapsed_s", "trainer_dir")}, state="cancelled")
    (folder / "run.json").write_text(json.dumps(old))
    (folder / "progress.json").unlink()
    child_writes.unlink()
    assert runner.status(run)["state"] == "cancelled" and runner.status(run)["step"] == 2
    runner.resume(run)
    resumed = runner.wait(run)
    assert resumed["state"] == "completed", resumed.get("error") or store.log_tail(folder)
    assert resumed["resumes"] == 1 and resumed["step"] > 2  # the steps went on from the old run's checkpoint
    assert "run.json" not in written(child_writes)
    assert json.loads((folder / "progress.json").read_text())["attempt"] == 1


# ---- start-up order -----------------------------------------------------------------------------------
def test_start_up_reattaches_to_a_running_training_before_loading_xtts(
    tmp_path: Path, tiny_xtts: Path, fake_worker: subprocess.Popen
) -> None:
    settings = parse_settings(
        ["--model-dir", str(tiny_xtts), "--device", "cpu", "--no-warmup",
         "--models-dir", str(tmp_path / "m"), "--outputs-dir", str(tmp_path / "o")],
        env={},
    )  # fmt: skip
    studio = webui.create_studio(settings)
    pid = fake_worker.pid
    wait_for(lambda: b"train.worker" in Path(f"/proc/{pid}/cmdline").read_bytes(), timeout=10)
    lifecycle = Lifecycle.queued(total_steps=10).transition(
        RunState.RUNNING, pid=pid, pid_started=process_start_time(pid), started=time.time()
    )
    studio.training.store.create(studio.training.store.new_folder("alive"), lifecycle)

    webui.start_up(studio)
    scheduler = studio.scheduler
    assert scheduler.lent and studio.engine.loaded
    assert scheduler.models.placement("xtts") is Placement.ON_HOST  # loaded on the CPU, never on the device

    fake_worker.kill()
    fake_worker.wait()
    wait_for(lambda: not scheduler.lent, timeout=30)  # the follower takes the device back when the child ends
    assert scheduler.models.placement("xtts") is Placement.ON_DEVICE
    [run] = studio.training.store.list()
    assert run["state"] == "failed" and "ended unexpectedly" in run["error"]
