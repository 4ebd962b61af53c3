"""The studio's file-system rules: paths from outside proven inside a root, and atomic writes.

Paths that come from outside the process: resolve them and prove they lie inside an allowed root.

Everything a browser or an API client sends (table cells, dropdown values, typed folders,
names, run ids, checkpoint paths) is untrusted. Before the studio reads, lists, plays or
returns such a path it goes through :func:`resolve_inside`, which refuses, with a message
that names the field:

- empty values, NUL and other control characters;
- URL-encoded path parts (``%2e%2e%2f``) and Unicode look-alikes of dots and slashes
  (``．．／``), which some layer might decode into a traversal later;
- anything that, once ``..`` and every symbolic link are resolved, lies outside all roots
  (so a link inside a data folder that points elsewhere is refused too).

:func:`child` is the same check for a plain name that must be one path component.

Atomic writes (:func:`write_with` and friends): a temp file in the same folder, fsync, then
rename, so a crash mid-write leaves the old file (or none), never a half-written one; a full
disk becomes a :class:`StudioError` that names the folder.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from core.errors import InvalidInput, StudioError

_SEPARATORS = ("/", "\\")


class UnsafePath(InvalidInput):
    """A path from a client points outside the folders the studio may use."""


def _describe(roots: Iterable[Path]) -> str:
    return ", ".join(str(r) for r in roots) or "(none)"


def _screen(raw: str, what: str) -> str:
    """Refuse the spellings that hide a traversal; return the value stripped of surrounding blanks."""
    value = raw.strip()
    if not value:
        raise InvalidInput(f"The {what} is empty.")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise UnsafePath(f"The {what} contains control characters; it was refused.")
    if _adds_traversal(value, unquote(value)):
        raise UnsafePath(f"The {what} '{value}' is URL-encoded; send it as a plain path.")
    if _adds_traversal(value, unicodedata.normalize("NFKC", value)):
        raise UnsafePath(f"The {what} '{value}' uses look-alike characters for dots or slashes; it was refused.")
    if _climbs(value) > value.split("/").count(".."):
        raise UnsafePath(f"The {what} '{value}' uses backslashes to climb folders; it was refused.")
    return value


def _climbs(text: str) -> int:
    return re.split(r"[/\\]", text).count("..")


def _separators(text: str) -> int:
    return sum(text.count(sep) for sep in _SEPARATORS)


def _adds_traversal(value: str, decoded: str) -> bool:
    """Whether ``decoded`` has separators or '..' parts that ``value`` itself does not."""
    return decoded != value and (_separators(decoded) != _separators(value) or _climbs(decoded) > _climbs(value))


def resolve_inside(
    value: str | os.PathLike[str],
    roots: Iterable[Path],
    *,
    what: str = "path",
    base: Path | None = None,
    kind: str | None = None,
) -> Path:
    """``value`` resolved (``..`` and symlinks) and proven to lie inside one of ``roots``.

    A relative ``value`` is taken relative to ``base`` (default: the first root). ``kind`` is
    ``"file"`` or ``"dir"`` to also require that it exists as one. Raises :class:`UnsafePath`
    (an :class:`InvalidInput`) naming ``what`` otherwise.
    """
    allowed = [Path(r).resolve() for r in roots]
    if not allowed:
        raise UnsafePath(f"No folder is allowed for the {what}.")
    if not isinstance(value, str | os.PathLike):
        raise InvalidInput(f"The {what} must be a path, not {type(value).__name__}.")
    text = _screen(os.fspath(value), what)
    candidate = Path(text).expanduser() if text.startswith("~") else Path(text)
    if not candidate.is_absolute():
        candidate = (base or allowed[0]) / candidate
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on older Pythons
        raise UnsafePath(f"The {what} '{text}' cannot be resolved.") from exc
    if not any(resolved == root or resolved.is_relative_to(root) for root in allowed):
        raise UnsafePath(f"The {what} '{text}' is outside the folders the studio may use ({_describe(allowed)}).")
    if kind == "file" and not resolved.is_file():
        raise InvalidInput(f"The {what} '{text}' does not exist (or is not a file).")
    if kind == "dir" and not resolved.is_dir():
        raise InvalidInput(f"The {what} '{text}' does not exist (or is not a folder).")
    return resolved


def child(
    root: Path, name: str, *, what: str = "name", kind: str | None = None, roots: Iterable[Path] | None = None
) -> Path:
    """``root/name`` for a ``name`` that must be exactly one path component.

    Resolved, it must lie inside ``root``, or inside one of ``roots`` when given (an operator
    may link a folder in from an allowed place).
    """
    if not isinstance(name, str):
        raise InvalidInput(f"The {what} must be text, not {type(name).__name__}.")
    value = _screen(name, what)
    if value in (".", "..") or any(sep in value for sep in _SEPARATORS):
        raise UnsafePath(f"The {what} '{value}' may not contain slashes or be '.' or '..'.")
    return resolve_inside(root / value, [root] if roots is None else roots, what=what, kind=kind)


def is_inside(path: str | os.PathLike[str], roots: Iterable[Path]) -> bool:
    """Whether ``path`` passes :func:`resolve_inside` for ``roots`` (for filtering, not for errors)."""
    try:
        resolve_inside(path, roots)
    except InvalidInput:
        return False
    return True


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
