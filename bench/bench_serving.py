"""Load on the OpenAI-compatible speech API: throughput and latency by concurrency, and time to first audio.

Usage: python bench/bench_serving.py [--model-dir DIR] [--requests N] [--window-ms MS] [--split-rows N]

Starts the real app (``webui.py``) on loopback with the tiny random-weight XTTS of the
test kit (or --model-dir) twice at once, batched (``--batch-window-ms`` MS, default 30) and
serialised (``--batch-window-ms 0``), and measures them in turn (so a change in the machine's
load hits both alike):

- for 1, 4, 8 and 16 concurrent clients, sends one-sentence requests (at least one per
  client) and prints requests per second, p50 and p95 latency, and throughput relative to
  one client;
- for a five-sentence input, prints the time to the first audio byte (the first sentence,
  a lone request) against the time to the whole response (streamed pcm), as a ratio.

Then it prints batched against serialised throughput per client count and the first-chunk
latency both ways, as ratios, and (in this process, without HTTP) where the time of N rows
goes: the GPT's decoding and the HiFi-GAN vocoder, batched against one row at a time.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
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

CLIENTS = (1, 4, 8, 16)
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


def load_level(url: str, clients: int, requests: int) -> tuple[float, float, float]:
    """Requests per second, p50 and p95 latency for ``clients`` concurrent clients (at least one request each)."""
    texts = [f"Request number {i} is a single sentence." for i in range(max(requests, clients))]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        latencies = list(pool.map(lambda t: one_request(url, t), texts))
    rate = len(latencies) / (time.perf_counter() - started)
    return rate, statistics.median(latencies), percentile(latencies, 0.95)


def split_times(model_dir: Path, rows: int) -> None:
    """Where the time of ``rows`` one-sentence rows goes, batched against one row at a time (in this process)."""
    import torch

    from core.xtts.batch_decode import BatchTimes, Row, synthesize_rows, tokenize
    from core.xtts.latents import Conditioning
    from core.xtts.loading import load_xtts
    from core.xtts.profiles import PROFILES

    model, _ = load_xtts(model_dir, "cuda" if torch.cuda.is_available() else "cpu")
    speakers = list(model.speaker_manager.speakers.values())

    def make(i: int) -> Row:
        entry = speakers[i % len(speakers)]
        conditioning = Conditioning(entry["gpt_cond_latent"], entry["speaker_embedding"])
        text = tokenize(model, f"Request number {i} is a single sentence.", "en")
        return Row(text, conditioning, PROFILES["balanced"], seed=i)

    synthesize_rows(model, [make(0)])  # warm up
    alone, together = BatchTimes(), BatchTimes()
    for i in range(rows):
        synthesize_rows(model, [make(i)], alone)
    synthesize_rows(model, [make(i) for i in range(rows)], together)
    print(f"{rows} rows in this process ({alone.steps // rows} decoding steps each):")
    print(f"{'':>12}{'GPT s':>9}{'vocoder s':>11}")
    print(f"{'one by one':>12}{alone.gpt_s:>9.2f}{alone.vocoder_s:>11.2f}")
    print(f"{'batched':>12}{together.gpt_s:>9.2f}{together.vocoder_s:>11.2f}")
    print(
        f"batched vs one by one: GPT {alone.gpt_s / together.gpt_s:.2f}x faster, "
        f"vocoder {alone.vocoder_s / together.vocoder_s:.2f}x faster"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="an XTTS checkpoint folder (default: the tiny test model)")
    parser.add_argument(
        "--requests", type=int, default=16, help="requests per concurrency level (at least one per client)"
    )
    parser.add_argument("--window-ms", default="30", help="--batch-window-ms of the batched app (default 30)")
    parser.add_argument("--split-rows", type=int, default=8, help="rows for the GPT / vocoder split (0: skip it)")
    args = parser.parse_args()

    from tests.conftest import KIT_CACHE, running_app
    from tests.make_tiny_models import build

    model_dir = args.model_dir or build(KIT_CACHE) / "xtts"
    data = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    atexit.register(shutil.rmtree, data, True)
    print(f"model: {model_dir}  requests per level: {args.requests}")
    modes = {"batched": args.window_ms, "serialised": "0"}
    with contextlib.ExitStack() as stack:  # both apps at once, measured in turn, so load drift hits both alike
        urls = {}
        for mode, window in modes.items():
            app_args = ("--model-dir", str(model_dir), "--max-queue", "64", "--batch-window-ms", window)
            urls[mode] = stack.enter_context(running_app(data / mode, *app_args))["url"] + "v1/audio/speech"
            one_request(urls[mode], "Warm up.")
        rates: dict[str, dict[int, float]] = {mode: {} for mode in modes}
        print(f"{'clients':>8}{'mode':>12}{'req/s':>9}{'p50 s':>9}{'p95 s':>9}{'vs 1 client':>13}")
        for clients in CLIENTS:
            for mode in modes:
                rate, p50, p95 = load_level(urls[mode], clients, args.requests)
                rates[mode][clients] = rate
                print(f"{clients:>8}{mode:>12}{rate:>9.2f}{p50:>9.2f}{p95:>9.2f}{rate / rates[mode][1]:>12.2f}x")
        firsts: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
        for _ in range(3):
            for mode in modes:
                firsts[mode].append(first_and_total(urls[mode]))
    first = {mode: statistics.median(r[0] for r in runs) for mode, runs in firsts.items()}
    for mode, runs in firsts.items():
        total = statistics.median(r[1] for r in runs)
        print(
            f"five sentences, {mode}: first audio byte {first[mode]:.2f} s, whole response {total:.2f} s, "
            f"ratio {first[mode] / total:.2f}"
        )
    print(f"{'clients':>8}{'batched req/s':>15}{'serialised req/s':>18}{'ratio':>8}")
    for clients in CLIENTS:
        batched, serial = rates["batched"][clients], rates["serialised"][clients]
        print(f"{clients:>8}{batched:>15.2f}{serial:>18.2f}{batched / serial:>7.2f}x")
    print(
        f"first chunk at 1 client: batched {first['batched']:.2f} s, serialised {first['serialised']:.2f} s, "
        f"ratio {first['batched'] / first['serialised']:.2f}"
    )
    if args.split_rows:
        split_times(model_dir, args.split_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
