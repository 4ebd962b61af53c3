"""The Projects tab's forms (what each endpoint takes), the parsing of what a client types, and the tables shown."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from core.errors import InvalidInput
from core.xtts.profiles import DEFAULT_PROFILE
from projects.frontend import DictEntry, spoken_text
from projects.script import Project, Segment, Settings, Take

SEGMENT_HEADERS = [
    "id",
    "chapter",
    "#",
    "text",
    "spoken as",
    "voice",
    "language",
    "profile",
    "seed",
    "state",
    "reasons",
    "seconds",
]
DICT_HEADERS = ["pattern", "replacement", "regex", "case_sensitive", "whole_word", "language"]
DICT_TYPES = ["str", "str", "bool", "bool", "bool", "str"]
SETTING_KEYS = ("paragraph_gap_s", "chapter_gap_s", "verify", "attempts", "max_speed", "max_stretch", "duck_db")
_TAG_LINE = re.compile(r"^\[?\s*([^\[\]=]+?)\s*\]?\s*=\s*(.+?)\s*$")


@dataclass(frozen=True)
class CreateForm:
    """What Create project sends: the parameters of the ``project_create`` endpoint.

    The script is ``text`` or an uploaded ``source`` file; ``voice_tags`` maps tags to voices,
    one ``Alice = Daisy Studious`` per line.
    """

    name: str
    text: str | None = None
    source: str | None = None
    narrator: str | None = None
    language: str = "en"
    profile: str = DEFAULT_PROFILE
    voice_tags: str | None = None


@dataclass(frozen=True)
class SegmentForm:
    """What Save segment sends: the parameters of the ``project_update_segment`` endpoint.

    A field left ``None`` stays as it is; an empty voice, language or profile means the project's;
    a seed of -1 removes the segment's fixed seed.
    """

    project: str
    segment_id: str
    text: str | None = None
    voice: str | None = None
    language: str | None = None
    profile: str | None = None
    seed: float | None = None


@dataclass(frozen=True)
class SettingsForm:
    """What Save settings sends: the parameters of the ``project_set_settings`` endpoint (all replaced)."""

    project: str
    paragraph_gap_s: float = 0.6
    chapter_gap_s: float = 2.0
    verify: bool = True
    attempts: float = 3
    max_speed: float = 1.3
    max_stretch: float = 1.2
    duck_db: float = 12.0
    background: str | None = None
    remove_background: bool = False

    def settings(self) -> Settings:
        if float(self.attempts) != int(self.attempts):
            raise InvalidInput(f"The takes per segment must be a whole number, not {self.attempts}.")
        return Settings(
            paragraph_gap_s=float(self.paragraph_gap_s), chapter_gap_s=float(self.chapter_gap_s),
            verify=bool(self.verify), attempts=int(self.attempts), max_speed=float(self.max_speed),
            max_stretch=float(self.max_stretch), duck_db=float(self.duck_db),
        )  # fmt: skip


@dataclass(frozen=True)
class ExportForm:
    """What Export sends: the parameters of the ``project_export`` endpoint."""

    project: str
    formats: list[str] | None = None
    chapters: str | None = None
    loudness: str = "podcast"


def parse_tag_lines(text: str | None) -> dict[str, str]:
    """``Alice = Daisy Studious`` lines (brackets around the tag optional) as a tag map."""
    tags: dict[str, str] = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        match = _TAG_LINE.match(line.strip())
        if not match:
            raise InvalidInput(f"Voice tag line {number} ('{line.strip()}') is not 'Tag = Voice'.")
        tags[match[1]] = match[2]
    return tags


def dictionary_entries(table: pd.DataFrame | dict[str, Any] | None) -> list[DictEntry]:
    """The rows of a dictionary table as entries; rows without a pattern are blank rows of the editor."""
    if table is None:
        return []
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table["data"], columns=table["headers"])
    entries = []
    for row in frame.to_dict("records"):
        if not str(row.get("pattern") or "").strip():
            continue
        language = str(row.get("language") or "").strip() or None
        entries.append(DictEntry(
            pattern=str(row["pattern"]), replacement=str(row.get("replacement") or ""), regex=_flag(row, "regex"),
            case_sensitive=_flag(row, "case_sensitive"), whole_word=_flag(row, "whole_word", True), language=language,
        ))  # fmt: skip
    return entries


def _flag(row: dict[str, Any], key: str, default: bool = False) -> bool:
    value = row.get(key)
    if value is None or value == "" or (isinstance(value, float) and pd.isna(value)):
        return default
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")


def dictionary_rows(entries: list[DictEntry]) -> list[list[object]]:
    return [[e.pattern, e.replacement, e.regex, e.case_sensitive, e.whole_word, e.language or ""] for e in entries]


def _shown_take(segment: Segment) -> Take | None:
    return segment.chosen_take or (segment.takes[-1] if segment.takes else None)


def segment_rows(
    project: Project, entries: list[DictEntry], flagged_only: bool = False
) -> tuple[list[list[object]], list[str]]:
    """The segments table and the segment id of each row; "spoken as" is the text after the dictionary."""
    rows, ids = [], []
    for number, chapter in enumerate(project.chapters, start=1):
        for index, segment in enumerate(chapter.segments, start=1):
            if flagged_only and segment.state != "flagged":
                continue
            take = _shown_take(segment)
            rows.append([
                segment.id, number, index, segment.text, spoken_text(segment.text, entries, project.language_of(segment)),
                project.voice_of(segment), project.language_of(segment),
                project.profile_of(segment) or DEFAULT_PROFILE, "" if segment.seed is None else segment.seed,
                segment.state, "; ".join(take.reasons) if take else "", round(take.duration_s, 2) if take else "",
            ])  # fmt: skip
            ids.append(segment.id)
    return rows, ids


def take_choices(segment: Segment) -> list[tuple[str, int]]:
    choices = []
    for index, take in enumerate(segment.takes):
        verdict = "not verified" if take.passed is None else ("passed" if take.passed else "; ".join(take.reasons))
        chosen = " · chosen" if take.chosen else ""
        choices.append((f"Take {index + 1} · seed {take.seed} · {take.duration_s:.1f} s · {verdict}{chosen}", index))
    return choices


def summary_markdown(project: Project, status: dict[str, Any]) -> str:
    states = ", ".join(f"{count} {state}" for state, count in sorted(status["states"].items()))
    lines = [
        f"**{project.name}** · narrator {project.narrator} · {project.language} · "
        f"{status['chapters']} chapters, {status['segments']} segments",
        f"- {states} · {status['to_render']} to render · {status['rendered_seconds']:.1f} s rendered"
        + (" · rendering now" if status["rendering"] else ""),
    ]
    lines += [f"- {warning}" for warning in project.warnings]
    return "\n".join(lines)
