"""Multi-GPU fine-tuning, run as two CPU ranks over gloo (``XTTS_STUDIO_CPU_RANKS=1``): the same
torchrun launch, process group, sharding, gradient averaging, rank-0 writes, cancel and resume
that two GPUs get, on the tiny XTTS."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.errors import InvalidInput
from tests.test_training import config_for, make_dataset, wait_for
from train import finetune
from train.launch import CPU_RANKS_ENV, GPUS_ENV, child_command, parse_gpus
from train.run_state import pid_alive, read_lifecycle
from train.runner import TrainingRunner
from train.runs import RunStore

EPOCHS = 2  # 8 training clips, 4 per rank, batch 2: 2 steps an epoch


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory, tiny_xtts: Path) -> Iterator[dict[str, Any]]:
    """One two-rank run, cancelled after its first step, then resumed to the end."""
    dataset = make_dataset(tmp_path_factory.mktemp("ddp-set"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CPU_RANKS_ENV, "1")
        runner = TrainingRunner(RunStore(tmp_path_factory.mktemp("ddp") / "runs"))
        config = config_for(dataset, tiny_xtts, epochs=EPOCHS, save_every=2, gpus=[0, 1], test_sentences=["Hi there."])
        run = runner.start(config)
        folder = runner.store.folder(run)
        wait_for(lambda: runner.status(run).get("step", 0) >= 1, timeout=240)
        ranks = [json.loads(p.read_text()) for p in sorted((folder / "ranks").glob("*/rank.json"))]
        cancelled = runner.cancel(run)
        ranks_alive_after_cancel = [pid_alive(r["pid"], r["pid_started"]) for r in ranks]
        runner.resume(run)
        final = runner.wait(run, timeout=300)
        yield {
            "runner": runner, "run": run, "folder": folder, "ranks": ranks, "cancelled": cancelled,
            "ranks_alive_after_cancel": ranks_alive_after_cancel, "final": final,
        }  # fmt: skip


def test_a_cancel_stops_both_ranks_and_leaves_a_resumable_run(shared_run: dict[str, Any]) -> None:
    cancelled = shared_run["cancelled"]
    assert cancelled["state"] == "cancelled", cancelled.get("error")
    assert [r["rank"] for r in shared_run["ranks"]] == [0, 1] and {r["attempt"] for r in shared_run["ranks"]} == {0}
    assert shared_run["ranks_alive_after_cancel"] == [False, False]
    saved = max(c["step"] for c in cancelled["checkpoints"] if not c["best"])
    assert saved >= 1  # rank 0 saved on the cancel


def test_the_resumed_run_completes_sharded_averaged_and_written_once(shared_run: dict[str, Any]) -> None:
    final, folder = shared_run["final"], shared_run["folder"]
    assert final["state"] == "completed", final.get("error")
    assert final["total_steps"] == 2 * EPOCHS and final["resumes"] == 1
    lifecycle = read_lifecycle(folder)
    assert lifecycle.world_size == 2 and lifecycle.devices == ["cpu", "cpu"]
    # checkpoints and samples once, from rank 0; rank 1 keeps only its log and trainer folder
    assert {c["step"] for c in final["checkpoints"]} >= {2 * EPOCHS}
    assert list((folder / "ranks").rglob("*.pth")) == []
    assert not list((folder / "ranks").rglob("*.wav")) and not (folder / "ranks" / "1" / "progress.json").exists()
    assert str(2 * EPOCHS) in final["samples"]
    log, rank_log = (folder / "train.log").read_text(), (folder / "ranks" / "1" / "train.log").read_text()
    # each rank trains on its half of the 8 clips: steps 0 and 1 of 0..1 each epoch, not 0..3
    assert set(re.findall(r"STEP: \d+/(\d+)", log)) == {"1"}
    assert "Restoring Model" in rank_log and "STEP:" not in rank_log  # rank 1 resumed too; rank 0 reports
    # at every save the ranks compare their weights: equal although each trained on other clips
    assert f"weights identical on 2 ranks at step {2 * EPOCHS}" in log
    resumed = [json.loads(p.read_text()) for p in sorted((folder / "ranks").glob("*/rank.json"))]
    assert [r["attempt"] for r in resumed] == [1, 1]


def test_the_command_for_one_and_two_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    python = sys.executable
    none = child_command(python, tmp_path, [], device="cpu")
    assert none.command == [python, "-m", "train.worker", str(tmp_path)] and none.env == {}
    assert none.devices == ["cpu"] and none.world_size == 1
    one = child_command(python, tmp_path, [1], device="cuda")
    assert one.command == none.command and one.env == {"CUDA_VISIBLE_DEVICES": "1"} and one.devices == ["cuda:1"]
    two = child_command(python, tmp_path, [0, 2], device="cuda")
    assert two.command[:3] == [python, "-m", "torch.distributed.run"] and "--nproc-per-node=2" in two.command
    assert two.command[-3:] == ["-m", "train.worker", str(tmp_path)]
    assert two.env == {GPUS_ENV: "0,2"} and two.devices == ["cuda:0", "cuda:2"] and two.world_size == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")  # the studio's GPU 1 is the machine's GPU 5
    assert child_command(python, tmp_path, [1, 2], device="cuda").env == {GPUS_ENV: "5,6"}
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    cpu = child_command(python, tmp_path, [0, 1], device="cpu", on_cpu=True)
    assert cpu.env == {GPUS_ENV: "0,1", CPU_RANKS_ENV: "1"} and cpu.devices == ["cpu", "cpu"]


def test_the_gpu_list_is_checked_in_the_tab_and_the_cli(
    tmp_path: Path, tiny_xtts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.device import AdmissionGate
    from serve.metrics import RequestTracker, StudioMetrics
    from tabs.training import TrainingForm, TrainingHandlers
    from train.dataset import DatasetBuilder
    from train.tensorboard import TensorBoard

    assert parse_gpus("0,1") == [0, 1] and parse_gpus(" 2, 3 ") == [2, 3] and parse_gpus("") == []
    refusals = {"0,0": "GPU 0 is listed twice", "0,x": "'x' is not a GPU number", "-1": "'-1' is not a GPU number"}
    for text, message in refusals.items():
        with pytest.raises(InvalidInput, match=message):
            parse_gpus(text)
    gate = AdmissionGate(4)
    handlers = TrainingHandlers(
        TrainingRunner(RunStore(tmp_path / "runs")), DatasetBuilder(tmp_path / "datasets"),
        TensorBoard(tmp_path / "runs", tmp_path / "work"),
        RequestTracker(gate, StudioMetrics(queue_depth=lambda: gate.depth, gpu_memory=dict)),
        default_base=tiny_xtts, roots=[tmp_path],
    )  # fmt: skip
    dataset = make_dataset(tmp_path / "datasets" / "voice", ["Hello there friend.", "Read a good book."], 1)
    with pytest.raises(InvalidInput, match="GPU 1 is listed twice"):
        handlers.config(TrainingForm(dataset=str(dataset), gpus="1,1"))
    assert handlers.config(TrainingForm(dataset=str(dataset), gpus="0,1")).gpus == [0, 1]
    assert finetune.main(["--dataset", str(dataset), "--gpus", "0,a", "--outputs-dir", str(tmp_path)]) == 2
    assert "'a' is not a GPU number" in capsys.readouterr().err


def test_preflight_checks_the_listed_gpus(tmp_path: Path, tiny_xtts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv(CPU_RANKS_ENV, raising=False)
    dataset = make_dataset(tmp_path / "voice", ["Hello there friend.", "Read a good book."], 1)
    runner = TrainingRunner(RunStore(tmp_path / "runs"))
    if torch.cuda.is_available():
        missing = torch.cuda.device_count()
        with pytest.raises(InvalidInput, match=f"GPU {missing} does not exist"):
            runner.start(config_for(dataset, tiny_xtts, gpus=[0, missing]))
    else:
        with pytest.raises(InvalidInput, match="GPUs 0, 1 were chosen but PyTorch sees no CUDA GPU"):
            runner.start(config_for(dataset, tiny_xtts, gpus=[0, 1]))
    assert runner.store.list() == []
