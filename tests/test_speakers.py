"""One speaker out of two: resemblyzer embeddings of espeak-ng voices A and B (tests/interview.py).

Measured while tuning (resemblyzer 0.1.4, 8 sentences per voice): a voice's clips sit at cosine >= 0.85
to each other, A and B at 0.55 on average and 0.63 at most; drift stays <= 0.08 in one-voice clips of
any of seven espeak voices and reaches >= 0.14 when two different voices share a clip (>= 0.16 for A+B).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from tests.interview import GUEST, HOST, VOICE_A, VOICE_B
from tests.make_tiny_models import espeak
from train.speakers import MAX_DRIFT, OTHER_SPEAKER, RATE, TWO_VOICES, SpeakerEncoder, SpeakerSelection, select_speakers


def _speak(text: str, out: Path, voice: dict[str, object]) -> np.ndarray:
    audio, rate = sf.read(espeak(text, out, **voice), dtype="float32")  # type: ignore[arg-type]
    return soxr.resample(audio, rate, RATE).astype(np.float32)


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[np.ndarray]]:
    """Eight sentences per voice, a reference per voice that is not among them, and an A-then-B clip."""
    folder = tmp_path_factory.mktemp("speakers")
    a = [_speak(text, folder / f"a{i}.wav", VOICE_A) for i, text in enumerate(GUEST[:9])]
    b = [_speak(text, folder / f"b{i}.wav", VOICE_B) for i, text in enumerate(HOST[:8] + GUEST[9:10])]
    mix = np.concatenate(
        [_speak(GUEST[10], folder / "mix_a.wav", VOICE_A), _speak(HOST[0], folder / "mix_b.wav", VOICE_B)]
    )
    return {"a": a[:8], "b": b[:8], "ref_a": [a[8]], "ref_b": [b[8]], "mix": [mix]}


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    """One encoder for the module: it remembers clips by content, so each is embedded once."""
    return SpeakerEncoder()


def _kept(selection: SpeakerSelection, start: int, stop: int) -> int:
    return sum(clip.keep for clip in selection.clips[start:stop])


def test_reference_keeps_its_speaker_and_drops_the_other(
    voices: dict[str, list[np.ndarray]], encoder: SpeakerEncoder
) -> None:
    selection = select_speakers(voices["a"] + voices["b"], encoder=encoder, reference=voices["ref_a"][0])

    assert _kept(selection, 0, 8) >= 0.9 * 8
    assert _kept(selection, 8, 16) <= 0.05 * 8
    assert {c.speaker for c in selection.clips[:8] if c.keep} == {"speaker"}
    assert all(c.reason == OTHER_SPEAKER and c.speaker is None for c in selection.clips[8:])
    similarities = [c.similarity for c in selection.clips]
    assert all(-1.0 <= s <= 1.0 for s in similarities)
    assert min(similarities[:8]) > max(similarities[8:])
    assert len(selection.clusters) == 2 and sum(c.clips for c in selection.clusters) == 16
    target = next(c for c in selection.clusters if c.id == selection.target)
    other = next(c for c in selection.clusters if c.id != selection.target)
    assert target.similarity_to_reference is not None and other.similarity_to_reference is not None
    assert target.similarity_to_reference > other.similarity_to_reference
    assert all(c.cluster == selection.target for c in selection.clips[:8])


def test_without_reference_the_most_speech_wins_and_a_reference_overrules_it(
    voices: dict[str, list[np.ndarray]], encoder: SpeakerEncoder
) -> None:
    clips = voices["a"] + voices["b"][:4]

    by_speech = select_speakers(clips, encoder=encoder)
    assert _kept(by_speech, 0, 8) >= 0.9 * 8 and _kept(by_speech, 8, 12) == 0
    assert by_speech.target == by_speech.clusters[0].id
    assert all(c.similarity_to_reference is None for c in by_speech.clusters)

    by_reference = select_speakers(clips, encoder=encoder, reference=voices["ref_b"][0])
    assert _kept(by_reference, 0, 8) == 0 and _kept(by_reference, 8, 12) == 4


def test_a_clip_with_two_voices_drifts_and_is_dropped(
    voices: dict[str, list[np.ndarray]], encoder: SpeakerEncoder
) -> None:
    selection = select_speakers(
        voices["a"] + voices["b"] + voices["mix"], encoder=encoder, reference=voices["ref_a"][0]
    )

    mix = selection.clips[-1]
    assert (mix.keep, mix.reason, mix.speaker, mix.cluster) == (False, TWO_VOICES, None, -1)
    assert mix.drift > MAX_DRIFT > max(c.drift for c in selection.clips[:16])
    assert _kept(selection, 0, 8) >= 0.9 * 8
    assert sum(c.clips for c in selection.clusters) == 16  # the mixed clip joined no speaker


def test_keeping_two_clusters_names_them_apart(voices: dict[str, list[np.ndarray]], encoder: SpeakerEncoder) -> None:
    selection = select_speakers(
        voices["a"] + voices["b"], encoder=encoder, reference=voices["ref_a"][0], keep_clusters=2, speaker_name="pod"
    )

    assert _kept(selection, 0, 16) >= 0.9 * 16
    assert {c.speaker for c in selection.clips[:8] if c.keep} == {"pod_1"}  # the reference's speaker first
    assert {c.speaker for c in selection.clips[8:] if c.keep} == {"pod_2"}


def test_no_one_or_two_clips_and_silence(voices: dict[str, list[np.ndarray]], encoder: SpeakerEncoder) -> None:
    empty = select_speakers([], encoder=encoder, reference=voices["ref_a"][0])
    assert (empty.clips, empty.clusters, empty.target) == ([], [], -1)

    one = select_speakers(voices["b"][:1], encoder=encoder, reference=voices["ref_b"][0])
    assert one.clips[0].keep and one.target == 0 and one.clips[0].similarity == pytest.approx(1.0, abs=1e-5)

    two = select_speakers([voices["a"][0], voices["b"][0]], encoder=encoder, reference=voices["ref_b"][0])
    assert [c.keep for c in two.clips] == [False, True] and len(two.clusters) == 2

    silence = np.zeros(RATE * 2, dtype=np.float32)
    short = voices["a"][1][: RATE * 6 // 5]
    quiet = select_speakers([silence, short, voices["a"][0]], encoder=encoder)
    assert (quiet.clips[0].keep, quiet.clips[0].cluster, quiet.clips[0].reason) == (False, -1, OTHER_SPEAKER)
    assert quiet.clips[1].drift == 0.0  # too short for partial windows to tell
    assert quiet.clips[2].keep

    with pytest.raises(ValueError, match="keep_clusters"):
        select_speakers(voices["a"][:1], encoder=encoder, keep_clusters=0)


def test_embeddings_are_unit_vectors_and_partials_cover_the_clip(
    voices: dict[str, list[np.ndarray]], encoder: SpeakerEncoder
) -> None:
    clip = voices["mix"][0]
    embedding, partials = encoder.embed(clip), encoder.partials(clip)
    assert embedding.shape == (256,) and np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    assert partials.shape[1] == 256 and len(partials) >= len(clip) / RATE / 1.6
    assert np.allclose(np.linalg.norm(partials, axis=1), 1.0, atol=1e-5)
    assert not embedding.flags.writeable  # remembered for the next call, so shared


def test_clips_analysed_together_match_resemblyzer_one_by_one(voices: dict[str, list[np.ndarray]]) -> None:
    """One encoder call over every clip's windows gives what resemblyzer's own per-clip path gives."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    clips = [*voices["a"][:3], np.zeros(RATE, dtype=np.float32), voices["mix"][0], voices["b"][0]]
    fresh = SpeakerEncoder()  # nothing remembered: every clip goes through the batched path
    together = fresh.analyse_many(clips)

    reference = VoiceEncoder("cpu", verbose=False)
    for clip, (embedding, partials) in zip(clips, together, strict=True):
        if not np.any(clip):
            assert not np.any(embedding) and partials.shape == (0, 256)
            continue
        expected, expected_partials, _ = reference.embed_utterance(preprocess_wav(clip), return_partials=True)
        assert partials.shape == expected_partials.shape
        assert float(embedding @ expected) == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(partials, expected_partials, atol=1e-4)
    assert fresh.analyse_many(clips[::-1])[::-1][0] is together[0]  # remembered by content, in any order
