"""Tab handlers take one form; Gradio still sees every field as a parameter; every UI GPU event counts in the gate."""

from __future__ import annotations

import inspect
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
import soundfile as sf
from gradio import helpers
from gradio import utils as gradio_utils

import webui
from core.audio import XTTS_REFERENCE_RATE
from core.errors import InvalidInput
from core.fs import UnsafePath
from core.reference import PREPARED_TTL_S, check_clips, save_prepared
from core.settings import parse_settings
from projects.sources import from_text
from tabs.checkpoints import CheckpointHandlers
from tabs.common import form_handler, form_inputs, progress_callback, ui_errors
from tabs.dataset import BuildForm, DatasetHandlers
from tabs.project_forms import CreateForm, SegmentForm, SettingsForm
from tabs.projects import ProjectHandlers
from tabs.rvc import ConversionForm, RVCHandlers
from tabs.training import TrainingForm, TrainingHandlers
from tabs.tts import SpeechForm, SpeechHandlers
from tabs.voices import CloneForm, VoiceHandlers
from tests.conftest import speak
from tests.test_training import make_dataset
from train.config import TrainingConfig, preset, preset_for_dataset
from train.coqui_csv import split_size
from train.dataset import DatasetBuilder
from train.dataset_review import report_markdown
from train.model_import import import_source

SPEECH_PARAMETERS = [
    "text",
    "language",
    "voice",
    "profile",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "length_penalty",
    "speed",
    "chunk_chars",
    "rvc",
    "rvc_model",
    "rvc_profile",
    "rvc_pitch",
    "rvc_f0_method",
    "rvc_index_rate",
    "rvc_filter_radius",
    "rvc_resample_sr",
    "rvc_rms_mix_rate",
    "rvc_protect",
    "seed",
]
FORM_ENDPOINTS = {
    "/synthesize": SPEECH_PARAMETERS,
    "/synthesize_stream": SPEECH_PARAMETERS,
    "/clone_voice": ["name", "clips", "recording", "language", "description"],
    "/convert_voice": [
        "audio",
        "model",
        "profile",
        "pitch",
        "f0_method",
        "index_rate",
        "filter_radius",
        "resample_sr",
        "rms_mix_rate",
        "protect",
    ],
    "/build_dataset": [
        "name",
        "urls",
        "files",
        "folder",
        "cookies",
        "speaker",
        "language",
        "whisper_model",
        "eval_fraction",
        "min_s",
        "max_s",
        "min_snr_db",
        "min_confidence",
        "separation",
        "denoise",
        "keep_speakers",
        "reference",
        "whisper_batch_size",
        "whisper_beam_size",
    ],
    "/start_training": [
        "dataset",
        "base_model",
        "run_name",
        "language",
        "epochs",
        "batch_size",
        "grad_accum",
        "learning_rate",
        "weight_decay",
        "max_audio_s",
        "max_text_len",
        "save_every",
        "keep_checkpoints",
        "seed",
        "test_sentences",
        "reference_clip",
        "mixed_precision",
        "gradient_checkpointing",
        "gpus",
    ],
}


@dataclass(frozen=True)
class Order:
    item: str
    count: int = 1
    note: str | None = None


def test_the_handler_gradio_sees_has_the_forms_fields_then_its_own_parameters() -> None:
    seen: list[Any] = []

    def place(form: Order, request: gr.Request | None = None, progress: gr.Progress = gr.Progress()) -> str:
        """Place an order."""
        seen.append((form, request))
        return f"{form.count} x {form.item}"

    handler = form_handler(Order, place)
    assert list(inspect.signature(handler).parameters) == ["item", "count", "note", "request", "progress"]
    assert gradio_utils.get_function_params(handler) == [
        ("item", False, None, str), ("count", True, 1, int), ("note", True, None, str | None),
        ("progress", True, inspect.signature(place).parameters["progress"].default, gr.Progress),
    ]  # fmt: skip
    assert handler.__name__ == "place" and handler.__doc__ == "Place an order."
    inputs, progress_index, _, _ = helpers.special_args(handler, ["tea", 2, None], request=None)
    assert progress_index == 4 and len(inputs) == 5  # Gradio slots the request and the progress in
    assert handler("tea", 2, note="hot") == "2 x tea" and seen[-1] == (Order("tea", 2, "hot"), None)
    assert handler("tea") == "1 x tea" and seen[-1][0] == Order("tea")
    with pytest.raises(TypeError):
        handler()
    assert ui_errors(handler)("cake", 3) == "3 x cake"
    assert list(inspect.signature(ui_errors(handler)).parameters)[:3] == ["item", "count", "note"]


def test_a_generator_handler_stays_a_generator() -> None:
    def stream(form: Order) -> Iterator[str]:
        yield from [form.item] * form.count

    handler = form_handler(Order, stream)
    assert inspect.isgeneratorfunction(handler) and inspect.isgeneratorfunction(ui_errors(handler))
    assert list(handler("tick", 3)) == ["tick", "tick", "tick"]


def test_the_widgets_must_match_the_form() -> None:
    assert form_inputs(Order, {"note": "n", "item": "i", "count": "c"}) == ["i", "c", "n"]
    with pytest.raises(ValueError, match=r"missing \['note'\], extra \['colour'\]"):
        form_inputs(Order, {"item": "i", "count": "c", "colour": "x"})


@pytest.mark.parametrize(
    ("form", "handler"),
    [
        (SpeechForm, SpeechHandlers.synthesize),
        (SpeechForm, SpeechHandlers.synthesize_stream),
        (CloneForm, VoiceHandlers.clone_voice),
        (ConversionForm, RVCHandlers.convert_voice),
        (BuildForm, DatasetHandlers.build_dataset),
        (TrainingForm, TrainingHandlers.start_training),
        (CreateForm, ProjectHandlers.create_project),
        (SegmentForm, ProjectHandlers.update_segment),
        (SettingsForm, ProjectHandlers.set_settings),
    ],
)
def test_each_form_is_what_its_handler_takes(form: type, handler: Callable[..., Any]) -> None:
    assert list(inspect.signature(handler).parameters)[1] == "form"
    assert inspect.signature(handler).parameters["form"].annotation in (form, form.__name__)
    assert all(f.init for f in fields(form))


# ---- the app as Gradio serves it -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def studio(tiny_xtts: Path, tmp_path_factory: pytest.TempPathFactory) -> webui.Studio:
    data = tmp_path_factory.mktemp("forms")
    args = ["--models-dir", str(data / "m"), "--outputs-dir", str(data / "o"), "--model-dir", str(tiny_xtts),
            "--no-warmup", "--max-queue", "2"]  # fmt: skip
    return webui.create_studio(parse_settings(args, env={}))


@pytest.fixture(scope="module")
def api(studio: webui.Studio) -> dict[str, Any]:
    return webui.build_app(studio).get_api_info()["named_endpoints"]


def test_form_endpoints_keep_their_parameter_names_and_order(api: dict[str, Any]) -> None:
    for endpoint, names in FORM_ENDPOINTS.items():
        assert [p["parameter_name"] for p in api[endpoint]["parameters"]] == names, endpoint
    assert api["/synthesize"]["parameters"] == api["/synthesize_stream"]["parameters"]
    assert api["/synthesize"]["description"].startswith("Speak `text` and return the WAV file")
    optional = {p["parameter_name"] for p in api["/synthesize"]["parameters"] if p["parameter_has_default"]}
    assert optional == set(SPEECH_PARAMETERS) - {"text"}
    clone = {p["parameter_name"]: p for p in api["/clone_voice"]["parameters"]}
    assert clone["recording"]["parameter_has_default"] and not clone["clips"]["parameter_has_default"]


# ---- the admission gate --------------------------------------------------------------------------------------
def gpu_events(studio: webui.Studio, dataset: Path) -> dict[str, Callable[[], Any]]:
    """Every UI event that does GPU work, called as Gradio would call it, by the route it counts under."""
    settings = studio.settings
    tracker = studio.tracker
    tts = SpeechHandlers(studio.tts, tracker)
    voices = VoiceHandlers(studio.voices, studio.tts, tracker)
    rvc = RVCHandlers(studio.rvc, studio.tts, tracker)
    datasets = DatasetHandlers(studio.datasets, tracker, settings.whisper_model, settings.readable_roots)
    training = TrainingHandlers(studio.training, studio.datasets, studio.tensorboard, tracker,
                                default_base=studio.engine.model_dir, roots=settings.readable_roots)  # fmt: skip
    review = CheckpointHandlers(
        studio.review, studio.blind, tracker, exports_root=settings.exports_dir, imported_root=settings.finetuned_dir,
        voices=studio.tts.voices, readable_roots=settings.readable_roots, served_roots=settings.served_roots,
    )  # fmt: skip
    projects = ProjectHandlers(studio.projects, studio.renderer, studio.tts, tracker)
    if "Gate Book" not in studio.projects.list():
        studio.projects.create("Gate Book", from_text("Hello there."), narrator="Claribel Dervla")
    first = studio.projects.get("Gate Book").segments()[0].id
    progress = gr.Progress()
    return {
        "ui_synthesize": lambda: ui_errors(form_handler(SpeechForm, tts.synthesize))("Hello.", progress=progress),
        "ui_stream": lambda: list(ui_errors(form_handler(SpeechForm, tts.synthesize_stream))("Hello.")),
        "ui_load_model": lambda: ui_errors(tts.load)(progress),
        "ui_clone": lambda: ui_errors(form_handler(CloneForm, voices.clone_voice))("V", [str(dataset / "a.wav")]),
        "ui_add_voice_clips": lambda: ui_errors(voices.add_voice_clips)("V", [str(dataset / "a.wav")], progress),
        "ui_remove_voice_clip": lambda: ui_errors(voices.remove_voice_clip)("V", "clips/02.wav"),
        "ui_regenerate_voice_preview": lambda: ui_errors(voices.regenerate_preview)("V"),
        "ui_convert_voice": lambda: ui_errors(form_handler(ConversionForm, rvc.convert_voice))(
            str(dataset / "a.wav"), "some model"
        ),
        "ui_build_dataset": lambda: ui_errors(form_handler(BuildForm, datasets.build_dataset))(
            "Set", folder=str(dataset)
        ),
        "ui_start_training": lambda: ui_errors(form_handler(TrainingForm, training.start_training))(str(dataset)),
        "ui_resume_training": lambda: ui_errors(training.resume_training)("run-1"),
        "ui_render_samples": lambda: ui_errors(review.render_samples)("base", None, progress),
        "ui_score_checkpoint": lambda: ui_errors(review.score_checkpoint)("base", progress),
        "ui_load_checkpoint": lambda: ui_errors(review.load_checkpoint)("base"),
        "ui_back_to_base": lambda: ui_errors(review.back_to_base)(),
        "ui_speak_checkpoint": lambda: ui_errors(review.speak_checkpoint)("base", "Hello."),
        "ui_blind_pair": lambda: ui_errors(review.blind_pair)("base", "base", "Hello."),
        "ui_project_render": lambda: ui_errors(projects.render_project)("Gate Book", "", None, progress),
        "ui_project_regenerate": lambda: ui_errors(projects.regenerate)("Gate Book", first, None, progress),
    }


def test_a_full_gate_refuses_every_ui_gpu_event_with_the_queues_message(studio: webui.Studio) -> None:
    """The queue the HTTP API shares: when it is full, UI events are refused the same way, and counted as busy."""
    dataset = make_dataset(studio.settings.datasets_dir / "gate-set", ["Hello there friend.", "The sun is warm."], 1)
    (dataset / "a.wav").symlink_to(dataset / "wavs" / "c0.wav")
    gate = studio.scheduler.gate
    for _ in range(gate.capacity):
        gate.enter()
    try:
        events = gpu_events(studio, dataset)
        for route, call in events.items():
            with pytest.raises(gr.Error, match="The studio is busy: 2 requests are already queued for the GPU"):
                call()
            counted = studio.tracker.metrics.requests.collect()[0].samples
            assert any(s.labels["route"] == route and s.labels["status"] == "busy" and s.value == 1 for s in counted), (
                route
            )
            assert gate.depth == gate.capacity
    finally:
        for _ in range(gate.capacity):
            gate.leave()
    assert gate.depth == 0 and len(events) == 19


def test_a_ui_gpu_event_holds_a_place_in_the_gate_while_it_runs(studio: webui.Studio, tmp_path: Path) -> None:
    """Clone a voice and re-encode it on the tiny model from the handlers; the gate counts each while it runs."""
    gate = studio.scheduler.gate
    depths: list[int] = []

    def watch(fraction: float, desc: str | None = None) -> None:
        depths.append(gate.depth)

    clip = speak("The quick brown fox jumps over the lazy dog, near the bank of the river.", tmp_path / "fox.wav")
    voices = VoiceHandlers(studio.voices, studio.tts, studio.tracker)
    record, preview = form_handler(CloneForm, voices.clone_voice)("Gate Voice", [str(clip)], progress=watch)
    assert record["name"] == "Gate Voice" and Path(preview).is_file()
    assert depths and set(depths) == {1} and gate.depth == 0
    speech = SpeechHandlers(studio.tts, studio.tracker)
    pieces = list(
        form_handler(SpeechForm, speech.synthesize_stream)("Hello there.", voice="Gate Voice", progress=watch)
    )
    assert Path(pieces[-1][1]).is_file() and set(depths) == {1} and gate.depth == 0
    samples = studio.tracker.metrics.requests.collect()[0].samples
    for route in ("ui_clone", "ui_stream"):
        assert any(s.labels["route"] == route and s.labels["status"] == "ok" and s.value == 1 for s in samples)


# ---- logic that left the tabs, tested where it lives now -----------------------------------------------------
def test_a_preset_is_sized_to_the_datasets_training_split(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "set", eval_count=2)
    clips, minutes = split_size(dataset)
    assert clips == 8 and 0 < minutes < 1
    assert split_size(dataset, "eval")[0] == 2 and split_size(tmp_path) == (0, 0.0)
    filled = preset_for_dataset("standard", dataset, epochs=3, batch_size=1)
    base = TrainingConfig(dataset=str(dataset), base_model="", epochs=3, batch_size=1)
    assert filled == preset("standard", base, train_clips=8, minutes=minutes)
    with pytest.raises(InvalidInput, match="Unknown preset 'huge'"):
        preset_for_dataset("huge", dataset, epochs=3, batch_size=1)


def test_datasets_are_found_by_name_or_as_a_folder_inside_the_roots(tmp_path: Path) -> None:
    builder = DatasetBuilder(tmp_path / "datasets")
    named = make_dataset(builder.root / "named", ["Hello there friend.", "The sun is warm."], 1)
    outside = make_dataset(tmp_path / "elsewhere", ["Hello there friend.", "The sun is warm."], 1)
    assert builder.existing("named") == named
    with pytest.raises(InvalidInput, match="Pick or build a dataset first"):
        builder.existing("")
    with pytest.raises(InvalidInput, match="There is no dataset 'other'"):
        builder.existing("other")
    with pytest.raises(UnsafePath):
        builder.existing("../elsewhere")
    roots = [builder.root]
    assert builder.training_folder("named", roots) == named
    assert builder.training_folder(str(named), roots) == named.resolve()
    with pytest.raises(UnsafePath, match="dataset folder"):
        builder.training_folder(str(outside), roots)
    assert builder.training_folder(str(outside), [builder.root, tmp_path]) == outside.resolve()
    with pytest.raises(InvalidInput, match="Pick a dataset"):
        builder.training_folder("", roots)


def test_the_report_summary_lists_kept_dropped_and_skipped(tmp_path: Path) -> None:
    assert report_markdown(tmp_path) == ""
    report = {
        "language": "en", "speaker": "ann", "built": "2026-01-02T03:04:05+0000", "kept": 12, "kept_minutes": 1.5,
        "train": 11, "eval": 1, "dropped": {"low_snr": {"clips": 2, "minutes": 0.25}},
        "sources": [{"name": "a.wav"}, {"name": "b.mp3", "error": "no speech was found in it"}],
    }  # fmt: skip
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert report_markdown(tmp_path).splitlines() == [  # a report from before sources were cleaned
        f"**{tmp_path.name}** · language en · speaker `ann` · built 2026-01-02T03:04:05",
        "- kept **12** clips, 1.5 min (11 train / 1 eval)",
        "- removed, low snr: 2 clips, 0.2 min",
        "- skipped b.mp3: no speech was found in it",
    ]
    cleaned = {
        **report, "minutes_in": 3.0, "dropped": {**report["dropped"], "not_speech": {"clips": 0, "minutes": 1.25}},
        "sources": [{"name": "a.wav", "minutes": 3.0, "cleaning": "vocals+denoised", "snr_before_db": 9.0,
                     "snr_after_db": 31.0, "music_bed": {"score": 0.9, "detected": True, "reason": "music bed"}}],
        "speakers": [{"cluster": 0, "clips": 12, "minutes": 1.5, "similarity_to_reference": 0.91, "kept_as": "ann"},
                     {"cluster": 1, "clips": 3, "minutes": 0.2, "similarity_to_reference": 0.4, "kept_as": None}],
    }  # fmt: skip
    (tmp_path / "report.json").write_text(json.dumps(cleaned))
    assert report_markdown(tmp_path).splitlines()[1:] == [
        "- kept **12** clips, 1.5 of 3.0 min in (11 train / 1 eval)",
        "- removed, low snr: 2 clips, 0.2 min",
        "- removed, not in any clip (pauses, music only, unheard): 1.2 min",
        "- source a.wav: 3.0 min, music bed detected (score 0.90), SNR 9 dB → 31 dB, cleaning: vocals+denoised",
        "- voice 0: 12 clips, 1.5 min, similarity to the reference 0.91, kept as `ann`",
        "- voice 1: 3 clips, 0.2 min, similarity to the reference 0.40, removed",
    ]


def test_prepared_clips_are_saved_for_listening_and_old_checks_tidied(tmp_path: Path) -> None:
    good = speak("The quick brown fox jumps over the lazy dog, near the bank of the river.", tmp_path / "good.wav")
    short = speak("Hi.", tmp_path / "short.wav")
    root = tmp_path / "voice-check"
    stale = root / "old"
    stale.mkdir(parents=True)
    os.utime(stale, (time.time() - PREPARED_TTL_S - 5,) * 2)
    checked = check_clips([good, short])
    assert checked[0].verdict == "ok" and "too short" in checked[1].verdict and "short.wav" not in checked[1].verdict
    saved = save_prepared(checked, root)
    assert saved[1] is None and saved[0] is not None and saved[0].parent.parent == root
    audio, rate = sf.read(saved[0])
    assert rate == XTTS_REFERENCE_RATE and len(audio) == len(checked[0].prepared)
    assert not stale.exists()


def test_a_model_to_import_is_an_upload_or_a_folder_inside_the_roots(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "mine"
    folder.mkdir(parents=True)
    assert import_source("/uploads/model.zip", "ignored", [tmp_path]) == Path("/uploads/model.zip")
    assert import_source(None, str(folder), [tmp_path / "models"]) == folder.resolve()
    with pytest.raises(UnsafePath, match="model folder"):
        import_source(None, str(folder), [tmp_path / "elsewhere"])
    with pytest.raises(InvalidInput, match="Upload a zip or type the path of a model folder"):
        import_source(None, "  ", [tmp_path])


def test_progress_of_admitted_ui_work_tells_the_gate_it_is_moving(studio: webui.Studio) -> None:
    """A long build reports progress, so /health does not take it for a stalled queue."""
    gate = studio.scheduler.gate
    reported: list[tuple[float, str | None]] = []
    with studio.tracker.track("ui_build_dataset", "dataset") as ticket:
        time.sleep(0.3)
        assert gate.stalled_s() >= 0.3
        progress_callback(lambda fraction, desc=None: reported.append((fraction, desc)), ticket)(1.5, "Writing")
        assert gate.stalled_s() < 0.3
    assert reported == [(1.0, "Writing")] and gate.stalled_s() == 0.0
