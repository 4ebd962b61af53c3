"""Real fine-tuning of the tiny XTTS through the runner: checkpoints, samples, cancel, kill, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf

from core.errors import InvalidInput
from tests.conftest import ROOT, speak
from train import preflight
from train.config import TrainingConfig
from train.runner import TrainingRunner
from train.runs import RunStore

LINES = [
    "Hello there friend.", "The sun is warm today.", "I like green apples.", "We walk to the park.",
    "Birds sing in trees.", "Rain falls on the roof.", "Cats sleep all day.", "Open the red door.",
    "Time flies so fast.", "Read a good book.",
]  # fmt: skip


def make_dataset(folder: Path, lines: list[str] = LINES, eval_count: int = 2) -> Path:
    (folder / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for index, line in enumerate(lines):
        speak(line, folder / "wavs" / f"c{index}.wav", speed=170)
        rows.append(f"wavs/c{index}.wav|{line}|speaker")
    header = "audio_file|text|speaker_name"
    (folder / "metadata_train.csv").write_text("\n".join([header, *rows[eval_count:]]) + "\n")
    (folder / "metadata_eval.csv").write_text("\n".join([header, *rows[:eval_count]]) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("train-set"))


def config_for(dataset: Path, tiny_xtts: Path, **changes: object) -> TrainingConfig:
    base = TrainingConfig(dataset=str(dataset), base_model=str(tiny_xtts), epochs=3, batch_size=2, save_every=4)
    return replace(base, **changes)  # type: ignore[arg-type]


def wait_for(predicate: Callable[[], bool], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_run_completes_with_checkpoints_samples_and_losses(
    tmp_path: Path, tiny_dataset: Path, tiny_xtts: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runner = TrainingRunner(RunStore(tmp_path / "runs"))
    run = runner.start(config_for(tiny_dataset, tiny_xtts, keep_checkpoints=1))
    seen = {runner.status(run)["state"]}
    while (state := runner.status(run))["state"] in ("queued", "running"):
        seen.add(state["state"])
        time.sleep(0.3)
    assert "running" in seen and state["state"] == "completed", state.get("error")
    assert state["step"] == state["total_steps"] == 12 and state["preflight"]["train_clips"] == 8
    steps = sorted((c["step"], c["best"]) for c in state["checkpoints"])
    assert steps == [(8, False), (12, True)]  # the last K=1 save plus the best
    assert set(state["samples"]) >= {"4", "8", "12"}  # samples for every save, kept or pruned
    for wavs in state["samples"].values():
        audio, rate = sf.read(wavs[0])
        assert rate == 24000 and len(audio) > 0
    folder = runner.store.folder(run)
    events = EventAccumulator(str(runner.store.trainer_dir(folder)), size_guidance={"scalars": 0})
    events.Reload()
    plotted = {(r["series"], r["step"]): r["value"] for r in runner.store.losses(folder)}
    for tag, label in (("TrainIterStats/loss_mel_ce", "train mel CE"), ("EvalStats/avg_loss", "eval loss")):
        for event in events.Scalars(tag):
            assert plotted[(label, event.step)] == pytest.approx(event.value)
    import torch

    checkpoint = torch.load(state["checkpoints"][-1]["checkpoint"], map_location="cpu", weights_only=True)
    assert "model" in checkpoint and checkpoint["step"] == 12


def test_cancel_then_resume_continues_the_steps(tmp_path: Path, tiny_dataset: Path, tiny_xtts: Path) -> None:
    runner = TrainingRunner(RunStore(tmp_path / "runs"))
    run = runner.start(config_for(tiny_dataset, tiny_xtts, epochs=30, save_every=100))
    wait_for(lambda: runner.status(run).get("step", 0) >= 3)
    with pytest.raises(InvalidInput, match="already running"):
        runner.start(config_for(tiny_dataset, tiny_xtts))
    cancelled = runner.cancel(run)
    assert cancelled["state"] == "cancelled"
    saved = max(c["step"] for c in cancelled["checkpoints"])  # saved on SIGINT
    assert saved >= 3
    runner.resume(run)
    wait_for(lambda: runner.status(run).get("step", 0) > saved + 2)
    assert runner.status(run)["state"] == "running"
    assert runner.cancel(run)["state"] == "cancelled"
    assert max(c["step"] for c in runner.status(run)["checkpoints"]) > saved


def test_kill_9_is_a_failed_run_that_resumes_and_a_new_ui_reattaches(
    tmp_path: Path, tiny_dataset: Path, tiny_xtts: Path
) -> None:
    runner = TrainingRunner(RunStore(tmp_path / "runs"))
    run = runner.start(config_for(tiny_dataset, tiny_xtts, epochs=30, save_every=2))
    wait_for(lambda: any(not c["best"] for c in runner.status(run)["checkpoints"]))

    gpu_events: list[str] = []
    restarted_ui = TrainingRunner(  # knows the run only from its files
        RunStore(tmp_path / "runs"),
        on_start=lambda: gpu_events.append("release"),
        on_finish=lambda: gpu_events.append("reclaim"),
    )
    assert restarted_ui.reattach() == run and gpu_events == ["release"]
    assert restarted_ui.status(run)["state"] == "running"
    step_before = restarted_ui.status(run)["step"]
    wait_for(lambda: restarted_ui.status(run)["step"] > step_before)

    os.kill(runner.status(run)["pid"], signal.SIGKILL)
    wait_for(lambda: runner.status(run)["state"] == "failed")
    wait_for(lambda: gpu_events == ["release", "reclaim"])  # the restarted UI takes the GPU back
    assert "ended unexpectedly" in restarted_ui.status(run)["error"]
    last_checkpoint = max((c for c in runner.status(run)["checkpoints"] if not c["best"]), key=lambda c: c["step"])
    last = last_checkpoint["step"]
    # a kill during a save leaves a truncated file with a higher step: resume must not start from it
    truncated = Path(last_checkpoint["checkpoint"]).with_name(f"checkpoint_{last + 1000}.pth")
    truncated.write_bytes(Path(last_checkpoint["checkpoint"]).read_bytes()[:100_000])

    restarted_ui.resume(run)
    assert not truncated.exists() and truncated.with_name(truncated.name + ".partial").exists()
    wait_for(lambda: restarted_ui.status(run).get("step", 0) > last + 1)
    final = restarted_ui.cancel(run)
    assert final["state"] == "cancelled" and final["step"] > last


def test_preflight_refusals(
    tmp_path: Path, tiny_dataset: Path, tiny_xtts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = TrainingRunner(RunStore(tmp_path / "runs"))
    missing = make_dataset(tmp_path / "missing", LINES[:4], eval_count=1)
    (missing / "wavs" / "c2.wav").unlink()
    not_audio = make_dataset(tmp_path / "not-audio", LINES[:4], eval_count=1)
    (not_audio / "wavs" / "c3.wav").write_text("this is text, not audio")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata_train.csv").write_text("audio_file|text|speaker_name\n")
    cases = [
        (config_for(missing, tiny_xtts), r"1 listed clips do not exist, e\.g\. wavs/c2\.wav"),
        (config_for(not_audio, tiny_xtts), r"1 listed clips are not readable audio, e\.g\. wavs/c3\.wav"),
        (config_for(tiny_dataset, tiny_xtts, batch_size=0), "batch size must be at least 1"),
        (config_for(empty, tiny_xtts), "Coqui's loader cannot read|has no training clips"),
        (config_for(tiny_dataset, tiny_xtts, language="tlh"), "Unknown language 'tlh'"),
        (config_for(tmp_path / "nowhere", tiny_xtts), "has no metadata_train.csv"),
    ]
    for config, message in cases:
        with pytest.raises(InvalidInput, match=message):
            runner.start(config)
    monkeypatch.setattr(preflight, "free_disk_bytes", lambda path: 10_000_000)
    with pytest.raises(InvalidInput, match=r"Not enough disk space .* 0\.0 GB free"):
        runner.start(config_for(tiny_dataset, tiny_xtts))
    assert runner.store.list() == []  # nothing was started


def test_headless_command(tmp_path: Path, tiny_dataset: Path, tiny_xtts: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "train.finetune", "--dataset", str(tiny_dataset), "--base-model", str(tiny_xtts),
         "--epochs", "1", "--batch-size", "4", "--outputs-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "completed: step 2/2, epoch 0" in result.stdout
    assert len(RunStore(tmp_path / "runs").list()) == 1


def test_an_interrupt_waits_for_a_safe_point() -> None:
    from train.worker import InterruptGuard

    guard = InterruptGuard()
    guard.handler(signal.SIGINT, None)  # e.g. while torch.save is writing: nothing is raised there
    calls: list[str] = []
    checked = guard.before(lambda: calls.append("eval batch"))
    with pytest.raises(KeyboardInterrupt):
        checked()  # the next safe point raises, before the batch runs
    assert calls == [] and not guard.requested
    checked()
    assert calls == ["eval batch"]
