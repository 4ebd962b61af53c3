"""Where a model to import comes from: an uploaded zip, or a folder on this machine inside the readable roots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.errors import InvalidInput
from core.fs import resolve_inside
from train import checkpoint_export


def import_source(archive: str | None, folder: str | None, readable_roots: Sequence[Path]) -> Path:
    """The zip if one was uploaded, else the typed folder (which must lie inside ``readable_roots``)."""
    if archive:
        return Path(archive)
    if (folder or "").strip():
        return resolve_inside(str(folder), readable_roots, what="model folder", kind="dir")
    raise InvalidInput("Upload a zip or type the path of a model folder.")


def import_checkpoint(
    archive: str | None, folder: str | None, *, readable_roots: Sequence[Path], imported_root: Path, name: str | None
) -> Path:
    """Import a model zip or folder (checked with weights_only loading) into ``imported_root``; returns its folder."""
    return checkpoint_export.import_model(import_source(archive, folder, readable_roots), imported_root, name or None)
