"""Fine-tune XTTS from the command line with the same runner the studio uses.

    python -m train.finetune --dataset outputs/datasets/my-voice --epochs 10 --batch-size 2
    python -m train.finetune --dataset outputs/datasets/my-voice --gpus 0,1   # one process per GPU

Ctrl+C cancels (the trainer saves first); ``--resume RUN`` continues a stopped run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core.errors import StudioError
from core.settings import parse_settings
from train.config import TrainingConfig
from train.launch import parse_gpus
from train.run_state import ACTIVE, RunState
from train.runner import TrainingRunner
from train.runs import RunStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.finetune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", help="a folder in Coqui's format (metadata_train.csv, wavs/)")
    parser.add_argument(
        "--base-model", help="XTTS checkpoint folder with dvae.pth and mel_stats.pth (default: models/xtts_v2)"
    )
    parser.add_argument("--run-name", default="run")
    parser.add_argument("--language", default="en")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=5e-6)
    parser.add_argument("--save-every", type=int, default=0, help="steps between checkpoints (0: about ten per run)")
    parser.add_argument("--keep", type=int, default=2, help="checkpoints to keep besides the best")
    parser.add_argument("--max-audio-s", type=float, default=11.0)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--gpus", default="", help="GPUs to train on, e.g. 0,1 (one process per GPU; default: the studio's device)"
    )
    parser.add_argument("--resume", metavar="RUN", help="continue a cancelled or failed run (on its own GPUs)")
    parser.add_argument("--outputs-dir", help="where runs go (default ./outputs)")
    args = parser.parse_args(argv)

    try:
        gpus = parse_gpus(args.gpus)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = parse_settings(["--outputs-dir", args.outputs_dir] if args.outputs_dir else [])
    runner = TrainingRunner(RunStore(settings.outputs_dir / "runs"), device="auto")
    try:
        if args.resume:
            run = runner.resume(args.resume)
        else:
            if not args.dataset:
                parser.error("--dataset is required (or --resume RUN)")
            config = TrainingConfig(
                dataset=str(Path(args.dataset).resolve()), base_model=str(Path(args.base_model or settings.default_model_dir).resolve()),
                run_name=args.run_name, language=args.language, epochs=args.epochs, batch_size=args.batch_size,
                grad_accum=args.grad_accum, learning_rate=args.learning_rate, save_every=args.save_every,
                keep_checkpoints=args.keep, max_audio_s=args.max_audio_s, mixed_precision=args.mixed_precision,
                gradient_checkpointing=args.gradient_checkpointing, gpus=gpus,
            )  # fmt: skip
            run = runner.start(config)
        print(f"run {run} in {runner.store.folder(run)}")
        last = None
        while True:
            state = runner.status(run)
            line = f"{state['state']}: step {state.get('step', 0)}/{state.get('total_steps', '?')}, epoch {state.get('epoch', 0)}"
            if line != last:
                print(line, flush=True)
                last = line
            if state["state"] not in ACTIVE:
                break
            time.sleep(1)
    except KeyboardInterrupt:
        print("cancelling (the trainer saves first)...", flush=True)
        state = runner.cancel(run)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if state.get("error"):
        print(f"error: {state['error']}", file=sys.stderr)
    return 0 if state["state"] == RunState.COMPLETED else 1


if __name__ == "__main__":
    sys.exit(main())
