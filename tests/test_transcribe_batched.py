"""Batched transcription (faster-whisper's BatchedInferencePipeline) against the sequential loop, on espeak-ng speech."""

from __future__ import annotations

import difflib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from core.device import DeviceScheduler
from tests.test_dataset import SENTENCES, make_talk, options, whisper_tiny, word_error_rate
from train import sources as source_io
from train.dataset import DatasetBuilder
from train.transcribe import WHISPER_RATE, WINDOW_S, Transcript, Whisper, speech_regions, speech_windows

Talk = tuple[Path, list[tuple[float, float]]]


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Talk:
    return make_talk(tmp_path_factory.mktemp("media"), SENTENCES)


@pytest.fixture(scope="module")
def whisper() -> Whisper:
    return Whisper(DeviceScheduler("cpu"))


LONG = SENTENCES * 3  # about a minute: several windows, so batching has windows to batch


@pytest.fixture(scope="module")
def audio16k(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    video, _ = make_talk(tmp_path_factory.mktemp("long"), LONG, name="long")
    audio, rate = sf.read(video.with_suffix(".wav"), dtype="float32")
    return soxr.resample(audio, rate, WHISPER_RATE).astype(np.float32)


def normalised(transcript: Transcript) -> list[str]:
    return [w.text.strip(" .,!?").lower() for w in transcript.words]


def test_speech_windows_are_cut_in_pauses_and_fit_whisper() -> None:
    regions = [(float(s), float(s) + 3.0) for s in range(0, 80, 4)] + [(85.0, 150.0)]
    windows = speech_windows(regions, duration=151.0)
    assert all(0 < end - start <= WINDOW_S + 1e-9 for start, end in windows)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(windows))  # no overlap
    for start, end in windows[:-3]:  # the short regions: every window edge lies in a pause, never in speech
        assert not any(s < start < e or s < end < e for s, e in regions[:-1])
    covered = [(s, e) for s, e in windows if s < 150 and e > 85]
    assert len(covered) == 3 and covered[0][0] <= 85 and covered[-1][1] >= 150  # 65 s of speech in three parts
    assert speech_windows([], duration=10.0) == []


def test_batched_words_match_the_sequential_ones(whisper: Whisper, audio16k: np.ndarray) -> None:
    sequential = whisper.transcribe(audio16k, model=whisper_tiny(), language="en")
    batched = whisper.transcribe(audio16k, model=whisper_tiny(), language="en", batch_size=4)
    assert len(speech_windows(speech_regions(audio16k), len(audio16k) / WHISPER_RATE)) >= 2
    assert batched.language == "en" and len(batched.words) > 120
    wer = word_error_rate(" ".join(normalised(sequential)), " ".join(normalised(batched)))
    print(f"batched vs sequential WER {wer:.3f}")
    assert wer <= 0.15
    truth = word_error_rate(" ".join(LONG), " ".join(normalised(batched)))
    assert truth <= 0.25
    matcher = difflib.SequenceMatcher(a=normalised(sequential), b=normalised(batched), autojunk=False)
    shifts = [
        max(abs(sequential.words[i + k].start - batched.words[j + k].start),
            abs(sequential.words[i + k].end - batched.words[j + k].end))
        for i, j, size in matcher.get_matching_blocks() for k in range(size)
    ]  # fmt: skip
    print(f"word time shifts: max {max(shifts):.2f}s, mean {np.mean(shifts):.3f}s over {len(shifts)} words")
    assert len(shifts) >= 0.85 * len(batched.words)
    # the few larger shifts are first words after a pause, which either loop may stretch into the pause
    assert float(np.percentile(shifts, 95)) <= 0.3 and float(np.mean(shifts)) <= 0.1
    assert all(w.end >= w.start and 0 <= w.probability <= 1 for w in batched.words)
    assert all(a.start <= b.start for a, b in itertools.pairwise(batched.words))


def test_batching_works_out_its_own_speech_regions(whisper: Whisper, audio16k: np.ndarray) -> None:
    given = whisper.transcribe(
        audio16k, model=whisper_tiny(), language="en", batch_size=2, regions=speech_regions(audio16k)
    )
    found = whisper.transcribe(audio16k, model=whisper_tiny(), language="en", batch_size=2)
    assert given == found
    silent = whisper.transcribe(np.zeros(3 * WHISPER_RATE, dtype=np.float32), model=whisper_tiny(), batch_size=2)
    assert silent.words == []


def test_cpu_workers_share_the_windows_and_hear_what_one_worker_hears(audio16k: np.ndarray) -> None:
    """Two CPU workers take the windows (and the clips of ``texts``) between them; the words are one worker's."""
    one, two = Whisper(DeviceScheduler("cpu"), cpu_workers=1), Whisper(DeviceScheduler("cpu"), cpu_workers=2)
    assert len(speech_windows(speech_regions(audio16k), len(audio16k) / WHISPER_RATE)) >= 3
    alone = one.transcribe(audio16k, model=whisper_tiny(), language=None, batch_size=1)
    shared = two.transcribe(audio16k, model=whisper_tiny(), language=None, batch_size=1)  # detected, then shared
    assert two._models[whisper_tiny()].model.num_workers == 2
    assert shared.language == alone.language == "en"
    assert normalised(shared) == normalised(alone)
    pairs = zip(alone.words, shared.words, strict=True)
    assert all(abs(a.start - b.start) <= 0.02 and abs(a.end - b.end) <= 0.02 for a, b in pairs)
    assert all(a.start <= b.start for a, b in itertools.pairwise(shared.words))

    clips = [audio16k[int(s * WHISPER_RATE) : int(e * WHISPER_RATE)] for s, e in speech_regions(audio16k)[:4]]
    assert two.texts(clips, model=whisper_tiny(), language="en") == [
        one.text(clip, model=whisper_tiny(), language="en") for clip in clips
    ]
    with pytest.raises(ValueError, match="cpu_workers"):
        Whisper(DeviceScheduler("cpu"), cpu_workers=0)


def test_batched_build_cuts_whole_sentences_and_reuses_a_sequential_cache(
    tmp_path: Path, talk: Talk, whisper: Whisper
) -> None:
    video, spans = talk
    builder = DatasetBuilder(tmp_path / "datasets", whisper=whisper)
    first = builder.build(options("Batched", whisper_batch_size=0), files=[video])
    cached = builder.folder_for("Batched") / "transcripts" / f"{source_io.file_fingerprint(video)}.json"
    assert set(json.loads(cached.read_text())) == {"language", "words", "model", "requested_language", "cleaning"}
    assert first.transcribed_now == [source_io.file_fingerprint(video)]
    again = builder.build(options("Batched", whisper_batch_size=4), files=[video])
    assert again.transcribed_now == []  # the sequential transcript from before is a valid cache entry
    cached.unlink()

    # beam search as on a GPU: the CPU's greedy default hears "The early bird" as "Nearly burned" (WER 0.31)
    report = builder.build(options("Batched", whisper_batch_size=4, whisper_beam_size=5), files=[video])
    assert report.transcribed_now == [source_io.file_fingerprint(video)]
    assert report.kept >= len(SENTENCES) - 1
    for clip in report.clips:
        for start, end in spans:
            for cut in (clip.start, clip.start + clip.duration):
                assert not start + 0.02 < cut < end - 0.02, f"cut at {cut:.2f}s inside speech {start:.2f}-{end:.2f}"
    for clip in report.clips:
        if clip.reason is not None:
            continue
        inside = [(s, e) for s, e in spans if clip.start <= s + 0.02 and e - 0.02 <= clip.start + clip.duration]
        assert len(inside) == 1, f"{clip.file} holds {len(inside)} sentences"
        assert min(word_error_rate(sentence, clip.text) for sentence in SENTENCES) <= 0.3, clip.text
        audio, rate = sf.read(report.dataset_dir / clip.file, dtype="float32")
        heard = whisper.text(
            soxr.resample(audio, rate, WHISPER_RATE).astype(np.float32), model=whisper_tiny(), language="en"
        )
        best = min(word_error_rate(sentence, heard) for sentence in SENTENCES)
        print(f"{clip.file}: {clip.text!r} heard again as {heard!r} (WER {best:.2f})")
        # tiny.en hears the tongue twister "She sells sea shells" as "She's held seashell" or "She tells the
        # shell" (0.5-0.6) whatever the cut; a clip cut short loses the sentence's last words and scores worse
        assert best <= 0.65, f"{clip.file} heard as {heard!r}"
