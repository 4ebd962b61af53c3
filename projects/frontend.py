"""What is said, as opposed to what is written: pronunciation dictionaries and pause tags.

A dictionary entry rewrites a word (or a regular expression) into a respelling the model
pronounces right. Entries apply in order, whole-word by default. The studio-wide dictionary
and a project's own are merged; a project entry replaces a global one for the same pattern.
:func:`spoken_fingerprint` hashes everything a segment's audio depends on, including exactly
the entries that changed its text, so a later render knows which segments are stale.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from core.errors import InvalidInput

MAX_PAUSE_S = 10.0
PAUSE_TAG = re.compile(r"\[pause\s+([^\]]*)\]", re.IGNORECASE)
_PAUSE_VALUE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|ms)", re.IGNORECASE)


@dataclass(frozen=True)
class DictEntry:
    """``pattern`` (a word, or a regex when ``regex``) is spoken as ``replacement``.

    ``language`` limits the entry to one language; ``None`` applies it to all.
    """

    pattern: str
    replacement: str
    regex: bool = False
    case_sensitive: bool = False
    whole_word: bool = True
    language: str | None = None

    def __post_init__(self) -> None:
        if not self.pattern.strip():
            raise InvalidInput("A pronunciation entry has an empty word or pattern.")
        self.compiled()

    @property
    def key(self) -> tuple[str, bool, str | None]:
        """What identifies an entry when dictionaries are merged."""
        pattern = self.pattern if self.case_sensitive or self.regex else self.pattern.casefold()
        return (pattern, self.regex, self.language)

    def compiled(self) -> re.Pattern[str]:
        return _compile(self.pattern, self.regex, self.case_sensitive, self.whole_word)

    def applies_to(self, language: str) -> bool:
        return self.language is None or self.language == language

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: Any) -> DictEntry:
        if not isinstance(payload, dict):
            raise InvalidInput("A pronunciation entry must be an object with a pattern and a replacement.")
        try:
            return cls(**payload)
        except TypeError as exc:
            raise InvalidInput(f"A pronunciation entry is malformed: {exc}") from exc


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str, regex: bool, case_sensitive: bool, whole_word: bool) -> re.Pattern[str]:
    body = pattern if regex else re.escape(pattern)
    if whole_word:
        body = rf"(?<!\w)(?:{body})(?!\w)"
    try:
        return re.compile(body, 0 if case_sensitive else re.IGNORECASE)
    except re.error as exc:
        raise InvalidInput(f"The pronunciation pattern '{pattern}' is not a valid regular expression: {exc}.") from exc


def merge_dictionaries(global_entries: list[DictEntry], project_entries: list[DictEntry]) -> list[DictEntry]:
    """Global entries that the project does not override, then the project's entries."""
    overridden = {entry.key for entry in project_entries}
    return [entry for entry in global_entries if entry.key not in overridden] + list(project_entries)


def apply_dictionary(text: str, entries: list[DictEntry], language: str) -> tuple[str, list[DictEntry]]:
    """``text`` with every entry for ``language`` applied in order, and the entries that changed it."""
    applied: list[DictEntry] = []
    for entry in entries:
        if not entry.applies_to(language):
            continue
        try:
            rewritten, count = entry.compiled().subn(entry.replacement, text)
        except (re.error, IndexError) as exc:
            raise InvalidInput(
                f"The replacement '{entry.replacement}' for '{entry.pattern}' is invalid: {exc}."
            ) from exc
        if count:
            applied.append(entry)
            text = rewritten
    return text, applied


def parse_pause(value: str) -> float:
    """Seconds for a pause tag's value (``1.5s``, ``500ms``); :class:`InvalidInput` outside 0..10 s."""
    match = _PAUSE_VALUE.fullmatch(value.strip())
    if not match:
        raise InvalidInput(f"The pause '[pause {value}]' needs a length such as 1.5s or 500ms.")
    seconds = float(match[1]) / (1000 if match[2].lower() == "ms" else 1)
    if not 0 <= seconds <= MAX_PAUSE_S:
        raise InvalidInput(f"The pause '[pause {value}]' is {seconds:g}s; a pause can be 0 to {MAX_PAUSE_S:g} seconds.")
    return seconds


def split_pauses(text: str) -> list[tuple[str, str | float]]:
    """``text`` as ("text", str) and ("pause", seconds) items, in order; blank text between tags is dropped."""
    items: list[tuple[str, str | float]] = []
    position = 0
    for match in PAUSE_TAG.finditer(text):
        piece = text[position : match.start()].strip()
        if piece:
            items.append(("text", piece))
        items.append(("pause", parse_pause(match[1])))
        position = match.end()
    tail = text[position:].strip()
    if tail:
        items.append(("text", tail))
    return items


def spoken_pieces(
    text: str, entries: list[DictEntry], language: str
) -> tuple[list[tuple[str, str | float]], list[DictEntry]]:
    """What to synthesise for ``text``: its pause-split items with the dictionary applied, and the entries used."""
    pieces: list[tuple[str, str | float]] = []
    used: list[DictEntry] = []
    for kind, value in split_pauses(text):
        if kind == "text":
            value, applied = apply_dictionary(str(value), entries, language)
            used.extend(entry for entry in applied if entry not in used)
        pieces.append((kind, value))
    return pieces, used


def spoken_text(text: str, entries: list[DictEntry], language: str) -> str:
    """``text`` as it is sent to the engine (dictionary applied), pause tags shown where they fall."""
    pieces, _ = spoken_pieces(text, entries, language)
    return " ".join(str(value) if kind == "text" else f"[pause {float(value):g}s]" for kind, value in pieces)


def spoken_fingerprint(
    text: str, entries: list[DictEntry], voice: str, language: str, profile: str | None, seed: int | None
) -> str:
    """A hash of everything the audio of ``text`` depends on; ``entries`` is the full merged dictionary.

    Only the entries that change ``text`` enter the hash, so editing an entry that a segment
    does not use leaves that segment's fingerprint as it was.
    """
    _, used = spoken_pieces(text, entries, language)
    payload = {
        "text": text,
        "entries": [entry.to_dict() for entry in used],
        "voice": voice,
        "language": language,
        "profile": profile,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
