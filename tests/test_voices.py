"""The voice library on the tiny XTTS model, with espeak-ng speech in every accepted container."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core import voices as voices_module
from core.audio import decode, integrated_loudness
from core.errors import InvalidInput
from core.outputs import OutputStore
from core.reference import check_clip
from core.tts import TTSRequest, TTSService
from core.voices import VoiceLibrary
from core.xtts.engine import VoiceSpec, XTTSEngine

SENTENCE = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs."


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture
def clip(speech) -> Path:
    return speech(SENTENCE, name="fox.wav")


@pytest.fixture
def library(tmp_path: Path) -> VoiceLibrary:
    return VoiceLibrary(tmp_path / "voices", export_dir=tmp_path / "exports", work_dir=tmp_path / "work")


@pytest.fixture
def service(shared_engine: XTTSEngine, library: VoiceLibrary, tmp_path: Path) -> TTSService:
    return TTSService(shared_engine, OutputStore(tmp_path / "out"), max_text_chars=500, voice_sources=[library])


def encodes(engine: XTTSEngine) -> int:
    return engine.encode_count


def test_create_from_one_clip(library: VoiceLibrary, shared_engine: XTTSEngine, clip: Path) -> None:
    before = encodes(shared_engine)
    steps: list[str] = []
    voice = library.create(
        "Fox", [clip], engine=shared_engine, language="en", description="A test voice",
        progress=lambda f, m: steps.append(m),
    )  # fmt: skip
    assert encodes(shared_engine) == before + 1
    assert steps[-1] == "Voice saved"
    record = json.loads((voice.path / "voice.json").read_text())
    assert record["name"] == "Fox" and record["language"] == "en" and record["description"] == "A test voice"
    assert record["model"]["id"] == shared_engine.model_id and record["created"]
    stats = record["clips"][0]["stats"]
    assert stats["sample_rate"] == 22050 and stats["speech_s"] > 3 and stats["clipped_ratio"] == 0
    prepared, rate = sf.read(voice.path / "clips" / "01.wav", dtype="float32")
    assert rate == 22050 and prepared.ndim == 1
    assert integrated_loudness(prepared, rate) == pytest.approx(-20.0, abs=0.5)
    assert len(prepared) / rate < stats["duration_s"]  # leading/trailing silence trimmed
    assert (voice.path / "latents" / f"{shared_engine.model_id}.pt").is_file()
    preview, preview_rate = sf.read(voice.preview)
    assert preview_rate == 24000 and len(preview) > 0
    assert [v.name for v in library.list()] == ["Fox"]


def test_create_from_several_clips_in_every_container(
    library: VoiceLibrary, shared_engine: XTTSEngine, clip: Path, tmp_path: Path
) -> None:
    stereo_48k = tmp_path / "stereo.flac"
    ffmpeg("-i", str(clip), "-ac", "2", "-ar", "48000", str(stereo_48k))
    files = [clip, stereo_48k]
    for suffix, codec in [(".mp3", "libmp3lame"), (".ogg", "libvorbis"), (".m4a", "aac")]:
        out = tmp_path / f"fox{suffix}"
        ffmpeg("-i", str(clip), "-c:a", codec, str(out))
        files.append(out)
    video = tmp_path / "talk.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=blue:s=64x64:d=6",
        "-i",
        str(clip),
        "-shortest",
        "-c:v",
        "mpeg4",
        "-c:a",
        "aac",
        str(video),
    )
    files.append(video)
    before = encodes(shared_engine)
    voice = library.create("Many", files, engine=shared_engine)
    assert encodes(shared_engine) == before + 1  # all clips encoded together, once
    assert [c["source"] for c in voice.clips] == [f.name for f in files]
    assert {c["stats"]["codec"] for c in voice.clips} >= {"pcm_s16le", "flac", "mp3", "vorbis", "aac"}
    assert voice.clips[1]["stats"]["channels"] == 2 and voice.clips[1]["stats"]["sample_rate"] == 48000
    for entry in voice.clips:
        info = sf.info(voice.path / entry["file"])
        assert (info.samplerate, info.channels) == (22050, 1)


def test_latents_are_reused_and_recomputed_for_another_model(
    library: VoiceLibrary, service: TTSService, clip: Path, tiny_xtts: Path, tmp_path: Path
) -> None:
    engine = service.engine
    library.create("Reuse", [clip], engine=engine)
    before = encodes(engine)
    for _ in range(2):
        service.synthesize(TTSRequest(text="Speaking with a cloned voice.", language="en", voice="Reuse"))
    assert encodes(engine) == before  # encoded at creation, never again

    fresh = XTTSEngine(device="cpu", latents_dir=tmp_path / "other-cache", model_dir=tiny_xtts)
    fresh.conditioning(library.resolve("Reuse"))
    assert fresh.encode_count == 0  # read from the voice folder, as another process would

    other_dir = tmp_path / "finetuned"
    shutil.copytree(tiny_xtts, other_dir)
    other = XTTSEngine(device="cpu", latents_dir=tmp_path / "c2", model_dir=other_dir)
    other.conditioning(library.resolve("Reuse"))
    assert other.encode_count == 1
    assert sorted(library.get("Reuse").latents_for) == sorted([engine.model_id, other.model_id])


def test_rename_describe_delete_export_import_round_trip(
    library: VoiceLibrary, service: TTSService, clip: Path
) -> None:
    engine = service.engine
    library.create("Alpha", [clip], engine=engine, description="first")
    renamed = library.rename("alpha", "Beta Voice")
    assert renamed.name == "Beta Voice" and renamed.path.name == "beta-voice"
    assert library.names() == ["Beta Voice"]
    assert library.describe("Beta Voice", description="second").description == "second"

    exported = library.export("Beta Voice")
    with zipfile.ZipFile(exported) as archive:
        assert {"voice.json", "clips/01.wav", "preview.wav"} <= set(archive.namelist())
    library.delete("Beta Voice")
    assert library.names() == []
    with pytest.raises(InvalidInput, match="Unknown voice 'Beta Voice'"):
        service.synthesize(TTSRequest(text="Gone.", language="en", voice="Beta Voice"))

    before = encodes(engine)
    imported = library.import_zip(exported)
    assert imported.name == "Beta Voice" and imported.description == "second"
    service.synthesize(TTSRequest(text="Back again.", language="en", voice="Beta Voice"))
    assert encodes(engine) == before  # the exported latents came along
    with pytest.raises(InvalidInput, match="already exists"):
        library.import_zip(exported)
    assert library.import_zip(exported, new_name="Gamma").name == "Gamma"


def test_add_and_remove_clips_re_encode(library: VoiceLibrary, shared_engine: XTTSEngine, clip: Path, speech) -> None:
    library.create("Grow", [clip], engine=shared_engine)
    before = encodes(shared_engine)
    grown = library.add_clips(
        "Grow",
        [speech("A second reference clip, with many more words in it than the first one had.", name="b.wav")],
        engine=shared_engine,
    )
    assert [c["file"] for c in grown.clips] == ["clips/01.wav", "clips/02.wav"]
    assert encodes(shared_engine) == before + 1
    shrunk = library.remove_clip("Grow", "clips/01.wav", engine=shared_engine)
    assert [c["file"] for c in shrunk.clips] == ["clips/02.wav"]
    assert not (shrunk.path / "clips" / "01.wav").exists()
    assert encodes(shared_engine) == before + 2
    with pytest.raises(InvalidInput, match="needs at least 3 s"):
        library.remove_clip("Grow", "clips/02.wav", engine=shared_engine)


def test_dropped_wav_is_a_voice_encoded_on_first_use(library: VoiceLibrary, service: TTSService, clip: Path) -> None:
    shutil.copy(clip, library.root / "Narrator.wav")
    listed = {v.name: v.kind for v in library.list()}
    assert listed == {"Narrator": "file"}
    assert service.voices()[0] == "Narrator"
    before = encodes(service.engine)
    service.synthesize(TTSRequest(text="From a dropped file.", language="en", voice="Narrator"))
    service.synthesize(TTSRequest(text="Again.", language="en", voice="Narrator"))
    assert encodes(service.engine) == before + 1


def cut_speech(clip: Path, seconds: float) -> tuple[np.ndarray, int]:
    """``seconds`` of ``clip`` from where the speech starts."""
    audio, rate = sf.read(clip, dtype="float32")
    start = int(np.argmax(np.abs(audio) > 0.05))
    return audio[start : start + int(seconds * rate)], rate


def test_a_short_clip_of_speech_is_called_short_not_silent(clip: Path, tmp_path: Path) -> None:
    audio, rate = cut_speech(clip, 0.5)
    sf.write(tmp_path / "half.wav", audio, rate)
    checked = check_clip(tmp_path / "half.wav")
    assert checked.stats is not None and checked.stats.speech_s > 0.3  # it is speech
    assert checked.problems == [
        "half.wav: the clip is too short (0.5 s); each clip must be at least 1 s long "
        "(6 to 30 s of clean speech in total works best)."
    ]
    assert checked.prepared is None
    sf.write(tmp_path / "second_and_a_half.wav", *cut_speech(clip, 1.5))
    assert check_clip(tmp_path / "second_and_a_half.wav").ok
    sparse, rate = cut_speech(clip, 0.4)  # 1.1 s in all, 70% of it silent: too little speech, not mostly silence
    sf.write(tmp_path / "sparse.wav", np.concatenate([sparse, np.zeros(int(0.7 * rate))]), rate)
    (problem,) = check_clip(tmp_path / "sparse.wav").problems
    assert re.fullmatch(
        r"sparse.wav: the clip holds only 0\.[34] s of speech; each clip needs at least 0\.5 s of it\.", problem
    )


def make_bad_clips(tmp_path: Path, clip: Path, speech) -> dict[str, Path]:
    bad: dict[str, Path] = {}
    (bad_text := tmp_path / "notes.txt").write_text("not audio at all")
    bad["unsupported"] = bad_text
    (fake := tmp_path / "fake.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    bad["unreadable"] = fake
    (empty := tmp_path / "empty.wav").write_bytes(b"")
    bad["empty"] = empty
    bad["short"] = speech("Good morning, everyone.", name="short.wav")
    sf.write(tmp_path / "half_second.wav", *cut_speech(clip, 0.5))
    bad["half_second"] = tmp_path / "half_second.wav"
    low = tmp_path / "phone.wav"
    ffmpeg("-i", str(clip), "-ar", "8000", str(low))
    bad["low_rate"] = low
    silent = tmp_path / "mostly_silent.wav"
    ffmpeg("-i", str(speech("Hi.", name="hi.wav")), "-af", "apad=pad_dur=20", str(silent))
    bad["silence"] = silent
    audio, rate = sf.read(clip)
    sf.write(tmp_path / "loud.wav", np.clip(audio * 20, -1, 1), rate)
    bad["clipped"] = tmp_path / "loud.wav"
    long = tmp_path / "long.wav"
    ffmpeg("-stream_loop", "60", "-i", str(clip), "-t", "310", str(long))
    bad["long"] = long
    return bad


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("unsupported", "notes.txt: not a readable audio or video file"),
        ("unreadable", "fake.wav: not a readable audio or video file"),
        ("empty", "empty.wav: the file is empty"),
        ("short", "Too short: .* of speech in total; at least 3 s"),
        ("half_second", r"half_second.wav: the clip is too short \(0\.5 s\); each clip must be at least 1 s"),
        ("low_rate", "phone.wav: the sample rate is 8000 Hz; at least 16000 Hz"),
        ("silence", "mostly_silent.wav: the clip is mostly silence"),
        ("clipped", "loud.wav: the audio is clipped"),
        ("long", "Too long: 5.2 minutes in total; at most 5 minutes"),
    ],
)
def test_bad_clips_are_refused_with_their_reason(
    kind: str, message: str, library: VoiceLibrary, shared_engine: XTTSEngine, clip: Path, speech, tmp_path: Path
) -> None:
    bad = make_bad_clips(tmp_path, clip, speech)[kind]
    with pytest.raises(InvalidInput, match=message):
        library.create("Bad", [bad], engine=shared_engine)
    assert library.list() == []
    assert [p.name for p in library.root.iterdir()] == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../../etc", "may not contain slashes"),
        ("a/b", "may not contain slashes"),
        ("back\\slash", "may not contain slashes"),
        ("bell\x07", "control characters"),
        ("x" * 300, "at most 64 characters"),
        ("", "Give the voice a name"),
        ("...", "at least one letter or digit"),
    ],
)
def test_unsafe_names_are_refused(
    name: str, message: str, library: VoiceLibrary, shared_engine: XTTSEngine, clip: Path
) -> None:
    with pytest.raises(InvalidInput, match=message):
        library.create(name, [clip], engine=shared_engine)
    assert list(library.root.iterdir()) == []
    assert not (library.root.parent / "etc").exists()


def test_names_are_made_safe_folders(library: VoiceLibrary, shared_engine: XTTSEngine, clip: Path) -> None:
    voice = library.create("  Zoë  O'Brien (calm)  ", [clip], engine=shared_engine)
    assert voice.name == "Zoë  O'Brien (calm)"
    assert voice.path.parent == library.root and voice.path.name == "zoë-o-brien-calm"
    with pytest.raises(InvalidInput, match="already exists"):
        library.create("ZOË  O'BRIEN (CALM)", [clip], engine=shared_engine)


def test_crash_during_save_leaves_the_library_readable(
    library: VoiceLibrary, shared_engine: XTTSEngine, clip: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    library.create("Keep", [clip], engine=shared_engine)

    def die(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the process is killed while the voice is being written

    with monkeypatch.context() as patch:
        patch.setattr(voices_module.fs, "write_json", die)
        with pytest.raises(KeyboardInterrupt):
            library.create("Half", [clip], engine=shared_engine)
        with pytest.raises(KeyboardInterrupt):
            library.describe("Keep", description="never saved")
    assert library.names() == ["Keep"] and library.get("Keep").description == ""
    assert [p.name for p in library.root.iterdir()] == ["keep"]

    # a replacement cut between its two renames is rolled back when the library opens again
    keep = library.root / "keep"
    keep.rename(library.root / ".trash-ab12-keep")
    (library.root / ".staging-dead").mkdir()
    (library.root / ".staging-dead" / "voice.json").write_text("{half")
    reopened = VoiceLibrary(library.root, export_dir=tmp_path / "e", work_dir=tmp_path / "w")
    assert reopened.names() == ["Keep"]
    assert sorted(p.name for p in reopened.root.iterdir()) == ["keep"]


@contextmanager
def device_held_elsewhere(engine: XTTSEngine) -> Iterator[ThreadPoolExecutor]:
    """Another thread holds the device slot (a long render) until the block ends; yields a pool to start work in."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.scheduler.slot("xtts"):
            held.set()
            release.wait(120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        pool.submit(hold)
        assert held.wait(10)
        try:
            yield pool
        finally:
            release.set()


def clone_waiting_for_the_device(
    pool: ThreadPoolExecutor, library: VoiceLibrary, engine: XTTSEngine, name: str, clip: Path
) -> Future[voices_module.VoiceInfo]:
    """Start cloning ``name`` and return once its clips are staged and it waits to encode."""
    encoding = threading.Event()

    def report(fraction: float, message: str) -> None:
        if message == "Encoding the voice":
            encoding.set()

    clone = pool.submit(library.create, name, [clip], engine=engine, progress=report)
    assert encoding.wait(120), clone.exception(timeout=0) if clone.done() else "the clone never started encoding"
    time.sleep(0.3)  # inside engine.conditioning now, blocked on the slot
    assert not clone.done()
    return clone


def test_a_clone_waiting_for_the_gpu_does_not_delay_a_built_in_speaker_synthesiss_voice_lookup(
    library: VoiceLibrary, service: TTSService, clip: Path
) -> None:
    engine = service.engine
    speaker = engine.speakers()[0]
    with device_held_elsewhere(engine) as pool:
        clone = clone_waiting_for_the_device(pool, library, engine, "Waiting", clip)

        def lookup() -> tuple[tuple[str, VoiceSpec], list[voices_module.VoiceInfo], VoiceSpec | None]:
            return service.resolve_voice(speaker), library.list(), library.resolve(speaker)

        started = time.monotonic()
        (name, spec), listed, missing = pool.submit(lookup).result(timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert (name, spec.speaker, listed, missing) == (speaker, speaker, [], None)
        assert not clone.done()  # the clone still waits for the device
    voice = clone.result(timeout=120)
    assert voice.name == "Waiting" and engine.model_id in voice.latents_for
    assert library.names() == ["Waiting"] and not list(library.root.glob(".*"))
    before = encodes(engine)
    service.synthesize(TTSRequest(text="Ready.", language="en", voice="Waiting"))
    assert encodes(engine) == before


def test_a_name_taken_while_the_voice_was_encoded_is_refused_cleanly(
    library: VoiceLibrary, shared_engine: XTTSEngine, clip: Path
) -> None:
    with device_held_elsewhere(shared_engine) as pool:
        clone = clone_waiting_for_the_device(pool, library, shared_engine, "Taken", clip)
        shutil.copy(clip, library.root / "taken.wav")  # meanwhile, someone drops in a voice of that name
    with pytest.raises(InvalidInput, match="A voice named 'taken' already exists"):
        clone.result(timeout=120)
    assert [p.name for p in library.root.iterdir()] == ["taken.wav"]
    assert [(v.name, v.kind) for v in library.list()] == [("taken", "file")]


def test_re_encoding_a_voice_waits_for_the_gpu_without_blocking_lookups(
    library: VoiceLibrary, shared_engine: XTTSEngine, clip: Path
) -> None:
    library.create("Steady", [clip], engine=shared_engine)
    with device_held_elsewhere(shared_engine) as pool:
        change = pool.submit(library.regenerate_preview, "Steady", engine=shared_engine)
        deadline = time.monotonic() + 120
        while not list(library.root.glob(".staging-*")):
            assert time.monotonic() < deadline and not change.done(), "the change never staged its copy"
            time.sleep(0.05)
        time.sleep(0.5)  # its copy staged, it waits for the slot to speak the preview
        listed = pool.submit(library.list).result(timeout=1.0)
        assert [v.name for v in listed] == ["Steady"] and listed[0].latents_for == [shared_engine.model_id]
        assert not change.done()
    assert change.result(timeout=120).latents_for == [shared_engine.model_id]
    assert [p.name for p in library.root.iterdir()] == ["steady"]


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, ("/tmp/xtts-studio-pwned",))


def test_import_refuses_zip_slip_and_never_unpickles_code(
    library: VoiceLibrary, shared_engine: XTTSEngine, clip: Path, tmp_path: Path
) -> None:
    library.create("Safe", [clip], engine=shared_engine)
    exported = library.export("Safe")
    library.delete("Safe")

    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(exported) as src, zipfile.ZipFile(slip, "w") as dst:
        for item in src.namelist():
            dst.writestr(item, src.read(item))
        dst.writestr("../evil.txt", "boo")
    with pytest.raises(InvalidInput, match=r"unexpected file '\.\./evil\.txt'"):
        library.import_zip(slip)

    marker = Path("/tmp/xtts-studio-pwned")
    marker.unlink(missing_ok=True)
    poisoned = tmp_path / "poisoned.zip"
    buffer = io.BytesIO()
    torch.save({"gpt_cond_latent": _Exploit(), "speaker_embedding": torch.zeros(1)}, buffer)
    with zipfile.ZipFile(exported) as src, zipfile.ZipFile(poisoned, "w") as dst:
        for item in src.namelist():
            data = buffer.getvalue() if item.startswith("latents/") else src.read(item)
            dst.writestr(item, data)
    voice = library.import_zip(poisoned)
    assert not marker.exists()
    assert voice.latents_for == []  # dropped, recomputed on first use
    assert library.list() and not list(library.root.glob(".staging-*"))

    (not_zip := tmp_path / "voice.zip").write_bytes(b"plain text")
    with pytest.raises(InvalidInput, match="is not a zip file"):
        library.import_zip(not_zip)


def test_decode_reads_the_audio_track_of_a_video(clip: Path, tmp_path: Path) -> None:
    video = tmp_path / "clip.webm"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=red:s=32x32:d=5",
        "-i",
        str(clip),
        "-shortest",
        "-c:v",
        "libvpx",
        "-c:a",
        "libopus",
        str(video),
    )
    decoded = decode(video)
    assert decoded.codec == "opus" and decoded.duration > 4
    silent_video = tmp_path / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x32:d=1", "-c:v", "mpeg4", str(silent_video))
    with pytest.raises(InvalidInput, match="has no audio track"):
        decode(silent_video)


def test_loudness_meter_matches_the_standard() -> None:
    rate = 48000
    t = np.arange(rate * 5) / rate
    full_scale_sine = np.sin(2 * np.pi * 997 * t)
    assert integrated_loudness(full_scale_sine, rate) == pytest.approx(-3.01, abs=0.1)  # BS.1770 reference
