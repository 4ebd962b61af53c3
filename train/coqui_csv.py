"""Coqui's ``coqui`` metadata format: ``metadata_train.csv`` and ``metadata_eval.csv`` in a dataset folder.

Each file is a header line ``audio_file|text|speaker_name`` and one clip per line, ``|``-separated.
Coqui reads them with pandas (``sep="|"``, standard quoting), so a field holding ``|``, a quote
or a line break is written quoted, and read back the same way.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from core import fs
from core.errors import InvalidInput

COLUMNS = ("audio_file", "text", "speaker_name")
HEADER = "|".join(COLUMNS)
TRAIN_FILE = "metadata_train.csv"
EVAL_FILE = "metadata_eval.csv"
SPLITS = {"train": TRAIN_FILE, "eval": EVAL_FILE}  # split name -> file, train first


@dataclass(frozen=True)
class MetadataRow:
    """One clip of a metadata file: its WAV relative to the dataset folder, what is said, who says it."""

    audio_file: str
    text: str
    speaker_name: str


def read_metadata(csv_path: Path) -> list[dict[str, str]]:
    """The rows of one metadata file as ``{audio_file, text, speaker_name}``; a malformed file is an InvalidInput."""
    try:
        content = csv_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{csv_path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    except OSError as exc:
        raise InvalidInput(f"Could not read {csv_path}: {exc.strerror or exc}.") from exc
    reader = csv.reader(io.StringIO(content, newline=""), delimiter="|")
    try:
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != COLUMNS:
            found = "an empty file" if header is None else f"'{'|'.join(header)}'"
            raise InvalidInput(f"{csv_path.name} must start with the header '{HEADER}'; it has {found}.")
        rows = []
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(COLUMNS):
                raise InvalidInput(
                    f"{csv_path.name}, line {reader.line_num}: expected {len(COLUMNS)} fields ({HEADER}), "
                    f"found {len(fields)}. A text holding '|' must be quoted."
                )
            rows.append(dict(zip(COLUMNS, fields, strict=True)))
    except csv.Error as exc:
        raise InvalidInput(f"{csv_path.name}, line {reader.line_num}: {exc}.") from exc
    return rows


def write_rows(csv_path: Path, rows: Sequence[MetadataRow]) -> Path:
    """Write one metadata file atomically (a reader never sees half of it)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter="|", lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows((row.audio_file, row.text, row.speaker_name) for row in rows)
    return fs.write_text(csv_path, buffer.getvalue())


def write_metadata(target: Path, train: Sequence[MetadataRow], evaluation: Sequence[MetadataRow]) -> None:
    """Write both files of the dataset folder ``target`` (an empty eval split still gets its header)."""
    write_rows(target / TRAIN_FILE, train)
    write_rows(target / EVAL_FILE, evaluation)


def read_splits(target: Path) -> dict[str, list[dict[str, str]]]:
    """The rows of each split whose file exists, by split name (``train``, ``eval``)."""
    return {split: read_metadata(target / name) for split, name in SPLITS.items() if (target / name).is_file()}


def split_size(target: Path, split: str = "train") -> tuple[int, float]:
    """How many clips one split lists, and the minutes of those of them whose WAV is there (0, 0.0 without a file)."""
    path = target / SPLITS[split]
    rows = read_metadata(path) if path.is_file() else []
    wavs = [target / row["audio_file"] for row in rows]
    return len(rows), sum(sf.info(wav).duration for wav in wavs if wav.is_file()) / 60
