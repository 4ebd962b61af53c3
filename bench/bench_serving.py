"""Load on the OpenAI-compatible speech API: throughput and latency by concurrency, and time to first audio.

Usage: python bench/bench_serving.py [--model-dir DIR] [--requests N]

Starts the real app (``webui.py``) on loopback with the tiny random-weight XTTS of the
test kit (or --model-dir), then, in one run:

- for 1, 4 and 16 concurrent clients, sends one-sentence requests and prints requests per
  second, p50 and p95 latency, and throughput relative to one client (the GPU lock
  serialises synthesis, so more clients should queue, not crash or slow the total);
- for a five-sentence input, prints the time to the first audio byte against the time to
  the whole response (streamed pcm), as a ratio.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIVE_SENTENCES = (
    "The studio keeps one model in memory. It splits long text into sentences. "
    "The first sentence is spoken on its own. The rest follows while you listen. "
    "Nothing waits for the end."
)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(round(share * (len(ordered) - 1)), len(ordered) - 1)]


def one_request(url: str, text: str) -> float:
    started = time.perf_counter()
    response = httpx.post(url, json={"voice": "alloy", "input": text, "response_format": "wav"}, timeout=600)
    response.raise_for_status()
    return time.perf_counter() - started


def first_and_total(url: str) -> tuple[float, float]:
    body = {"voice": "alloy", "input": FIVE_SENTENCES, "response_format": "pcm"}
    started = time.perf_counter()
    first = None
    with httpx.stream("POST", url, json=body, timeout=600) as response:
        response.raise_for_status()
        for block in response.iter_bytes():
            if block and first is None:
                first = time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="an XTTS checkpoint folder (default: the tiny test model)")
    parser.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    args = parser.parse_args()

    from tests.conftest import KIT_CACHE, running_app
    from tests.make_tiny_models import build

    model_dir = args.model_dir or build(KIT_CACHE) / "xtts"
    data = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    atexit.register(shutil.rmtree, data, True)
    with running_app(data, "--model-dir", str(model_dir), "--max-queue", "64") as app:
        url = app["url"] + "v1/audio/speech"
        one_request(url, "Warm up.")
        print(f"model: {model_dir}  requests per level: {args.requests}")
        print(f"{'clients':>8}{'req/s':>9}{'p50 s':>9}{'p95 s':>9}{'vs 1 client':>13}")
        baseline = None
        for clients in (1, 4, 16):
            texts = [f"Request number {i} is a single sentence." for i in range(args.requests)]
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=clients) as pool:
                latencies = list(pool.map(lambda t: one_request(url, t), texts))
            rate = len(latencies) / (time.perf_counter() - started)
            baseline = baseline or rate
            p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
            print(f"{clients:>8}{rate:>9.2f}{p50:>9.2f}{p95:>9.2f}{rate / baseline:>12.2f}x")
        runs = [first_and_total(url) for _ in range(3)]
        first = statistics.median(r[0] for r in runs)
        total = statistics.median(r[1] for r in runs)
        print(
            f"five sentences: first audio byte {first:.2f} s, whole response {total:.2f} s, ratio {first / total:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
