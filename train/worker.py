"""The training child process: ``python -m train.worker RUN_DIR``.

It runs Coqui's GPT trainer on the settings in ``RUN_DIR/run_config.json`` and the run's
lifecycle in ``run.json`` (which it only reads: the studio owns it), and reports only through
files: ``progress.json`` (its own, written atomically), the trainer's TensorBoard events and
checkpoints under ``RUN_DIR/trainer/``, its log, and ``samples/<step>/`` rendered at every
save. It records how it ended as the outcome in ``progress.json``: SIGINT makes the trainer
save and stop ("cancelled"); anything else that ends it is "failed" with the reason from the
log. The studio turns that outcome into the run's state once the process has exited.

Under torchrun (more than one GPU) it is one rank of the run (see :mod:`train.distributed`):
rank 0 writes everything above, the other ranks only train and keep their log and their
trainer folder under ``RUN_DIR/ranks/<N>/``. Every rank records its process in
``ranks/<N>/rank.json`` so a cancel can reach each one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from core import fs
from core.constants import XTTS_INPUT_RATE, XTTS_OUTPUT_RATE
from train import distributed
from train.config import TrainingConfig, read_config
from train.coqui_csv import EVAL_FILE, TRAIN_FILE
from train.distributed import Ranks
from train.launch import RANKS_DIR
from train.run_state import (
    Lifecycle,
    Outcome,
    Progress,
    process_start_time,
    read_lifecycle,
    read_progress,
    write_progress,
)

log = logging.getLogger("train.worker")
CODE_STRIDE = 1024
SINGLE = Ranks()  # the one process of a run on one device


def trainer_config(config: TrainingConfig, run_dir: Path) -> Any:
    """Coqui's GPTTrainerConfig for ``config``, shaped like the base model's own config.json."""
    from TTS.config.shared_configs import BaseDatasetConfig
    from TTS.tts.configs.xtts_config import XttsAudioConfig, XttsConfig
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTArgs, GPTTrainerConfig

    base = Path(config.base_model)
    base_config = XttsConfig()
    base_config.load_json(str(base / "config.json"))
    args = GPTArgs()
    for key, value in base_config.model_args.to_dict().items():
        if hasattr(args, key) and key not in ("tokenizer_file", "gpt_checkpoint", "decoder_checkpoint"):
            setattr(args, key, value)
    # a clip needs one audio code per 1024 samples, plus start/stop, within the position table
    longest = min(
        int(config.max_audio_s * XTTS_INPUT_RATE), (base_config.model_args.gpt_max_audio_tokens - 4) * CODE_STRIDE
    )
    args.max_wav_length = longest
    args.max_text_length = config.max_text_len
    args.min_conditioning_length = min(3 * XTTS_INPUT_RATE, longest // 2)
    args.max_conditioning_length = min(6 * XTTS_INPUT_RATE, longest)
    args.mel_norm_file = str(base / "mel_stats.pth")
    args.dvae_checkpoint = str(base / "dvae.pth")
    args.xtts_checkpoint = str(base / "model.pth")
    args.tokenizer_file = str(base / "vocab.json")
    dataset = Path(config.dataset)
    reference = config.reference_clip or ""
    gpt_config = GPTTrainerConfig(
        output_path=str(run_dir / "trainer"),
        model_args=args,
        run_name="xtts",
        project_name="xtts-studio",
        dashboard_logger="tensorboard",
        audio=XttsAudioConfig(
            sample_rate=XTTS_INPUT_RATE, dvae_sample_rate=XTTS_INPUT_RATE, output_sample_rate=XTTS_OUTPUT_RATE
        ),
        batch_size=config.batch_size,
        batch_group_size=48,
        eval_batch_size=config.batch_size,
        num_loader_workers=config.num_workers,
        num_eval_loader_workers=config.num_workers,
        eval_split_max_size=256,
        eval_split_size=config.eval_fraction,
        print_step=1,
        plot_step=1,
        log_model_step=10**9,
        save_step=config.save_every,
        save_n_checkpoints=config.keep_checkpoints,
        save_checkpoints=True,
        save_best_after=0,
        save_on_interrupt=True,
        print_eval=False,
        epochs=config.epochs,
        mixed_precision=config.mixed_precision,
        # fp16 needs a loss scaler, and the trainer's scaler path skips the hook that averages gradients
        precision="bf16" if config.mixed_precision and config.world_size > 1 else "fp16",
        optimizer="AdamW",
        optimizer_wd_only_on_weights=True,
        optimizer_params={"betas": [0.9, 0.96], "eps": 1e-8, "weight_decay": config.weight_decay},
        lr=config.learning_rate,
        lr_scheduler="MultiStepLR",
        lr_scheduler_params={"milestones": [50000 * 18, 150000 * 18, 300000 * 18], "gamma": 0.5, "last_epoch": -1},
        training_seed=config.seed,
        test_sentences=[
            {"text": t, "speaker_wav": reference, "language": config.language} for t in config.test_sentences
        ]
        if reference and config.samples
        else [],
        languages=base_config.languages,
    )
    gpt_config.datasets = [
        BaseDatasetConfig(
            formatter="coqui",
            dataset_name=dataset.name,
            path=str(dataset),
            meta_file_train=TRAIN_FILE,
            meta_file_val=EVAL_FILE if (dataset / EVAL_FILE).is_file() else "",
            language=config.language,
        )
    ]
    return gpt_config


def _failure_reason(log_file: Path, config: TrainingConfig) -> str:
    text = log_file.read_text(encoding="utf-8", errors="replace") if log_file.is_file() else ""
    if "OutOfMemoryError" in text or "CUDA out of memory" in text:
        return (
            f"The GPU ran out of memory at batch size {config.batch_size} (max clip {config.max_audio_s:g} s). "
            f"Lower the batch size (try {max(1, config.batch_size // 2)}) and raise gradient accumulation to keep "
            "the effective batch, shorten the max clip length, or turn on mixed precision and gradient checkpointing."
        )
    errors = re.findall(r"^(\w+(?:Error|Exception)\b.*)$", text, flags=re.MULTILINE)
    return errors[-1][:500] if errors else "The trainer stopped with an error; see the log."


class InterruptGuard:
    """Turns SIGINT into a KeyboardInterrupt at the next safe point, never in the middle of things.

    Raised from the signal handler, the interrupt could land inside ``torch.save`` (a broken
    checkpoint, and the trainer reports an error instead of saving) or while a library holds a
    lock (the process hangs). The handler only takes note; ``check()`` raises at step and epoch
    boundaries and before each evaluation batch, where the trainer saves and stops cleanly.
    """

    def __init__(self, *, shared: bool = False) -> None:
        """``shared``: one rank of several; every check asks them all, so they stop at the same point."""
        self.requested = False
        self.shared = shared

    def handler(self, signum: int, frame: object) -> None:
        self.requested = True

    def check(self) -> None:
        if distributed.agree(self.requested) if self.shared else self.requested:
            self.requested = False
            raise KeyboardInterrupt

    def before(self, method: Any) -> Any:
        def checked(*args: Any, **kwargs: Any) -> Any:
            self.check()
            return method(*args, **kwargs)

        return checked


def starting_progress(run_dir: Path, lifecycle: Lifecycle) -> Progress:
    """This attempt's report before its first step: the steps so far, no outcome yet."""
    return replace(
        read_progress(run_dir, lifecycle), attempt=lifecycle.resumes, outcome=None, error=None, finished=None
    )


def report_end(run_dir: Path, progress: Progress, outcome: Outcome, error: str | None = None) -> Progress:
    """Record how this attempt ended, for the studio to turn into the run's state."""
    return write_progress(run_dir, replace(progress, outcome=outcome, error=error, finished=time.time()))


class Reporter:
    """Trainer callbacks that keep ``progress.json`` current and render samples at every save.

    On a rank other than 0 they write nothing; they still stop with the others on a cancel.
    """

    def __init__(
        self, run_dir: Path, lifecycle: Lifecycle, config: TrainingConfig, save_step: int, guard: InterruptGuard,
        ranks: Ranks = SINGLE,
    ) -> None:  # fmt: skip
        self.run_dir, self.config, self.save_step = run_dir, config, save_step
        self.guard, self.ranks = guard, ranks
        self.started = time.time()
        self.elapsed_before_s = lifecycle.elapsed_before_s
        self.progress = starting_progress(run_dir, lifecycle)
        self.last_write = 0.0

    def on_train_step_end(self, trainer: Any) -> None:
        done = trainer.total_steps_done  # already counts the step that just finished
        saved = done - 1
        if saved > 0 and saved % self.save_step == 0:
            if self.ranks.distributed:
                distributed.check_in_sync(trainer.model, saved, self.ranks)
            self.render_samples(trainer, saved)
        if time.time() - self.last_write > 1.0 or saved % self.save_step == 0:
            self.update(trainer)
        self.guard.check()

    def on_train_epoch_start(self, trainer: Any) -> None:
        if self.ranks.distributed:
            distributed.reshuffle(trainer)

    def on_epoch_start(self, trainer: Any) -> None:
        """A checkpoint saved mid-epoch (on cancel) carries no losses yet; the trainer then fails to
        compare the next epoch's loss with None. Treat a missing best loss as 'none so far'."""
        best = trainer.best_loss
        if isinstance(best, dict):
            trainer.best_loss = {key: float("inf") if value is None else value for key, value in best.items()}
        self.guard.check()

    def on_keyboard_interrupt(self, trainer: Any) -> None:
        """Called after the trainer saved on SIGINT and right before it exits the process.

        The trainer then exits with 130, which torchrun takes for a failed rank: it would kill
        the others, rank 0 perhaps still saving. So once rank 0 has saved and reported, every
        rank leaves here with 0; the outcome in ``progress.json`` says the run was cancelled.
        """
        self.update(trainer)
        self.end(Outcome.CANCELLED)
        if self.ranks.distributed:
            if self.ranks.main:
                trainer.dashboard_logger.finish()
            distributed.barrier()
            distributed.stop()
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def on_epoch_end(self, trainer: Any) -> None:
        """A new best model is a checkpoint too: give it samples unless its step has them."""
        best = sorted(Path(trainer.output_path).glob("best_model_*.pth"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        if best:
            step = int(best[-1].stem.rsplit("_", 1)[1])
            if not (self.run_dir / "samples" / str(step)).is_dir():
                self.render_samples(trainer, step)
        self.update(trainer)
        self.guard.check()

    def update(self, trainer: Any) -> None:
        if not self.ranks.main:
            return
        self.last_write = time.time()
        self.progress = write_progress(
            self.run_dir,
            replace(
                self.progress,
                step=int(trainer.total_steps_done),
                epoch=int(trainer.epochs_done),
                trainer_dir=str(trainer.output_path),
                elapsed_s=round(time.time() - self.started + self.elapsed_before_s, 1),
            ),
        )

    def end(self, outcome: Outcome, error: str | None = None) -> None:
        if not self.ranks.main:
            return
        self.progress = report_end(self.run_dir, self.progress, outcome, error)

    def render_samples(self, trainer: Any, step: int) -> None:
        """Speak the test sentences with the weights just saved, into samples/<step>/."""
        import soundfile as sf
        import torch

        model = trainer.model
        if not model.config.test_sentences or not self.ranks.main:
            return
        was_training = model.xtts.gpt.training
        try:
            with torch.inference_mode():
                audios = model.test_run(trainer)["audios"]
        except Exception:
            log.exception("could not render samples at step %d", step)
            return
        finally:
            if was_training:
                model.xtts.gpt.train()
        folder = self.run_dir / "samples" / str(step)
        folder.mkdir(parents=True, exist_ok=True)
        for index, (_, wav) in enumerate(sorted(audios.items())):
            fs.write_with(
                folder / f"{index}.wav",
                lambda handle, wav=wav: sf.write(handle, wav, XTTS_OUTPUT_RATE, format="WAV", subtype="PCM_16"),
            )
        fs.write_text(folder / "sentences.json", json.dumps(self.config.test_sentences, ensure_ascii=False))


def rank_folder(run_dir: Path, ranks: Ranks) -> Path:
    return run_dir / RANKS_DIR / str(ranks.rank)


def record_rank(run_dir: Path, ranks: Ranks, lifecycle: Lifecycle, device: str) -> None:
    """``ranks/<N>/rank.json``: this rank's process, for a cancel to reach it (torchrun gives each its own session)."""
    pid = os.getpid()
    fs.write_json(
        rank_folder(run_dir, ranks) / "rank.json",
        {"rank": ranks.rank, "pid": pid, "pid_started": process_start_time(pid), "attempt": lifecycle.resumes,
         "device": device},
    )  # fmt: skip


def _resume_rank(trainer: Any, resume_from: str) -> None:
    """A rank other than 0 continues from rank 0's last checkpoint without writing into its folder.

    Given ``continue_path``, the trainer would make rank 0's folder its own output folder; so this
    rank starts in its own folder and restores model, optimizer, scheduler and step counters here.
    """
    from trainer.io import get_last_checkpoint

    trainer.args.restore_path, _ = get_last_checkpoint(resume_from)
    trainer.continue_run = True
    trainer.restore_model()
    trainer.continue_run = False  # the best loss it would read next matters only to rank 0, which saves the best


def run(run_dir: Path, ranks: Ranks = SINGLE, device: str = "") -> int:
    import torch
    from trainer import Trainer, TrainerArgs
    from TTS.tts.datasets import load_tts_samples
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTTrainer

    # importing Coqui's XTTS trainer dataset module sets torch to one thread; the loader runs in
    # this process (no worker processes), so CPU training may use every core again (shared by CPU ranks)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // (ranks.world_size if device == "cpu" else 1)))
    config = read_config(run_dir / "run_config.json")
    lifecycle = read_lifecycle(run_dir)
    guard = InterruptGuard(shared=ranks.distributed)
    signal.signal(signal.SIGINT, guard.handler)
    if ranks.distributed:
        record_rank(run_dir, ranks, lifecycle, device)
        distributed.start(ranks, device)  # before the model: XTTS's loader shards by rank once a group exists
    gpt_config = trainer_config(config, run_dir)
    train_samples, eval_samples = load_tts_samples(
        gpt_config, eval_split=True, eval_split_max_size=256, eval_split_size=config.eval_fraction
    )
    save_step = lifecycle.save_step
    gpt_config.save_step = save_step
    model = GPTTrainer.init_from_config(gpt_config)
    if config.gradient_checkpointing:
        model.xtts.gpt.gpt.gradient_checkpointing_enable()
    resume_here = ranks.main and lifecycle.resume_from
    trainer_args = TrainerArgs(
        continue_path=lifecycle.resume_from if resume_here else "",
        skip_train_epoch=False,
        start_with_eval=False,
        grad_accum_steps=config.grad_accum,
        rank=ranks.rank,
    )
    model.eval_step = guard.before(model.eval_step)
    reporter = Reporter(run_dir, lifecycle, config, save_step, guard, ranks)
    trainer = Trainer(
        trainer_args,
        gpt_config,
        output_path=str((run_dir if ranks.main else rank_folder(run_dir, ranks)) / "trainer"),
        model=model,
        train_samples=train_samples,
        eval_samples=eval_samples,
        callbacks={
            "on_train_step_end": reporter.on_train_step_end,
            "on_train_epoch_start": reporter.on_train_epoch_start,
            "on_epoch_start": reporter.on_epoch_start,
            "on_epoch_end": reporter.on_epoch_end,
            "on_keyboard_interrupt": reporter.on_keyboard_interrupt,
        },
    )
    if ranks.distributed:
        if not ranks.main:
            # the trainer means to log a rank > 0 to a file only, but drops that file handler with the
            # console ones (a FileHandler is a StreamHandler): its messages (restores, warnings) go to
            # this rank's own log instead; step and epoch summaries it prints on rank 0 only
            logging.getLogger("trainer").addHandler(logging.StreamHandler(sys.stdout))
        if lifecycle.resume_from and not ranks.main:
            _resume_rank(trainer, lifecycle.resume_from)
        distributed.broadcast_weights(model)
        model.before_gradient_clipping = distributed.GradientAverager(model, ranks.world_size)
    reporter.update(trainer)
    try:
        trainer.fit()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    reporter.update(trainer)
    log_file = run_dir / "train.log" if ranks.main else rank_folder(run_dir, ranks) / "train.log"
    if code == 0:
        reporter.end(Outcome.COMPLETED)
    elif code == 130:
        reporter.end(Outcome.CANCELLED)
    else:
        reporter.end(Outcome.FAILED, _failure_reason(log_file, config))
    if ranks.distributed:
        distributed.stop()
    return code


def _own_log(run_dir: Path, ranks: Ranks) -> None:
    """A rank other than 0 writes its output to ``ranks/<N>/train.log``; rank 0's goes to the run's log."""
    folder = rank_folder(run_dir, ranks)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.log", "ab") as sink:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            os.dup2(sink.fileno(), stream.fileno())


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m train.worker RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[1]).resolve()
    ranks = Ranks.from_env()
    device = ""
    if ranks.distributed:
        device = distributed.select_device(ranks)
        distributed.stop_with_launcher()
        if not ranks.main:
            _own_log(run_dir, ranks)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(run_dir, ranks, device)
    except Exception as exc:  # before or around the trainer: record why, keep the traceback in the log
        log.exception("training could not start")
        if not ranks.main:
            return 1
        try:
            lifecycle = read_lifecycle(run_dir)
        except Exception:  # the studio settles a run whose child leaves no outcome as failed
            log.exception("could not read the run's lifecycle to report the failure")
            return 1
        report_end(run_dir, starting_progress(run_dir, lifecycle), Outcome.FAILED, f"{exc.__class__.__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
