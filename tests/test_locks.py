"""File locks across processes: contention, re-entrancy, timeouts, staging folders that recover leaves alone,
the one training slot of all replicas and checkpoints another replica has loaded."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import fs, locks
from core.errors import InvalidInput
from tests.conftest import ROOT
from train.checkpoints import CheckpointCatalog
from train.config import TrainingConfig
from train.run_state import Lifecycle, RunState
from train.runner import TrainingRunner, gpu_env
from train.runs import RunStore

_HOLDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from core import locks
lock = locks.FileLock(Path({path!r}), what="test library")
with lock:
    with lock:  # re-entrant in the holder too
        print("held", flush=True)
        sys.stdin.readline()
print("released", flush=True)
"""


def _holder(path: Path) -> subprocess.Popen:
    """Another process holding ``path``'s lock until a line arrives on its stdin."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER.format(root=str(ROOT), path=str(path))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_two_processes_take_turns_and_the_waiter_times_out_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / ".library.lock"
    proc = _holder(path)
    try:
        lock = locks.FileLock(path, what="voice library", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(locks.InUse, match="voice library is busy in another studio process"):
            lock.acquire()
        assert 0.25 < time.monotonic() - started < 3
        with lock.try_hold() as taken:
            assert not taken
        assert locks.try_hold(path) is None
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout is not None and proc.stdout.readline().strip() == "released"
        lock.acquire(timeout=5)  # free now: the waiter gets it
        lock.release()
    finally:
        proc.kill()
        proc.wait()


def test_reentrant_per_thread_and_exclusive_between_threads(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    lock, same_file = locks.FileLock(path, what="thing"), locks.FileLock(path, what="thing")
    order: list[str] = []
    with lock:
        with same_file:  # another object for the same file, same thread: re-entrant, no self-deadlock
            order.append("outer")

            def other() -> None:
                with pytest.raises(locks.InUse):
                    lock.acquire(timeout=0.1)
                with lock:
                    order.append("other")

            thread = threading.Thread(target=other)
            thread.start()
            time.sleep(0.3)
            order.append("outer-done")
    thread.join(timeout=10)
    assert order == ["outer", "outer-done", "other"]
    assert locks.try_hold(path) is not None  # fully released after both levels and the other thread


def test_shared_holds_block_an_exclusive_one_and_a_hold_travels_across_threads(tmp_path: Path) -> None:
    marker = tmp_path / ".ckpt.in-use"
    first, second = locks.try_hold(marker, shared=True), locks.try_hold(marker, shared=True)
    assert first is not None and second is not None
    assert locks.try_hold(marker) is None
    threading.Thread(target=first.release).start()  # released by a thread other than the taker
    time.sleep(0.1)
    assert locks.try_hold(marker) is None
    second.release()
    exclusive = locks.try_hold(marker)
    assert exclusive is not None
    locks.discard(exclusive)
    assert not marker.exists()


_STAGER = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from core import fs
with fs.staged_folder(Path({target!r})) as staging:
    (staging.path / "half.txt").write_text("half")
    print(staging.path, flush=True)
    sys.stdin.readline()
"""


def test_recover_in_another_process_leaves_a_staging_folder_in_progress_alone(tmp_path: Path) -> None:
    parent = tmp_path / "voices"
    proc = subprocess.Popen(
        [sys.executable, "-c", _STAGER.format(root=str(ROOT), target=str(parent / "anna"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        staging = Path(proc.stdout.readline().strip())
        assert staging.is_dir() and staging.name.startswith(fs.STAGING)
        fs.recover(parent)  # a replica starting up while another clones
        assert (staging / "half.txt").is_file()
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert sorted(p.name for p in parent.iterdir()) == ["anna"]  # committed; no lock file left behind


def test_recover_tidies_what_a_dead_process_left(tmp_path: Path) -> None:
    parent = tmp_path / "voices"
    code = (
        f"import os, sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; from core import fs\n"
        f"with fs.staged_folder(Path({str(parent / 'anna')!r})) as s:\n"
        "    (s.path / 'half.txt').write_text('half'); os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 9
    assert any(p.name.startswith(fs.STAGING) for p in parent.iterdir())
    fs.recover(parent)
    assert list(parent.iterdir()) == []


_RAW_HOLDER = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from core import locks
held = locks.try_hold(Path({path!r}), shared={shared!r})
print("held" if held else "busy", flush=True)
sys.stdin.readline()
"""


@contextlib.contextmanager
def held_elsewhere(path: Path, *, shared: bool = False) -> Iterator[None]:
    """``path`` locked by another process (a replica) for the block."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _RAW_HOLDER.format(root=str(ROOT), path=str(path), shared=shared)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.kill()
        proc.wait()


def test_a_run_trained_by_another_replica_is_left_running_and_blocks_a_start_here(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    folder = store.new_folder("elsewhere")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that is not alive here: the child runs on another machine
    store.create(folder, Lifecycle.queued(params={"dataset": "d", "base_model": "b"}))
    store.transition(folder, RunState.RUNNING, pid=proc.pid, pid_started=1, started=time.time())
    runner = TrainingRunner(store)
    with held_elsewhere(store.training_lock):
        assert store.status(folder.name)["state"] == "running"  # not settled as failed from here
        with pytest.raises(InvalidInput, match="Training is running on another replica"):
            runner.start(TrainingConfig(dataset=str(tmp_path), base_model=str(tmp_path)))
    assert store.status(folder.name)["state"] == "failed"  # its replica is gone: now it is settled


def test_the_slot_alone_refuses_a_start(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    with held_elsewhere(store.training_lock), pytest.raises(InvalidInput, match="Training is running on another"):
        TrainingRunner(store).start(TrainingConfig(dataset=str(tmp_path), base_model=str(tmp_path)))


def test_a_checkpoint_loaded_by_another_replica_is_not_deleted(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    folder = store.new_folder("done")
    store.create(folder, Lifecycle.queued(params={"dataset": "d", "base_model": "b"}))
    store.transition(folder, RunState.INTERRUPTED, error="x", finished=time.time())
    trainer = folder / "trainer" / "t"
    trainer.mkdir(parents=True)
    (trainer / "config.json").write_text("{}")
    checkpoint = trainer / "checkpoint_5.pth"
    checkpoint.write_bytes(b"weights")
    catalog = CheckpointCatalog(store, tmp_path / "imported", tmp_path / "reviews")
    [entry] = catalog.entries(folder.name)
    with held_elsewhere(locks.in_use_marker(checkpoint), shared=True):
        with pytest.raises(locks.InUse, match=r"checkpoint_5\.pth is loaded in a studio process"):
            catalog.delete(entry)
        with pytest.raises(locks.InUse):
            catalog.delete_run(folder.name)
        assert checkpoint.is_file()
    catalog.delete(entry)
    assert not checkpoint.exists() and not locks.in_use_marker(checkpoint).exists()


def test_a_replicas_training_child_sees_only_the_replicas_gpu() -> None:
    assert gpu_env({"PATH": "/bin"}, "cuda:1") == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1"}
    assert gpu_env({"CUDA_VISIBLE_DEVICES": "2, 3"}, "cuda:1")["CUDA_VISIBLE_DEVICES"] == "3"
    assert gpu_env({"CUDA_VISIBLE_DEVICES": "2,3"}, "cuda") == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert gpu_env({}, "cpu") == {}
