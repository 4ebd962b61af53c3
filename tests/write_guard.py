"""A check around the whole suite: nothing is written outside the data folders and the test cache.

Before the first test the session lists what exists in the places a stray write would land
(the system temp folder, the home folder and its cache/config folders, the repository's
working tree outside ``models/`` and ``outputs/``); after the last test it lists them again.
Anything new fails the run, named. The session's own scratch files (pytest's tmp_path, the
tiny-model kit, Chromium profiles) live in the test cache, which the session points TMPDIR
and the library cache variables at; the studio started as a child process points them at
its own data folders (core/scratch.py), which is what this check proves.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Written by test tools, not by the studio: allowed to appear.
TOOL_OWNED = (
    ".pki",  # Chromium's NSS certificate store, created on its first start
    ".cache/pip",
)
REPO_IGNORED = ("models/", "outputs/", ".venv/", ".pytest_cache/", ".ruff_cache/")


@dataclass(frozen=True)
class Watched:
    """The places to watch: ``temp`` and ``home`` one level deep (``home``'s dot folders two), ``repo`` by git."""

    temp: Path
    home: Path
    repo: Path | None
    allowed: tuple[Path, ...] = field(default=())


def _children(folder: Path) -> Iterable[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _repo_entries(repo: Path) -> set[str]:
    listed = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--ignored", "--untracked-files=all"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    entries = set()
    for line in listed.splitlines():
        path = line[3:].strip().strip('"')
        if line.startswith(("??", "!!")) and not path.startswith(REPO_IGNORED) and "__pycache__" not in path:
            entries.add(str(repo / path))
    return entries


def snapshot(watched: Watched) -> set[str]:
    """Every entry in the watched places, as absolute path strings."""
    found = {str(p) for p in _children(watched.temp)}
    found |= {str(p) for p in _children(watched.home)}
    for sub in (".cache", ".config", ".local", ".local/share", ".local/state"):
        found |= {str(p) for p in _children(watched.home / sub)}
    if watched.repo is not None:
        found |= _repo_entries(watched.repo)
    return found


def stray_writes(before: set[str], after: set[str], watched: Watched) -> list[str]:
    """What appeared since ``before`` that is neither the test cache nor a test tool's own file."""
    allowed = [*watched.allowed, *(watched.home / p for p in TOOL_OWNED)]
    stray = []
    for entry in sorted(after - before):
        path = Path(entry)
        if any(path == a or path.is_relative_to(a) or a.is_relative_to(path) for a in allowed):
            continue
        stray.append(entry)
    return stray
