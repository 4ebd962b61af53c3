"""Hearing and judging checkpoints with the resident engine: samples, free sentences, scores.

Every render borrows the engine (:meth:`XTTSEngine.borrowed`): the checkpoint's weights are
swapped in, the sentences spoken with a fixed seed, and the active weights swapped back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from core import fs
from core.constants import XTTS_OUTPUT_RATE
from core.errors import InvalidInput
from core.model_files import ProgressCallback
from core.xtts.engine import VoiceSpec, XTTSEngine
from core.xtts.profiles import PROFILES
from core.xtts.text import validate_text
from train.checkpoints import CheckpointCatalog, Entry
from train.scoring import Scorer, read_scores, recommend, scores_plot

log = logging.getLogger(__name__)

RENDER_SEED = 1234
RENDER_PROFILE = "balanced"
VoiceResolver = Callable[[str | None], tuple[str, VoiceSpec]]


def write_wav(path: Path, audio: np.ndarray) -> Path:
    def fill(handle: Any) -> None:
        sf.write(handle, audio, XTTS_OUTPUT_RATE, format="WAV", subtype="PCM_16")

    return fs.write_with(path, fill)


class CheckpointReview:
    """Renders, speaks, scores, loads and recommends checkpoints."""

    def __init__(
        self,
        catalog: CheckpointCatalog,
        engine: XTTSEngine,
        scorer: Scorer,
        resolve_voice: VoiceResolver,
        renders_dir: Path,
        *,
        state_file: Path | None = None,
    ) -> None:
        """``state_file`` remembers the loaded checkpoint, so a restarted studio loads it again."""
        self.state_file = state_file
        self.catalog = catalog
        self.engine = engine
        self.scorer = scorer
        self.resolve_voice = resolve_voice
        self.renders_dir = renders_dir

    # ---- voices -------------------------------------------------------------------------
    def _voice_for(self, entry: Entry, voice: str | None) -> tuple[str, VoiceSpec]:
        """A named voice if given, else the run's reference clip, else the model's default speaker."""
        if voice:
            return self.resolve_voice(voice)
        if entry.reference_clips:
            return entry.reference_clips[0].name, VoiceSpec(clips=entry.reference_clips[:1])
        return self.resolve_voice(None)

    # ---- rendering ----------------------------------------------------------------------
    def _render(
        self, path: Path | None, sentences: list[str], spec: VoiceSpec, language: str, folder: Path,
        progress: ProgressCallback | None, label: str,
    ) -> list[Path]:  # fmt: skip
        written = []
        with self.engine.borrowed(path):
            conditioning = self.engine.conditioning(spec)
            for index, sentence in enumerate(sentences):
                if progress is not None:
                    progress(index / len(sentences), f"{label}: sentence {index + 1} of {len(sentences)}")
                audio = self.engine.synthesize(
                    [sentence], language=language, conditioning=conditioning, params=PROFILES[RENDER_PROFILE],
                    seed=RENDER_SEED,
                )  # fmt: skip
                written.append(write_wav(folder / f"{index}.wav", audio))
        fs.write_json(folder / "sentences.json", sentences)
        return written

    def render_samples(
        self, checkpoint: str, *, voice: str | None = None, force: bool = False,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Samples for ``checkpoint`` (kept when present unless ``force``) and the base model's, side by side."""
        entry = self.catalog.get(checkpoint)
        if entry.path is None:
            raise InvalidInput("Pick a checkpoint; the base model's samples are rendered beside each checkpoint's.")
        if isinstance(self.catalog.header(entry.path), str):
            raise InvalidInput(str(self.catalog.header(entry.path)))
        sentences = entry.sample_sentences() or list(entry.sentences)
        if not sentences:
            raise InvalidInput("This checkpoint has no test sentences to render.")
        name, spec = self._voice_for(entry, voice)
        base = self.catalog.base_entry(entry)
        if force or not entry.sample_files():
            self._render(entry.path, sentences, spec, entry.language, entry.review_dir, progress, entry.label)
        if force or len(base.sample_files()) < len(sentences):
            self._render(None, sentences, spec, entry.language, base.review_dir, progress, "base model")
        fs.write_json(entry.review_dir / "voice.json", {"voice": name, "clips": [str(c) for c in spec.clips]})
        if progress is not None:
            progress(1.0, "Samples ready")
        return self.listen(checkpoint)

    def listen(self, checkpoint: str) -> dict[str, Any]:
        """What to play for ``checkpoint``: reference clip, then per sentence its sample and the base model's."""
        entry = self.catalog.get(checkpoint)
        base = self.catalog.base_entry(entry)
        samples, base_samples = entry.sample_files(), base.sample_files()
        sentences = entry.sample_sentences()
        rows = [
            {"sentence": sentences[i] if i < len(sentences) else "", "checkpoint": str(p),
             "base": str(base_samples[i]) if i < len(base_samples) else None}
            for i, p in enumerate(samples)
        ]  # fmt: skip
        reference = entry.reference_clips[0] if entry.reference_clips else None
        return {"label": entry.label, "reference": str(reference) if reference else None, "rows": rows}

    def speak(
        self, checkpoint: str, text: str, *, voice: str | None = None, language: str | None = None,
        seed: int = RENDER_SEED, target: Path | None = None,
    ) -> Path:  # fmt: skip
        """``checkpoint`` (or ``"base"``) speaking ``text``; a WAV at ``target`` or under the renders folder."""
        entry = self.catalog.get(checkpoint)
        text = validate_text(text, max_chars=500)
        _, spec = self._voice_for(entry, voice)
        with self.engine.borrowed(entry.path):
            conditioning = self.engine.conditioning(spec)
            audio = self.engine.synthesize(
                [text], language=language or entry.language, conditioning=conditioning,
                params=PROFILES[RENDER_PROFILE], seed=seed,
            )  # fmt: skip
        if target is None:
            target = self.renders_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6:06d}.wav"
        return write_wav(target, audio)

    # ---- scores -------------------------------------------------------------------------
    def score(self, checkpoint: str, progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Scores of ``checkpoint``'s samples (rendering them first when missing); stored and re-read."""
        entry = self.catalog.get(checkpoint)
        if entry.path is None:
            raise InvalidInput("Pick a checkpoint to score.")
        base = self.catalog.base_entry(entry)
        if not entry.sample_files() or len(base.sample_files()) < len(entry.sample_files()):
            self.render_samples(checkpoint, progress=progress)
        if progress is not None:
            progress(0.9, "Transcribing and comparing voices")
        sentences = entry.sample_sentences()
        references = self._reference_clips(entry)
        base_scores = self.scorer.score_folder(
            base.review_dir, sentences, references, language=entry.language, base_seconds_per_char=None
        )
        return self.scorer.score_folder(
            entry.review_dir, sentences, references, language=entry.language,
            base_seconds_per_char=base_scores["seconds_per_char"],
        )  # fmt: skip

    def _reference_clips(self, entry: Entry) -> list[Path]:
        if entry.reference_clips:
            return list(entry.reference_clips)
        used = entry.review_dir / "voice.json"
        if used.is_file():
            clips = [Path(c) for c in json.loads(used.read_text(encoding="utf-8")).get("clips", [])]
            return [c for c in clips if c.is_file()]
        return []

    def rows(self, run: str | None = None) -> list[dict[str, Any]]:
        """Every checkpoint as a JSON row, with its stored scores."""
        return [self.catalog.row(e, read_scores(e.review_dir)) for e in self.catalog.entries(run)]

    def recommendation(self, rows: list[dict[str, Any]]) -> tuple[str | None, str]:
        return recommend(rows)

    def plot(self, rows: list[dict[str, Any]]) -> Path | None:
        return scores_plot(rows, self.renders_dir.parent / "plots" / "scores.png")

    # ---- the studio's model -------------------------------------------------------------
    def load(self, checkpoint: str) -> str:
        """Make ``checkpoint`` (or ``"base"``) the model every tab uses; returns the engine's status line."""
        entry = self.catalog.get(checkpoint)
        if entry.path is not None and isinstance(self.catalog.header(entry.path), str):
            raise InvalidInput(str(self.catalog.header(entry.path)))
        self.engine.activate(entry.path)
        self._remember(entry.path)
        return self.engine.status().message

    def _remember(self, path: Path | None) -> None:
        if self.state_file is None:
            return
        if path is None:
            self.state_file.unlink(missing_ok=True)
        else:
            fs.write_json(self.state_file, {"checkpoint": str(path), "base": str(self.engine.model_dir)})

    def restore(self) -> str | None:
        """Load the checkpoint that was in use when the studio stopped; its label, or None for the base."""
        if self.state_file is None or not self.state_file.is_file():
            return None
        try:
            saved = json.loads(self.state_file.read_text(encoding="utf-8"))
            if saved.get("base") != str(self.engine.model_dir):
                raise InvalidInput(f"it was fine-tuned from {saved.get('base')}, not the model loaded now")
            self.load(str(saved["checkpoint"]))
        except (InvalidInput, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("not loading the previous checkpoint again: %s", exc)
            self._remember(None)
            return None
        return self.active_label()

    def _check_not_loaded(self, paths: list[Path]) -> None:
        active = self.engine.active_checkpoint
        if active is not None and any(p.resolve() == active.resolve() for p in paths):
            raise InvalidInput(f"{active.name} is the model the studio is using; go back to base first.")

    def delete(self, checkpoint: str) -> int:
        """Delete a checkpoint (bytes freed); the one in use is refused."""
        entry = self.catalog.get(checkpoint)
        self._check_not_loaded([entry.path] if entry.path else [])
        return self.catalog.delete(entry)

    def prune(self, run: str, keep_last: int) -> tuple[int, int]:
        """Keep the best and the last ``keep_last`` checkpoints, and the one in use."""
        active = self.engine.active_checkpoint
        return self.catalog.prune(run, keep_last, protect={active.resolve()} if active else set())

    def delete_run(self, run: str) -> int:
        self._check_not_loaded([e.path for e in self.catalog.entries(run) if e.path is not None])
        return self.catalog.delete_run(run)

    def active_label(self) -> str:
        path = self.engine.active_checkpoint
        if path is None:
            return "base model"
        try:
            return self.catalog.get(str(path)).label
        except InvalidInput:
            return str(path)
