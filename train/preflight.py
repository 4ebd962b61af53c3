"""Checks before a fine-tuning run starts; each failure says what to change."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from core.constants import XTTS_INPUT_RATE
from core.errors import InvalidInput
from train import launch
from train.config import TrainingConfig
from train.coqui_csv import EVAL_FILE, TRAIN_FILE, read_metadata

CODE_STRIDE = 1024
TRAIN_RATE = XTTS_INPUT_RATE


@dataclass
class Preflight:
    """What the checks found: numbers for the run record, and warnings to show."""

    train_clips: int = 0
    eval_clips: int = 0
    minutes: float = 0.0
    too_long_audio: int = 0
    too_long_text: int = 0
    checkpoint_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def free_disk_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def check(config: TrainingConfig, *, runs_root: Path, device: str) -> Preflight:
    """Raise :class:`InvalidInput` listing every blocking problem; return the findings otherwise."""
    config.validated()
    dataset, base = Path(config.dataset), Path(config.base_model)
    found = Preflight()
    problems: list[str] = []
    train_csv = dataset / TRAIN_FILE
    if not train_csv.is_file():
        raise InvalidInput(
            f"{dataset} has no metadata_train.csv; build the dataset first or point at a Coqui-format folder."
        )
    for name in ("config.json", "model.pth", "vocab.json", "dvae.pth", "mel_stats.pth"):
        if not (base / name).is_file():
            problems.append(f"The base model folder {base} is missing {name}.")
    try:
        languages = (
            json.loads((base / "config.json").read_text()).get("languages", [])
            if (base / "config.json").is_file()
            else []
        )
        max_tokens = json.loads((base / "config.json").read_text())["model_args"]["gpt_max_audio_tokens"]
    except (ValueError, KeyError, OSError):
        languages, max_tokens = [], 605
    if languages and config.language not in languages:
        problems.append(
            f"The base model does not know the language '{config.language}'. It knows: {', '.join(languages)}."
        )

    _load_with_coqui(dataset, config)
    rows = read_metadata(train_csv)
    eval_rows = read_metadata(dataset / EVAL_FILE) if (dataset / EVAL_FILE).is_file() else []
    if not rows:
        raise InvalidInput(f"{dataset.name} has no training clips (metadata_train.csv lists none).")
    longest = min(config.max_audio_s, (max_tokens - 4) * CODE_STRIDE / TRAIN_RATE)
    missing, broken, seconds = [], [], 0.0
    for row in rows + eval_rows:
        wav = dataset / row["audio_file"]
        if not wav.is_file():
            missing.append(row["audio_file"])
            continue
        try:
            duration = sf.info(wav).duration
        except RuntimeError:
            broken.append(row["audio_file"])
            continue
        seconds += duration
        found.too_long_audio += duration > longest
        found.too_long_text += len(row.get("text", "")) > config.max_text_len
    if missing:
        problems.append(f"{len(missing)} listed clips do not exist, e.g. {', '.join(missing[:3])}.")
    if broken:
        problems.append(f"{len(broken)} listed clips are not readable audio, e.g. {', '.join(broken[:3])}.")
    found.train_clips, found.eval_clips, found.minutes = len(rows), len(eval_rows), round(seconds / 60, 2)
    if found.too_long_audio:
        found.warnings.append(
            f"{found.too_long_audio} clips are longer than {longest:.1f} s and will be skipped (raise the max clip length"
            + (
                f"; this base model allows at most {(max_tokens - 4) * CODE_STRIDE / TRAIN_RATE:.1f} s"
                if longest < config.max_audio_s
                else ""
            )
            + ")."
        )
    if found.too_long_text:
        found.warnings.append(
            f"{found.too_long_text} clips have text over {config.max_text_len} characters and will be skipped."
        )
    if found.too_long_audio + found.too_long_text >= len(rows) + len(eval_rows):
        problems.append("Every clip is over the length limits, so nothing would be trained on.")

    if (base / "model.pth").is_file() and (base / "dvae.pth").is_file():
        model_bytes, dvae_bytes = (base / "model.pth").stat().st_size, (base / "dvae.pth").stat().st_size
        found.checkpoint_bytes = 3 * model_bytes + dvae_bytes  # weights, two Adam moments, the DVAE
        runs_root.mkdir(parents=True, exist_ok=True)
        needed = (config.keep_checkpoints + 2) * found.checkpoint_bytes  # K kept, the best, one being written
        free = free_disk_bytes(runs_root)
        if free < needed:
            problems.append(
                f"Not enough disk space in {runs_root}: {free / 1e9:.1f} GB free, about {needed / 1e9:.1f} GB needed for "
                f"{config.keep_checkpoints} checkpoints plus the best one. Free space or keep fewer checkpoints."
            )
    _memory_checks(config, found, problems, device)
    if problems:
        raise InvalidInput("The training cannot start:\n- " + "\n- ".join(problems))
    return found


def _load_with_coqui(dataset: Path, config: TrainingConfig) -> None:
    from TTS.config.shared_configs import BaseDatasetConfig
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.datasets import load_tts_samples

    probe = XttsConfig()
    probe.datasets = [
        BaseDatasetConfig(
            formatter="coqui", path=str(dataset), meta_file_train=TRAIN_FILE,
            meta_file_val=EVAL_FILE if (dataset / EVAL_FILE).is_file() else "", language=config.language,
        )
    ]  # fmt: skip
    try:
        load_tts_samples(probe, eval_split=False)
    except Exception as exc:
        raise InvalidInput(f"Coqui's loader cannot read {dataset}: {exc.__class__.__name__}: {exc}") from exc


def _memory_checks(config: TrainingConfig, found: Preflight, problems: list[str], device: str) -> None:
    import psutil
    import torch

    available = psutil.virtual_memory().available
    if found.checkpoint_bytes and available < found.checkpoint_bytes * config.world_size:
        found.warnings.append(
            f"Only {available / 1e9:.1f} GB of RAM is free; training may be killed for lack of memory."
        )
    if config.gpus:
        _gpu_list_checks(config, found, problems)
        return
    if not device.startswith("cuda") or not torch.cuda.is_available():
        found.warnings.append("No GPU: training runs on the CPU, which is very slow for the full XTTS model.")
        return
    free, _ = torch.cuda.mem_get_info(torch.device(device))  # lent first: what the child will have
    problem = _memory_problem(config, found, free, "")
    if problem:
        problems.append(problem)


def _memory_problem(config: TrainingConfig, found: Preflight, free: int, which: str) -> str | None:
    """Why one GPU with ``free`` bytes cannot hold a rank's training at this batch size, or None."""
    # weights + grads + Adam for the GPT (~4x its share of model.pth) and activations per clip-second
    per_clip = (
        0.16e9
        * config.max_audio_s
        * (0.6 if config.gradient_checkpointing else 1.0)
        * (0.6 if config.mixed_precision else 1.0)
    )
    fixed = found.checkpoint_bytes * 1.3
    needed = fixed + config.batch_size * per_clip
    if needed <= free:
        return None
    fits = int(max(0, free - fixed) // per_clip)
    return (
        f"Batch size {config.batch_size} needs about {needed / 1e9:.1f} GB of GPU memory{which} but {free / 1e9:.1f} GB is free. "
        + (f"Batch size {fits} would fit" if fits else "Even batch size 1 does not fit")
        + "; raise gradient accumulation to keep the effective batch, or turn on mixed precision and gradient checkpointing."
    )


def _gpu_list_checks(config: TrainingConfig, found: Preflight, problems: list[str]) -> None:
    """Each listed GPU exists, has the memory for one rank, and (for multi-GPU mixed precision) does bf16."""
    import torch

    if launch.cpu_ranks():
        found.warnings.append(
            f"{config.world_size} training processes run on the CPU over gloo ({launch.CPU_RANKS_ENV}=1), not on GPUs."
        )
        return
    listed = ", ".join(map(str, config.gpus))
    if not torch.cuda.is_available():
        problems.append(
            f"GPUs {listed} were chosen but PyTorch sees no CUDA GPU here; leave the GPU list empty to train on the CPU."
        )
        return
    count = torch.cuda.device_count()
    for gpu in config.gpus:
        if gpu >= count:
            problems.append(
                f"GPU {gpu} does not exist: PyTorch sees {count} GPU{'s' if count != 1 else ''} (0 to {count - 1})."
            )
            continue
        name = torch.cuda.get_device_name(gpu)
        free, _ = torch.cuda.mem_get_info(gpu)
        problem = _memory_problem(config, found, free, f" on GPU {gpu} ({name})")
        if problem:
            problems.append(problem)
        if config.mixed_precision and config.world_size > 1 and torch.cuda.get_device_capability(gpu)[0] < 8:
            problems.append(
                f"GPU {gpu} ({name}) has no bfloat16, which mixed precision on several GPUs uses; "
                "turn mixed precision off or choose Ampere or newer GPUs."
            )
