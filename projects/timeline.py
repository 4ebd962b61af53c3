"""Where each chosen take of a project lies in the exported audio, to the sample.

A narration project is read back to back: ``paragraph_gap_s`` after a segment that ends a
paragraph, ``chapter_gap_s`` between chapters. A timed project (subtitles, a dub: every
segment has a cue ``start``) puts each take exactly at its cue; a take longer than the room
before the next cue is kept where it belongs and reported as an overlap, never moved.
Every segment must have a chosen take: a gap is never exported silently.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import soundfile as sf

from core.constants import XTTS_OUTPUT_RATE
from core.errors import InvalidInput
from projects.script import Project, Segment, Take

RATE = XTTS_OUTPUT_RATE
_LISTED = 3  # missing takes named in the refusal


@dataclass(frozen=True)
class Placed:
    """One take in the timeline; ``start`` and ``frames`` are samples at :data:`RATE`."""

    segment_id: str
    chapter: int
    text: str
    voice: str
    file: str  # relative to the project folder
    path: Path
    start: int
    frames: int
    take: Take
    cue_start: float | None = None
    cue_end: float | None = None

    @property
    def end(self) -> int:
        return self.start + self.frames

    @property
    def start_s(self) -> float:
        return self.start / RATE

    @property
    def end_s(self) -> float:
        return self.end / RATE

    @property
    def duration_s(self) -> float:
        return self.frames / RATE


@dataclass(frozen=True)
class ChapterMark:
    index: int  # in the project's chapters
    title: str
    start_s: float
    end_s: float

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "title": self.title, "start_s": self.start_s, "end_s": self.end_s}


@dataclass(frozen=True)
class Overlap:
    """A take that runs ``seconds`` into the next cue's start."""

    segment_id: str
    text: str
    next_id: str
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {"segment_id": self.segment_id, "text": self.text, "next_id": self.next_id, "seconds": self.seconds}


@dataclass(frozen=True)
class Timeline:
    items: list[Placed]
    chapters: list[ChapterMark]
    frames: int  # the length of the whole, in samples at RATE
    timed: bool
    overlaps: list[Overlap]

    @property
    def duration_s(self) -> float:
        return self.frames / RATE

    def extended_to(self, frames: int) -> Timeline:
        """A timed timeline lasts as long as its background when that is longer than the speech."""
        if not self.timed or frames <= self.frames:
            return self
        chapters = [*self.chapters[:-1], replace(self.chapters[-1], end_s=frames / RATE)] if self.chapters else []
        return replace(self, frames=frames, chapters=chapters)


def selected_chapters(project: Project, chapters: Sequence[int] | None) -> list[int]:
    """The chapter indexes to export, in book order; :class:`InvalidInput` for one the project lacks."""
    indexes = project.chapter_indexes(chapters)
    if not any(project.chapters[i].segments for i in indexes):
        raise InvalidInput(f"The chapters chosen in '{project.name}' have no segments to export.")
    return indexes


def _refuse_missing(missing: list[Segment]) -> None:
    if not missing:
        return
    named = "; ".join(f"{s.id} ('{_short(s.text)}')" for s in missing[:_LISTED])
    more = f" and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
    noun = "segment has" if len(missing) == 1 else "segments have"
    raise InvalidInput(f"{len(missing)} {noun} no chosen take: {named}{more}. Render them first.")


def _short(text: str, limit: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _take_frames(path: Path, segment: Segment) -> int:
    """The take's length in samples at :data:`RATE` (the mixer resamples a take at another rate)."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise InvalidInput(f"The take of segment {segment.id} ({path.name}) cannot be read: {exc}") from exc
    if info.samplerate == RATE:
        return int(info.frames)
    return round(info.frames * RATE / info.samplerate)


def build_timeline(project: Project, folder: Path, chapters: Sequence[int] | None = None) -> Timeline:
    """Place the chosen takes of ``project`` (only ``chapters`` when given); ``folder`` is the project's."""
    indexes = selected_chapters(project, chapters)
    chosen = [(i, s) for i in indexes for s in project.chapters[i].segments]
    _refuse_missing([s for _, s in chosen if s.chosen_take is None])
    timed = [s for _, s in chosen if s.start is not None]
    if timed and len(timed) != len(chosen):
        raise InvalidInput(
            f"{len(timed)} of the {len(chosen)} segments chosen have cue times and the others not; "
            "give every segment a start time or none."
        )
    gaps = (round(project.settings.paragraph_gap_s * RATE), round(project.settings.chapter_gap_s * RATE))
    items: list[Placed] = []
    position = 0
    for number, index in enumerate(indexes):
        segments = project.chapters[index].segments
        if number and not timed and items:
            position = items[-1].end + gaps[1]
        for k, segment in enumerate(segments):
            take = segment.chosen_take
            assert take is not None  # refused above
            try:
                path = take.path(folder)
            except InvalidInput as exc:
                raise InvalidInput(f"Segment {segment.id} ('{_short(segment.text)}'): {exc} Render it again.") from exc
            frames = _take_frames(path, segment)
            start = round(segment.start * RATE) if timed and segment.start is not None else position
            items.append(
                Placed(
                    segment.id, index, segment.text, project.voice_of(segment), take.file, path, start, frames,
                    take, segment.start, segment.end,
                )
            )  # fmt: skip
            position = start + frames
            if segment.paragraph_end and k < len(segments) - 1:
                position += gaps[0]
    if timed:
        items.sort(key=lambda item: item.start)
    frames = max((item.end for item in items), default=0)
    return Timeline(items, _marks(project, indexes, items, frames, bool(timed)), frames, bool(timed), _overlaps(items))


def _marks(project: Project, indexes: list[int], items: list[Placed], frames: int, timed: bool) -> list[ChapterMark]:
    """Chapter marks that follow each other: a chapter lasts until the next one starts."""
    starts = []
    for index in indexes:
        placed = [item.start for item in items if item.chapter == index]
        if placed:
            starts.append((index, min(placed)))
    if timed and starts:
        starts.sort(key=lambda pair: pair[1])
        starts[0] = (starts[0][0], 0)  # a timed file has chapters from its first sample
    marks = []
    for k, (index, start) in enumerate(starts):
        end = starts[k + 1][1] if k + 1 < len(starts) else frames
        marks.append(ChapterMark(index, project.chapters[index].title, start / RATE, end / RATE))
    return marks


def _overlaps(items: list[Placed]) -> list[Overlap]:
    found = []
    for item, following in itertools.pairwise(items):
        if item.end > following.start:
            found.append(
                Overlap(item.segment_id, _short(item.text), following.segment_id, (item.end - following.start) / RATE)
            )
    return found
