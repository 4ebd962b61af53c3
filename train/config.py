"""Fine-tuning settings as a dataclass, with defaults and presets sized to the dataset."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from train.coqui_csv import split_size

DEFAULT_TEST_SENTENCES: dict[str, list[str]] = {
    "en": ["It took me quite a long time to develop a voice.", "Now that I have it, I am not going to be silent."],
    "es": ["Me llevó bastante tiempo desarrollar una voz.", "Ahora que la tengo, no voy a quedarme callado."],
    "fr": [
        "Il m'a fallu beaucoup de temps pour développer une voix.",
        "Maintenant que je l'ai, je ne vais pas me taire.",
    ],
    "de": ["Es hat lange gedauert, eine Stimme zu entwickeln.", "Jetzt, wo ich sie habe, werde ich nicht schweigen."],
    "it": ["Mi ci è voluto molto tempo per sviluppare una voce.", "Ora che ce l'ho, non starò zitto."],
    "pt": ["Levei muito tempo para desenvolver uma voz.", "Agora que a tenho, não vou ficar em silêncio."],
}
PRESETS = ("quick test", "standard", "thorough")


@dataclass(frozen=True)
class TrainingConfig:
    """Everything one fine-tuning run needs; saved as ``run_config.json`` in the run folder."""

    dataset: str
    base_model: str
    run_name: str = "run"
    language: str = "en"
    epochs: int = 10
    batch_size: int = 2
    grad_accum: int = 1
    learning_rate: float = 5e-6
    weight_decay: float = 1e-2
    max_audio_s: float = 11.0
    max_text_len: int = 200
    eval_fraction: float = 0.1
    seed: int = 1
    save_every: int = 0  # 0: about ten saves per run
    keep_checkpoints: int = 2
    test_sentences: list[str] = field(default_factory=list)
    reference_clip: str = ""
    mixed_precision: bool = False
    gradient_checkpointing: bool = False
    num_workers: int = 0
    samples: bool = True  # render the test sentences at every save
    gpus: list[int] = field(default_factory=list)  # two or more: one rank per GPU; empty: the studio's device

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def validated(self) -> TrainingConfig:
        checks = [
            (self.epochs < 1, "Epochs must be at least 1."),
            (self.batch_size < 1, "The batch size must be at least 1."),
            (self.grad_accum < 1, "Gradient accumulation must be at least 1."),
            (
                not 0 < self.learning_rate < 1e-2,
                "The learning rate must be between 0 and 0.01 (XTTS likes about 5e-6).",
            ),
            (not 1.0 <= self.max_audio_s <= 30.0, "The max clip length must be between 1 and 30 seconds."),
            (not 10 <= self.max_text_len <= 400, "The max text length must be between 10 and 400 characters."),
            (self.keep_checkpoints < 1, "Keep at least 1 checkpoint."),
            (self.save_every < 0, "Save every N steps must be 0 (automatic) or more."),
        ]
        for failed, message in checks:
            if failed:
                raise InvalidInput(message)
        return self

    @property
    def world_size(self) -> int:
        """How many ranks train together: one per listed GPU when there are two or more."""
        return len(self.gpus) if len(self.gpus) > 1 else 1

    def steps_per_epoch(self, train_clips: int) -> int:
        """Each rank trains on its share of the clips (padded to equal shares), one batch per step."""
        return max(1, math.ceil(math.ceil(train_clips / self.world_size) / self.batch_size))

    def save_interval(self, train_clips: int) -> int:
        """The save interval in steps: as set, or about ten saves over the whole run."""
        if self.save_every:
            return self.save_every
        total = self.steps_per_epoch(train_clips) * self.epochs
        return max(1, total // 10)


def preset(name: str, base: TrainingConfig, *, train_clips: int, minutes: float) -> TrainingConfig:
    """Fill epochs and batch size from the dataset's size; small sets get more epochs."""
    name = name.strip().lower()
    if name not in PRESETS:
        raise InvalidInput(f"Unknown preset '{name}'. Choose one of: {', '.join(PRESETS)}.")
    batch = 2 if train_clips < 50 else 4 if train_clips < 500 else 8
    if name == "quick test":
        return replace(base, epochs=2, batch_size=min(batch, 2), grad_accum=1, save_every=0)
    scale = 1.0 if minutes >= 30 else 2.0 if minutes >= 5 else 3.0
    epochs = round((10 if name == "standard" else 30) * scale)
    accumulate = max(1, 252 // (batch * 10)) if name == "thorough" else max(1, 64 // (batch * 8))
    return replace(base, epochs=epochs, batch_size=batch, grad_accum=accumulate, save_every=0)


def preset_for_dataset(name: str, dataset: Path, *, epochs: int, batch_size: int) -> TrainingConfig:
    """:func:`preset` sized to the training split of the Coqui-format folder ``dataset``."""
    clips, minutes = split_size(dataset)
    base = TrainingConfig(dataset=str(dataset), base_model="", epochs=int(epochs), batch_size=int(batch_size))
    return preset(name, base, train_clips=clips, minutes=minutes)


def read_config(path: Path) -> TrainingConfig:
    try:
        return TrainingConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInput(f"Could not read the training settings in {path}: {exc}") from exc
