"""The resident engine and the TTS service on the tiny XTTS model (real code paths, random weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.constants import XTTS_OUTPUT_RATE
from core.errors import Cancelled, InvalidInput, ModelUnavailable
from core.outputs import OutputStore
from core.tts import TTSRequest, TTSService
from core.xtts.engine import VoiceSpec, XTTSEngine
from core.xtts.profiles import PROFILES

LONG_TEXT = "This is the first sentence. Here is a second one, a little longer. And a third! Is there a fourth? Yes."


@pytest.fixture
def service(shared_engine: XTTSEngine, tmp_path: Path) -> TTSService:
    return TTSService(shared_engine, OutputStore(tmp_path / "outputs"), max_text_chars=500)


def test_model_loads_once_and_stays_resident(tiny_xtts: Path, tmp_path: Path) -> None:
    engine = XTTSEngine(device="cpu", latents_dir=tmp_path / "latents", model_dir=tiny_xtts)
    assert not engine.loaded and engine.load_count == 0
    assert engine.status().message.startswith("XTTS is ready")
    service = TTSService(engine, OutputStore(tmp_path / "out"), max_text_chars=200)
    for text in ("One request.", "Another request.", "A third."):
        service.synthesize(TTSRequest(text=text, language="en"))
    engine.ensure_loaded()
    assert engine.load_count == 1
    assert engine.status().loaded
    assert engine.speakers() == ["Claribel Dervla", "Daisy Studious", "Andrew Chipper"]


def test_reference_latents_are_computed_once_then_cached_on_disk(tiny_xtts: Path, tmp_path: Path, speech) -> None:
    clip = speech("The quick brown fox jumps over the lazy dog, twice.", name="ref.wav")
    latents_dir = tmp_path / "latents"
    engine = XTTSEngine(device="cpu", latents_dir=latents_dir, model_dir=tiny_xtts)
    voice = VoiceSpec(clips=(clip,))
    first = engine.conditioning(voice)
    second = engine.conditioning(voice)
    assert engine.encode_count == 1
    assert second is first  # served from memory
    assert len(list(latents_dir.rglob("*.pt"))) == 1

    # a new process (new engine) finds them on disk and does not re-encode
    fresh = XTTSEngine(device="cpu", latents_dir=latents_dir, model_dir=tiny_xtts)
    again = fresh.conditioning(voice)
    assert fresh.encode_count == 0
    assert np.allclose(again.gpt_cond_latent.numpy(), first.gpt_cond_latent.numpy())

    # another checkpoint means other latents: recomputed, not silently reused
    other_dir = tmp_path / "other_ckpt"
    shutil.copytree(tiny_xtts, other_dir)
    other = XTTSEngine(device="cpu", latents_dir=latents_dir, model_dir=other_dir)
    other.conditioning(voice)
    assert other.encode_count == 1
    assert other.model_id != engine.model_id

    # changed audio is a new key
    clip.write_bytes(speech("Completely different words now.", name="ref2.wav").read_bytes())
    engine.conditioning(VoiceSpec(clips=(clip,)))
    assert engine.encode_count == 2


def test_long_text_is_split_and_every_chunk_is_spoken(service: TTSService) -> None:
    steps: list[tuple[float, str]] = []
    result = service.synthesize(
        TTSRequest(text=LONG_TEXT, language="en", overrides={"chunk_chars": 40}),
        progress=lambda f, m: steps.append((f, m)),
    )
    assert result.chunks == [
        "This is the first sentence.",
        "Here is a second one, a little longer.",
        "And a third! Is there a fourth? Yes.",
    ]
    chunk_steps = [m for _, m in steps if m.startswith("Synthesised")]
    assert chunk_steps[-1] == f"Synthesised {len(result.chunks)} of {len(result.chunks)} chunks"
    audio, rate = sf.read(result.record.wav)
    assert rate == XTTS_OUTPUT_RATE
    # every chunk yields some audio plus a pause between chunks
    assert len(audio) > len(result.chunks) * 0.12 * XTTS_OUTPUT_RATE


def test_sidecar_records_every_parameter(service: TTSService) -> None:
    result = service.synthesize(
        TTSRequest(text="Hello sidecar.", language="en", voice="Daisy Studious", profile="high quality",
                   overrides={"temperature": 0.5}, seed=7)
    )  # fmt: skip
    meta = json.loads(result.record.sidecar.read_text())
    assert meta["text"] == "Hello sidecar."
    assert meta["language"] == "en"
    assert meta["voice"] == "Daisy Studious"
    assert meta["profile"] == "high quality"
    assert meta["seed"] == 7
    assert meta["params"] == {**PROFILES["high quality"].to_dict(), "temperature": 0.5}
    assert meta["sample_rate"] == XTTS_OUTPUT_RATE
    assert meta["file"] == result.record.wav.name
    assert meta["duration_s"] == pytest.approx(sf.info(result.record.wav).duration, abs=0.01)
    assert service.engine.model_id in meta["model"]
    assert service.store.recent(5)[0].wav == result.record.wav
    assert not list(result.record.wav.parent.glob(".*.tmp"))


def test_profiles_reach_the_model(service: TTSService) -> None:
    """Same seed, same profile -> identical audio; another profile or speed -> different audio."""

    def render(profile: str, **overrides: float) -> np.ndarray:
        result = service.synthesize(
            TTSRequest(text="Profiles matter.", language="en", profile=profile, overrides=overrides, seed=3)
        )
        return sf.read(result.record.wav)[0]

    a, b = render("balanced"), render("balanced")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render("high quality"))
    slow, normal = render("balanced", speed=0.5), render("balanced", speed=1.0)
    assert len(slow) == pytest.approx(2 * len(normal), rel=0.05)


def test_stream_yields_pieces_then_the_saved_file(service: TTSService) -> None:
    pieces = list(service.stream(TTSRequest(text="Streaming works. It comes in pieces.", language="en", seed=1)))
    audio = [p.audio for p in pieces if p.audio is not None]
    records = [p.record for p in pieces if p.record is not None]
    assert len(audio) >= 2 and len(records) == 1 and pieces[-1].record is records[0]
    saved, rate = sf.read(records[0].wav, dtype="float32")
    assert rate == XTTS_OUTPUT_RATE
    assert len(saved) == sum(len(a) for a in audio)
    assert json.loads(records[0].sidecar.read_text())["mode"] == "stream"


def test_abandoned_stream_releases_the_lock(service: TTSService) -> None:
    stream = service.stream(TTSRequest(text="First sentence here. Second sentence there.", language="en"))
    next(stream)
    stream.close()
    # the next request must get the lock (it would hang forever otherwise)
    result = service.synthesize(TTSRequest(text="Still working.", language="en"))
    assert result.record.wav.is_file()


def test_stop_between_chunks_saves_nothing(service: TTSService) -> None:
    done: list[float] = []  # the stop is asked at every decoding step too: press it once a chunk is done

    request = TTSRequest(text=LONG_TEXT, language="en", overrides={"chunk_chars": 40})
    with pytest.raises(Cancelled, match="Stopped after 1 of 3 chunks"):
        service.synthesize(request, progress=lambda f, _: done.append(f), should_stop=lambda: bool(done))
    with pytest.raises(Cancelled, match="Streaming stopped"):
        list(service.stream(request, should_stop=lambda: True))
    assert service.store.recent() == []
    assert service.synthesize(TTSRequest(text="After a stop.", language="en")).record.wav.is_file()


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (TTSRequest(text="", language="en"), "The text is empty"),
        (TTSRequest(text="x" * 501, language="en"), "the limit is 500"),
        (TTSRequest(text="Hello", language="klingon"), "Unknown language 'klingon'"),
        (TTSRequest(text="Hello", language="en", voice="Nobody"), "Unknown voice 'Nobody'"),
        (TTSRequest(text="Hello", language="en", profile="ultra"), "Unknown profile 'ultra'"),
        (TTSRequest(text="Hello", language="en", overrides={"speed": 9}), "speed must be between"),
    ],
)
def test_bad_requests_are_refused_and_write_nothing(service: TTSService, request_: TTSRequest, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        service.synthesize(request_)
    assert service.store.recent() == []


def test_missing_model_folder_names_what_is_missing(tmp_path: Path, tiny_xtts: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(tiny_xtts / "config.json", partial)
    engine = XTTSEngine(device="cpu", latents_dir=tmp_path / "l", model_dir=partial)
    assert "missing model.pth, vocab.json" in engine.status().message
    with pytest.raises(ModelUnavailable, match=r"missing model\.pth, vocab\.json"):
        engine.ensure_loaded()
    with pytest.raises(ModelUnavailable, match="does not exist"):
        XTTSEngine(device="cpu", latents_dir=tmp_path / "l", model_dir=tmp_path / "nope").ensure_loaded()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, tiny_xtts: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_xtts, broken, ignore=shutil.ignore_patterns("dvae.pth"))
    (broken / "model.pth").write_bytes((tiny_xtts / "model.pth").read_bytes()[:4096])
    engine = XTTSEngine(device="cpu", latents_dir=tmp_path / "l", model_dir=broken)
    with pytest.raises(ModelUnavailable, match="Could not load XTTS from"):
        engine.ensure_loaded()
    assert not engine.loaded
