"""The script model of a long-form project, as plain data with a JSON round trip.

A project is chapters of segments. A segment is the unit that is rendered, listened to and
re-rendered: its id stays the same across edits so takes, flags and subtitle cues follow it.
``voice``, ``language`` and ``profile`` left as ``None`` mean "the project's".
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from core.fs import resolve_inside
from projects.frontend import DictEntry

SCHEMA_VERSION = 1
STATES = ("pending", "rendered", "locked", "flagged")


def new_segment_id() -> str:
    return secrets.token_hex(6)


@dataclass
class Take:
    """One rendering of a segment: its audio file (relative to the project folder), seed and checks.

    ``passed`` is ``None`` when the take was not verified; ``reasons`` says why a verified take
    failed. ``speed`` and ``stretch`` are how a subtitle cue was fitted to its slot, and
    ``overflow_s`` how much it is still too long for it. ``fingerprint`` is the segment's spoken
    fingerprint when the take was made, so a take of older text is never chosen by mistake.
    """

    file: str
    seed: int
    chosen: bool = False
    duration_s: float = 0.0
    passed: bool | None = None
    reasons: list[str] = field(default_factory=list)
    transcript: str = ""
    wer: float | None = None
    cer: float | None = None
    seconds_per_char: float | None = None
    speed: float = 1.0
    stretch: float = 1.0
    overflow_s: float = 0.0
    fingerprint: str = ""
    created: str = ""

    def path(self, folder: Path) -> Path:
        """This take's file in the project ``folder``, proven to lie inside it (the JSON could say anything)."""
        return resolve_inside(folder / self.file, [folder], what="take file", kind="file")


@dataclass
class Segment:
    text: str
    id: str = field(default_factory=new_segment_id)
    voice: str | None = None
    language: str | None = None
    profile: str | None = None
    seed: int | None = None
    state: str = "pending"
    start: float | None = None
    end: float | None = None
    paragraph_end: bool = False
    takes: list[Take] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InvalidInput` if a field holds a value a segment cannot have."""
        if not isinstance(self.text, str) or not self.text.strip():
            raise InvalidInput(f"Segment {self.id}: the text is empty.")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise InvalidInput(f"Segment {self.id}: the seed must be a whole number, not {self.seed!r}.")
        for label, value in (("voice", self.voice), ("language", self.language), ("profile", self.profile)):
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"Segment {self.id}: the {label} must be text, not {value!r}.")
        for label, value in (("start", self.start), ("end", self.end)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise InvalidInput(f"Segment {self.id}: the {label} must be a time in seconds, not {value!r}.")
        if self.state not in STATES:
            raise InvalidInput(f"Segment {self.id}: the state '{self.state}' is not one of {', '.join(STATES)}.")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise InvalidInput(f"Segment {self.id}: it ends ({self.end}s) before it starts ({self.start}s).")

    @property
    def chosen_take(self) -> Take | None:
        return next((take for take in self.takes if take.chosen), None)


@dataclass
class Chapter:
    title: str
    segments: list[Segment] = field(default_factory=list)


@dataclass
class Settings:
    """How a project is rendered and mixed.

    ``attempts`` is how many takes the verifier may ask for per segment (1: no retry);
    ``max_speed`` and ``max_stretch`` bound how a subtitle cue is fitted to its slot (XTTS's
    speed first, then a time-stretch); ``background`` is a track under a dub (a file in the
    project folder), lowered by ``duck_db`` while a cue speaks.
    """

    paragraph_gap_s: float = 0.6
    chapter_gap_s: float = 2.0
    verify: bool = True
    attempts: int = 3
    max_speed: float = 1.3
    max_stretch: float = 1.2
    background: str | None = None
    duck_db: float = 12.0

    def __post_init__(self) -> None:
        for label, value in (("paragraph gap", self.paragraph_gap_s), ("chapter gap", self.chapter_gap_s)):
            if not 0 <= value <= 30:
                raise InvalidInput(f"The {label} must be between 0 and 30 seconds, not {value}.")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or not 1 <= self.attempts <= 10:
            raise InvalidInput(f"The takes per segment must be a whole number from 1 to 10, not {self.attempts!r}.")
        if not 1.0 <= self.max_speed <= 2.0:
            raise InvalidInput(f"The fastest speed for a cue must be between 1.0 and 2.0, not {self.max_speed}.")
        if not 1.0 <= self.max_stretch <= 1.5:
            raise InvalidInput(
                f"The largest time-stretch for a cue must be between 1.0 and 1.5, not {self.max_stretch}."
            )
        if not 0 <= self.duck_db <= 40:
            raise InvalidInput(f"The ducking must be between 0 and 40 dB, not {self.duck_db}.")


@dataclass
class Project:
    name: str
    narrator: str
    language: str = "en"
    profile: str | None = None
    voice_tags: dict[str, str] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    chapters: list[Chapter] = field(default_factory=list)
    dictionary: list[DictEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def segments(self) -> list[Segment]:
        return [segment for chapter in self.chapters for segment in chapter.segments]

    def segment(self, segment_id: str) -> Segment:
        for segment in self.segments():
            if segment.id == segment_id:
                return segment
        raise InvalidInput(f"The project '{self.name}' has no segment '{segment_id}'.")

    def chapter_indexes(self, chapters: list[int] | tuple[int, ...] | None) -> list[int]:
        """The chapter indexes (from 0) asked for, in book order; all for ``None``; checked."""
        count = len(self.chapters)
        if chapters is None:
            return list(range(count))
        for index in chapters:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
                raise InvalidInput(
                    f"The project '{self.name}' has chapters 0 to {count - 1}; there is no chapter {index!r}."
                )
        return sorted(set(chapters))

    def chapters_numbered(self, text: str | None) -> list[int] | None:
        """Chapter numbers as a person types them ("1, 3-4", from 1; empty: all) as checked indexes from 0."""
        if not (text or "").strip():
            return None
        count, picked = len(self.chapters), []
        for part in str(text).split(","):
            bounds = part.strip().split("-")
            if len(bounds) > 2 or not all(b.strip().isdigit() for b in bounds):
                raise InvalidInput(f"'{part.strip()}' is not a chapter number or range (e.g. 1, 3-4).")
            low, high = int(bounds[0]), int(bounds[-1])
            if not 1 <= low <= high <= count:
                raise InvalidInput(f"'{part.strip()}' is not a chapter of '{self.name}': it has chapters 1 to {count}.")
            picked.extend(index - 1 for index in range(low, high + 1) if index - 1 not in picked)
        return picked

    def voice_of(self, segment: Segment) -> str:
        return segment.voice or self.narrator

    def language_of(self, segment: Segment) -> str:
        return segment.language or self.language

    def profile_of(self, segment: Segment) -> str | None:
        return segment.profile or self.profile

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["dictionary"] = [entry.to_dict() for entry in self.dictionary]
        return {"schema": SCHEMA_VERSION, **payload}

    @classmethod
    def from_dict(cls, payload: Any) -> Project:
        """The project in ``payload``; raises :class:`InvalidInput` for another schema or a broken file."""
        if not isinstance(payload, dict):
            raise InvalidInput("The project file is not a JSON object.")
        schema = payload.get("schema")
        if schema != SCHEMA_VERSION:
            raise InvalidInput(
                f"The project file has schema version {schema!r}; this studio reads version {SCHEMA_VERSION}."
            )
        try:
            chapters = [
                Chapter(
                    title=str(chapter["title"]),
                    segments=[
                        Segment(**{**segment, "takes": [Take(**take) for take in segment.get("takes", [])]})
                        for segment in chapter["segments"]
                    ],
                )
                for chapter in payload["chapters"]
            ]
            return cls(
                name=str(payload["name"]),
                narrator=str(payload["narrator"]),
                language=str(payload["language"]),
                profile=payload.get("profile"),
                voice_tags=dict(payload.get("voice_tags", {})),
                settings=Settings(**payload.get("settings", {})),
                chapters=chapters,
                dictionary=[DictEntry.from_dict(entry) for entry in payload.get("dictionary", [])],
                warnings=[str(w) for w in payload.get("warnings", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"The project file is damaged: {exc}") from exc
