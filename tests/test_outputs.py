import errno
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core import fs
from core.errors import StudioError
from core.outputs import OutputStore


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "x.json"
    fs.write_json(target, {"a": 1})
    fs.write_json(target, {"a": 2})
    assert target.read_text().strip().endswith("}") and '"a": 2' in target.read_text()
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_crash_mid_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.txt"
    fs.write_text(target, "old")

    def crash(fd: int) -> None:
        raise KeyboardInterrupt  # the process dies between writing and renaming

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        fs.write_text(target, "new and longer")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_full_disk_is_a_clear_message_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StudioError, match=r"disk is full.*Nothing was saved"):
        fs.write_text(tmp_path / "y.txt", "data")
    assert list(tmp_path.iterdir()) == []


def test_output_store_lists_newest_first_and_skips_orphans(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    tone = np.sin(np.linspace(0, 440 * 2 * np.pi, 24000)).astype(np.float32)
    first = store.save(tone, 24000, {"text": "First one!", "voice": "v"})
    second = store.save(tone[:12000], 24000, {"text": "Second", "voice": "v"})
    os.utime(first.wav, (1, 1))  # make the order unambiguous
    orphan = second.wav.with_name("orphan.wav")
    sf.write(orphan, tone, 24000)
    names = [r.wav for r in store.recent()]
    assert names == [second.wav, first.wav]
    assert second.meta["duration_s"] == 0.5
    assert first.wav.name.split("_")[1] == "first-one"
    data, rate = sf.read(first.wav)
    assert rate == 24000 and len(data) == 24000
