"""Export of long-form projects: timeline, mix, ducking, loudness targets, formats and atomicity.

Takes are made here, not rendered: chirps (each found again in the mix by cross-correlation,
to the sample) and espeak-ng speech for the loudness targets.
"""

from __future__ import annotations

import json
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from core.audio import decode, ffmpeg_tool, integrated_loudness
from core.errors import Cancelled, InvalidInput
from projects.export import FORMATS, ExportRequest, export_project
from projects.loudness import Limiter, Meter, true_peaks
from projects.script import Chapter, Project, Segment, Settings, Take
from projects.store import ProjectStore
from projects.timeline import RATE, build_timeline
from tests.conftest import speak

TRAIL_S = 0.2  # silence at the end of each chirp take


def chirp(seconds: float, low: float, high: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    tone = amplitude * signal.chirp(t, low, seconds, high).astype(np.float32)
    return np.concatenate([tone, np.zeros(int(TRAIL_S * RATE), dtype=np.float32)])


def add_take(folder: Path, segment: Segment, audio: np.ndarray | Path, rate: int = RATE) -> None:
    """Give ``segment`` a chosen take: ``audio`` written as a WAV under ``takes/``, or a WAV file copied there."""
    target = folder / "takes" / f"{segment.id}.wav"
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(audio, Path):
        data, rate = sf.read(str(audio), dtype="float32")
        sf.write(str(target), data, rate)
        frames = len(data)
    else:
        sf.write(str(target), audio, rate, subtype="FLOAT")
        frames = len(audio)
    segment.takes = [Take(f"takes/{target.name}", seed=1, chosen=True, duration_s=frames / rate, passed=True, wer=0.0)]
    segment.state = "rendered"


def ffprobe(path: Path, *entries: str) -> dict[str, Any]:
    out = subprocess.run(
        [ffmpeg_tool("ffprobe"), "-v", "error", "-of", "json", *entries, str(path)], capture_output=True, check=True
    )
    return json.loads(out.stdout)


def probe_duration(path: Path) -> float:
    return float(ffprobe(path, "-show_entries", "format=duration")["format"]["duration"])


def ebur128(path: Path) -> tuple[float, float]:
    """Integrated loudness and true peak as ffmpeg's own meter reads them."""
    run = subprocess.run(
        [ffmpeg_tool("ffmpeg"), "-nostats", "-i", str(path), "-filter_complex", "ebur128=peak=true", "-f", "null", "-"],
        capture_output=True,
        check=True,
    )
    summary = run.stderr.decode().rsplit("Summary:", 1)[1]
    lufs = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary)[1])  # type: ignore[index]
    peak = float(re.search(r"True peak:\s+Peak:\s+(-?[\d.]+) dBFS", summary)[1])  # type: ignore[index]
    return lufs, peak


def locate(mix: np.ndarray, take: np.ndarray) -> int:
    """The sample where ``take`` starts in ``mix`` (peak of the cross-correlation)."""
    return int(np.argmax(signal.correlate(mix, take, mode="valid", method="fft")))


def subtitle_cues(text: str) -> list[tuple[float, float, str]]:
    stamp = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d)"
    cues = []
    for block in re.split(r"\n\n+", text.strip()):
        match = re.search(stamp + " --> " + stamp, block)
        if match:
            n = [int(g) for g in match.groups()]
            start = n[0] * 3600 + n[1] * 60 + n[2] + n[3] / 1000
            end = n[4] * 3600 + n[5] * 60 + n[6] + n[7] / 1000
            cues.append((start, end, block[match.end() :].strip()))
    return cues


# ---- a narration project of chirps --------------------------------------------------------

BAND = {k: (400 + 500 * k, 700 + 500 * k) for k in range(6)}
LENGTHS = [0.5, 0.7, 0.4, 0.6, 0.5, 0.45]
TITLES = ["Opening", "Part 2; Middle = End", "Coda"]


@pytest.fixture(scope="module")
def narration(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    store = ProjectStore(tmp_path_factory.mktemp("narration") / "projects")
    texts = ["First words.", "Second [pause 300ms] words.", "End of one.", "Chapter two & more.", "Last.", "Coda."]
    ends = [False, True, True, True, False, True]
    chapter_of = [0, 0, 0, 1, 1, 2]
    segments = [Segment(text=t, paragraph_end=e) for t, e in zip(texts, ends, strict=True)]
    chapters = [Chapter(title, [s for s, c in zip(segments, chapter_of, strict=True) if c == k]) for k, title in
                enumerate(TITLES)]  # fmt: skip
    project = Project("Book One", "Ann", settings=Settings(paragraph_gap_s=0.4, chapter_gap_s=1.0), chapters=chapters)
    folder = store.folder(project.name)
    takes = [chirp(LENGTHS[k], *BAND[k]) for k in range(6)]
    for segment, take in zip(segments, takes, strict=True):
        add_take(folder, segment, take)
    store.save(project)
    # the layout by the rules: back to back, a paragraph gap after a paragraph, a chapter gap between chapters
    lengths = [len(t) for t in takes]
    pg, cg = int(0.4 * RATE), int(1.0 * RATE)
    starts = [0]
    starts.append(starts[0] + lengths[0])
    starts.append(starts[1] + lengths[1] + pg)
    starts.append(starts[2] + lengths[2] + cg)
    starts.append(starts[3] + lengths[3] + pg)
    starts.append(starts[4] + lengths[4] + cg)
    events: list[tuple[float, str]] = []
    result = export_project(store, project.name, ExportRequest(), progress=lambda f, m: events.append((f, m)))
    return {"store": store, "project": project, "takes": takes, "starts": starts, "result": result, "events": events}


def test_timeline_lays_out_takes_gaps_and_chapters(narration: dict[str, Any]) -> None:
    project, store = narration["project"], narration["store"]
    timeline = build_timeline(project, store.folder(project.name))
    assert [item.start for item in timeline.items] == narration["starts"]
    assert timeline.frames == narration["starts"][-1] + len(narration["takes"][-1])
    assert [m.title for m in timeline.chapters] == TITLES
    starts = [narration["starts"][0], narration["starts"][3], narration["starts"][5]]
    assert [m.start_s for m in timeline.chapters] == [s / RATE for s in starts]
    assert [m.end_s for m in timeline.chapters] == [starts[1] / RATE, starts[2] / RATE, timeline.duration_s]
    assert not timeline.timed and timeline.overlaps == []


def test_every_format_is_exported_and_zipped(narration: dict[str, Any]) -> None:
    result, store = narration["result"], narration["store"]
    assert set(result.files) == set(FORMATS)
    assert all(path.is_file() and path.parent == result.folder for path in result.files.values())
    assert result.folder.parent == store.folder("Book One") / "exports"
    assert result.zip == result.folder.with_suffix(".zip")
    with zipfile.ZipFile(result.zip) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == sorted(f"{result.folder.name}/{p.name}" for p in result.files.values())
    leftovers = [p.name for p in result.folder.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not (result.folder / ".work").exists()
    fractions = [f for f, _ in narration["events"]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    plain = result.to_dict()
    assert plain["folder"] == f"book-one/exports/{result.folder.name}"
    assert plain["files"]["m4b"] == f"book-one/exports/{result.folder.name}/book-one.m4b"
    assert plain["zip"] == f"book-one/exports/{result.folder.name}.zip"
    assert json.loads(json.dumps(plain)) == plain


def test_audio_durations_read_back_match_the_timeline(narration: dict[str, Any]) -> None:
    result = narration["result"]
    expected = (narration["starts"][-1] + len(narration["takes"][-1])) / RATE
    assert result.duration_s == pytest.approx(expected, abs=1e-9)
    assert sf.info(str(result.files["wav"])).frames == narration["starts"][-1] + len(narration["takes"][-1])
    assert probe_duration(result.files["wav"]) == pytest.approx(expected, abs=0.001)
    assert len(decode(result.files["mp3"]).samples) == sf.info(str(result.files["wav"])).frames  # gapless: exact
    # the MP3 header counts whole frames of 576 samples, the encoder's delay and padding included
    assert expected <= probe_duration(result.files["mp3"]) <= expected + 0.1
    assert probe_duration(result.files["m4b"]) == pytest.approx(expected, abs=0.01)


def test_m4b_and_mp3_carry_the_chapter_marks_and_title(narration: dict[str, Any]) -> None:
    result = narration["result"]
    for kind in ("m4b", "mp3"):
        probed = ffprobe(result.files[kind], "-show_chapters", "-show_entries", "format_tags=title")
        chapters = probed["chapters"]
        assert [c["tags"]["title"] for c in chapters] == TITLES
        starts = [float(c["start_time"]) for c in chapters]
        assert starts == pytest.approx([m.start_s for m in result.chapters], abs=0.002)
        assert float(chapters[-1]["end_time"]) == pytest.approx(result.duration_s, abs=0.002)
        assert probed["format"]["tags"]["title"] == "Book One"


def test_subtitles_match_the_audio(narration: dict[str, Any]) -> None:
    result, takes = narration["result"], narration["takes"]
    mix, rate = sf.read(str(result.files["wav"]), dtype="float32")
    assert rate == RATE
    found = [locate(mix, take) / RATE for take in takes]
    assert found == pytest.approx([s / RATE for s in narration["starts"]], abs=0.001)
    srt = subtitle_cues(result.files["srt"].read_text(encoding="utf-8"))
    vtt_text = result.files["vtt"].read_text(encoding="utf-8")
    assert vtt_text.startswith("WEBVTT\n\n")
    vtt = subtitle_cues(vtt_text)
    for cues in (srt, vtt):
        assert [c[0] for c in cues] == pytest.approx(found, abs=0.05)
        assert [c[1] for c in cues] == pytest.approx([f + len(t) / RATE for f, t in zip(found, takes, strict=True)],
                                                      abs=0.05)  # fmt: skip
    assert srt[1][2] == "Second words." and srt[3][2] == "Chapter two & more."
    assert vtt[3][2] == "Chapter two &amp; more."


def test_segment_list_holds_places_takes_and_checks(narration: dict[str, Any]) -> None:
    result, project = narration["result"], narration["project"]
    payload = json.loads(result.files["json"].read_text(encoding="utf-8"))
    rows = payload["segments"]
    assert [r["id"] for r in rows] == [s.id for s in project.segments()]
    assert [r["chapter"] for r in rows] == [0, 0, 0, 1, 1, 2]
    assert [r["start"] for r in rows] == [round(s / RATE, 3) for s in narration["starts"]]
    first = rows[0]
    assert first["voice"] == "Ann" and first["text"] == "First words." and first["take"].startswith("takes/")
    assert first["passed"] is True and first["wer"] == 0.0 and first["reasons"] == []
    assert payload["loudness"]["target"] == "podcast" and payload["duration_s"] == round(result.duration_s, 3)


def test_chosen_chapters_export_only_those(narration: dict[str, Any]) -> None:
    store, project, takes = narration["store"], narration["project"], narration["takes"]
    result = export_project(store, project.name, ExportRequest(formats=("wav", "m4b", "json"), chapters=(2, 1)))
    rows = json.loads(result.files["json"].read_text(encoding="utf-8"))["segments"]
    assert [r["chapter"] for r in rows] == [1, 1, 2]
    assert [m.title for m in result.chapters] == TITLES[1:]
    chapters = ffprobe(result.files["m4b"], "-show_chapters")["chapters"]
    assert [c["tags"]["title"] for c in chapters] == TITLES[1:]
    expected = len(takes[3]) + int(0.4 * RATE) + len(takes[4]) + int(1.0 * RATE) + len(takes[5])
    assert sf.info(str(result.files["wav"])).frames == expected
    assert set(result.files) == {"wav", "m4b", "json"}
    assert result.folder != narration["result"].folder


# ---- timed projects and ducking -----------------------------------------------------------

CUES = [(0.5, 1.3), (1.7, 2.3), (2.4, 3.0), (4.2, 4.8)]
CUE_LENGTHS = [0.6, 0.7, 0.4, 0.4]  # +TRAIL_S each: the second runs 0.2 s into the third
BACKGROUND_S = 6.5


def timed_project(store: ProjectStore, *, duck_db: float = 12.0) -> tuple[Project, list[np.ndarray]]:
    segments = [Segment(text=f"Cue {k}.", start=s, end=e) for k, (s, e) in enumerate(CUES)]
    project = Project(
        "Dub", "Ann", settings=Settings(background="music.wav", duck_db=duck_db), chapters=[Chapter("Film", segments)]
    )
    folder = store.folder(project.name)
    takes = [chirp(length, 1500 + 400 * k, 1800 + 400 * k) for k, length in enumerate(CUE_LENGTHS)]
    for segment, take in zip(segments, takes, strict=True):
        add_take(folder, segment, take)
    t = np.arange(int(BACKGROUND_S * 44100)) / 44100
    sf.write(str(folder / "music.wav"), np.stack([0.3 * np.sin(2 * np.pi * 200 * t)] * 2, axis=1), 44100)
    store.save(project)
    return project, takes


def test_timed_project_places_each_cue_at_its_start(tmp_path: Path) -> None:
    store = ProjectStore(tmp_path / "projects")
    project, takes = timed_project(store)
    result = export_project(store, project.name, ExportRequest(formats=("wav", "srt", "json"), loudness="none"))
    mix, _ = sf.read(str(result.files["wav"]), dtype="float32")
    assert len(mix) == int(BACKGROUND_S * RATE) and result.duration_s == pytest.approx(BACKGROUND_S)
    speech = signal.sosfiltfilt(signal.butter(8, 1000, "highpass", fs=RATE, output="sos"), mix)
    for (start, _), take in zip(CUES, takes, strict=True):
        assert locate(speech, take) / RATE == pytest.approx(start, abs=0.002)
    srt = subtitle_cues(result.files["srt"].read_text(encoding="utf-8"))
    assert [c[0] for c in srt] == pytest.approx([s for s, _ in CUES], abs=0.001)
    assert [(o.segment_id, o.next_id) for o in result.overlaps] == [
        (project.segments()[1].id, project.segments()[2].id)
    ]
    assert result.overlaps[0].seconds == pytest.approx(1.7 + 0.7 + TRAIL_S - 2.4, abs=1e-6)
    assert result.to_dict()["overlaps"][0]["seconds"] == pytest.approx(0.2, abs=1e-6)
    assert [m.title for m in result.chapters] == ["Film"] and result.chapters[0].end_s == pytest.approx(BACKGROUND_S)


def background_level(mix: np.ndarray, takes: list[np.ndarray]) -> np.ndarray:
    """The background's amplitude envelope in the mix: the takes removed, the 200 Hz band kept."""
    residual = mix.astype(np.float64).copy()
    for (start, _), take in zip(CUES, takes, strict=True):
        begin = round(start * RATE)
        residual[begin : begin + len(take)] -= take
    band = signal.sosfiltfilt(signal.butter(4, [150, 250], "bandpass", fs=RATE, output="sos"), residual)
    return np.abs(signal.hilbert(band))


def test_background_is_ducked_under_speech_only(tmp_path: Path) -> None:
    store = ProjectStore(tmp_path / "projects")
    project, takes = timed_project(store, duck_db=12.0)
    result = export_project(store, project.name, ExportRequest(formats=("wav",), loudness="none"))
    mix, _ = sf.read(str(result.files["wav"]), dtype="float32")
    level = 20 * np.log10(background_level(mix, takes) / 0.3)

    def at(seconds: float) -> float:
        return float(np.median(level[int((seconds - 0.02) * RATE) : int((seconds + 0.02) * RATE)]))

    assert at(0.9) == pytest.approx(-12.0, abs=0.5)  # inside the first cue
    assert at(2.0) == pytest.approx(-12.0, abs=0.5)  # inside the second
    assert at(2.7) == pytest.approx(-12.0, abs=0.5)  # inside the third
    assert at(3.75) == pytest.approx(0.0, abs=0.3)  # between cues, after the release and before the attack
    assert at(5.9) == pytest.approx(0.0, abs=0.3)  # after the speech
    assert at(0.5 - 0.075) == pytest.approx(-6.0, abs=1.0)  # halfway down the attack ramp before a cue
    ramp = level[int((4.2 - 0.15) * RATE) : int(4.2 * RATE)]
    assert np.all(np.diff(ramp[:: RATE // 100]) < 0.5)  # it glides down, at most 0.5 dB per 10 ms


def test_zero_ducking_keeps_the_background_level(tmp_path: Path) -> None:
    store = ProjectStore(tmp_path / "projects")
    project, takes = timed_project(store, duck_db=0.0)
    result = export_project(store, project.name, ExportRequest(formats=("wav",), loudness="none"))
    mix, _ = sf.read(str(result.files["wav"]), dtype="float32")
    level = 20 * np.log10(background_level(mix, takes) / 0.3)
    assert float(np.median(level[int(0.8 * RATE) : int(1.0 * RATE)])) == pytest.approx(0.0, abs=0.3)


# ---- loudness -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("speech")
    lines = [
        "The lighthouse keeper climbed the stairs every evening.",
        "He counted the ships that passed, and wrote their names down.",
        "In winter the sea was loud, and nobody came.",
    ]
    return [speak(line, folder / f"line{k}.wav") for k, line in enumerate(lines)]


def speech_project(store: ProjectStore, spoken: list[Path], gain: float) -> str:
    segments = [Segment(text=f"Line {k}.", paragraph_end=True) for k in range(len(spoken))]
    project = Project("Talk", "Ann", chapters=[Chapter("One", segments)])
    folder = store.folder(project.name)
    for segment, path in zip(segments, spoken, strict=True):
        audio, rate = sf.read(str(path), dtype="float32")
        add_take(folder, segment, audio * gain, rate)  # espeak speaks at 22.05 kHz: the mixer resamples
    store.save(project)
    return project.name


@pytest.mark.parametrize("gain", [0.05, 1.0])
def test_podcast_target_reaches_minus_16_lufs_under_minus_1_dbtp(
    tmp_path: Path, spoken: list[Path], gain: float
) -> None:
    store = ProjectStore(tmp_path / "projects")
    name = speech_project(store, spoken, gain)
    fractions: list[float] = []
    request = ExportRequest(formats=("wav", "mp3", "m4b"), loudness="podcast")
    result = export_project(store, name, request, progress=lambda f, m: fractions.append(f))
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # also when a loudness pass is redone
    for kind in ("wav", "mp3", "m4b"):
        lufs, peak = ebur128(result.files[kind])
        assert lufs == pytest.approx(-16.0, abs=1.0), kind
        assert peak <= -1.0, kind
    report = result.loudness
    assert report["after"]["lufs"] == pytest.approx(-16.0, abs=0.5) and report["after"]["true_peak_db"] <= -1.0
    untouched = export_project(store, name, ExportRequest(formats=("wav",), loudness="none"))
    lufs, peak = ebur128(untouched.files["wav"])
    assert report["before"]["lufs"] == pytest.approx(lufs, abs=0.2)  # what it measured first is the mix as it is
    assert report["before"]["true_peak_db"] == pytest.approx(peak, abs=0.3)


def test_acx_target_holds_rms_and_peak_limits(tmp_path: Path, spoken: list[Path]) -> None:
    store = ProjectStore(tmp_path / "projects")
    name = speech_project(store, spoken, 0.1)
    result = export_project(store, name, ExportRequest(formats=("wav", "mp3", "m4b"), loudness="acx"))
    for kind in ("wav", "mp3", "m4b"):
        audio = decode(result.files[kind]).mono().astype(np.float64)
        rms = 20 * np.log10(np.sqrt(np.mean(audio**2)))
        peak = 20 * np.log10(np.max(np.abs(audio)))
        assert -23.0 <= rms <= -18.0, kind
        assert peak <= -3.0, kind
    probed = ffprobe(result.files["mp3"], "-show_streams")["streams"][0]
    assert probed["sample_rate"] == "44100" and probed["bit_rate"] == "192000"
    assert result.loudness["after"]["rms_db"] == pytest.approx(-20.0, abs=0.5)
    assert result.loudness["before"]["rms_db"] < -35.0


def test_meter_agrees_with_the_whole_file_measure() -> None:
    rng = np.random.default_rng(3)
    audio = (rng.standard_normal(int(3.3 * RATE)) * np.repeat(rng.uniform(0.01, 0.3, 33), RATE // 10)).astype(
        np.float32
    )
    meter = Meter(RATE)
    for start in range(0, len(audio), 7777):
        meter.add(audio[start : start + 7777])
    measured = meter.result()
    assert measured.lufs == pytest.approx(integrated_loudness(audio, RATE), abs=0.01)
    assert measured.peak_db == pytest.approx(20 * np.log10(np.max(np.abs(audio))), abs=1e-4)
    assert measured.true_peak_db >= measured.peak_db
    between = 0.9 * np.sin(np.pi / 4 * np.arange(RATE) + np.pi / 8)  # 3 kHz: every peak falls between samples
    assert 20 * np.log10(np.abs(between).max()) < 20 * np.log10(0.9) - 0.6
    assert 20 * np.log10(true_peaks(between)[32:-32].max()) == pytest.approx(20 * np.log10(0.9), abs=0.1)


def test_limiter_holds_the_true_peak_and_keeps_length() -> None:
    t = np.arange(2 * RATE) / RATE
    audio = 0.1 * np.sin(2 * np.pi * 440 * t)
    bursts = [int(s * RATE) for s in (0.3, 0.9, 1.5)]
    for start in bursts:
        audio[start : start + RATE // 50] = 0.9 * np.sin(2 * np.pi * 3000 * t[: RATE // 50])
    limiter = Limiter(RATE, 6.0, -3.0)
    out = np.concatenate([limiter.process(audio[s : s + 5000]) for s in range(0, len(audio), 5000)] + [limiter.flush()])
    assert len(out) == len(audio)
    padded = np.concatenate([np.zeros(32), out, np.zeros(32)])
    assert 20 * np.log10(true_peaks(padded).max()) <= -3.0 + 0.05
    far = np.ones(len(audio), dtype=bool)
    for start in bursts:
        far[start - int(0.01 * RATE) : start + int(0.08 * RATE)] = False
    assert np.allclose(out[far], 2 * audio[far] * 10 ** (6 / 20) / 2, atol=1e-4)  # 6 dB, in place, elsewhere
    near = out[bursts[0] - 60 : bursts[0]]
    assert np.abs(near).max() < 0.2 * 10 ** (6 / 20) / 2 * 1.01  # it may only lower the gain ahead of a peak


# ---- refusals and stops -------------------------------------------------------------------


def test_missing_takes_are_refused_by_name(tmp_path: Path) -> None:
    store = ProjectStore(tmp_path / "projects")
    segments = [Segment(text=f"Sentence number {k}.") for k in range(6)]
    project = Project("Gaps", "Ann", chapters=[Chapter("One", segments)])
    add_take(store.folder(project.name), segments[0], chirp(0.3, 500, 900))
    store.save(project)
    with pytest.raises(InvalidInput) as refused:
        export_project(store, project.name, ExportRequest(formats=("wav",)))
    message = str(refused.value)
    assert message.startswith("5 segments have no chosen take")
    assert segments[1].id in message and "Sentence number 1." in message and segments[3].id in message
    assert segments[4].id not in message and "and 2 more" in message and "Render them first" in message
    assert not (store.folder(project.name) / "exports").exists()


def test_a_take_file_gone_from_disk_is_named(tmp_path: Path) -> None:
    store = ProjectStore(tmp_path / "projects")
    segment = Segment(text="Only one.")
    project = Project("Lost", "Ann", chapters=[Chapter("One", [segment])])
    add_take(store.folder(project.name), segment, chirp(0.3, 500, 900))
    store.save(project)
    (store.folder(project.name) / segment.takes[0].file).unlink()
    with pytest.raises(InvalidInput, match=f"Segment {segment.id} .*does not exist.*Render it again"):
        export_project(store, project.name, ExportRequest(formats=("wav",)))


def test_request_is_validated() -> None:
    with pytest.raises(InvalidInput, match="no export format 'flac'"):
        ExportRequest(formats=("wav", "flac"))
    with pytest.raises(InvalidInput, match="at least one export format"):
        ExportRequest(formats=())
    with pytest.raises(InvalidInput, match="list"):
        ExportRequest(formats="wav")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="chapter numbers"):
        ExportRequest(chapters=("1",))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="at least one chapter"):
        ExportRequest(chapters=())
    with pytest.raises(InvalidInput, match="no loudness target 'loud'"):
        ExportRequest(loudness="loud")
    assert ExportRequest(formats=["MP3", "mp3", "srt"], chapters=[1]).formats == ("mp3", "srt")  # type: ignore[arg-type]


def test_unknown_chapter_is_refused(narration: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="no chapter 7"):
        export_project(narration["store"], "Book One", ExportRequest(chapters=(0, 7)))


@pytest.mark.parametrize("phase", ["Mixing", "Encoding the M4B", "Zipping"])
def test_stop_leaves_no_export(narration: dict[str, Any], phase: str) -> None:
    store = narration["store"]
    exports = store.folder("Book One") / "exports"
    before = sorted(p.name for p in exports.iterdir())
    seen: list[str] = []
    with pytest.raises(Cancelled):
        export_project(
            store, "Book One", ExportRequest(), progress=lambda f, m: seen.append(m), should_stop=lambda: phase in seen
        )
    assert phase in seen
    assert sorted(p.name for p in exports.iterdir()) == before
