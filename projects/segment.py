"""Turn imported chapters into a project's segments: voice tags, then paragraphs, then sentences.

Sentences are split and packed up to the language's character limit by the same code the
synthesis path uses (:func:`core.xtts.text.split_for_synthesis`), so a prose segment fits in
one synthesis call (a subtitle cue stays one segment, whatever its length, to keep its timing). A sentence over the limit is cut at its last clause mark, then at the
last space before the limit; only a single word longer than the limit (or CJK text, which has
no spaces) is cut inside.

A voice tag, ``[Alice]`` at the start of a paragraph or line, gives the text up to the end
of the paragraph to that voice. Names match the project's tag map or the voice library,
ignoring case; an unknown tag is dropped from the text, which the narrator reads, and a
warning says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from core.errors import InvalidInput
from core.xtts.text import split_for_synthesis
from projects.frontend import PAUSE_TAG, split_pauses
from projects.script import Chapter, Project, Segment, Settings
from projects.sources import SourceChapter, check_script_size

_VOICE_TAG = re.compile(r"^\[([^\[\]\n]{1,64})\][ \t]*")
# Pause tags hold spaces and dots that the sentence splitter would cut at; they travel as one token.
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


def voice_names(voice_tags: dict[str, str], voices: Iterable[str]) -> dict[str, str]:
    """Every name a tag may use, case-folded, to the voice it selects; the tag map wins over the library."""
    names = {voice.casefold(): voice for voice in voices}
    names.update({tag.casefold(): voice for tag, voice in voice_tags.items()})
    return names


def voice_sections(paragraph: str, names: dict[str, str], warnings: list[str]) -> list[tuple[str | None, str]]:
    """The (voice or ``None`` for the narrator, text) runs of one paragraph, tags removed."""
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in paragraph.split("\n"):
        tag = _VOICE_TAG.match(line)
        if _is_voice_tag(line, tag):
            voice = names.get(tag[1].strip().casefold())
            if voice is None:
                warning = f"Unknown voice tag [{tag[1]}]: the narrator reads that text."
                if warning not in warnings:
                    warnings.append(warning)
            sections.append((voice, []))
            line = line[tag.end() :]
        if line.strip():
            sections[-1][1].append(line.strip())
    return [(voice, " ".join(lines)) for voice, lines in sections if lines]


def _is_voice_tag(line: str, tag: re.Match[str] | None) -> bool:
    """A ``[Name]`` at the start of a line, not a pause tag and not a footnote mark such as ``[1]``."""
    return tag is not None and not PAUSE_TAG.match(line) and any(ch.isalpha() for ch in tag[1])


def check_edited_text(text: str) -> None:
    """Refuse an edited segment text with a bad pause tag, or a voice tag (the voice column sets the voice)."""
    split_pauses(text)
    tag = _VOICE_TAG.match(text)
    if _is_voice_tag(text, tag):
        raise InvalidInput(
            f"The text starts with the voice tag [{tag[1]}]; choose the segment's voice in its voice field instead."
        )


def split_text(text: str, language: str) -> list[str]:
    """``text`` as segment texts within ``language``'s limit, pause tags kept whole."""
    tags: list[str] = []

    def hide(match: re.Match[str]) -> str:
        tags.append(match[0])
        return f"\ue000{len(tags) - 1}\ue001"

    hidden = PAUSE_TAG.sub(hide, text)
    return [_PLACEHOLDER.sub(lambda m: tags[int(m[1])], piece) for piece in split_for_synthesis(hidden, language)]


def build_chapters(
    sources: list[SourceChapter], *, language: str, names: dict[str, str], warnings: list[str]
) -> list[Chapter]:
    """Chapters of segments for ``sources``; timed blocks (subtitle cues) stay one segment each."""
    chapters = []
    for number, source in enumerate(sources, start=1):
        segments: list[Segment] = []
        for block in source.blocks:
            for voice, text in voice_sections(block.text, names, warnings):
                split_pauses(text)  # a bad pause tag is refused at import, not at render time
                if block.start is not None:
                    segments.append(Segment(text=text, voice=voice, start=block.start, end=block.end))
                    continue
                segments.extend(Segment(text=piece, voice=voice) for piece in split_text(text, language))
            if segments:
                segments[-1].paragraph_end = True
        if segments:
            chapters.append(Chapter(title=source.title or f"Chapter {number}", segments=segments))
    return chapters


def build_project(
    name: str,
    sources: list[SourceChapter],
    *,
    narrator: str,
    language: str = "en",
    profile: str | None = None,
    voice_tags: dict[str, str] | None = None,
    voices: Iterable[str] = (),
    settings: Settings | None = None,
) -> Project:
    """A new project from imported ``sources``; ``project.warnings`` lists unknown voice tags."""
    check_script_size("\n".join(block.text for source in sources for block in source.blocks))
    tags = dict(voice_tags or {})
    warnings: list[str] = []
    chapters = build_chapters(sources, language=language, names=voice_names(tags, voices), warnings=warnings)
    return Project(
        name=name,
        narrator=narrator,
        language=language,
        profile=profile,
        voice_tags=tags,
        settings=settings or Settings(),
        chapters=chapters,
        warnings=warnings,
    )
