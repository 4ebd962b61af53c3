"""Warm repeated synthesis in one cloned voice: the studio's engine against naive Coqui usage.

Usage: python bench/bench_tts.py [--model-dir DIR] [--requests N]

Without --model-dir it uses the tiny random-weight XTTS of the test kit (built on first use).
Three ways to serve N requests of the same text in the same reference voice, in one run:

- naive:    ``TTS.api.TTS(model_path=...).tts_to_file(..., speaker_wav=...)`` per request
            (a model load and a voice encoding every time: what a simple script or demo does)
- resident: one ``TTS`` object kept loaded, still encoding ``speaker_wav`` per request
- studio:   the resident engine with cached conditioning latents (``core.tts.TTSService``)

Every request uses the same seed and sampling settings, so each path samples the same audio tokens
(Coqui's synthesizer appends 10,000 samples of silence after each sentence, hence its longer files).
Random weights make audio quality meaningless here; only the serving overhead is compared.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXT = "The studio keeps one model in memory and reuses each voice."
SEED = 1234


def timed(fn: Callable[[], None], n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="an XTTS checkpoint folder (default: the tiny test model)")
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()

    import soundfile as sf
    import torch
    from TTS.api import TTS

    from core.outputs import OutputStore
    from core.tts import TTSRequest, TTSService
    from core.xtts.engine import VoiceSpec, XTTSEngine
    from tests.conftest import KIT_CACHE, speak
    from tests.make_tiny_models import build

    model_dir = args.model_dir or build(KIT_CACHE) / "xtts"
    work = Path(tempfile.mkdtemp(prefix="bench-tts-"))
    atexit.register(shutil.rmtree, work, True)  # checkpoints and audio are large
    reference = speak("This is the reference voice for the benchmark, spoken clearly.", work / "ref.wav")
    n = args.requests
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    engine = XTTSEngine(device="cpu", latents_dir=work / "latents", model_dir=model_dir)
    engine.ensure_loaded()

    class OneVoice:
        def names(self) -> list[str]:
            return ["ref"]

        def resolve(self, name: str) -> VoiceSpec | None:
            return VoiceSpec(clips=(reference,)) if name == "ref" else None

    service = TTSService(engine, OutputStore(work / "studio"), max_text_chars=1000, voice_sources=[OneVoice()])
    cfg = engine._config  # the same sampling settings the naive path gets from config.json
    overrides = {
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
        "repetition_penalty": cfg.repetition_penalty,
        "length_penalty": cfg.length_penalty,
        "speed": 1.0,
        "chunk_chars": 400,
    }
    request = TTSRequest(text=TEXT, language="en", voice="ref", overrides=overrides, seed=SEED)
    service.synthesize(request)  # warm: first encoding and lazy initialisation

    def studio() -> None:
        service.synthesize(request)

    resident_tts = TTS(model_path=str(model_dir), config_path=str(model_dir / "config.json"))

    def resident() -> None:
        torch.manual_seed(SEED)
        resident_tts.tts_to_file(TEXT, speaker_wav=str(reference), language="en", file_path=str(work / "resident.wav"))

    def naive() -> None:
        tts = TTS(model_path=str(model_dir), config_path=str(model_dir / "config.json"))
        torch.manual_seed(SEED)  # after the load, whose random init would shift the sampling
        tts.tts_to_file(TEXT, speaker_wav=str(reference), language="en", file_path=str(work / "naive.wav"))

    resident()  # warm the resident baseline too
    results = {"naive": timed(naive, n), "resident": timed(resident, n), "studio": timed(studio, n)}
    audio = {
        "naive": sf.info(work / "naive.wav").duration,
        "resident": sf.info(work / "resident.wav").duration,
        "studio": service.store.recent(1)[0].meta["duration_s"],
    }

    print(f"model: {model_dir}  requests: {n}  text: {len(TEXT)} chars  device: cpu x{torch.get_num_threads()} threads")
    print(f"{'path':<10}{'mean s':>10}{'median s':>10}{'audio s':>10}{'x real time':>13}")
    for name, times in results.items():
        mean = statistics.mean(times)
        print(
            f"{name:<10}{mean:>10.3f}{statistics.median(times):>10.3f}{audio[name]:>10.2f}{audio[name] / mean:>13.2f}"
        )
    studio_mean = statistics.mean(results["studio"])
    print(f"speed-up of studio over naive:    {statistics.mean(results['naive']) / studio_mean:.1f}x")
    print(f"speed-up of studio over resident: {statistics.mean(results['resident']) / studio_mean:.2f}x")
    print(f"voice encodings by the studio engine: {engine.encode_count} (for {n + 1} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
