"""Text validation and sentence splitting for synthesis.

XTTS degrades (and its tokenizer truncates) past a per-language character
limit, so long text is cut into sentences, and sentences that are still too
long are cut at clause marks, then at spaces. Short sentences are packed
together up to a target length, because a lone "Yes." sounds clipped.
"""

from __future__ import annotations

import functools
import re

from core.errors import InvalidInput
from core.xtts.languages import CHAR_LIMITS

# pysbd's language codes for the XTTS languages it knows; others use the regex.
_PYSBD_LANGS = {
    "en": "en",
    "es": "es",
    "fr": "fr",
    "de": "de",
    "it": "it",
    "pl": "pl",
    "ru": "ru",
    "nl": "nl",
    "ar": "ar",
    "zh-cn": "zh",
    "ja": "ja",
    "hi": "hi",
}
_SENTENCE_END = re.compile(r"(?<=[.!?…;؟।])[\"'”’»)\]]*\s+|(?<=[。！？；])")
_CLAUSE_END = re.compile(r"(?<=[,:;，、：；—–])\s*")
_CJK = {"zh-cn", "ja", "ko"}


def validate_text(text: str | None, *, max_chars: int) -> str:
    """Return ``text`` stripped, or raise :class:`InvalidInput` if empty or too long."""
    cleaned = (text or "").strip()
    if not cleaned:
        raise InvalidInput("The text is empty. Type something to speak.")
    if len(cleaned) > max_chars:
        raise InvalidInput(
            f"The text is {len(cleaned):,} characters; the limit is {max_chars:,}. "
            "Shorten it, or start the studio with a higher --max-text-chars."
        )
    return cleaned


@functools.lru_cache(maxsize=16)
def _segmenter(lang: str):
    import pysbd

    return pysbd.Segmenter(language=lang, clean=False)


def split_sentences(text: str, language: str) -> list[str]:
    """Split ``text`` into sentences using pysbd where it knows the language."""
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return []
    pysbd_lang = _PYSBD_LANGS.get(language)
    parts = _segmenter(pysbd_lang).segment(text) if pysbd_lang else _SENTENCE_END.split(text)
    return [p.strip() for p in parts if p and p.strip()]


def _hard_split(piece: str, limit: int, language: str) -> list[str]:
    """Cut a clause that has no punctuation left: at spaces, or anywhere for CJK."""
    if language in _CJK or " " not in piece:
        return [piece[i : i + limit] for i in range(0, len(piece), limit)]
    out: list[str] = []
    current = ""
    for word in piece.split(" "):
        while len(word) > limit:
            if current:
                out.append(current)
                current = ""
            out.append(word[:limit])
            word = word[limit:]
        candidate = f"{current} {word}".strip()
        if len(candidate) > limit:
            out.append(current)
            current = word
        else:
            current = candidate
    if current:
        out.append(current)
    return out


def _fit(sentence: str, limit: int, language: str) -> list[str]:
    """Break one sentence into pieces no longer than ``limit``."""
    if len(sentence) <= limit:
        return [sentence]
    pieces: list[str] = []
    current = ""
    for clause in (c for c in _CLAUSE_END.split(sentence) if c):
        joiner = "" if language in _CJK else " "
        candidate = f"{current}{joiner}{clause}".strip() if current else clause.strip()
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(current)
        if len(clause.strip()) <= limit:
            current = clause.strip()
        else:
            pieces.extend(_hard_split(clause.strip(), limit, language))
            current = ""
    if current:
        pieces.append(current)
    return pieces


def split_for_synthesis(
    text: str, language: str, *, target_chars: int | None = None, first_alone: bool = False
) -> list[str]:
    """Chunks to synthesise one by one, each within the language's limit.

    ``target_chars`` packs short sentences together up to that length; it is
    capped at the language's limit. ``first_alone`` keeps the first sentence in a
    chunk of its own, so a stream can start playing as soon as it is spoken.
    """
    limit = CHAR_LIMITS.get(language, 200)
    target = min(target_chars or limit, limit)
    chunks: list[str] = []
    for sentence in split_sentences(text, language):
        for piece in _fit(sentence, limit, language):
            joiner = "" if language in _CJK else " "
            packable = chunks and not (first_alone and len(chunks) == 1)
            if packable and len(chunks[-1]) + len(joiner) + len(piece) <= target:
                chunks[-1] = f"{chunks[-1]}{joiner}{piece}"
            else:
                chunks.append(piece)
    return chunks
