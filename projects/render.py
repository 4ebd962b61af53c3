"""Rendering a project through the resident engine: one verified take per segment, resumable.

A render walks the segments that need audio (pending, or whose chosen take is gone or says
older text), speaks each through the studio's :class:`~core.tts.TTSService` and engine (so
every chunk takes the device slot like any other request), checks the take with the
:class:`~projects.verify.TakeVerifier` and retries with new seeds, and records the kept take
in the project at once: a render stopped or crashed after segment 143 resumes at 144.
Rendering holds no lock on the project: an edit made meanwhile wins, and the take of the old
text is dropped (see :meth:`ProjectStore.add_take`).

A subtitle cue is fitted to its slot: a faster XTTS take first, then a bounded time-stretch
(:mod:`projects.fit`); a cue that still does not fit is flagged with its overflow.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from core.audio import trim_silence
from core.constants import XTTS_OUTPUT_RATE
from core.errors import Cancelled, InvalidInput
from core.fs import child, write_bytes
from core.outputs import wav_bytes
from core.tts import TTSRequest, TTSService
from core.xtts.profiles import DEFAULT_PROFILE
from projects import fit
from projects.frontend import DictEntry, spoken_pieces
from projects.script import Project, Segment, Take
from projects.store import ProjectStore
from projects.verify import TakeCheck, TakeVerifier, VerifySettings, best_take, voice_norm
from train.transcribe import Whisper

RATE = XTTS_OUTPUT_RATE
EDGE_PAD_S = 0.05  # room kept before the first and after the last word of a take
NORM_MIN_TAKES = 5  # accepted takes of a voice before its own length band replaces the default

Progress = Callable[[float, str], None]


@dataclass
class Rendered:
    """One synthesis of a segment: the take as heard, and its speech without pause-tag silences."""

    audio: np.ndarray
    speech: np.ndarray


@dataclass
class RenderReport:
    project: str
    rendered: list[str] = field(default_factory=list)  # segments that got a take that passed (or was not checked)
    flagged: list[str] = field(default_factory=list)  # segments whose best take still failed, or did not fit
    stale: list[str] = field(default_factory=list)  # edited while rendering: their take was dropped
    skipped: int = 0  # segments that already had a current take, or are locked
    cancelled: bool = False
    seconds: float = 0.0
    audio_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def base_seed(segment: Segment) -> int:
    """The segment's own seed, or one derived from its id, so a resumed render repeats its takes."""
    if segment.seed is not None:
        return segment.seed % 2**32
    return int.from_bytes(hashlib.sha256(segment.id.encode("utf-8")).digest()[:4], "big")


class ProjectRenderer:
    def __init__(
        self,
        store: ProjectStore,
        tts: TTSService,
        whisper: Whisper,
        *,
        whisper_model: str,
        verify_settings: VerifySettings | None = None,
    ) -> None:
        self.store = store
        self.tts = tts
        self.whisper = whisper
        self.whisper_model = whisper_model
        self.verify_settings = verify_settings or VerifySettings()
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()

    # ---- what needs rendering -------------------------------------------------------------

    def needs_render(self, project: Project, segment: Segment, entries: list[DictEntry]) -> bool:
        """Pending, or rendered/flagged with a chosen take whose file is gone or says older text."""
        if segment.state == "locked":
            return False
        take = segment.chosen_take
        if segment.state == "pending" or take is None:
            return True
        folder = self.store.folder(project.name)
        return not (folder / take.file).is_file() or take.fingerprint != self.store.fingerprint(
            project, segment, entries
        )

    def status(self, name: str) -> dict[str, Any]:
        """Counts per state, what still needs rendering, the flagged segments with their reasons."""
        project = self.store.get(name)
        entries = self.store.entries(project)
        flagged, rendered_s, to_render = [], 0.0, 0
        for number, chapter in enumerate(project.chapters):
            for index, segment in enumerate(chapter.segments):
                take = segment.chosen_take
                to_render += self.needs_render(project, segment, entries)
                if take is not None and segment.state != "pending":
                    rendered_s += take.duration_s
                if segment.state == "flagged":
                    reasons = take.reasons if take is not None and take.reasons else ["marked for review"]
                    flagged.append(
                        {"id": segment.id, "chapter": number, "index": index, "text": segment.text, "reasons": reasons}
                    )
        return {
            "project": project.name,
            "chapters": len(project.chapters),
            "segments": len(project.segments()),
            "states": dict(Counter(segment.state for segment in project.segments())),
            "to_render": to_render,
            "flagged": flagged,
            "rendered_seconds": round(rendered_s, 3),
            "rendering": self.is_rendering(project.name),
        }

    def is_rendering(self, name: str) -> bool:
        with self._busy_lock:
            return name in self._busy

    @contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        """One render or regeneration of a project at a time: two would race for the same segments."""
        with self._busy_lock:
            if name in self._busy:
                raise InvalidInput(f"The project '{name}' is rendering already; wait for it to finish or stop it.")
            self._busy.add(name)
        try:
            yield
        finally:
            with self._busy_lock:
                self._busy.discard(name)

    # ---- rendering ------------------------------------------------------------------------

    def render(
        self,
        name: str,
        *,
        chapters: list[int] | tuple[int, ...] | None = None,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> RenderReport:
        """Render every segment of ``chapters`` (all by default) that needs it; returns what happened.

        A stop ends the render after the segment in progress is dropped; what was rendered is kept.
        """
        started = time.perf_counter()
        project = self.store.get(name)
        report = RenderReport(project.name)
        with self._exclusive(project.name):
            entries = self.store.entries(project)
            asked = [
                segment for index in project.chapter_indexes(chapters) for segment in project.chapters[index].segments
            ]
            todo = [segment for segment in asked if self.needs_render(project, segment, entries)]
            report.skipped = len(asked) - len(todo)
            for done, segment in enumerate(todo):
                if should_stop is not None and should_stop():
                    report.cancelled = True
                    break
                if progress is not None:
                    progress(done / len(todo), f"Segment {done + 1} of {len(todo)}: {_preview(segment.text)}")
                try:
                    take = self._take(project, segment, entries, base_seed(segment), should_stop)
                except Cancelled:
                    report.cancelled = True
                    break
                recorded = self._record(project, segment, take)
                if recorded is None:
                    report.stale.append(segment.id)
                    continue
                (report.flagged if recorded.state == "flagged" else report.rendered).append(segment.id)
                report.audio_seconds += take.duration_s
                project = self.store.get(project.name)  # the norm and later segments see the take just kept
            if progress is not None and not report.cancelled:
                progress(1.0, f"Rendered {len(report.rendered) + len(report.flagged)} segments")
        report.audio_seconds = round(report.audio_seconds, 3)
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def regenerate(
        self,
        name: str,
        segment_id: str,
        *,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Segment:
        """A new take of one segment with a fresh seed; it becomes the chosen take (older takes stay)."""
        project = self.store.get(name)
        segment = project.segment(segment_id)
        if segment.state == "locked":
            raise InvalidInput(f"Segment {segment_id} is locked; unlock it before regenerating it.")
        with self._exclusive(project.name):
            if progress is not None:
                progress(0.0, f"Regenerating: {_preview(segment.text)}")
            take = self._take(project, segment, self.store.entries(project), secrets.randbelow(2**31), should_stop)
            recorded = self._record(project, segment, take)
            if recorded is None:
                raise InvalidInput(f"Segment {segment_id} was edited while it was regenerating; render it again.")
            if progress is not None:
                progress(1.0, "Regenerated")
            return recorded

    def choose(self, name: str, segment_id: str, take_index: int) -> Segment:
        return self.store.choose_take(name, segment_id, take_index)

    # ---- one segment ----------------------------------------------------------------------

    def _norm(self, project: Project, voice: str) -> tuple[float, float]:
        """The voice's length band from its accepted takes in this project, once there are enough."""
        values = [
            take.seconds_per_char
            for segment in project.segments()
            if project.voice_of(segment) == voice
            for take in segment.takes
            if take.passed and take.speed == 1.0 and take.seconds_per_char
        ]
        if len(values) < NORM_MIN_TAKES:
            return self.verify_settings.norm
        return voice_norm(values)  # type: ignore[arg-type]

    def _synthesise(
        self,
        project: Project,
        segment: Segment,
        pieces: list[tuple[str, str | float]],
        seed: int,
        speed: float,
        should_stop: Callable[[], bool] | None,
    ) -> Rendered:
        parts: list[np.ndarray] = []
        speech: list[np.ndarray] = []
        first_chunk = 0
        for kind, value in pieces:
            if kind == "pause":
                parts.append(np.zeros(int(float(value) * RATE), dtype=np.float32))
                continue
            prepared = self.tts.prepare(
                TTSRequest(
                    text=str(value),
                    language=project.language_of(segment),
                    voice=project.voice_of(segment),
                    profile=project.profile_of(segment) or DEFAULT_PROFILE,
                    overrides={"speed": speed} if speed != 1.0 else {},
                    seed=seed,
                )
            )
            engine = self.tts.engine
            audio = engine.synthesize(
                prepared.chunks, **prepared.speech(engine.conditioning(prepared.spec)),
                first_chunk=first_chunk, should_stop=should_stop,
            )  # fmt: skip
            first_chunk += len(prepared.chunks)
            audio = trim_silence(audio, RATE, pad_s=EDGE_PAD_S)
            parts.append(audio)
            speech.append(audio)
        joined = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return Rendered(joined, np.concatenate(speech) if speech else np.zeros(0, dtype=np.float32))

    def _take(
        self,
        project: Project,
        segment: Segment,
        entries: list[DictEntry],
        seed: int,
        should_stop: Callable[[], bool] | None,
    ) -> Take:
        """The kept take of ``segment`` (not yet saved to the project), its file written."""
        language = project.language_of(segment)
        pieces, _ = spoken_pieces(segment.text, entries, language)
        spoken = " ".join(str(value) for kind, value in pieces if kind == "text")
        settings = project.settings
        checked = settings.verify and bool(spoken.strip())
        norm = self._norm(project, project.voice_of(segment))

        def attempt(speed: float) -> tuple[Rendered, TakeCheck | None, int]:
            def render(attempt_seed: int) -> Rendered:
                return self._synthesise(project, segment, pieces, attempt_seed, speed, should_stop)

            if not checked:
                return render(seed), None, seed
            verifier = TakeVerifier(
                self.whisper, self.whisper_model, settings=self.verify_settings,
                norm=(norm[0] / speed, norm[1] / speed),
            )  # fmt: skip
            kept = best_take(
                render, lambda r: verifier.verify(r.speech, RATE, spoken, language), settings.attempts, seed=seed
            )
            return kept.audio, kept.check, kept.seed

        rendered, check, kept_seed = attempt(1.0)
        speed, stretch, over = 1.0, 1.0, 0.0
        audio = rendered.audio
        if segment.start is not None and segment.end is not None:
            slot = segment.end - segment.start
            faster = fit.speed_for(len(audio) / RATE, slot, settings.max_speed)
            if faster > 1.0:
                sped, sped_check, sped_seed = attempt(faster)
                if sped_check is None or sped_check.passed or check is None or not check.passed:
                    rendered, check, kept_seed, speed, audio = sped, sped_check, sped_seed, faster, sped.audio
            stretch = fit.stretch_for(len(audio) / RATE, slot, settings.max_stretch)
            audio = fit.time_stretch(audio, RATE, stretch)
            over = fit.overflow(len(audio) / RATE, slot)
        reasons = list(check.reasons) if check is not None else []
        if over:
            reasons.append(
                f"does not fit its {segment.end - segment.start:.2f} s slot: {over:.2f} s too long "  # type: ignore[operator]
                f"at speed {speed:g} and stretch {stretch:g}"
            )
        file = self._write(project, segment, audio, kept_seed)
        return Take(
            file=file,
            seed=kept_seed,
            duration_s=round(len(audio) / RATE, 3),
            passed=False if over else (None if check is None else check.passed),
            reasons=reasons,
            transcript=check.transcript if check is not None else "",
            wer=None if check is None else round(check.wer, 4),
            cer=None if check is None else round(check.cer, 4),
            seconds_per_char=None if check is None else round(check.seconds_per_char, 5),
            speed=speed,
            stretch=stretch,
            overflow_s=over,
            fingerprint=self.store.fingerprint(project, segment, entries),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def _write(self, project: Project, segment: Segment, audio: np.ndarray, seed: int) -> str:
        """Save a take's WAV (atomically) under the project's ``takes/<segment id>/``; its relative path."""
        folder = self.store.folder(project.name)
        takes = folder / "takes"
        segment_dir = child(takes, segment.id, what="segment id", roots=[folder])
        name = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}-{seed}.wav"
        path = write_bytes(segment_dir / name, wav_bytes(audio, RATE))
        return path.relative_to(folder).as_posix()

    def _record(self, project: Project, segment: Segment, take: Take) -> Segment | None:
        """Keep ``take`` in the project; a take of text edited meanwhile is deleted instead."""
        state = "flagged" if take.passed is False else "rendered"
        recorded = self.store.add_take(project.name, segment.id, take, state=state)
        if recorded is None:
            (self.store.folder(project.name) / take.file).unlink(missing_ok=True)
        return recorded


def _preview(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
