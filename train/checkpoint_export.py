"""Standalone model folders: export a checkpoint so Coqui's own loader takes it, and import one back.

An export holds ``config.json``, ``model.pth`` (``{"model": weights}``, no optimizer,
scheduler or DVAE), ``vocab.json``, the speakers file when the base has one, and
``studio.json`` (where it came from). ``Xtts.load_checkpoint(config, checkpoint_dir=...)``
loads it as it is. Imports are checked file by file; weights load with
``weights_only=True``, so a pickle that would run code is refused.
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from core import fs
from core.errors import InvalidInput
from core.xtts import checkpoint_io
from train.checkpoints import CheckpointCatalog, Entry

MODEL_FILES = ("config.json", "model.pth", "vocab.json")
OPTIONAL_FILES = ("speakers_xtts.pth", "studio.json")
MAX_IMPORT_BYTES = 8 * 1024**3


def export(catalog: CheckpointCatalog, checkpoint: str, exports_root: Path, name: str | None = None) -> dict[str, str]:
    """Write ``exports_root/<name>/`` and ``<name>.zip``; returns both paths."""
    entry = catalog.get(checkpoint)
    if entry.path is None or entry.base_model is None:
        raise InvalidInput("Pick a checkpoint to export (the base model is already a standalone folder).")
    base = entry.base_model
    missing = [f for f in ("config.json", "vocab.json") if not (base / f).is_file()]
    if missing:
        raise InvalidInput(f"The base model folder {base} is missing {', '.join(missing)}; cannot export.")
    default = f"{entry.source}-step{entry.step}" if entry.step is not None else entry.source
    name = fs.slug(name or "", fallback=fs.slug(default, fallback="checkpoint"))
    target = exports_root / name
    if target.exists():
        name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        target = exports_root / name
    with fs.staged_folder(target) as staging:
        checkpoint_io.write_model(staging.path / "model.pth", checkpoint_io.read_state_dict(entry.path))
        for file_name in ("config.json", "vocab.json", "speakers_xtts.pth"):
            if (base / file_name).is_file():
                shutil.copy2(base / file_name, staging.path / file_name)
        fs.write_json(staging.path / "studio.json", _provenance(entry))
    archive = exports_root / f"{name}.zip"

    def fill(handle: Any) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as zipped:  # weights do not compress
            for path in sorted(target.iterdir()):
                zipped.write(path, f"{name}/{path.name}")

    fs.write_with(archive, fill)
    return {"folder": str(target), "zip": str(archive)}


def _provenance(entry: Entry) -> dict[str, Any]:
    return {
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "source": str(entry.path),
        "run": entry.source if entry.kind == "run" else None,
        "step": entry.step,
        "language": entry.language,
        "sentences": entry.sample_sentences(),
        "base_model": str(entry.base_model),
    }


def import_model(source: Path, imported_root: Path, name: str | None = None) -> Path:
    """Copy a model folder or zip into ``imported_root/<name>/`` after checking every file."""
    if not source.exists():
        raise InvalidInput(f"{source} does not exist.")
    given = fs.slug(name or "", fallback="")
    with fs.staged_folder(imported_root / (given or "model")) as staging:
        if source.is_dir():
            folder = _model_folder(source)
            for file_name in MODEL_FILES + OPTIONAL_FILES:
                if (folder / file_name).is_file():
                    shutil.copy2(folder / file_name, staging.path / file_name)
            default = folder.name
        else:
            default = _unzip(source, staging.path)
        _validate(staging.path, source.name)
        if not given:
            staging.target = imported_root / fs.slug(default, fallback="model")
        if staging.target.exists():
            raise InvalidInput(f"An imported model named {staging.target.name} exists already; pick another name.")
    return staging.target


def _model_folder(source: Path) -> Path:
    if all((source / f).is_file() for f in MODEL_FILES):
        return source
    nested = [p for p in source.iterdir() if p.is_dir() and all((p / f).is_file() for f in MODEL_FILES)]
    if len(nested) == 1:
        return nested[0]
    raise InvalidInput(f"{source.name} is not a model folder: it needs {', '.join(MODEL_FILES)}.")


def _unzip(archive_path: Path, staging: Path) -> str:
    """Extract only the known model files (from the top or one folder down); returns the folder's name."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInput(f"{archive_path.name} is not a zip file (or it is damaged).") from exc
    with archive:
        wanted: dict[str, zipfile.ZipInfo] = {}
        folder = archive_path.stem
        for member in archive.infolist():
            parts = member.filename.split("/")
            if member.is_dir() or ".." in parts or member.filename.startswith("/"):
                continue
            if len(parts) in (1, 2) and parts[-1] in MODEL_FILES + OPTIONAL_FILES:
                wanted[parts[-1]] = member
                folder = parts[0] if len(parts) == 2 else folder
        missing = [f for f in MODEL_FILES if f not in wanted]
        if missing:
            raise InvalidInput(f"{archive_path.name} is not an exported model: {', '.join(missing)} missing.")
        if sum(m.file_size for m in wanted.values()) > MAX_IMPORT_BYTES:
            raise InvalidInput(f"{archive_path.name} unpacks to more than 8 GB; that is not an XTTS model.")
        for file_name, member in wanted.items():
            with archive.open(member) as src, open(staging / file_name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
    return folder


def _validate(folder: Path, label: str) -> None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{label}: config.json is not valid JSON.") from exc
    if not isinstance(config, dict) or config.get("model") != "xtts":
        raise InvalidInput(f"{label}: config.json is not an XTTS config (its model is not 'xtts').")
    try:
        json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{label}: vocab.json is not valid JSON.") from exc
    checkpoint_io.read_header(folder / "model.pth")  # refuses code-running pickles and damaged files
    speakers = folder / "speakers_xtts.pth"
    if speakers.is_file():
        try:
            torch.load(speakers, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InvalidInput(f"{label}: speakers_xtts.pth was refused (not plain tensors) and not imported.") from exc
