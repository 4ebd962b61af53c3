"""Warm repeated RVC conversion: the studio's resident converter against ``rvc_convert()`` per call.

Usage: python bench/bench_rvc.py [--model PTH [--index INDEX] --support DIR] [--requests N] [--f0-method M]

Without --model it uses the tiny random-weight RVC v2 model, index and support weights
(HuBERT, RMVPE) of the test kit (built on first use). Two ways to convert the same clip
N times with the same parameters, in one run:

- per call: ``tts_with_rvc.rvc_convert(...)``, which builds a converter each time and so
            reloads HuBERT, the voice model, the f0 model and the index on every call
- studio:   ``core.rvc.convert.RVCService.convert_file`` with its resident converter, after one warm-up

Both read the clip from a file and write a WAV. ``HF_HUB_OFFLINE=1`` keeps the package's
hub lookups local (the support files are already in the folder it is given).
"""

from __future__ import annotations

import argparse
import atexit
import os
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXT = "The studio keeps the voice converter in memory between requests."


def interleaved(paths: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    """Time each path ``n`` times, taking turns, so load from other processes hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(n):
        for name, fn in paths.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return times


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an RVC .pth (default: the tiny test model)")
    parser.add_argument("--index", type=Path, help="its .index (optional)")
    parser.add_argument("--support", type=Path, help="folder with hubert_base.pt and rmvpe.pt")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--f0-method", default="rmvpe")
    args = parser.parse_args()

    from core.logs import configure_logging

    configure_logging(level=40)  # the package logs every load at INFO: keep the table readable
    import huggingface_hub

    huggingface_hub.logging.set_verbosity_error()  # offline mode warns on every lookup
    import soundfile as sf
    import torch

    from core.outputs import OutputStore
    from core.rvc.convert import RVCRequest, RVCService
    from core.rvc.models import RVCLibrary
    from core.rvc.support import SupportFiles
    from tests.conftest import KIT_CACHE, speak
    from tests.make_tiny_models import build

    if args.model is None:
        kit = build(KIT_CACHE) / "rvc"
        args.model, args.index, args.support = kit / "tiny_v2_40k.pth", kit / "tiny_v2.index", kit / "support"
    if args.support is None:
        parser.error("--support is required with --model")
    work = Path(tempfile.mkdtemp(prefix="bench-rvc-"))
    atexit.register(shutil.rmtree, work, True)
    clip = speak(TEXT, work / "clip.wav")
    duration = sf.info(clip).duration
    n = args.requests
    params = {
        "f0_method": args.f0_method,
        "index_rate": 0.75,
        "filter_radius": 3,
        "rms_mix_rate": 0.25,
        "protect": 0.33,
    }

    from tts_with_rvc import rvc_convert

    def per_call() -> None:
        rvc_convert(
            model_path=str(args.model), input_path=str(clip), output_dir_path=str(work / "per-call"),
            f0method=params["f0_method"], file_index=str(args.index or ""), index_rate=params["index_rate"],
            filter_radius=params["filter_radius"], rms_mix_rate=params["rms_mix_rate"], protect=params["protect"],
            device="cpu", models_dir=str(args.support),
        )  # fmt: skip

    service = RVCService(
        RVCLibrary(work / "library"),
        SupportFiles(args.support, hub_url="http://127.0.0.1:9"),
        OutputStore(work / "out"),
    )
    name = service.library.add(args.model, args.index, name="bench").name
    request = RVCRequest(name, overrides=params)

    def studio() -> None:
        service.convert_file(clip, request)

    for _ in range(3):  # warm-up: loads HuBERT, the f0 model, the voice model and the index once;
        studio()  # PyTorch's first passes through a new network are slower, so a few runs
    per_call()
    results = interleaved({"per call": per_call, "studio": studio}, n)

    print(f"model: {args.model.name}  index: {args.index.name if args.index else 'none'}  f0: {args.f0_method}")
    print(f"clip: {duration:.2f} s  requests: {n}  device: cpu x{torch.get_num_threads()} threads")
    print(f"{'path':<10}{'mean s':>10}{'median s':>10}{'x real time':>13}")
    for path, times in results.items():
        mean = statistics.mean(times)
        print(f"{path:<10}{mean:>10.3f}{statistics.median(times):>10.3f}{duration / mean:>13.2f}")
    ratio = statistics.mean(results["per call"]) / statistics.mean(results["studio"])
    print(f"speed-up of the resident studio converter over rvc_convert() per call: {ratio:.1f}x")
    print(f"studio loads: {service.converter.loads['models']} model, {service.converter.loads['indexes']} index")
    return 0


if __name__ == "__main__":
    sys.exit(main())
