"""Coqui's metadata CSVs: what is written reads back the same, pandas (Coqui's reader) agrees, bad files say why."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from core.errors import InvalidInput
from train.coqui_csv import (
    EVAL_FILE,
    HEADER,
    TRAIN_FILE,
    MetadataRow,
    read_metadata,
    read_splits,
    write_metadata,
    write_rows,
)

ROWS = [
    MetadataRow("wavs/a_0001.wav", "Plain words.", "spk"),
    MetadataRow("wavs/a_0002.wav", 'A pipe | inside, and "quotes" too.', "spk"),
    MetadataRow("wavs/a_0003.wav", "Ça va très bien — 日本語のテキスト, Привет!", "Zoë"),
    MetadataRow("wavs/a_0004.wav", '"Hello," she said.', "spk"),
]


def test_round_trip_keeps_pipes_quotes_and_non_ascii(tmp_path: Path) -> None:
    write_metadata(tmp_path, ROWS[:3], ROWS[3:])
    assert read_metadata(tmp_path / TRAIN_FILE) == [
        {"audio_file": r.audio_file, "text": r.text, "speaker_name": r.speaker_name} for r in ROWS[:3]
    ]
    assert read_splits(tmp_path) == {
        "train": read_metadata(tmp_path / TRAIN_FILE),
        "eval": [{"audio_file": "wavs/a_0004.wav", "text": '"Hello," she said.', "speaker_name": "spk"}],
    }
    text = (tmp_path / TRAIN_FILE).read_text(encoding="utf-8")
    assert text.splitlines()[0] == HEADER
    assert text.splitlines()[1] == "wavs/a_0001.wav|Plain words.|spk"  # plain rows stay unquoted
    assert "日本語" in text  # UTF-8, not escaped


def test_pandas_reads_what_is_written_as_coqui_does(tmp_path: Path) -> None:
    """Coqui's ``coqui`` formatter is ``pd.read_csv(path, sep="|")``: it must see the same texts."""
    write_rows(tmp_path / TRAIN_FILE, ROWS)
    frame = pd.read_csv(tmp_path / TRAIN_FILE, sep="|")
    assert list(frame.columns) == ["audio_file", "text", "speaker_name"]
    assert list(frame["text"]) == [r.text for r in ROWS]
    assert list(frame["speaker_name"]) == [r.speaker_name for r in ROWS]


def test_an_empty_eval_split_still_has_its_header(tmp_path: Path) -> None:
    write_metadata(tmp_path, ROWS[:1], [])
    assert (tmp_path / EVAL_FILE).read_text(encoding="utf-8") == HEADER + "\n"
    assert read_metadata(tmp_path / EVAL_FILE) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"must start with the header 'audio_file\|text\|speaker_name'; it has an empty file"),
        ("wav|text\nwavs/a.wav|Hi\n", r"must start with the header .*; it has 'wav\|text'"),
        (HEADER + "\nwavs/a.wav|Hi there|spk\nwavs/b.wav|a | b|spk\n", r"line 3: expected 3 fields .* found 4"),
        (HEADER + "\nwavs/a.wav|Hi there\n", r"line 2: expected 3 fields .* found 2"),
        (HEADER + '\nwavs/a.wav|"never closed|spk\n', r"metadata_train.csv, line \d+: expected 3 fields .* found 2"),
    ],
)
def test_a_malformed_file_says_what_and_where(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / TRAIN_FILE
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInput, match=message):
        read_metadata(path)


def test_unreadable_files_are_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="Could not read"):
        read_metadata(tmp_path / "missing.csv")
    (tmp_path / TRAIN_FILE).write_bytes(HEADER.encode() + b"\nwavs/a.wav|caf\xe9|spk\n")
    with pytest.raises(InvalidInput, match="is not UTF-8 text"):
        read_metadata(tmp_path / TRAIN_FILE)


def test_the_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure mid-write leaves the old file whole and no temp file behind."""
    write_rows(tmp_path / TRAIN_FILE, ROWS[:1])
    before = (tmp_path / TRAIN_FILE).read_bytes()

    def fail(src: str, dst: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(Exception, match="Input/output error"):
        write_rows(tmp_path / TRAIN_FILE, ROWS)
    monkeypatch.undo()
    assert (tmp_path / TRAIN_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [TRAIN_FILE]
