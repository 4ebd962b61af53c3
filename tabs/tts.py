"""Text-to-speech tab: text, language, voice, profile and sliders in; audio and history out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from core.constants import XTTS_OUTPUT_RATE
from core.errors import InvalidInput
from core.fs import resolve_inside
from core.rvc.convert import DEFAULT_RVC_PROFILE, RVC_PROFILES, RVCRequest
from core.tts import TTSRequest, TTSService, history_rows
from core.xtts import languages
from core.xtts.profiles import DEFAULT_PROFILE, PROFILES, RANGES
from serve.metrics import RequestTracker
from tabs.common import (
    GPU,
    RVC_PARAM_NAMES,
    StopSwitches,
    form_handler,
    form_inputs,
    progress_callback,
    ranged_number,
    ranged_slider,
    rvc_param_widgets,
    rvc_profile_values,
    ui_errors,
)

HISTORY_SIZE = 20
HISTORY_HEADERS = ["Created", "Voice", "Language", "Text", "Seconds"]
SLIDERS = ("temperature", "top_p", "top_k", "repetition_penalty", "length_penalty", "speed", "chunk_chars")


@dataclass(frozen=True)
class SpeechForm:
    """What Generate and Stream send: the parameters of the ``synthesize`` and ``synthesize_stream`` endpoints."""

    text: str
    language: str = "en"
    voice: str | None = None
    profile: str = DEFAULT_PROFILE
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    length_penalty: float | None = None
    speed: float | None = None
    chunk_chars: int | None = None
    rvc: bool = False
    rvc_model: str | None = None
    rvc_profile: str = DEFAULT_RVC_PROFILE
    rvc_pitch: int | None = None
    rvc_f0_method: str | None = None
    rvc_index_rate: float | None = None
    rvc_filter_radius: int | None = None
    rvc_resample_sr: int | None = None
    rvc_rms_mix_rate: float | None = None
    rvc_protect: float | None = None
    seed: float | None = None

    def request(self) -> TTSRequest:
        rvc_request = None
        if self.rvc:
            if not self.rvc_model:
                raise InvalidInput("Choose an RVC model, or untick 'Convert the result with RVC'.")
            overrides = {name: getattr(self, f"rvc_{name}") for name in RVC_PARAM_NAMES}
            rvc_request = RVCRequest(
                str(self.rvc_model), profile=str(self.rvc_profile or DEFAULT_RVC_PROFILE), overrides=overrides
            )
        return TTSRequest(
            text=self.text,
            language=self.language,
            voice=self.voice,
            profile=self.profile,
            overrides={name: getattr(self, name) for name in SLIDERS},
            rvc=rvc_request,
            seed=None if self.seed is None else int(self.seed),
        )


def _counter(text: str | None, limit: int) -> str:
    count = len((text or "").strip())
    flag = " — over the limit" if count > limit else ""
    return f"{count:,} / {limit:,} characters{flag}"


def apply_profile(name: str) -> list[float]:
    """The slider values of a quality profile, in :data:`SLIDERS` order."""
    params = PROFILES.get(name, PROFILES[DEFAULT_PROFILE])
    return [getattr(params, field) for field in SLIDERS]


class SpeechHandlers:
    """The tab's events; GPU work is admitted through ``tracker``, the queue the HTTP API shares."""

    def __init__(self, service: TTSService, tracker: RequestTracker) -> None:
        self.service, self.tracker = service, tracker
        self.switches = StopSwitches()

    def synthesize(
        self, form: SpeechForm, request: gr.Request | None = None, progress: gr.Progress = gr.Progress()
    ) -> str:
        """Speak `text` and return the WAV file (also saved under outputs/ with a JSON sidecar).

        With `rvc` set, the result is converted with `rvc_model`; if that fails the XTTS audio
        comes back with a warning.
        """
        tts_request = form.request()
        with (
            self.tracker.track("ui_synthesize", tts_request.profile) as ticket,
            self.switches.armed(request) as should_stop,
        ):
            result = self.service.synthesize(tts_request, progress_callback(progress, ticket), should_stop)
            ticket.audio_seconds = float(result.record.meta["duration_s"])
        if result.warning:
            gr.Warning(result.warning)
        chunks = len(result.chunks)
        plural = "s" if chunks != 1 else ""
        gr.Info(
            f"{result.record.meta['duration_s']:.1f} s of audio in {result.seconds:.1f} s ({chunks} chunk{plural})."
        )
        return str(result.record.wav)

    def synthesize_stream(
        self, form: SpeechForm, request: gr.Request | None = None, progress: gr.Progress = gr.Progress()
    ) -> Iterator[tuple[object, object]]:
        """Stream audio as it is made; the saved WAV comes last."""
        tts_request = form.request()
        with (
            self.tracker.track("ui_stream", tts_request.profile) as ticket,
            self.switches.armed(request) as should_stop,
        ):
            for piece in self.service.stream(tts_request, progress_callback(progress, ticket), should_stop):
                if piece.audio is not None:
                    ticket.audio_seconds += len(piece.audio) / XTTS_OUTPUT_RATE
                    pcm = (np.clip(piece.audio, -1.0, 1.0) * 32767).astype(np.int16)
                    yield (XTTS_OUTPUT_RATE, pcm), gr.skip()
                elif piece.record is not None:
                    if piece.warning:
                        gr.Warning(piece.warning)
                    yield gr.skip(), str(piece.record.wav)

    def list_history(self) -> tuple[list[list[object]], list[str]]:
        records = self.service.store.recent(HISTORY_SIZE)
        return history_rows(records), [str(r.wav) for r in records]

    def pick_history(self, paths: list[str], evt: gr.SelectData) -> tuple[str, str]:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not isinstance(row, int) or not 0 <= row < len(paths) or not Path(paths[row]).is_file():
            raise InvalidInput("That output is no longer on disk; refresh the history.")
        path = str(resolve_inside(paths[row], [self.service.store.root], what="output", kind="file"))
        return path, path

    def load(self, progress: gr.Progress = gr.Progress()) -> tuple[str, gr.Dropdown]:
        with self.tracker.track("ui_load_model", "model") as ticket:
            self.service.engine.ensure_loaded(progress_callback(progress, ticket))
        return self.refresh()

    def refresh(self, current: str | None = None) -> tuple[str, gr.Dropdown]:
        choices = self.service.voices()
        keep = current if current in choices else self.service.engine.default_speaker()
        return self.service.engine.status().message, gr.Dropdown(choices=choices, value=keep)

    def refresh_rvc(self, current: str | None) -> gr.Dropdown:
        names = self.service.rvc.library.names() if self.service.rvc is not None else []
        return gr.Dropdown(choices=names, value=current if current in names else (names[0] if names else None))

    def model_status(self) -> dict[str, object]:
        """Whether XTTS is loaded, from where, on which device, or what is missing."""
        state = self.service.engine.status()
        return {
            "loaded": state.loaded,
            "model_dir": str(state.model_dir) if state.model_dir else None,
            "device": state.device,
            "model_id": state.model_id,
            "message": state.message,
        }


def _slider(name: str, label: str, step: float, info: str) -> gr.Slider:
    low, high = RANGES[name]
    value = getattr(PROFILES[DEFAULT_PROFILE], name)
    return ranged_slider(low, high, value=value, step=step, label=label, info=info)


def _advanced() -> dict[str, gr.components.Component]:
    """The sampling sliders and the seed, by :class:`SpeechForm` field."""
    return {
        "temperature": _slider("temperature", "Temperature", 0.05, "Higher is livelier, lower is steadier."),
        "top_p": _slider("top_p", "Top p", 0.05, "Nucleus sampling cut-off."),
        "top_k": _slider("top_k", "Top k", 1, "Sample among the k likeliest audio tokens."),
        "repetition_penalty": _slider(
            "repetition_penalty", "Repetition penalty", 0.5, "Discourages stutters and loops."
        ),
        "length_penalty": _slider("length_penalty", "Length penalty", 0.1, "Only matters for beam search."),
        "speed": _slider("speed", "Speed", 0.05, "Speaking rate."),
        "chunk_chars": _slider(
            "chunk_chars",
            "Chunk size (characters)",
            10,
            "Text is spoken in chunks up to this long (capped per language).",
        ),
        "seed": ranged_number(
            label="Seed", value=None, precision=0, info="Empty: random. The same seed repeats the same take."
        ),
    }


def _rvc_controls() -> dict[str, gr.components.Component]:
    """The RVC post-processing widgets, by :class:`SpeechForm` field."""
    enabled = gr.Checkbox(label="Convert the result with RVC", value=False, elem_id="tts-rvc-enabled")
    with gr.Row():
        model = gr.Dropdown(label="RVC model", choices=[], value=None, allow_custom_value=True, elem_id="tts-rvc-model")
        profile = gr.Radio(list(RVC_PROFILES), value=DEFAULT_RVC_PROFILE, label="RVC profile")
    params = rvc_param_widgets("tts-rvc")
    return {
        "rvc": enabled,
        "rvc_model": model,
        "rvc_profile": profile,
        **{f"rvc_{name}": widget for name, widget in zip(RVC_PARAM_NAMES, params, strict=True)},
    }


def build(
    demo: gr.Blocks,
    service: TTSService,
    library_changed: gr.State,
    tracker: RequestTracker,
    rvc_changed: gr.State | None = None,
) -> None:
    """Build the tab inside ``demo``'s current context and wire its events.

    ``library_changed`` changes whenever the voice library does; the voice list follows it,
    and the RVC model list follows ``rvc_changed``.
    """
    limit = service.max_text_chars
    handlers = SpeechHandlers(service, tracker)
    status = gr.Markdown(service.engine.status().message)
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label="Text", lines=6, placeholder="Type or paste what the voice should say.")
            counter = gr.Markdown(_counter("", limit))
            with gr.Row():
                language = gr.Dropdown(
                    choices=languages.choices(), value="en", label="Language", filterable=True, allow_custom_value=True
                )
                voice = gr.Dropdown(
                    choices=service.voices(), value=None, label="Voice",
                    info="Built-in speakers and cloned voices; empty = the model's first speaker.",
                    allow_custom_value=True, filterable=True, elem_id="tts-voice",
                )  # fmt: skip
                refresh_voices = gr.Button("↻", scale=0, min_width=40)
            profile = gr.Radio(choices=list(PROFILES), value=DEFAULT_PROFILE, label="Quality profile")
            with gr.Accordion("Advanced", open=False):
                advanced = _advanced()
            with gr.Accordion("RVC voice conversion", open=False, visible=service.rvc is not None):
                rvc = _rvc_controls()
            with gr.Row():
                generate = gr.Button("Generate", variant="primary")
                stream = gr.Button("Stream", elem_id="tts-stream")
                stop = gr.Button("Stop", variant="stop")
                load_model = gr.Button("Download / load model", variant="secondary")
        with gr.Column(scale=2):
            audio = gr.Audio(label="Result", type="filepath", interactive=False, elem_id="tts-result")
            live = gr.Audio(label="Live stream", streaming=True, autoplay=True, interactive=False, elem_id="tts-live")
    with gr.Accordion("History", open=True):
        with gr.Row():
            with gr.Column(scale=3):
                history = gr.Dataframe(
                    headers=HISTORY_HEADERS, interactive=False, wrap=True, elem_id="tts-history", max_height=360
                )
                refresh_history = gr.Button("Refresh history", size="sm")
            with gr.Column(scale=2):
                replay = gr.Audio(label="Selected output", type="filepath", interactive=False, elem_id="tts-replay")
                download = gr.File(label="Download", interactive=False)
        history_paths = gr.State([])

    sliders = [advanced[name] for name in SLIDERS]
    rvc_params = [rvc[f"rvc_{name}"] for name in RVC_PARAM_NAMES]
    inputs = form_inputs(SpeechForm, {"text": text, "language": language, "voice": voice, "profile": profile,
                                      **advanced, **rvc})  # fmt: skip
    private = {"api_visibility": "private"}
    gpu = {"concurrency_id": GPU, "concurrency_limit": 1}
    history_views = [history, history_paths]
    # one function object per handler, so its events share one queue group as before
    refresh, list_history, refresh_rvc = handlers.refresh, handlers.list_history, handlers.refresh_rvc

    rvc["rvc_profile"].change(rvc_profile_values, rvc["rvc_profile"], rvc_params, queue=False, **private)
    demo.load(refresh_rvc, rvc["rvc_model"], rvc["rvc_model"], **private)
    if rvc_changed is not None:
        rvc_changed.change(refresh_rvc, rvc["rvc_model"], rvc["rvc_model"], **private)
    text.change(lambda t: _counter(t, limit), text, counter, queue=False, **private)
    profile.change(apply_profile, profile, sliders, queue=False, **private)
    refresh_voices.click(refresh, voice, [status, voice], **private)
    library_changed.change(refresh, voice, [status, voice], **private)
    gr.api(handlers.model_status, api_name="model_status")
    synthesize = ui_errors(form_handler(SpeechForm, handlers.synthesize))
    generating = generate.click(synthesize, inputs, audio, api_name="synthesize", **gpu)
    generating.then(list_history, None, history_views, **private)
    synthesize_stream = ui_errors(form_handler(SpeechForm, handlers.synthesize_stream))
    streaming = stream.click(synthesize_stream, inputs, [live, audio], api_name="synthesize_stream", **gpu)
    streaming.then(list_history, None, history_views, **private)
    stop.click(handlers.switches.stop, None, None, cancels=[generating, streaming], api_name="stop_tts", queue=False)
    load_model.click(ui_errors(handlers.load), None, [status, voice], api_name="load_model", **gpu)
    refresh_history.click(list_history, None, history_views, api_name="tts_history")
    history.select(ui_errors(handlers.pick_history), history_paths, [replay, download], **private)
    demo.load(refresh, voice, [status, voice], **private)
    demo.load(list_history, None, history_views, **private)
