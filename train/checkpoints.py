"""Every checkpoint the studio knows: trained runs and imported model folders, and housekeeping.

A checkpoint is named by its path. Run checkpoints live in ``outputs/runs/<run>/trainer/*/``
(any of ``.pth``, ``.pt``, ``.safetensors``); imported models are folders under
``models/finetuned/<name>/``. Their samples and scores live beside them: a run's in
``samples/<step>/`` (where training writes them), an imported model's in
``outputs/checkpoints/<name>/samples/``. The base model's renders of the same sentences
sit in ``samples/base/`` for comparison.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import fs, locks
from core.errors import InvalidInput
from core.xtts import checkpoint_io
from train.config import DEFAULT_TEST_SENTENCES, TrainingConfig
from train.coqui_csv import TRAIN_FILE, read_metadata
from train.runs import ACTIVE, RunStore

BASE = "base"
IN_USE = (
    "{name} is loaded in a studio process sharing this data folder (another replica); "
    "load another model there before deleting it."
)
MAX_REFERENCE_CLIPS = 8


@dataclass(frozen=True)
class Entry:
    """One checkpoint (or the base model when ``path`` is None) and where its review files live."""

    path: Path | None
    kind: str  # "base", "run" or "imported"
    source: str  # the run or imported folder name
    step: int | None
    best: bool
    review_dir: Path  # samples/<step>/ (or the base model's renders for kind "base")
    base_model: Path | None  # the model folder its config, vocab and speakers come from
    reference_clips: tuple[Path, ...] = ()
    sentences: tuple[str, ...] = ()
    language: str = "en"

    @property
    def id(self) -> str:
        return str(self.path) if self.path is not None else BASE

    @property
    def label(self) -> str:
        if self.kind == "base":
            return "base model"
        if self.kind == "imported":
            return f"imported · {self.source}"
        return f"{self.source} · step {self.step}{' (best)' if self.best else ''}"

    def sample_files(self) -> list[Path]:
        return sorted(self.review_dir.glob("[0-9]*.wav"), key=lambda p: int(p.stem)) if self.review_dir.is_dir() else []

    def sample_sentences(self) -> list[str]:
        """The sentences its samples speak (as written next to them), else the ones to render."""
        written = self.review_dir / "sentences.json"
        if written.is_file():
            try:
                return [str(s) for s in json.loads(written.read_text(encoding="utf-8"))]
            except ValueError:
                pass
        return list(self.sentences)


class CheckpointCatalog:
    """Finds checkpoints, describes them, and deletes or prunes them on request."""

    def __init__(self, runs: RunStore, imported_root: Path, reviews_root: Path) -> None:
        self.runs = runs
        self.imported_root = imported_root
        self.reviews_root = reviews_root
        self._headers: dict[tuple[str, int, int], checkpoint_io.CheckpointHeader | str] = {}

    # ---- finding ------------------------------------------------------------------------
    def _run_entries(self, folder: Path) -> list[Entry]:
        try:
            state = self.runs.read(folder)
        except InvalidInput:
            return []
        params = TrainingConfig.from_dict(state.get("params", {}))
        sentences = tuple(params.test_sentences or DEFAULT_TEST_SENTENCES.get(params.language, []))
        clips = self._reference_clips(params)
        base_model = Path(params.base_model) if params.base_model else None
        shared = {"reference_clips": clips, "sentences": sentences, "language": params.language}
        return [
            Entry(c.path, "run", folder.name, c.step, c.best, folder / "samples" / str(c.step), base_model, **shared)
            for c in self.runs.checkpoints(folder)
        ]

    @staticmethod
    def _reference_clips(params: TrainingConfig) -> tuple[Path, ...]:
        """The run's reference clip, then dataset clips: what a good checkpoint should sound like."""
        clips = [Path(params.reference_clip)] if params.reference_clip else []
        dataset = Path(params.dataset) if params.dataset else None
        if dataset is not None and (dataset / TRAIN_FILE).is_file():
            try:
                rows = read_metadata(dataset / TRAIN_FILE)
            except InvalidInput:
                rows = []
            clips += [dataset / row["audio_file"] for row in rows[:MAX_REFERENCE_CLIPS] if row.get("audio_file")]
        return tuple(c for c in clips if c.is_file())

    def _imported_entries(self) -> list[Entry]:
        if not self.imported_root.is_dir():
            return []
        found = []
        for folder in sorted(self.imported_root.iterdir()):
            model = folder / "model.pth"
            if folder.name.startswith(".") or not model.is_file():
                continue
            meta = _read_json(folder / "studio.json")
            language = str(meta.get("language", "en"))
            sentences = tuple(
                meta.get("sentences") or DEFAULT_TEST_SENTENCES.get(language, DEFAULT_TEST_SENTENCES["en"])
            )
            review = self.reviews_root / folder.name
            step = meta.get("step") if isinstance(meta.get("step"), int) else None
            found.append(
                Entry(model, "imported", folder.name, step, False, review / "samples", folder, (), sentences, language)
            )
        return found

    def entries(self, run: str | None = None) -> list[Entry]:
        """Every checkpoint, newest run first; ``run`` narrows to one run."""
        found: list[Entry] = []
        if self.runs.root.is_dir():
            for folder in sorted(self.runs.root.iterdir(), reverse=True):
                if (folder / "run.json").is_file() and (run is None or folder.name == run):
                    found += self._run_entries(folder)
        if run is None:
            found += self._imported_entries()
        return found

    def base_entry(self, of: Entry) -> Entry:
        """The base model, rendering ``of``'s sentences in ``of``'s voice (its renders sit beside ``of``'s)."""
        return Entry(None, "base", of.source, None, False, of.review_dir.parent / BASE, of.base_model,
                     of.reference_clips, of.sentences, of.language)  # fmt: skip

    def get(self, checkpoint: str) -> Entry:
        """The entry for a path (or ``"base"``); anything outside the studio's folders is refused."""
        wanted = (checkpoint or "").strip()
        if not wanted:
            raise InvalidInput("Pick a checkpoint.")
        if wanted == BASE:
            return Entry(None, "base", BASE, None, False, self.reviews_root / BASE / "samples", None,
                         sentences=tuple(DEFAULT_TEST_SENTENCES["en"]))  # fmt: skip
        path = Path(wanted).expanduser()
        try:
            path = path.resolve()
        except OSError as exc:
            raise InvalidInput(f"'{wanted}' is not a checkpoint path.") from exc
        for entry in self.entries():
            if entry.path is not None and entry.path.resolve() == path:
                return entry
        raise InvalidInput(
            f"'{wanted}' is not a checkpoint of this studio (runs under {self.runs.root}, imported models under "
            f"{self.imported_root}). Refresh the list: it may have been deleted."
        )

    # ---- describing ---------------------------------------------------------------------
    def header(self, path: Path) -> checkpoint_io.CheckpointHeader | str:
        """The checkpoint's header, or the reason it cannot be read (remembered per file version)."""
        try:
            stamp = checkpoint_io.file_stamp(path)
        except OSError as exc:
            return f"cannot be read: {exc.strerror}"
        known = self._headers.get(stamp)
        if known is None:
            try:
                known = checkpoint_io.read_header(path)
            except InvalidInput as exc:
                known = str(exc)
            self._headers[stamp] = known
        return known

    def row(self, entry: Entry, scores: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JSON-able description: run, step, epoch, losses, size, date, best, error, samples, scores."""
        assert entry.path is not None
        header = self.header(entry.path)
        stat = entry.path.stat() if entry.path.exists() else None
        train_loss = eval_loss = None
        if entry.kind == "run" and entry.step is not None:
            losses = self.runs.losses(entry.path.parent.parent.parent)
            train_loss = _loss_at(losses, "train mel CE", entry.step)
            eval_loss = _loss_at(losses, "eval loss", entry.step)
        return {
            "checkpoint": entry.id,
            "label": entry.label,
            "kind": entry.kind,
            "run": entry.source,
            "step": entry.step,
            "epoch": header.epoch if isinstance(header, checkpoint_io.CheckpointHeader) else None,
            "train_loss": train_loss,
            "eval_loss": eval_loss,
            "size_mb": round(stat.st_size / 1e6, 1) if stat else None,
            "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(stat.st_mtime)) if stat else None,
            "best": entry.best,
            "error": header if isinstance(header, str) else None,
            "samples": [str(p) for p in entry.sample_files()],
            "sentences": entry.sample_sentences(),
            "scores": scores,
        }

    # ---- housekeeping -------------------------------------------------------------------
    def _check_not_training(self, entry: Entry) -> None:
        if entry.kind == "run":
            state = self.runs.status(entry.source)
            if state.get("state") in ACTIVE:
                raise InvalidInput(f"{entry.source} is training; cancel it before deleting its checkpoints.")

    @staticmethod
    @contextlib.contextmanager
    def _unused(paths: list[Path]) -> Iterator[None]:
        """Hold the in-use markers of ``paths`` for the block: refused while an engine in any studio
        process sharing this folder (a replica) has one of them loaded."""
        held = locks.claim(paths, refusal=IN_USE)
        try:
            yield
        finally:
            for hold in held:
                locks.discard(hold)

    def delete(self, entry: Entry) -> int:
        """Delete one checkpoint file (and its samples when no other file shares its step); bytes freed."""
        if entry.path is None:
            raise InvalidInput("The base model cannot be deleted here.")
        self._check_not_training(entry)
        with self._unused([entry.path]):
            return self._delete(entry, entry.path)

    def _delete(self, entry: Entry, path: Path) -> int:
        if entry.kind == "imported":
            freed = _size(path.parent) + _size(entry.review_dir.parent)
            fs.remove_folder(path.parent)
            fs.remove_folder(entry.review_dir.parent)
            return freed
        freed = path.stat().st_size
        path.unlink()
        siblings = [e for e in self._run_entries(self.runs.folder(entry.source)) if e.step == entry.step]
        if not siblings and entry.review_dir.is_dir():
            freed += _size(entry.review_dir)
            fs.remove_folder(entry.review_dir)
        return freed

    def prune(self, run: str, keep_last: int, protect: set[Path] | None = None) -> tuple[int, int]:
        """Keep the best checkpoint, the last ``keep_last`` others and any in ``protect``.

        Returns (files deleted, bytes freed).
        """
        if keep_last < 0:
            raise InvalidInput("Keep at least 0 recent checkpoints (the best one is always kept).")
        folder = self.runs.folder(run)
        entries = self._run_entries(folder)
        if not entries:
            return 0, 0
        self._check_not_training(entries[0])
        best = [e for e in entries if e.best]
        regular = sorted((e for e in entries if not e.best), key=lambda e: e.step or 0)
        keep = set(best[-1:]) | set(regular[len(regular) - keep_last :] if keep_last else [])
        doomed = [e for e in entries if e not in keep and e.path and e.path.resolve() not in (protect or set())]
        freed = 0
        for entry in doomed:
            freed += self.delete(entry)
        return len(doomed), freed

    def delete_run(self, run: str) -> int:
        folder = self.runs.folder(run)
        if self.runs.status(run).get("state") in ACTIVE:
            raise InvalidInput(f"{run} is training; cancel it first.")
        with self._unused([e.path for e in self._run_entries(folder) if e.path is not None]):
            freed = _size(folder)
            fs.remove_folder(folder)
        return freed

    def disk_usage(self) -> list[dict[str, Any]]:
        """Megabytes per run and per imported model, biggest first."""
        rows = []
        if self.runs.root.is_dir():
            for folder in self.runs.root.iterdir():
                if (folder / "run.json").is_file():
                    rows.append({"name": folder.name, "kind": "run", "mb": round(_size(folder) / 1e6, 1),
                                 "checkpoints": len(self.runs.checkpoints(folder))})  # fmt: skip
        for entry in self._imported_entries():
            rows.append({"name": entry.source, "kind": "imported", "mb": round(_size(entry.path.parent) / 1e6, 1),
                         "checkpoints": 1})  # fmt: skip
        return sorted(rows, key=lambda r: -r["mb"])


def _loss_at(rows: list[dict[str, Any]], series: str, step: int) -> float | None:
    """The last value of ``series`` logged at or before ``step``."""
    best: tuple[int, float] | None = None
    for row in rows:
        if row["series"] == series and row["step"] <= step and (best is None or row["step"] >= best[0]):
            best = (row["step"], row["value"])
    return round(best[1], 4) if best else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
