"""What a dataset build says and what the user changes afterwards: the report as Markdown and the clip table.

The table lists the kept clips (from the metadata CSVs) and the removed ones (from ``report.json``,
their audio in ``removed/``), each with its reason and its similarity to the target speaker.
Unticking a kept clip moves it to ``removed/``; ticking a removed one restores it. Both are
remembered in ``edits.json`` so a rebuild keeps them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import soundfile as sf

from core import fs, locks
from core.errors import InvalidInput
from train.coqui_csv import MetadataRow, read_splits, write_metadata

NOT_SPEECH = "not_speech"  # source time in no clip: pauses, music-only stretches, what Whisper did not hear
TABLE_COLUMNS = ["keep", "split", "audio_file", "text", "speaker_name", "seconds", "reason", "similarity"]
SHOW = ("all", "kept", "removed")


def reason_text(reason: str) -> str:
    if reason == NOT_SPEECH:
        return "not in any clip (pauses, music only, unheard)"
    return reason.replace("_", " ")


def clean_text(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("|", " ")).strip()


def read_edits(target: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads((target / "edits.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def read_report(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def report_markdown(folder: Path) -> str:
    """The dataset's last build report (report.json) as Markdown; empty when there is none."""
    report = read_report(folder)
    if not report:
        return ""
    of = f" of {report['minutes_in']:.1f} min in" if "minutes_in" in report else " min"  # older reports lack it
    lines = [
        f"**{folder.name}** · language {report['language']} · speaker `{report['speaker']}` · built {report.get('built', '')[:19]}",
        f"- kept **{report['kept']}** clips, {report['kept_minutes']:.1f}{of} ({report['train']} train / {report['eval']} eval)",
    ]
    for reason, v in report["dropped"].items():
        clips = f"{int(v['clips'])} clips, " if reason != NOT_SPEECH else ""
        lines.append(f"- removed, {reason_text(reason)}: {clips}{v['minutes']:.1f} min")
    for source in report["sources"]:
        if source.get("error"):
            lines.append(f"- skipped {source['name']}: {source['error']}")
            continue
        if "music_bed" not in source:  # built before sources were cleaned
            continue
        bed = source.get("music_bed") or {}
        snr = f"SNR {source.get('snr_before_db', 0):.0f} dB"
        if source.get("snr_after_db") != source.get("snr_before_db"):
            snr += f" → {source.get('snr_after_db', 0):.0f} dB"
        music = f"music bed {'detected' if bed.get('detected') else 'not detected'} (score {bed.get('score', 0):.2f})"
        lines.append(
            f"- source {source['name']}: {source.get('minutes', 0):.1f} min, {music}, {snr}, "
            f"cleaning: {source.get('cleaning', 'none')}" + (f" ({source['warning']})" if source.get("warning") else "")
        )
    for voice in report.get("speakers", []):
        similarity = voice.get("similarity_to_reference")
        lines.append(
            f"- voice {voice['cluster']}: {voice['clips']} clips, {voice['minutes']:.1f} min"
            + ("" if similarity is None else f", similarity to the reference {similarity:.2f}")
            + (f", kept as `{voice['kept_as']}`" if voice.get("kept_as") else ", removed")
        )
    return "\n".join(lines)


def _removed_reason(clip: dict[str, Any], edits: dict[str, dict[str, Any]]) -> str:
    if clip.get("reason") is None or edits.get(clip["file"], {}).get("drop"):
        return "dropped by user"
    text = reason_text(clip["reason"])
    return f"{text}: {clip['detail']}" if clip.get("detail") else text


def load_table(target: Path, show: str = "all") -> list[dict[str, Any]]:
    """The clip rows (``show``: all, kept or removed), in :data:`TABLE_COLUMNS` order."""
    if show not in SHOW:
        raise InvalidInput(f"Show one of: {', '.join(SHOW)}.")
    clips = {c["file"]: c for c in read_report(target).get("clips", [])}
    edits = read_edits(target)
    rows = []
    listed = set()
    for split, split_rows in read_splits(target).items():
        for row in split_rows:
            wav = target / row["audio_file"]
            seconds = round(sf.info(wav).duration, 2) if wav.is_file() else 0.0
            similarity = clips.get(row["audio_file"], {}).get("similarity")
            rows.append(
                {"keep": True, "split": split, **row, "seconds": seconds, "reason": "", "similarity": similarity}
            )
            listed.add(row["audio_file"])
    if not rows:
        raise InvalidInput(f"{target.name} has no metadata yet; build it first.")
    for file, clip in clips.items():
        removed = "removed/" + file.removeprefix("wavs/")
        if file in listed or not (target / removed).is_file():
            continue
        rows.append({
            "keep": False, "split": "", "audio_file": removed, "text": edits.get(file, {}).get("text", clip["text"]),
            "speaker_name": "", "seconds": round(clip["duration"], 2), "reason": _removed_reason(clip, edits),
            "similarity": clip.get("similarity"),
        })  # fmt: skip
    wanted = {"kept": lambda r: r["keep"], "removed": lambda r: not r["keep"], "all": lambda r: True}[show]
    return [r for r in rows if wanted(r)]


def _ticked(value: object) -> bool:
    return str(value).strip().lower() not in ("false", "0", "no", "")


def build_lock(target: Path) -> Path:
    """Held while the dataset in ``target`` is built or its table saved, by whichever studio process does it."""
    return target.parent / f".{target.name}.build.lock"


def save_table(target: Path, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Apply the edited rows (text, speaker, keep) to the dataset; rows not sent stay as they are.

    Restored clips move into ``wavs/`` before the CSVs name them, dropped ones leave ``wavs/`` after,
    so a crash between the steps never leaves a CSV row without its file.
    """
    held = locks.hold(build_lock(target), what=f"dataset {target.name} (a build is writing it)", timeout=5)
    try:
        return _save_table(target, rows)
    finally:
        locks.discard(held)


def _save_table(target: Path, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    current = {r["audio_file"]: r for r in load_table(target)}
    edits = read_edits(target)
    default_speaker = read_report(target).get("speaker") or target.name
    restore: list[str] = []
    drop: list[str] = []
    for row in rows:
        file = str(row.get("audio_file", ""))
        if file not in current:
            raise InvalidInput(f"{file} is not a clip of this dataset; reload the table.")
        known = current[file]
        clip_id = "wavs/" + file.removeprefix("removed/").removeprefix("wavs/")
        text = clean_text(str(row.get("text", "")))
        keep = _ticked(row.get("keep", True))
        if keep and not text:
            raise InvalidInput(f"{file}: the text is empty; fix it or untick keep.")
        edit = edits.setdefault(clip_id, {})
        if text != known["text"]:
            edit["text"] = text
        speaker = clean_text(str(row.get("speaker_name") or "")) or known["speaker_name"] or default_speaker
        if keep and not known["keep"]:
            edit.pop("drop", None)
            edit["restore"] = True
            restore.append(clip_id)
            current[file] = {**known, "keep": True, "split": "train", "audio_file": clip_id}
        elif not keep and known["keep"]:
            edit.pop("restore", None)
            edit["drop"] = True
            drop.append(clip_id)
            current[file] = {**known, "keep": False}
            continue
        current[file] = {**current[file], "text": text, "speaker_name": speaker}
        if not edit:
            edits.pop(clip_id)
    kept = [r for r in current.values() if r["keep"]]
    train = [MetadataRow(r["audio_file"], r["text"], r["speaker_name"]) for r in kept if r["split"] != "eval"]
    evaluation = [MetadataRow(r["audio_file"], r["text"], r["speaker_name"]) for r in kept if r["split"] == "eval"]
    if not train:
        raise InvalidInput("At least one training clip must stay.")
    for clip_id in restore:
        (target / ("removed/" + clip_id.removeprefix("wavs/"))).replace(target / clip_id)
    write_metadata(target, train, evaluation)
    fs.write_json(target / "edits.json", edits)
    (target / "removed").mkdir(exist_ok=True)
    for clip_id in drop:
        if (target / clip_id).is_file():
            (target / clip_id).replace(target / ("removed/" + clip_id.removeprefix("wavs/")))
    return len(train), len(evaluation)
