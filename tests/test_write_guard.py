"""The suite-wide check that nothing is written outside the data folders and the test cache."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests import write_guard


def test_a_new_file_anywhere_watched_is_named(tmp_path: Path) -> None:
    temp, home, repo, cache = tmp_path / "tmp", tmp_path / "home", tmp_path / "repo", tmp_path / "home/.cache/tests"
    for folder in (temp, home / ".config", repo / "outputs", cache):
        folder.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/outputs/*\n")
    watched = write_guard.Watched(temp=temp, home=home, repo=repo, allowed=(cache,))
    before = write_guard.snapshot(watched)

    (temp / ".tensorboard-info").mkdir()
    (home / ".config" / "matplotlib").mkdir()
    (repo / "stray.wav").write_bytes(b"x")
    (repo / "outputs" / "take.wav").write_bytes(b"x")  # a data folder: fine
    (cache / "kit").mkdir()  # the test cache: fine
    (home / ".pki").mkdir()  # Chromium's own: fine

    stray = write_guard.stray_writes(before, write_guard.snapshot(watched), watched)
    assert stray == sorted(
        [str(temp / ".tensorboard-info"), str(home / ".config" / "matplotlib"), str(repo / "stray.wav")]
    )


def test_nothing_new_is_nothing_stray(tmp_path: Path) -> None:
    watched = write_guard.Watched(temp=tmp_path, home=tmp_path, repo=None)
    before = write_guard.snapshot(watched)
    assert write_guard.stray_writes(before, write_guard.snapshot(watched), watched) == []
