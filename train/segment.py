"""Cut a transcribed recording into training clips at sentence ends and pauses, never inside a word.

Whisper's word end times tend to be early, which is how other tools cut off the last
word of a clip; here a clip's end is pushed to the end of the voice activity around its
last word (bounded by the midpoint to the next word) plus a little padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SENTENCE_END = (".", "!", "?", "…", "。", "！", "？", "؟", "।")


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str
    probability: float = 1.0


@dataclass(frozen=True)
class ClipPlan:
    """Where to cut one clip out of its source, and what is said in it."""

    start: float
    end: float
    words: tuple[Word, ...]

    @property
    def text(self) -> str:
        return "".join(w.text for w in self.words).strip()

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def confidence(self) -> float:
        return sum(w.probability for w in self.words) / len(self.words) if self.words else 0.0


@dataclass(frozen=True)
class CutOptions:
    min_s: float = 2.0
    max_s: float = 12.0
    pause_s: float = 0.45  # a pause this long may end a clip even without punctuation
    pad_s: float = 0.15


def _groups(words: Sequence[Word], opts: CutOptions) -> list[list[Word]]:
    groups: list[list[Word]] = []
    current: list[Word] = []
    for index, word in enumerate(words):
        current.append(word)
        following = words[index + 1] if index + 1 < len(words) else None
        if following is None:
            break
        length = word.end - current[0].start
        gap = following.start - word.end
        sentence_end = word.text.strip().endswith(SENTENCE_END)
        if length >= opts.min_s and ((sentence_end and gap > 0.05) or gap >= opts.pause_s):
            groups.append(current)
            current = []
        elif following.end - current[0].start > opts.max_s:
            head = _split_at_best_gap(current, following, opts)
            groups.append(head)
            current = current[len(head) :]
    if current:
        groups.append(current)
    return _merge_short(groups, opts)


def _split_at_best_gap(current: list[Word], following: Word, opts: CutOptions) -> list[Word]:
    """The prefix of ``current`` (at least min_s long) that ends at its widest pause, favouring punctuation."""
    best, best_score = len(current), -1.0
    for k in range(1, len(current) + 1):
        word = current[k - 1]
        if word.end - current[0].start < opts.min_s:
            continue
        nxt = current[k] if k < len(current) else following
        mark = word.text.strip()[-1:]
        bonus = 0.3 if mark in SENTENCE_END else 0.15 if mark in ",;:" else 0.0
        score = nxt.start - word.end + bonus
        if score > best_score:
            best, best_score = k, score
    return current[:best]


def _merge_short(groups: list[list[Word]], opts: CutOptions) -> list[list[Word]]:
    """Join a piece shorter than min_s to its neighbour when the two fit in max_s."""
    merged: list[list[Word]] = []
    for group in groups:
        short = group[-1].end - group[0].start < opts.min_s
        fits = bool(merged) and group[-1].end - merged[-1][0].start <= opts.max_s
        if fits and (short or merged[-1][-1].end - merged[-1][0].start < opts.min_s):
            merged[-1] = merged[-1] + group
        else:
            merged.append(group)
    return merged


def _voiced_end(t: float, speech: Sequence[tuple[float, float]]) -> float:
    for start, end in speech:
        if start - 0.05 <= t <= end + 0.05:
            return max(end, t)
    return t


def _voiced_start(t: float, speech: Sequence[tuple[float, float]]) -> float:
    for start, end in speech:
        if start - 0.05 <= t <= end + 0.05:
            return min(start, t)
    return t


def plan_clips(
    words: Sequence[Word], speech: Sequence[tuple[float, float]], duration: float, opts: CutOptions | None = None
) -> list[ClipPlan]:
    """Clips for ``words`` (in time order) of a recording ``duration`` seconds long.

    ``speech`` are the voice-activity regions in seconds. Each cut lies between two
    words: no later than the midpoint to the next word, no earlier than the midpoint
    to the previous one.
    """
    opts = opts or CutOptions()
    words = [w for w in words if w.end > w.start and w.text.strip()]
    plans: list[ClipPlan] = []
    for group in _groups(words, opts):
        first, last = group[0], group[-1]
        position = words.index(first)
        before = words[position - 1] if position > 0 else None
        after_index = position + len(group)
        after = words[after_index] if after_index < len(words) else None
        lower = (before.end + first.start) / 2 if before else 0.0
        upper = (last.end + after.start) / 2 if after else duration
        start = max(min(first.start, _voiced_start(first.start, speech)) - opts.pad_s, lower, 0.0)
        end = min(_voiced_end(last.end, speech) + opts.pad_s, upper, duration)
        plans.append(ClipPlan(start, end, tuple(group)))
    return plans
