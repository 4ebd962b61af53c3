"""Projects on disk: ``<root>/<slug>/project.json``, written atomically.

Edits go through the store so that a segment goes back to ``pending`` (its chosen take
dropped) exactly when what it would sound like changes: its spoken fingerprint covers the
text, the pronunciation entries that apply to it, the voice, language, profile and seed.
A subtitle cue's fingerprint covers its slot length, as its take is fitted to it.
A locked segment is never silently re-rendered: a dictionary change that affects it flags
it instead, and an edit that would change its sound is refused until it is unlocked.

Every read-modify-write holds the store's file lock (``.<root name>.lock`` beside it), so studio
processes sharing the folder (replicas) never lose each other's edits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from core import locks
from core.audio import decode
from core.errors import InvalidInput, StudioError
from core.fs import child, clean_name, recover, remove_folder, slug, write_bytes, write_json
from core.outputs import wav_bytes
from projects.frontend import DictEntry, merge_dictionaries, spoken_fingerprint
from projects.script import STATES, Project, Segment, Settings, Take
from projects.segment import build_project, check_edited_text
from projects.sources import SourceChapter

PROJECT_FILE = "project.json"
DICTIONARY_FILE = "dictionary.json"
BACKGROUND_FILE = "background.wav"
EDITABLE = ("text", "voice", "language", "profile", "seed", "state", "start", "end")


class ProjectStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # beside the folder, so the folder holds projects only
        self._lock = locks.FileLock(self.root.parent / f".{self.root.name}.lock", what="project store")
        with self._lock:
            recover(self.root)

    # ---- names and files ------------------------------------------------------------------

    def folder(self, name: str) -> Path:
        display = clean_name(name, noun="project")
        return child(self.root, slug(display, fallback="project"), what="project name")

    def _path(self, name: str) -> Path:
        return self.folder(name) / PROJECT_FILE

    def _read(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StudioError(
                f"{path} cannot be read ({exc}); restore it from a backup or delete the project."
            ) from exc

    # ---- projects -------------------------------------------------------------------------

    def create(
        self,
        name: str,
        sources: list[SourceChapter],
        *,
        narrator: str,
        language: str = "en",
        profile: str | None = None,
        voice_tags: dict[str, str] | None = None,
        voices: list[str] | tuple[str, ...] = (),
        settings: Settings | None = None,
    ) -> Project:
        """A new project from ``sources``; refused if a project of that name (or folder) exists."""
        display = clean_name(name, noun="project")
        with self._lock:
            path = self._path(display)
            if path.exists():
                raise InvalidInput(f"A project named '{display}' exists already; choose another name.")
            project = build_project(
                display,
                sources,
                narrator=narrator,
                language=language,
                profile=profile,
                voice_tags=voice_tags,
                voices=voices,
                settings=settings,
            )
            self.save(project)
            return project

    def save(self, project: Project) -> Path:
        with self._lock:
            return write_json(self._path(project.name), project.to_dict())

    def get(self, name: str) -> Project:
        path = self._path(name)
        if not path.is_file():
            raise InvalidInput(f"There is no project named '{name}'.")
        return Project.from_dict(self._read(path))

    def list(self) -> list[str]:
        """The names of the projects, sorted; folders without a readable project file are left out."""
        names = []
        for folder in sorted(self.root.iterdir()):
            path = folder / PROJECT_FILE
            if folder.name.startswith(".") or not path.is_file():
                continue
            try:
                names.append(str(self._read(path)["name"]))
            except (StudioError, KeyError, TypeError):
                continue
        return sorted(names, key=str.casefold)

    def delete(self, name: str) -> None:
        with self._lock:
            folder = self.folder(name)
            if not (folder / PROJECT_FILE).is_file():
                raise InvalidInput(f"There is no project named '{name}'.")
            remove_folder(folder)

    def set_settings(self, name: str, settings: Settings) -> Project:
        """Replace how ``name`` is rendered and mixed; its background track stays as it is."""
        with self._lock:
            project = self.get(name)
            project.settings = replace(settings, background=project.settings.background)
            self.save(project)
            return project

    def set_background(self, name: str, source: Path | None) -> Project:
        """Decode ``source`` into the project folder as its background track; ``None`` removes the track."""
        decoded = decode(Path(source)) if source is not None else None
        with self._lock:
            project = self.get(name)
            target = self.folder(name) / BACKGROUND_FILE
            if decoded is None:
                target.unlink(missing_ok=True)
                project.settings.background = None
            else:
                write_bytes(target, wav_bytes(decoded.samples, decoded.sample_rate))
                project.settings.background = BACKGROUND_FILE
            self.save(project)
            return project

    # ---- dictionaries ---------------------------------------------------------------------

    def global_dictionary(self) -> list[DictEntry]:
        path = self.root / DICTIONARY_FILE
        if not path.is_file():
            return []
        payload = self._read(path)
        if not isinstance(payload, list):
            raise StudioError(f"{path} is not a list of pronunciation entries.")
        return [DictEntry.from_dict(entry) for entry in payload]

    def entries(self, project: Project) -> list[DictEntry]:
        """The merged dictionary ``project`` is spoken with."""
        return merge_dictionaries(self.global_dictionary(), project.dictionary)

    def fingerprint(self, project: Project, segment: Segment, entries: list[DictEntry] | None = None) -> str:
        """What the segment's audio depends on; a subtitle cue's slot length too, as it is fitted to it."""
        spoken = spoken_fingerprint(
            segment.text,
            self.entries(project) if entries is None else entries,
            project.voice_of(segment),
            project.language_of(segment),
            project.profile_of(segment),
            segment.seed,
        )
        if segment.start is None or segment.end is None:
            return spoken
        return hashlib.sha256(f"{spoken}|slot {segment.end - segment.start:.3f}".encode()).hexdigest()

    def set_dictionary(self, name: str, entries: list[DictEntry]) -> list[str]:
        """Replace ``name``'s own dictionary; returns the ids of the segments it invalidated."""
        with self._lock:
            project = self.get(name)
            before = self.entries(project)
            project.dictionary = list(entries)
            changed = _invalidate(self, project, before, self.entries(project))
            self.save(project)
            return changed

    def set_global_dictionary(self, entries: list[DictEntry]) -> dict[str, list[str]]:
        """Replace the studio-wide dictionary; returns, per project, the ids of the segments it invalidated."""
        with self._lock:
            projects = [self.get(name) for name in self.list()]
            before = {project.name: self.entries(project) for project in projects}
            write_json(self.root / DICTIONARY_FILE, [entry.to_dict() for entry in entries])
            changed = {}
            for project in projects:
                ids = _invalidate(self, project, before[project.name], self.entries(project))
                if ids:
                    self.save(project)
                    changed[project.name] = ids
            return changed

    # ---- segments -------------------------------------------------------------------------

    def update_segment(self, name: str, segment_id: str, **changes: Any) -> Segment:
        """Change fields of one segment; it goes back to pending only if its spoken fingerprint changed."""
        unknown = sorted(set(changes) - set(EDITABLE))
        if unknown:
            raise InvalidInput(f"A segment has no editable field {', '.join(unknown)}; use {', '.join(EDITABLE)}.")
        if "state" in changes and changes["state"] not in STATES:
            raise InvalidInput(f"The state '{changes['state']}' is not one of {', '.join(STATES)}.")
        with self._lock:
            project = self.get(name)
            segment = project.segment(segment_id)
            entries = self.entries(project)
            before = self.fingerprint(project, segment, entries)
            for key, value in changes.items():
                setattr(segment, key, value.strip() if key == "text" and isinstance(value, str) else value)
            segment.validate()
            if "text" in changes:
                check_edited_text(segment.text)
            if self.fingerprint(project, segment, entries) != before:
                if segment.state == "locked":
                    raise InvalidInput(f"Segment {segment_id} is locked; unlock it before changing how it sounds.")
                _reset(segment)
            self.save(project)
            return segment

    def add_take(self, name: str, segment_id: str, take: Take, *, state: str) -> Segment | None:
        """Record ``take`` as the chosen take of a segment and set its ``state``.

        Nothing is recorded (``None`` comes back) when the segment is gone, is locked, or now
        sounds different from what ``take.fingerprint`` says was rendered: an edit made while the
        take was rendering wins over the take.
        """
        if state not in STATES:
            raise InvalidInput(f"The state '{state}' is not one of {', '.join(STATES)}.")
        with self._lock:
            project = self.get(name)
            segment = next((s for s in project.segments() if s.id == segment_id), None)
            if segment is None or segment.state == "locked" or self.fingerprint(project, segment) != take.fingerprint:
                return None
            for other in segment.takes:
                other.chosen = False
            take.chosen = True
            segment.takes.append(take)
            segment.state = state
            self.save(project)
            return segment

    def choose_take(self, name: str, segment_id: str, index: int) -> Segment:
        """Make take ``index`` (0-based) the one a segment is exported with; it must be of its current text."""
        with self._lock:
            project = self.get(name)
            segment = project.segment(segment_id)
            if segment.state == "locked":
                raise InvalidInput(f"Segment {segment_id} is locked; unlock it before choosing another take.")
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(segment.takes):
                raise InvalidInput(f"Segment {segment_id} has {len(segment.takes)} takes; there is no take {index!r}.")
            take = segment.takes[index]
            if take.fingerprint != self.fingerprint(project, segment):
                raise InvalidInput(f"Take {index + 1} of segment {segment_id} says an older version of its text.")
            for other in segment.takes:
                other.chosen = other is take
            segment.state = "flagged" if take.passed is False else "rendered"
            self.save(project)
            return segment

    def set_locked(self, name: str, segment_id: str, locked: bool) -> Segment:
        """Lock a rendered segment so nothing re-renders it, or unlock it; only a segment with a chosen take locks."""
        with self._lock:
            segment = self.get(name).segment(segment_id)
            if not locked:
                chosen = segment.chosen_take
                state = "pending" if chosen is None else ("flagged" if chosen.passed is False else "rendered")
                return segment if segment.state != "locked" else self.update_segment(name, segment_id, state=state)
            if segment.chosen_take is None:
                raise InvalidInput(f"Segment {segment_id} has no chosen take yet; render it before locking it.")
            return self.update_segment(name, segment_id, state="locked")


def _reset(segment: Segment) -> None:
    segment.state = "pending"
    for take in segment.takes:
        take.chosen = False


def _invalidate(store: ProjectStore, project: Project, before: list[DictEntry], after: list[DictEntry]) -> list[str]:
    """Mark the segments whose fingerprint differs between the two dictionaries; their ids."""
    changed = []
    for segment in project.segments():
        if store.fingerprint(project, segment, before) == store.fingerprint(project, segment, after):
            continue
        changed.append(segment.id)
        if segment.state == "locked":
            segment.state = "flagged"
        else:
            _reset(segment)
    return changed
