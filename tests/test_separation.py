"""Music-bed detection on the synthetic interview, and vocal separation with the tiny HT-Demucs."""

from __future__ import annotations

import pickle
import shutil
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core.device import DeviceScheduler, Placement
from core.errors import Cancelled, ModelUnavailable
from tests import make_tiny_models
from tests.interview import make_interview, script
from train.separation import MODEL, VocalSeparator, detect_music_bed

VOICES = {"guest": {"voice": "en+m3"}, "host": {"voice": "en+f3", "speed": 165}}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny model's windows are too small to gain from more threads; on a shared CPU, idle ones spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def interview(folder: Path, **levels: float) -> tuple[np.ndarray, int]:
    video, _ = make_interview(folder, script(2), VOICES, **levels)
    audio, rate = sf.read(video.with_suffix(".wav"), dtype="float32")
    return audio, rate


@pytest.fixture(scope="module")
def mixes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, int]]:
    """The same interview over the project's music bed at -22 dB, clean, and over white noise at -45 dB."""
    folder = tmp_path_factory.mktemp("mixes")
    return {
        "music": interview(folder / "music", music_db=-22.0, noise_db=-45.0),
        "clean": interview(folder / "clean", music_db=-np.inf, noise_db=-np.inf),
        "noise": interview(folder / "noise", music_db=-np.inf, noise_db=-45.0),
    }


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the tiny HT-Demucs under the official file name."""
    folder = tmp_path_factory.mktemp("models")
    make_tiny_models.build_htdemucs(folder)
    return folder


@pytest.fixture(scope="module")
def separator(models_dir: Path) -> VocalSeparator:
    return VocalSeparator(models_dir)


def test_detects_the_music_bed_and_not_clean_speech_or_white_noise(mixes: dict) -> None:
    music, clean, noise = (detect_music_bed(*mixes[k]) for k in ("music", "clean", "noise"))
    assert music.detected and music.score > 0.6, music
    assert music.reason.startswith("music bed: ") and "of pauses carry tonal sound at" in music.reason
    assert not clean.detected and clean.score == 0.0, clean
    assert not noise.detected and noise.score < 0.1, noise
    assert noise.reason.startswith("no music bed: ") and "of pauses carry tonal sound" in noise.reason  # looked


def test_vocals_keep_rate_length_and_mono(separator: VocalSeparator, models_dir: Path, mixes: dict) -> None:
    assert separator.ensure() == models_dir / "separation" / "955717e8-8726e21a.th"  # found: no download
    audio, rate = mixes["music"]
    clip = audio[: 4 * rate]
    stereo = np.stack([clip, clip], axis=1)
    vocals = separator.vocals(stereo, rate)
    assert vocals.shape == clip.shape and vocals.dtype == np.float32
    assert np.isfinite(vocals).all() and np.abs(vocals).max() > 0
    at_model_rate = separator.vocals(np.repeat(clip, 2)[: 2 * len(clip)], 2 * rate)  # no resampling on the way
    assert at_model_rate.shape == (2 * len(clip),)


def test_windows_match_demucs_apply_model(separator: VocalSeparator) -> None:
    """At the model's rate, where every window is whole, the cross-fade is Demucs's own (``split=True``)."""
    from demucs.apply import apply_model

    model = separator.model()
    rate, window = model.samplerate, round(float(model.segment) * model.samplerate)
    stereo = np.random.default_rng(3).standard_normal((4 * rate, 2)).astype(np.float32) * 0.1
    ours = separator.vocals(stereo, rate)
    mono = stereo.mean(axis=1, dtype=np.float64)
    mean, std = mono.mean(), mono.std()
    mix = torch.from_numpy(((stereo - mean) / std).T.astype(np.float32))[None]
    with torch.inference_mode():
        stems = apply_model(model, mix, shifts=0, split=True, overlap=0.25)
    theirs = stems[0, model.sources.index("vocals")].mean(dim=0).numpy() * std + mean
    starts = separator.windows(len(stereo), rate)
    whole = next(start for start in starts if start + window > len(stereo))  # Demucs pads a short last window
    np.testing.assert_allclose(ours[:whole], theirs[:whole], rtol=1e-3, atol=1e-5 * np.abs(theirs).max())


def peak_bytes(separator: VocalSeparator, audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """The vocals, and the most memory numpy held while making them."""
    tracemalloc.start()
    try:
        vocals = separator.vocals(audio, rate)
        return vocals, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_long_input_runs_in_windows_with_bounded_memory(separator: VocalSeparator) -> None:
    rate = 16000
    model = separator.model()
    calls: list[tuple[int, ...]] = []
    hook = model.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape)))
    noise = np.random.default_rng(0).standard_normal(12 * rate).astype(np.float32) * 0.1
    try:
        _, short_peak = peak_bytes(separator, noise[: 6 * rate], rate)
        calls.clear()
        vocals, long_peak = peak_bytes(separator, noise, rate)
    finally:
        hook.remove()
    window = round(float(model.segment) * model.samplerate)
    assert vocals.shape == noise.shape
    assert len(calls) == len(separator.windows(len(noise), rate)) == int(np.ceil(12 / (0.75 * 1.95)))
    assert set(calls) == {(1, 2, window)}  # every model call sees one window, whatever the input length
    # Each extra input sample costs the output and its weight (8 bytes), not its stems at 44.1 kHz (~88 bytes)
    assert long_peak - short_peak < 1.5 * 8 * 6 * rate, (short_peak, long_peak)


def test_progress_rises_to_one_and_stop_cancels(separator: VocalSeparator) -> None:
    rate = 22050
    audio = np.random.default_rng(1).standard_normal(3 * rate).astype(np.float32) * 0.1
    seen: list[float] = []
    separator.vocals(audio, rate, progress=lambda fraction, message: seen.append(fraction))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    assert len(seen) == len(separator.windows(len(audio), rate)) + 1
    windows: list[float] = []
    with pytest.raises(Cancelled):
        separator.vocals(
            audio,
            rate,
            progress=lambda fraction, message: windows.append(fraction),
            should_stop=lambda: len(windows) > 1,
        )
    assert len(windows) == 2  # stopped after the first window


def test_runs_inside_the_device_slot(models_dir: Path) -> None:
    scheduler = DeviceScheduler("cpu")
    separator = VocalSeparator(models_dir, scheduler=scheduler)
    model = separator.model()
    held: list[bool] = []
    hook = model.register_forward_pre_hook(lambda module, args: held.append(scheduler.holds_slot()))
    try:
        separator.vocals(np.random.default_rng(2).standard_normal(2 * 16000).astype(np.float32), 16000)
    finally:
        hook.remove()
    assert held and all(held)
    assert scheduler.jobs[MODEL] >= len(held)
    assert scheduler.models.on_device() == [MODEL]
    scheduler.lend()  # training borrows the device: the separator drops its weights
    assert scheduler.models.placement(MODEL) is Placement.UNLOADED and scheduler.models.on_device() == []


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_download_says_what_to_do(tmp_path: Path) -> None:
    separator = VocalSeparator(tmp_path / "models", base_url=f"http://127.0.0.1:{closed_port()}/demucs")
    with pytest.raises(ModelUnavailable) as error:
        separator.ensure()
    message = str(error.value)
    assert "Could not download the vocal separation model htdemucs" in message
    assert "offline" in message and str(tmp_path / "models" / "separation") in message
    assert "955717e8-8726e21a.th" in message
    assert not separator.weights.exists()


def test_damaged_download_is_deleted(tmp_path: Path, models_dir: Path) -> None:
    """A file whose sha256 does not start as its official name says is not kept."""
    served = tmp_path / "served" / "hybrid_transformer"
    served.mkdir(parents=True)
    shutil.copy(models_dir / "separation" / "955717e8-8726e21a.th", served)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path / "served")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        separator = VocalSeparator(tmp_path / "models", base_url=f"http://127.0.0.1:{server.server_port}")
        steps: list[float] = []
        with pytest.raises(ModelUnavailable, match="damaged"):
            separator.ensure(progress=lambda fraction, message: steps.append(fraction))
    finally:
        server.shutdown()
        server.server_close()
    assert steps and steps[-1] == 1.0
    assert not separator.weights.exists()


class Payload:
    """Unpickling this writes ``marker``: what a hostile checkpoint would do with a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_malicious_checkpoint_is_refused_without_running(tmp_path: Path) -> None:
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(proof)))  # the payload is live: plain unpickling runs it
    assert proof.exists()
    marker = tmp_path / "marker"
    weights = tmp_path / "models" / "separation" / "955717e8-8726e21a.th"
    weights.parent.mkdir(parents=True)
    torch.save({"klass": Payload(marker), "args": (), "kwargs": {}, "state": {}}, weights)
    separator = VocalSeparator(tmp_path / "models")
    with pytest.raises(
        ModelUnavailable,
        match=r"Refused the separation checkpoint .*: it asks for \S*exec, .* Nothing in it was run",
    ):
        separator.model()
    assert not marker.exists()
