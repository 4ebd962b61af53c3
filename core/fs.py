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

Folders are written the same way (:func:`staged_folder`): built in a hidden ``.staging-*``
folder beside the target and renamed into place; an old version is first renamed to
``.trash-*``. :func:`remove_folder` renames a folder to ``.deleting-*`` before deleting it.
:func:`recover`, run when the owner opens the parent folder, finishes or rolls back what a
crash interrupted, so a crash at any point leaves the old folder or the new one, never half.
Each staging, trash or deleting folder is tied to a hidden lock file (``.lock-<token>``) that
its writer holds from before the folder exists until it is gone, so another studio process
sharing the data folder (a replica) recovering the same parent leaves work in progress alone.

Names (:func:`clean_name`, :func:`slug`): a display name someone typed is checked once, and
the folder or file name derived from it is made the same way everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from core import locks
from core.errors import InvalidInput, StudioError

log = logging.getLogger(__name__)

_SEPARATORS = ("/", "\\")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NAME_MAX = 64
STAGING = ".staging-"
TRASH = ".trash-"
DELETING = ".deleting-"
LOCK = ".lock-"
_TRASH_NAME = re.compile(r"\.trash-[0-9a-f]+-(.+)")
_TOKEN = re.compile(r"\.(?:staging|trash|deleting|lock)-([0-9a-f]+)")
_FILE_NAME = re.compile(r"\w[\w .()+-]*")


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
        if exc.errno in _DISK_FULL:
            raise _disk_full(path) from exc
        raise
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _disk_full(path: Path) -> StudioError:
    return StudioError(
        f"The disk is full: could not write {path.name} in {path.parent}. Nothing was saved; free some space and try again."
    )


def copy_file(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` atomically, as :func:`write_with` writes."""
    with open(source, "rb") as src:
        return write_with(target, lambda handle: shutil.copyfileobj(src, handle, 1024 * 1024))


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders."""
    return write_with(path, lambda handle: handle.write(data))


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


# ---- names --------------------------------------------------------------------------------


def clean_name(raw: str | None, *, noun: str, file_name: bool = False) -> str:
    """A display name, stripped and NFKC-normalised, that is safe to show and to derive a folder from.

    ``noun`` says what is named ("voice", "dataset", "RVC model"), for the messages. With
    ``file_name`` the name is itself used as a file name (no :func:`slug` in between), so it is
    also held to letters, digits, spaces and ``- _ . ( ) +``, starting with a letter or digit and
    without ``..``. Raises :class:`InvalidInput` saying what is wrong.
    """
    name = unicodedata.normalize("NFKC", raw or "").strip()
    if not name:
        raise InvalidInput(f"The {noun} name is empty. Give the {noun} a name.")
    if any(ch in "/\\" or unicodedata.category(ch).startswith("C") for ch in name):
        raise InvalidInput(f"The {noun} name may not contain slashes, backslashes or control characters.")
    if len(name) > NAME_MAX:
        raise InvalidInput(f"The {noun} name can be at most {NAME_MAX} characters (this one has {len(name)}).")
    if not re.search(r"\w", name):
        raise InvalidInput(f"The {noun} name needs at least one letter or digit.")
    if file_name and (".." in name or not _FILE_NAME.fullmatch(name)):
        raise InvalidInput(
            f"'{name}' is not a usable {noun} name: use letters, digits, spaces and - _ . ( ) +, "
            "not starting with a dot and without '..'."
        )
    return name


def slug(name: str, *, fallback: str, limit: int = NAME_MAX) -> str:
    """A folder or file name derived from ``name``: lower case, letters of any script, digits, '-' and '_'.

    Every run of other characters becomes one '-'; the result never starts with a dot, so it is
    never hidden, '.' or '..', and is ``fallback`` when nothing usable is left.
    """
    text = re.sub(r"[^\w-]+", "-", unicodedata.normalize("NFKC", name).casefold()).strip("-_")
    return text[:limit].rstrip("-_") or fallback


# ---- folders: stage, then rename into place -----------------------------------------------


class Staging:
    """A hidden folder beside ``target``; :meth:`commit` renames it into place.

    ``target`` may be changed before the commit (to another name in the same folder) when the
    name is known only from what was staged.
    """

    def __init__(self, target: Path, replaces: Path | None) -> None:
        self.target = target
        self.replaces = replaces
        self.token, self.hold = _new_token(target.parent)  # held before the folder exists: recover skips it
        self.path = target.parent / f"{STAGING}{self.token}"
        self.committed = False

    def commit(self) -> Path:
        """Rename the staged folder to ``target``, in place of ``replaces`` when that exists.

        The old folder is renamed to ``.trash-<token>-<target name>`` first; if the process dies
        before the second rename, :func:`recover` moves it back to ``target``'s name, so the
        folder there is always the old version or the new one. Called a second time, it does
        nothing. Raises :class:`InvalidInput` if ``target`` exists and is not what is replaced.
        """
        if self.committed:
            return self.target
        if self.target.parent != self.path.parent:
            raise ValueError(f"{self.target} is not beside its staging folder {self.path}")
        old = self.replaces if self.replaces is not None and self.replaces.exists() else None
        if self.target.exists() and self.target != old:
            raise InvalidInput(f"{self.target.name} exists already in {self.target.parent}; choose another name.")
        if old is None:
            os.replace(self.path, self.target)
        else:
            trash = self.target.parent / f"{TRASH}{self.token}-{self.target.name}"
            os.replace(old, trash)
            try:
                os.replace(self.path, self.target)
            except BaseException:
                os.replace(trash, old)
                raise
            shutil.rmtree(trash, ignore_errors=True)
        self.committed = True
        return self.target


@contextlib.contextmanager
def staged_folder(target: Path, *, replaces: Path | None = None) -> Iterator[Staging]:
    """Build a folder in a hidden staging folder beside ``target``; on success it becomes ``target``.

    Write into ``staging.path`` in the block. The block may call ``staging.commit()`` itself
    (to commit while it holds a lock); otherwise the folder is committed when the block ends.
    ``replaces`` is the folder (in the same parent, usually ``target`` itself) the new one
    takes the place of. If the block or the commit fails, the staging folder is removed and
    nothing changes; a full disk becomes a :class:`StudioError` naming the folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Staging(target, replaces)
    try:
        staging.path.mkdir()
        yield staging
        staging.commit()
    except OSError as exc:
        shutil.rmtree(staging.path, ignore_errors=True)
        if exc.errno in _DISK_FULL:
            raise _disk_full(target) from exc
        raise
    except BaseException:
        shutil.rmtree(staging.path, ignore_errors=True)
        raise
    finally:
        locks.discard(staging.hold)


def remove_folder(path: Path) -> None:
    """Delete a folder so that no crash leaves part of it under its name: rename it away, then delete."""
    if not path.exists():
        return
    token, held = _new_token(path.parent)
    try:
        doomed = path.with_name(f"{DELETING}{token}-{path.name}")
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    finally:
        locks.discard(held)


def _new_token(parent: Path) -> tuple[str, locks.Hold]:
    """A fresh token and its held lock, which marks the staging, trash or deleting folders named with it.

    A recover in another process may list the new lock file and take it in the instant before
    this process does; then another token is drawn.
    """
    for _ in range(8):
        token = secrets.token_hex(8)
        held = locks.try_hold(parent / f"{LOCK}{token}")
        if held is not None:
            return token, held
    raise StudioError(f"Could not take a staging lock in {parent}; try again.")


def recover(parent: Path) -> list[str]:
    """Finish or roll back the folder changes a crash interrupted in ``parent``; returns the names put back.

    Run it when the owner opens ``parent``, before anything writes there. Staging folders and
    folders being deleted go. A trash folder is an old version moved aside by
    :meth:`Staging.commit`: if the new version never reached the name, the old one is put back
    there; otherwise the trash goes.
    """
    if not parent.is_dir():
        return []
    restored: list[str] = []
    by_token: dict[str, list[Path]] = {}
    for entry in sorted(parent.iterdir()):
        if found := _TOKEN.match(entry.name):
            by_token.setdefault(found[1], []).extend([] if entry.name.startswith(LOCK) else [entry])
    for token, entries in sorted(by_token.items()):
        held = locks.try_hold(parent / f"{LOCK}{token}")
        if held is None:  # another process (or thread) is still writing these
            continue
        try:
            for entry in entries:
                _recover_one(parent, entry, restored)
        finally:
            locks.discard(held)  # a lock file a dead process left goes too
    return restored


def _recover_one(parent: Path, entry: Path, restored: list[str]) -> None:
    if not entry.exists():  # finished by its writer since the folder was listed
        return
    trashed = _TRASH_NAME.fullmatch(entry.name)
    if trashed and not (parent / trashed[1]).exists():
        os.replace(entry, parent / trashed[1])
        log.warning("restored %s in %s after an interrupted change", trashed[1], parent)
        restored.append(trashed[1])
    elif entry.name.startswith((STAGING, TRASH, DELETING)):
        shutil.rmtree(entry, ignore_errors=True)
