"""Export a project: the master audio, MP3 and M4B with chapters, subtitles, a segment list and a zip.

An export is a new folder ``<project>/exports/<id>/`` (``id`` is the UTC time and a random tag)
with a zip of it beside, ``<id>.zip``. It is built in a hidden staging folder and renamed
into place only when everything is written, so a stop or a failure leaves no export at all.
Audio streams through every step (mix, loudness passes, encoders, zip), so the memory an
export needs does not grow with the length of the book.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.errors import Cancelled, InvalidInput
from core.fs import recover, resolve_inside, slug, staged_folder, write_text, write_with
from projects.encode import decode_to_raw, encode, ffmetadata
from projects.frontend import PAUSE_TAG
from projects.loudness import TARGETS
from projects.master import master
from projects.mixer import Mixer
from projects.script import Project
from projects.store import ProjectStore
from projects.timeline import RATE, ChapterMark, Overlap, Placed, Timeline, build_timeline

FORMATS = ("wav", "mp3", "m4b", "srt", "vtt", "json")
EXPORTS = "exports"
_AUDIO = ("wav", "mp3", "m4b")
_CHUNK = 1 << 20

Report = Callable[[float, str], None]


@dataclass(frozen=True)
class ExportRequest:
    """What to export: ``formats`` of :data:`FORMATS`, the chapter indexes (``None``: all) and the loudness target."""

    formats: tuple[str, ...] = FORMATS
    chapters: tuple[int, ...] | None = None
    loudness: str = "podcast"

    def __post_init__(self) -> None:
        if isinstance(self.formats, str) or not isinstance(self.formats, tuple | list):
            raise InvalidInput(f"The export formats must be a list such as {list(FORMATS)}, not {self.formats!r}.")
        formats = tuple(dict.fromkeys(str(f).strip().lower() for f in self.formats))
        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            raise InvalidInput(f"There is no export format '{unknown[0]}'; choose from {', '.join(FORMATS)}.")
        if not formats:
            raise InvalidInput(f"Choose at least one export format ({', '.join(FORMATS)}).")
        object.__setattr__(self, "formats", formats)
        if self.chapters is not None:
            if not isinstance(self.chapters, tuple | list) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in self.chapters
            ):
                raise InvalidInput(f"The chapters must be a list of chapter numbers from 0, not {self.chapters!r}.")
            if not self.chapters:
                raise InvalidInput("Choose at least one chapter to export, or none to export them all.")
            object.__setattr__(self, "chapters", tuple(self.chapters))
        if self.loudness not in TARGETS:
            raise InvalidInput(f"There is no loudness target '{self.loudness}'; choose from {', '.join(TARGETS)}.")


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    files: dict[str, Path]
    zip: Path
    duration_s: float
    chapters: list[ChapterMark]
    loudness: dict[str, Any]
    overlaps: list[Overlap]
    root: Path = field(repr=False)  # the store's root, that :meth:`to_dict` gives paths relative to

    def to_dict(self) -> dict[str, Any]:
        def rel(path: Path) -> str:
            return path.relative_to(self.root.resolve()).as_posix()

        return {
            "folder": rel(self.folder),
            "files": {kind: rel(path) for kind, path in self.files.items()},
            "zip": rel(self.zip),
            "duration_s": round(self.duration_s, 3),
            "chapters": [mark.to_dict() for mark in self.chapters],
            "loudness": self.loudness,
            "overlaps": [overlap.to_dict() for overlap in self.overlaps],
        }


class _Phases:
    """Maps each step's own 0..1 onto its share of the whole export."""

    def __init__(self, report: Report, weights: dict[str, float]) -> None:
        self.report = report
        total = sum(weights.values())
        self.spans: dict[str, tuple[float, float]] = {}
        position = 0.0
        for key, weight in weights.items():
            self.spans[key] = (position / total, weight / total)
            position += weight

    def step(self, key: str, message: str) -> Callable[[float], None]:
        start, span = self.spans[key]
        self.report(start, message)
        return lambda fraction: self.report(min(start + span * fraction, 1.0), message)


def _new_id() -> str:
    """The UTC time and a random tag, so that two exports started in the same second never meet."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def _background(project: Project, folder: Path) -> Path | None:
    if not project.settings.background:
        return None
    return resolve_inside(folder / project.settings.background, [folder], what="background track", kind="file")


def _cue_text(text: str) -> str:
    """The segment's text as written, without pause tags, one cue's worth (no blank lines)."""
    lines = (" ".join(line.split()) for line in PAUSE_TAG.sub(" ", text).splitlines())
    return "\n".join(line for line in lines if line)


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{sep}{rest % 1000:03d}"


def subtitles(items: list[Placed], kind: str) -> str:
    """SRT or VTT with one cue per placed take, at the times it sounds in the export."""
    cues = []
    for number, item in enumerate(items, start=1):
        sep = "," if kind == "srt" else "."
        text = _cue_text(item.text)
        if kind == "vtt":
            text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        times = f"{_stamp(item.start_s, sep)} --> {_stamp(item.end_s, sep)}"
        cues.append(f"{number}\n{times}\n{text}\n" if kind == "srt" else f"{item.segment_id}\n{times}\n{text}\n")
    return ("WEBVTT\n\n" if kind == "vtt" else "") + "\n".join(cues)


def segment_list(project: Project, timeline: Timeline, loudness: dict[str, Any]) -> dict[str, Any]:
    """The JSON of an export: each segment's place, take and checks, with the chapters and loudness."""
    segments = []
    for item in timeline.items:
        take = item.take
        segments.append(
            {
                "id": item.segment_id,
                "chapter": item.chapter,
                "chapter_title": project.chapters[item.chapter].title,
                "text": item.text,
                "voice": item.voice,
                "start": round(item.start_s, 3),
                "end": round(item.end_s, 3),
                "cue_start": item.cue_start,
                "cue_end": item.cue_end,
                "take": item.file,
                "seed": take.seed,
                "passed": take.passed,
                "reasons": take.reasons,
                "transcript": take.transcript,
                "wer": take.wer,
                "cer": take.cer,
                "seconds_per_char": take.seconds_per_char,
                "speed": take.speed,
                "stretch": take.stretch,
                "overflow_s": take.overflow_s,
            }
        )
    return {
        "project": project.name,
        "sample_rate": RATE,
        "timed": timeline.timed,
        "duration_s": round(timeline.duration_s, 3),
        "chapters": [mark.to_dict() for mark in timeline.chapters],
        "overlaps": [overlap.to_dict() for overlap in timeline.overlaps],
        "loudness": loudness,
        "segments": segments,
    }


def _zip(
    source: Path, names: list[str], target: Path, top: str, progress: Callable[[float], None], stop: Callable[[], bool]
) -> Path:
    """Zip ``names`` of ``source`` under ``top/`` into ``target`` (audio stored, text deflated)."""
    total = max(sum((source / name).stat().st_size for name in names), 1)
    done = 0

    def fill(handle: IO[bytes]) -> None:
        nonlocal done
        with zipfile.ZipFile(handle, "w") as archive:
            for name in names:
                info = zipfile.ZipInfo.from_file(source / name, f"{top}/{name}")
                info.compress_type = zipfile.ZIP_STORED if name.endswith(_AUDIO) else zipfile.ZIP_DEFLATED
                with open(source / name, "rb") as src, archive.open(info, "w") as dst:
                    while chunk := src.read(_CHUNK):
                        if stop():
                            raise Cancelled("The export was stopped while zipping; nothing was saved.")
                        dst.write(chunk)
                        done += len(chunk)
                        progress(done / total)

    return write_with(target, fill)


def export_project(
    store: ProjectStore,
    name: str,
    request: ExportRequest,
    *,
    progress: Report | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ExportResult:
    """Export project ``name`` as ``request`` asks into a new folder under its ``exports/``.

    Raises :class:`InvalidInput` when a segment has no chosen take (naming them) and
    :class:`Cancelled` when ``should_stop`` says so; in both cases no export is left.
    """
    stop = should_stop or (lambda: False)
    project = store.get(name)
    folder = store.folder(name)
    timeline = build_timeline(project, folder, request.chapters)
    background = _background(project, folder)
    formats = request.formats
    weights = {"background": 0.05 if background else 0.0, "mix": 0.5, "mp3": 0.15, "m4b": 0.2, "text": 0.01}
    phases = _Phases(progress or (lambda fraction, message: None), {**weights, "zip": 0.09})
    exports = folder / EXPORTS
    recover(exports)
    export_id = _new_id()
    base = slug(project.name, fallback="project")
    names: dict[str, str] = {}
    with staged_folder(exports / export_id) as staging:
        work = staging.path / ".work"
        work.mkdir()
        raw = None
        if background is not None:
            raw = work / "background.f32"
            frames = decode_to_raw(background, raw, RATE, should_stop=stop)
            if frames == 0:
                raise InvalidInput(f"The background track {background.name} has no audio.")
            timeline = timeline.extended_to(frames)
        phases.step("background", "Reading the background")(1.0)
        mixer = Mixer(timeline, background=raw, duck_db=project.settings.duck_db)
        wav = (staging.path if "wav" in formats else work) / f"{base}.wav"
        loudness = master(mixer, wav, request.loudness, progress=phases.step("mix", "Mixing"), should_stop=stop)
        if "wav" in formats:
            names["wav"] = wav.name
        marks = [(mark.title, mark.start_s, mark.end_s) for mark in timeline.chapters]
        metadata = write_text(work / "metadata.txt", ffmetadata(project.name, project.narrator, marks))
        for kind in ("mp3", "m4b"):
            if kind in formats:
                encode(
                    wav, metadata, staging.path / f"{base}.{kind}", kind=kind, duration_s=timeline.duration_s,
                    acx=request.loudness == "acx", progress=phases.step(kind, f"Encoding the {kind.upper()}"),
                    should_stop=stop,
                )  # fmt: skip
                names[kind] = f"{base}.{kind}"
        phases.step("text", "Writing subtitles and the segment list")
        for kind in ("srt", "vtt"):
            if kind in formats:
                names[kind] = write_text(staging.path / f"{base}.{kind}", subtitles(timeline.items, kind)).name
        if "json" in formats:
            payload = json.dumps(segment_list(project, timeline, loudness), indent=2, ensure_ascii=False)
            names["json"] = write_text(staging.path / "segments.json", payload + "\n").name
        shutil.rmtree(work)
        zipped = _zip(staging.path, list(names.values()), exports / f"{export_id}.zip", export_id,
                      phases.step("zip", "Zipping"), stop)  # fmt: skip
        try:
            final = staging.commit()
        except BaseException:
            zipped.unlink(missing_ok=True)
            raise
    phases.report(1.0, "Exported")
    return ExportResult(
        folder=final,
        files={kind: final / file for kind, file in names.items()},
        zip=zipped,
        duration_s=timeline.duration_s,
        chapters=timeline.chapters,
        loudness=loudness,
        overlaps=timeline.overlaps,
        root=store.root,
    )
