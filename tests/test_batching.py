"""Dynamic batching on the tiny XTTS: batched rows speak what they would alone, and the batcher's rules.

The engine here generates 16 audio tokens per chunk instead of the model's bound (its
``max_gen_mel_tokens`` is lowered on this engine only), so each row's full-size HiFi-GAN pass
stays short on the CPU; XTTS's own ``inference`` reads the same bound.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from core.device import DeviceScheduler
from core.errors import Cancelled
from core.settings import parse_settings
from core.xtts.batch_decode import (
    Row,
    RowResult,
    audio_latents,
    row_bytes,
    synthesize_rows,
    tokenize,
    vocode,
    vocoder_groups,
)
from core.xtts.engine import MODEL, VoiceSpec, XTTSEngine, default_batch_window_ms
from core.xtts.latents import Conditioning
from core.xtts.profiles import PROFILES, SynthesisParams

TOKENS = 16


@dataclass(frozen=True)
class Ask:
    speaker: str
    text: str
    params: SynthesisParams
    seed: int


ASKS = (
    Ask("Claribel Dervla", "hello world, this is a test.", PROFILES["balanced"], 11),
    Ask("Daisy Studious", "she sells sea shells by the sea shore!", PROFILES["fast"], 22),
    Ask(
        "Andrew Chipper",
        "how are you today? i am fine, thank you, and how are you?",
        SynthesisParams(temperature=0.5, top_k=10, top_p=0.7, repetition_penalty=2.0, speed=1.25),
        33,
    ),
)


@pytest.fixture(scope="module")
def engine(tiny_xtts: Path, tmp_path_factory: pytest.TempPathFactory) -> XTTSEngine:
    engine = XTTSEngine(
        device="cpu", latents_dir=tmp_path_factory.mktemp("latents"), model_dir=tiny_xtts, batch_window_ms=30
    )
    engine.ensure_loaded()
    engine._model.gpt.max_gen_mel_tokens = TOKENS  # short takes: see the module docstring
    return engine


def voice(engine: XTTSEngine, ask: Ask) -> Conditioning:
    return engine.conditioning(VoiceSpec(speaker=ask.speaker))


def row(engine: XTTSEngine, ask: Ask, should_stop: Callable[[], bool] | None = None) -> Row:
    tokens = tokenize(engine._model, ask.text, "en")
    return Row(tokens, voice(engine, ask), ask.params, seed=ask.seed, should_stop=should_stop)


@pytest.fixture(scope="module")
def alone(engine: XTTSEngine) -> list[RowResult]:
    """Each ask decoded on its own (a batch of one)."""
    return [synthesize_rows(engine._model, [row(engine, ask)])[0] for ask in ASKS]


def test_a_lone_row_is_xtts_own_inference_and_leaves_the_global_rng_alone(
    engine: XTTSEngine, alone: list[RowResult]
) -> None:
    ask = ASKS[0]
    cond = voice(engine, ask)
    torch.manual_seed(ask.seed)
    theirs = engine._model.inference(
        ask.text, "en", cond.gpt_cond_latent, cond.speaker_embedding, **ask.params.generation_kwargs()
    )
    assert alone[0].codes is not None and alone[0].codes.shape == (1, TOKENS)
    np.testing.assert_allclose(alone[0].wav, theirs["wav"], atol=1e-6)

    state = torch.get_rng_state()
    synthesize_rows(engine._model, [Row(row(engine, ask).text_tokens, cond, ask.params, seed=None)])
    assert torch.equal(torch.get_rng_state(), state)  # an unseeded row draws from its own generator too


def test_three_voices_params_and_seeds_in_one_batch_equal_each_alone(
    engine: XTTSEngine, alone: list[RowResult]
) -> None:
    delivered: dict[int, RowResult] = {}
    rows = [row(engine, ask) for ask in ASKS]
    together = synthesize_rows(engine._model, rows, deliver=lambda i, result: delivered.setdefault(i, result))
    assert len({r.text_tokens.shape[-1] for r in rows}) == 3  # the prefixes differ, so the batch is left-padded
    for mine, solo in zip(together, alone, strict=True):
        assert torch.equal(mine.codes, solo.codes)
        np.testing.assert_allclose(mine.wav, solo.wav, atol=1e-5)
    assert delivered == dict(enumerate(together))  # each row is handed back as it is done


def test_rows_of_one_length_share_a_vocoder_pass_on_cuda_and_sound_as_alone(
    engine: XTTSEngine, alone: list[RowResult]
) -> None:
    model = engine._model
    rows = [row(engine, ask) for ask in ASKS]
    latents = [audio_latents(model, r, solo.codes) for r, solo in zip(rows, alone, strict=True)]
    assert vocoder_groups(latents, batched=True) == [[0, 1], [2]]  # speed 1.25 stretched the third
    assert vocoder_groups(latents, batched=False) == [[0], [1], [2]]
    shared = vocode(model, latents[:2], [r.conditioning.speaker_embedding for r in rows[:2]])  # what CUDA does
    for wav, solo in zip(shared, alone[:2], strict=True):
        np.testing.assert_allclose(wav, solo.wav, atol=1e-5)


def wait_for(check: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the batcher never reached the expected state"
        time.sleep(0.005)


def meet(engine: XTTSEngine, asks: tuple[Ask, ...], stops: dict[int, Callable[[], bool]] | None = None) -> list[object]:
    """Speak ``asks`` from threads of their own so that they meet in the batcher.

    While the test holds the device slot (as other device work would), a first request is taken
    alone and waits for the slot; ``asks`` arrive behind it, so they wait and gather. Returns each
    ask's audio, or the exception its call raised.
    """
    results: dict[int, object] = {}

    def speak(index: int, ask: Ask) -> None:
        try:
            results[index] = engine.synthesize(
                [ask.text], language="en", conditioning=voice(engine, ask), params=ask.params, seed=ask.seed,
                should_stop=(stops or {}).get(index),
            )  # fmt: skip
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=speak, args=(-1, ASKS[0]))]
    with engine.scheduler.slot("other work"):
        threads[0].start()
        wait_for(lambda: engine.batcher.load() == (0, 1))
        threads += [threading.Thread(target=speak, args=(i, ask)) for i, ask in enumerate(asks)]
        for thread in threads[1:]:
            thread.start()
        wait_for(lambda: engine.batcher.load() == (len(asks), 1))
    for thread in threads:
        thread.join()
    assert isinstance(results[-1], np.ndarray)
    return [results[i] for i in range(len(asks))]


def test_requests_that_meet_run_as_one_batch_and_each_hears_its_own_take(
    engine: XTTSEngine, alone: list[RowResult]
) -> None:
    before = dict(engine.batcher.stats.sizes)
    heard = meet(engine, ASKS)
    assert engine.batcher.stats.sizes[3] == before.get(3, 0) + 1
    for audio, solo in zip(heard, alone, strict=True):
        np.testing.assert_allclose(audio, solo.wav, atol=1e-5)  # type: ignore[arg-type]


def test_a_stopped_row_leaves_the_batch_and_the_others_are_as_alone(engine: XTTSEngine, alone: list[RowResult]) -> None:
    asked = itertools.count()
    heard = meet(engine, ASKS, stops={1: lambda: next(asked) >= 5})  # asked before the chunk and at each step
    assert isinstance(heard[1], Cancelled)
    assert next(asked) == 6  # not asked again once its row left
    for index in (0, 2):
        np.testing.assert_allclose(heard[index], alone[index].wav, atol=1e-5)  # type: ignore[arg-type]


def test_a_lone_request_does_not_wait_for_the_window(engine: XTTSEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.batcher, "window_s", 60.0)
    ask = ASKS[0]
    started = time.monotonic()
    audio = engine.synthesize([ask.text], language="en", conditioning=voice(engine, ask), params=ask.params)
    assert audio.size and time.monotonic() - started < 30


def test_rows_per_batch_are_bounded_by_the_device_owners_memory_estimate(
    engine: XTTSEngine, alone: list[RowResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    per_row = row_bytes(engine._model.args)
    assert DeviceScheduler("cpu", batch_memory_bytes=1).batch_rows(per_row) == 1  # never below one row
    assert DeviceScheduler("cpu", batch_memory_bytes=10 * per_row).batch_rows(per_row) == 10
    monkeypatch.setattr(engine.scheduler, "batch_memory_bytes", int(2.5 * per_row))
    assert engine._max_rows() == 2
    before = dict(engine.batcher.stats.sizes)
    heard = meet(engine, ASKS)
    ran = {size: count - before.get(size, 0) for size, count in engine.batcher.stats.sizes.items()}
    assert {size: count for size, count in ran.items() if count} == {1: 2, 2: 1}  # the first, then [0, 1], then [2]
    for audio, solo in zip(heard, alone, strict=True):
        np.testing.assert_allclose(audio, solo.wav, atol=1e-5)  # type: ignore[arg-type]


def test_a_caller_holding_the_slot_runs_alone_inline(engine: XTTSEngine, alone: list[RowResult]) -> None:
    ask = ASKS[1]
    with engine.scheduler.slot(MODEL):  # a render inside a borrowed checkpoint holds the slot
        audio = engine.synthesize(
            [ask.text], language="en", conditioning=voice(engine, ask), params=ask.params, seed=ask.seed
        )
    assert engine.batcher.load() == (0, 0)
    np.testing.assert_allclose(audio, alone[1].wav, atol=1e-5)


def test_batching_settings() -> None:
    assert default_batch_window_ms("cuda") == 30 and default_batch_window_ms("cuda:1") == 30
    assert default_batch_window_ms("cpu") == 0 and default_batch_window_ms("cuda", zerogpu=True) == 0
    settings = parse_settings([], env={})
    assert settings.batch_window_ms is None and settings.batch_memory_mb == 2048
    settings = parse_settings(["--batch-window-ms", "0", "--batch-memory-mb", "512"], env={})
    assert settings.batch_window_ms == 0 and settings.batch_memory_bytes == 512 * 2**20
    env = {"XTTS_STUDIO_BATCH_WINDOW_MS": "45"}
    assert parse_settings([], env=env).batch_window_ms == 45
    for bad in (["--batch-window-ms", "-1"], ["--batch-memory-mb", "0"]):
        with pytest.raises(Exception, match="batch"):
            parse_settings(bad, env={})
