"""The studio's training runner against a plain script calling Coqui's trainer, same config, one run.

Usage: python bench/bench_training.py [--epochs N]

Both train the tiny random-weight XTTS of the test kit on the same espeak-ng dataset with the
same GPTTrainerConfig (built by ``train.worker.trainer_config``), each as its own child process:

- plain:   Trainer(...).fit() and nothing else
- runner:  ``train.runner.TrainingRunner`` (pre-flight, run.json updates, watcher), samples off
- runner+samples: the same with the test sentences rendered at every save (a feature's cost)

It prints steps per second (whole child process, start-up included) and peak memory of each,
and the runner's cost relative to the plain script.
"""

from __future__ import annotations

import argparse
import atexit
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def plain(run_dir: str) -> None:
    """Child mode: Coqui's trainer on the run's config, without the studio's callbacks."""
    import os

    import torch
    from trainer import Trainer, TrainerArgs
    from TTS.tts.datasets import load_tts_samples
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTTrainer

    from train.config import read_config
    from train.worker import trainer_config

    torch.set_num_threads(os.cpu_count() or 1)  # as the studio's worker does, so both use every core
    folder = Path(run_dir)
    config = read_config(folder / "run_config.json")
    gpt_config = trainer_config(config, folder)
    gpt_config.save_step = int((folder / "save_step").read_text())
    train, evaluation = load_tts_samples(gpt_config, eval_split=True, eval_split_max_size=256, eval_split_size=0.1)
    model = GPTTrainer.init_from_config(gpt_config)
    args = TrainerArgs(grad_accum_steps=config.grad_accum)
    Trainer(
        args, gpt_config, output_path=str(folder / "trainer"), model=model, train_samples=train, eval_samples=evaluation
    ).fit()


def child_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--plain":
        plain(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    import TTS.tts.datasets  # noqa: F401 - the studio process has it loaded already; keep import time out

    from tests.conftest import KIT_CACHE
    from tests.make_tiny_models import build
    from tests.test_training import make_dataset
    from train.config import TrainingConfig
    from train.runner import TrainingRunner
    from train.runs import RunStore

    work = Path(tempfile.mkdtemp(prefix="bench-training-"))

    atexit.register(shutil.rmtree, work, True)  # checkpoints and audio are large
    dataset = make_dataset(work / "dataset")
    base = build(KIT_CACHE) / "xtts"
    config = TrainingConfig(
        dataset=str(dataset), base_model=str(base), epochs=args.epochs, batch_size=2, save_every=4, samples=False
    )
    steps = config.steps_per_epoch(8) * config.epochs
    results = {}

    folder = work / "plain"
    folder.mkdir()
    runner = TrainingRunner(RunStore(work / "runs"))
    (folder / "run_config.json").write_text(runner.with_defaults(config).to_json())
    (folder / "save_step").write_text("4")
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--plain", str(folder)], check=True, capture_output=True)
    results["plain"] = (time.perf_counter() - started, child_peak_mb())

    for name, variant in (("runner", config), ("runner+samples", replace(config, samples=True))):
        started = time.perf_counter()
        run = runner.start(variant)
        state = runner.wait(run)
        assert state["state"] == "completed", state.get("error")
        results[name] = (time.perf_counter() - started, child_peak_mb())

    print(f"tiny XTTS, 8 clips, batch 2, {config.epochs} epochs = {steps} steps, save every 4, CPU")
    print(f"{'path':<16}{'wall s':>8}{'steps/s':>9}{'peak MB':>9}{'steps/s vs plain':>18}")
    plain_rate = steps / results["plain"][0]
    for name, (wall, peak) in results.items():
        print(f"{name:<16}{wall:>8.1f}{steps / wall:>9.3f}{peak:>9.0f}{(steps / wall) / plain_rate:>17.3f}x")
    print("peak memory is the largest child so far (ru_maxrss), so it can only grow down the table.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
