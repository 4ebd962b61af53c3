"""core.fs names and folders: one name check, one slug, stage-then-rename, deletes and crash recovery."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from core import fs
from core.errors import InvalidInput, StudioError


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "The voice name is empty"),
        ("   ", "The voice name is empty"),
        (None, "The voice name is empty"),
        ("../x", "may not contain slashes"),
        ("a/b", "may not contain slashes"),
        ("a\\b", "may not contain slashes"),
        ("tab\there", "control characters"),
        ("nul\x00", "control characters"),
        ("x" * 65, "at most 64 characters"),
        ("...", "at least one letter or digit"),
    ],
)
def test_clean_name_refuses_with_a_clear_message(raw: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        fs.clean_name(raw, noun="voice")


def test_clean_name_keeps_what_people_type() -> None:
    assert fs.clean_name("  Zoë  O'Brien (calm)  ", noun="voice") == "Zoë  O'Brien (calm)"
    assert fs.clean_name("声優 ナレーター", noun="voice") == "声優 ナレーター"
    assert fs.clean_name("ｆｕｌｌｗｉｄｔｈ", noun="voice") == "fullwidth"  # NFKC
    assert fs.clean_name("semi;colon", noun="voice") == "semi;colon"  # shown only; the folder is a slug


@pytest.mark.parametrize("raw", [".hidden", "a..b", "semi;colon", "(paren first"])
def test_a_name_used_as_a_file_name_is_held_to_portable_characters(raw: str) -> None:
    with pytest.raises(InvalidInput, match="not a usable RVC model name"):
        fs.clean_name(raw, noun="RVC model", file_name=True)


def test_a_file_name_may_hold_any_script() -> None:
    assert fs.clean_name("Zoë v2 (48k)", noun="RVC model", file_name=True) == "Zoë v2 (48k)"
    assert fs.clean_name("声優.v1", noun="RVC model", file_name=True) == "声優.v1"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Zoë  O'Brien (calm)", "zoë-o-brien-calm"),
        ("Beta Voice", "beta-voice"),
        ("声優 ナレーター", "声優-ナレーター"),
        ("../x", "x"),
        ("a/b\\c", "a-b-c"),
        ("bell\x07ring", "bell-ring"),
        ("..", "fallback"),
        ("", "fallback"),
        ("___", "fallback"),
        ("my.model.v2", "my-model-v2"),
    ],
)
def test_slug_is_one_safe_path_component(name: str, expected: str) -> None:
    assert fs.slug(name, fallback="fallback") == expected


def test_slug_cuts_to_the_limit_without_a_dangling_dash() -> None:
    assert fs.slug("abc def", fallback="x", limit=4) == "abc"
    assert len(fs.slug("x" * 100, fallback="x")) == fs.NAME_MAX


def test_staged_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "voices" / "new"
    with fs.staged_folder(target) as staging:
        (staging.path / "a.txt").write_text("a")
        assert staging.path.parent == target.parent and staging.path.name.startswith(".staging-")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "a"
    assert [p.name for p in target.parent.iterdir()] == ["new"]

    with pytest.raises(RuntimeError), fs.staged_folder(tmp_path / "voices" / "failed") as staging:
        (staging.path / "half.txt").write_text("half")
        raise RuntimeError("the encode failed")
    assert [p.name for p in target.parent.iterdir()] == ["new"]


def test_staged_folder_does_not_overwrite_a_folder_it_does_not_replace(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # empty: a plain rename would silently replace it
    with pytest.raises(InvalidInput, match="taken exists already"), fs.staged_folder(target) as staging:
        (staging.path / "x").write_text("x")
    assert list(target.iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_staged_folder_replaces_the_old_version(tmp_path: Path) -> None:
    old = tmp_path / "alpha"
    old.mkdir()
    (old / "v").write_text("old")
    with fs.staged_folder(old, replaces=old) as staging:
        (staging.path / "v").write_text("new")
    assert (old / "v").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["alpha"]

    renamed = tmp_path / "beta"
    with fs.staged_folder(renamed, replaces=old) as staging:
        (staging.path / "v").write_text("renamed")
        staging.commit()  # under the caller's lock, before the block ends
        assert (renamed / "v").read_text() == "renamed"
    assert [p.name for p in tmp_path.iterdir()] == ["beta"]


def test_a_failed_second_rename_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "alpha"
    old.mkdir()
    (old / "v").write_text("old")
    real = os.replace

    def second_fails(src: str | Path, dst: str | Path) -> None:
        if Path(src).name.startswith(".staging-"):
            raise OSError(errno.EIO, "I/O error")
        real(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(OSError, match="I/O error"), fs.staged_folder(old, replaces=old) as staging:
        (staging.path / "v").write_text("new")
    assert (old / "v").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["alpha"]


class Died(BaseException):
    """The process is killed: nothing after this point runs, not even the clean-up."""


def crash_after_renames(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Let ``count`` renames happen, then kill the process (no rollback, no rmtree)."""
    real = os.replace
    done = []

    def replace(src: str | Path, dst: str | Path) -> None:
        if len(done) == count:
            raise Died
        real(src, dst)
        done.append(dst)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(fs.shutil, "rmtree", lambda *args, **kwargs: None)


@pytest.mark.parametrize(("renames", "survivor"), [(0, "old"), (1, "old"), (2, "new")])
def test_a_crash_anywhere_in_a_replacement_recovers_to_one_whole_version(
    renames: int, survivor: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "alpha"
    old.mkdir()
    (old / "v").write_text("old")
    with monkeypatch.context() as patch:
        crash_after_renames(patch, renames)
        with pytest.raises(Died), fs.staged_folder(old, replaces=old) as staging:
            (staging.path / "v").write_text("new")
            if renames == 2:
                staging.commit()  # both renames done, then killed before the trash is deleted
                raise Died
    assert any(p.name.startswith((".staging-", ".trash-")) for p in tmp_path.iterdir())
    restored = fs.recover(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["alpha"]
    assert (old / "v").read_text() == survivor
    assert restored == (["alpha"] if renames == 1 else [])


def test_a_crash_in_a_renaming_replacement_keeps_exactly_one_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "alpha"
    old.mkdir()
    (old / "v").write_text("old")
    with monkeypatch.context() as patch:
        crash_after_renames(patch, 1)  # the old folder moved aside, the new one not yet in place
        with pytest.raises(Died), fs.staged_folder(tmp_path / "beta", replaces=old) as staging:
            (staging.path / "v").write_text("new")
    fs.recover(tmp_path)
    assert [(p.name, (p / "v").read_text()) for p in tmp_path.iterdir()] == [("beta", "old")]


def test_remove_folder_never_leaves_a_half_folder_under_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = tmp_path / "run"
    (doomed / "deep").mkdir(parents=True)
    (doomed / "deep" / "w.pth").write_bytes(b"w")
    fs.remove_folder(doomed)
    fs.remove_folder(doomed)  # already gone: nothing to do
    assert list(tmp_path.iterdir()) == []

    doomed.mkdir()
    (doomed / "w.pth").write_bytes(b"w")
    with monkeypatch.context() as patch:
        patch.setattr(fs.shutil, "rmtree", lambda *args, **kwargs: None)  # killed mid-delete
        fs.remove_folder(doomed)
    assert not doomed.exists() and [p.name[:10] for p in tmp_path.iterdir()] == [".deleting-"]
    assert fs.recover(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_names_the_folder_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(src: str | Path, dst: str | Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StudioError, match=r"disk is full: could not write export in .*Nothing was saved"):
        with fs.staged_folder(tmp_path / "export") as staging:
            (staging.path / "model.pth").write_bytes(b"weights")
    assert list(tmp_path.iterdir()) == []

    (source := tmp_path / "upload.pth").write_bytes(b"weights")
    with pytest.raises(StudioError, match=r"disk is full: could not write copy\.pth"):
        fs.copy_file(source, tmp_path / "models" / "copy.pth")
    assert list((tmp_path / "models").iterdir()) == []
