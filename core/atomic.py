"""Atomic file writes: a temp file in the same folder, fsync, then rename.

A crash mid-write leaves the old file (or none), never a half-written one.
A full disk becomes a :class:`StudioError` that names the folder.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from core.errors import StudioError


def write_with(path: Path, fill: Callable[[IO[bytes]], object]) -> Path:
    """Let ``fill`` write the content into a temp file beside ``path``, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StudioError(
                f"The disk is full: could not write {path.name} in {path.parent}. Nothing was saved; free some space and try again."
            ) from exc
        raise
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders."""
    return write_with(path, lambda handle: handle.write(data))


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
