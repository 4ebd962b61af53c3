"""Voice conversion tab: convert any audio with an RVC model, and manage the RVC model library."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from core.errors import InvalidInput
from core.fs import resolve_inside
from core.rvc.convert import DEFAULT_RVC_PROFILE, RVC_PROFILES, RVCRequest, RVCService
from core.tts import TTSService
from serve.metrics import RequestTracker
from tabs.common import (
    GPU,
    RVC_PARAM_NAMES,
    form_handler,
    form_inputs,
    progress_callback,
    rvc_param_widgets,
    rvc_profile_values,
    ui_errors,
)

MODEL_HEADERS = ["Name", "Version", "Sample rate", "f0", "Index", "Size (MB)"]
HISTORY_SIZE = 30


def _rows(service: RVCService) -> list[list[object]]:
    return [
        [m.name, m.version, m.sample_rate, "yes" if m.f0 else "no", m.index_file or "—", round(m.size_bytes / 1e6, 2)]
        for m in service.library.list()
    ]


def _refused_note(service: RVCService) -> str:
    refused = service.library.refused()
    if not refused:
        return ""
    lines = "\n".join(f"- `{name}`: {why}" for name, why in refused.items())
    return f"**Files in {service.library.root} that are not usable RVC models:**\n{lines}"


@dataclass(frozen=True)
class ConversionForm:
    """What Convert sends: the parameters of the ``convert_voice`` endpoint."""

    audio: str | None
    model: str | None
    profile: str = DEFAULT_RVC_PROFILE
    pitch: int | None = None
    f0_method: str | None = None
    index_rate: float | None = None
    filter_radius: int | None = None
    resample_sr: int | None = None
    rms_mix_rate: float | None = None
    protect: float | None = None

    def request(self) -> RVCRequest:
        if not self.model:
            raise InvalidInput("Choose an RVC model (upload one below if the list is empty).")
        overrides = {name: getattr(self, name) for name in RVC_PARAM_NAMES}
        return RVCRequest(self.model, profile=self.profile, overrides=overrides)


class RVCHandlers:
    """The tab's events; a conversion (GPU work) is admitted through ``tracker``."""

    def __init__(self, service: RVCService, tts: TTSService, tracker: RequestTracker) -> None:
        self.service, self.tts, self.tracker = service, tts, tracker

    def convert_voice(self, form: ConversionForm, progress: gr.Progress = gr.Progress()) -> tuple[str | None, str]:
        """Convert `audio` into the voice of RVC `model`; returns the original and the converted WAV (saved in outputs/rvc)."""
        request = form.request()
        with self.tracker.track("ui_convert_voice", "rvc") as ticket:
            conversion, record = self.service.convert_file(
                Path(form.audio or ""), request, progress_callback(progress, ticket)
            )
            ticket.audio_seconds = float(record.meta["duration_s"])
        gr.Info(f"{record.meta['duration_s']:.1f} s converted in {conversion.seconds:.1f} s.")
        return form.audio, str(record.wav)

    def describe(self, name: str | None) -> str:
        if not name:
            return ""
        info = next((m for m in self.service.library.list() if m.name == name), None)
        return f"**{info.name}**: {info.describe()}" if info else ""

    def refresh(self, current: str | None = None) -> tuple[list[list[object]], gr.Dropdown, str]:
        names = self.service.library.names()
        keep = current if current in names else (names[0] if names else None)
        return _rows(self.service), gr.Dropdown(choices=names, value=keep), _refused_note(self.service)

    def list_rvc_models(self) -> list[dict[str, Any]]:
        """Every RVC model in the library with its version, sample rate, f0 flag and index."""
        return [m.to_dict() for m in self.service.library.list()]

    def upload_rvc_model(
        self, pth: str | None, index: str | None = None, name: str | None = None, changed: int = 0
    ) -> tuple[list[list[object]], gr.Dropdown, str, int]:
        """Validate a .pth (and optional .index) without running its pickle and add it to the library."""
        if not pth:
            raise InvalidInput("Choose a .pth RVC model file to upload.")
        info = self.service.library.add(Path(pth), Path(index) if index else None, name=name or Path(pth).stem)
        gr.Info(f"Added {info.name}: {info.describe()}.")
        return (*self.refresh(info.name), changed + 1)

    def rename_rvc_model(
        self, name: str, new_name: str, changed: int = 0
    ) -> tuple[list[list[object]], gr.Dropdown, str, int]:
        """Rename an RVC model (its .pth, .index and record move together)."""
        info = self.service.library.rename(name, new_name)
        return (*self.refresh(info.name), changed + 1)

    def delete_rvc_model(
        self, name: str, confirm: bool = False, changed: int = 0
    ) -> tuple[list[list[object]], gr.Dropdown, str, int]:
        """Delete an RVC model and its index; needs confirm=True."""
        if not confirm:
            raise InvalidInput("Tick the confirmation box to delete the model.")
        self.service.library.delete(name)
        return (*self.refresh(None), changed + 1)

    def tts_history(self) -> gr.Dropdown:
        choices = []
        for record in self.tts.store.recent(HISTORY_SIZE):
            text = str(record.meta.get("text", ""))
            label = f"{str(record.meta.get('created', ''))[:19].replace('T', ' ')} · {record.meta.get('voice', '')} · "
            choices.append((label + (text if len(text) <= 50 else text[:47] + "..."), str(record.wav)))
        return gr.Dropdown(choices=choices, value=None)

    def pick_history(self, path: str | None) -> str | None:
        """A TTS output chosen in the dropdown; the value comes from the browser, so it must lie in the TTS outputs."""
        if not path:
            return gr.skip()
        return str(resolve_inside(path, [self.tts.store.root], what="TTS output", kind="file"))


def build(
    demo: gr.Blocks, service: RVCService, tts: TTSService, rvc_changed: gr.State, tracker: RequestTracker
) -> None:
    """Build the tab; ``rvc_changed`` is bumped whenever the model library changes."""
    handlers = RVCHandlers(service, tts, tracker)
    with gr.Row():
        with gr.Column(scale=3):
            source = gr.Audio(
                label="Input audio", sources=["upload", "microphone"], type="filepath", elem_id="rvc-input"
            )
            with gr.Row():
                history = gr.Dropdown(
                    label="…or pick a TTS output", choices=[], value=None, elem_id="rvc-history", scale=4
                )
                refresh_history = gr.Button("↻", scale=0, min_width=40)
            with gr.Row():
                model = gr.Dropdown(
                    label="RVC model", choices=[], value=None, allow_custom_value=True, elem_id="rvc-model", scale=4
                )
                refresh_models = gr.Button("↻", scale=0, min_width=40)
            profile = gr.Radio(list(RVC_PROFILES), value=DEFAULT_RVC_PROFILE, label="Profile", elem_id="rvc-profile")
            with gr.Accordion("Parameters", open=True):
                params = rvc_param_widgets("rvc")
            convert = gr.Button("Convert", variant="primary", elem_id="rvc-convert")
        with gr.Column(scale=2):
            original = gr.Audio(label="Original", type="filepath", interactive=False, elem_id="rvc-original")
            converted = gr.Audio(label="Converted", type="filepath", interactive=False, elem_id="rvc-result")
            summary = gr.Markdown(elem_id="rvc-summary")

    with gr.Accordion("RVC model library", open=True):
        with gr.Row():
            with gr.Column(scale=3):
                table = gr.Dataframe(headers=MODEL_HEADERS, interactive=False, elem_id="rvc-models", max_height=300)
                refused = gr.Markdown()
            with gr.Column(scale=2):
                pth = gr.File(label="Model (.pth)", file_types=[".pth"], type="filepath", elem_id="rvc-upload-pth")
                index = gr.File(
                    label="Index (.index, optional)", file_types=[".index"], type="filepath", elem_id="rvc-upload-index"
                )
                new_name = gr.Textbox(label="Name (default: the file name)", elem_id="rvc-upload-name")
                upload = gr.Button("Add model", variant="primary")
                with gr.Row():
                    rename_to = gr.Textbox(label="Rename selected model to", scale=3)
                    rename = gr.Button("Rename", scale=1)
                with gr.Row():
                    confirm = gr.Checkbox(label="Yes, delete the selected model", value=False, scale=3)
                    delete = gr.Button("Delete", variant="stop", scale=1)
        gr.Markdown(f"Models can also be copied into `{service.library.root}` (a `.pth`, optionally with "
                    "`<name>.index`); they appear after a refresh.")  # fmt: skip

    library_outputs = [table, model, refused]
    changed = [*library_outputs, rvc_changed]
    private = {"api_visibility": "private"}
    refresh, tts_history = handlers.refresh, handlers.tts_history  # one function object each: one queue group each
    inputs = form_inputs(ConversionForm, {"audio": source, "model": model, "profile": profile,
                                          **dict(zip(RVC_PARAM_NAMES, params, strict=True))})  # fmt: skip
    convert_voice = ui_errors(form_handler(ConversionForm, handlers.convert_voice))
    convert.click(
        convert_voice, inputs, [original, converted], api_name="convert_voice", concurrency_id=GPU, concurrency_limit=1
    )
    profile.change(rvc_profile_values, profile, params, queue=False, **private)
    model.change(handlers.describe, model, summary, queue=False, **private)
    refresh_models.click(refresh, model, library_outputs, **private)
    gr.api(handlers.list_rvc_models, api_name="list_rvc_models")
    upload.click(ui_errors(handlers.upload_rvc_model), [pth, index, new_name, rvc_changed], changed,
                 api_name="upload_rvc_model")  # fmt: skip
    rename.click(ui_errors(handlers.rename_rvc_model), [model, rename_to, rvc_changed], changed,
                 api_name="rename_rvc_model")  # fmt: skip
    delete.click(ui_errors(handlers.delete_rvc_model), [model, confirm, rvc_changed], changed,
                 api_name="delete_rvc_model")  # fmt: skip
    refresh_history.click(tts_history, None, history, **private)
    history.change(ui_errors(handlers.pick_history), history, source, queue=False, **private)
    demo.load(refresh, model, library_outputs, **private)
    demo.load(tts_history, None, history, **private)
