"""Text-to-speech tab: text, language, voice, profile and sliders in; audio and history out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np

from core.constants import XTTS_OUTPUT_RATE
from core.errors import InvalidInput
from core.fs import resolve_inside
from core.rvc.convert import DEFAULT_RVC_PROFILE, RVC_PROFILES, RVCRequest
from core.tts import TTSRequest, TTSService, history_rows
from core.xtts import languages
from core.xtts.profiles import DEFAULT_PROFILE, PROFILES, RANGES, SynthesisParams
from serve.metrics import RequestTracker
from tabs.common import (
    GPU,
    RVC_PARAM_NAMES,
    StopSwitches,
    progress_callback,
    ranged_number,
    ranged_slider,
    rvc_param_widgets,
    rvc_profile_values,
    ui_errors,
)

HISTORY_SIZE = 20
HISTORY_HEADERS = ["Created", "Voice", "Language", "Text", "Seconds"]


def _slider(name: str, label: str, value: float, step: float, info: str) -> gr.Slider:
    low, high = RANGES[name]
    return ranged_slider(low, high, value=value, step=step, label=label, info=info)


def _counter(text: str | None, limit: int) -> str:
    count = len((text or "").strip())
    flag = " — over the limit" if count > limit else ""
    return f"{count:,} / {limit:,} characters{flag}"


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
    GPU work is admitted through ``tracker``, the queue the HTTP API shares.
    """
    limit = service.max_text_chars
    switches = StopSwitches()
    defaults = PROFILES[DEFAULT_PROFILE]

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
                    choices=service.voices(),
                    value=None,
                    label="Voice",
                    info="Built-in speakers and cloned voices; empty = the model's first speaker.",
                    allow_custom_value=True,
                    filterable=True,
                    elem_id="tts-voice",
                )
                refresh_voices = gr.Button("↻", scale=0, min_width=40)
            profile = gr.Radio(choices=list(PROFILES), value=DEFAULT_PROFILE, label="Quality profile")
            with gr.Accordion("Advanced", open=False):
                temperature = _slider(
                    "temperature", "Temperature", defaults.temperature, 0.05, "Higher is livelier, lower is steadier."
                )
                top_p = _slider("top_p", "Top p", defaults.top_p, 0.05, "Nucleus sampling cut-off.")
                top_k = _slider("top_k", "Top k", defaults.top_k, 1, "Sample among the k likeliest audio tokens.")
                repetition_penalty = _slider(
                    "repetition_penalty",
                    "Repetition penalty",
                    defaults.repetition_penalty,
                    0.5,
                    "Discourages stutters and loops.",
                )
                length_penalty = _slider(
                    "length_penalty", "Length penalty", defaults.length_penalty, 0.1, "Only matters for beam search."
                )
                speed = _slider("speed", "Speed", defaults.speed, 0.05, "Speaking rate.")
                chunk_chars = _slider(
                    "chunk_chars",
                    "Chunk size (characters)",
                    defaults.chunk_chars,
                    10,
                    "Text is spoken in chunks up to this long (capped per language).",
                )
                seed = ranged_number(
                    label="Seed", value=None, precision=0, info="Empty: random. The same seed repeats the same take."
                )
            with gr.Accordion("RVC voice conversion", open=False, visible=service.rvc is not None):
                rvc_enabled = gr.Checkbox(label="Convert the result with RVC", value=False, elem_id="tts-rvc-enabled")
                with gr.Row():
                    rvc_model = gr.Dropdown(
                        label="RVC model", choices=[], value=None, allow_custom_value=True, elem_id="tts-rvc-model"
                    )
                    rvc_profile = gr.Radio(list(RVC_PROFILES), value=DEFAULT_RVC_PROFILE, label="RVC profile")
                rvc_params = rvc_param_widgets("tts-rvc")
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

    sliders = [temperature, top_p, top_k, repetition_penalty, length_penalty, speed, chunk_chars]
    rvc_inputs = [rvc_enabled, rvc_model, rvc_profile, *rvc_params]
    inputs = [text, language, voice, profile, *sliders, *rvc_inputs, seed]

    def request_from(
        text: str, language: str, voice: str | None, profile: str, values: list[float], rvc: list[object],
        seed: float | None = None,
    ) -> TTSRequest:  # fmt: skip
        names = ["temperature", "top_p", "top_k", "repetition_penalty", "length_penalty", "speed", "chunk_chars"]
        enabled, model, rvc_profile_name, *overrides = rvc
        rvc_request = None
        if enabled:
            if not model:
                raise gr.Error("Choose an RVC model, or untick 'Convert the result with RVC'.")
            rvc_request = RVCRequest(
                str(model),
                profile=str(rvc_profile_name or DEFAULT_RVC_PROFILE),
                overrides=dict(zip(RVC_PARAM_NAMES, overrides, strict=True)),
            )
        return TTSRequest(
            text=text,
            language=language,
            voice=voice,
            profile=profile,
            overrides=dict(zip(names, values, strict=True)),
            rvc=rvc_request,
            seed=None if seed is None else int(seed),
        )

    @ui_errors
    def synthesize(
        text: str,
        language: str = "en",
        voice: str | None = None,
        profile: str = DEFAULT_PROFILE,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        length_penalty: float | None = None,
        speed: float | None = None,
        chunk_chars: int | None = None,
        rvc: bool = False,
        rvc_model: str | None = None,
        rvc_profile: str = DEFAULT_RVC_PROFILE,
        rvc_pitch: int | None = None,
        rvc_f0_method: str | None = None,
        rvc_index_rate: float | None = None,
        rvc_filter_radius: int | None = None,
        rvc_resample_sr: int | None = None,
        rvc_rms_mix_rate: float | None = None,
        rvc_protect: float | None = None,
        seed: float | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> str:
        """Speak `text` and return the WAV file (also saved under outputs/ with a JSON sidecar).

        With `rvc` set, the result is converted with `rvc_model`; if that fails the XTTS audio
        comes back with a warning.
        """
        tts_request = request_from(
            text,
            language,
            voice,
            profile,
            [temperature, top_p, top_k, repetition_penalty, length_penalty, speed, chunk_chars],
            [rvc, rvc_model, rvc_profile, rvc_pitch, rvc_f0_method, rvc_index_rate, rvc_filter_radius,
             rvc_resample_sr, rvc_rms_mix_rate, rvc_protect],
            seed,
        )  # fmt: skip
        with tracker.track("ui_synthesize", tts_request.profile) as ticket, switches.armed(request) as should_stop:
            result = service.synthesize(tts_request, progress_callback(progress), should_stop)
            ticket.audio_seconds = float(result.record.meta["duration_s"])
        if result.warning:
            gr.Warning(result.warning)
        chunks = len(result.chunks)
        plural = "s" if chunks != 1 else ""
        gr.Info(
            f"{result.record.meta['duration_s']:.1f} s of audio in {result.seconds:.1f} s ({chunks} chunk{plural})."
        )
        return str(result.record.wav)

    @ui_errors
    def synthesize_stream(
        text: str,
        language: str = "en",
        voice: str | None = None,
        profile: str = DEFAULT_PROFILE,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        length_penalty: float | None = None,
        speed: float | None = None,
        chunk_chars: int | None = None,
        rvc: bool = False,
        rvc_model: str | None = None,
        rvc_profile: str = DEFAULT_RVC_PROFILE,
        rvc_pitch: int | None = None,
        rvc_f0_method: str | None = None,
        rvc_index_rate: float | None = None,
        rvc_filter_radius: int | None = None,
        rvc_resample_sr: int | None = None,
        rvc_rms_mix_rate: float | None = None,
        rvc_protect: float | None = None,
        seed: float | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> Iterator[tuple[object, object]]:
        """Stream audio as it is made; the saved WAV comes last."""
        tts_request = request_from(
            text,
            language,
            voice,
            profile,
            [temperature, top_p, top_k, repetition_penalty, length_penalty, speed, chunk_chars],
            [rvc, rvc_model, rvc_profile, rvc_pitch, rvc_f0_method, rvc_index_rate, rvc_filter_radius,
             rvc_resample_sr, rvc_rms_mix_rate, rvc_protect],
            seed,
        )  # fmt: skip
        with tracker.track("ui_stream", tts_request.profile) as ticket, switches.armed(request) as should_stop:
            for piece in service.stream(tts_request, progress_callback(progress), should_stop):
                if piece.audio is not None:
                    ticket.audio_seconds += len(piece.audio) / XTTS_OUTPUT_RATE
                    pcm = (np.clip(piece.audio, -1.0, 1.0) * 32767).astype(np.int16)
                    yield (XTTS_OUTPUT_RATE, pcm), gr.skip()
                elif piece.record is not None:
                    if piece.warning:
                        gr.Warning(piece.warning)
                    yield gr.skip(), str(piece.record.wav)

    def apply_profile(name: str) -> list[float]:
        params: SynthesisParams = PROFILES.get(name, defaults)
        return [
            params.temperature,
            params.top_p,
            params.top_k,
            params.repetition_penalty,
            params.length_penalty,
            params.speed,
            params.chunk_chars,
        ]

    def list_history() -> tuple[list[list[object]], list[str]]:
        records = service.store.recent(HISTORY_SIZE)
        return history_rows(records), [str(r.wav) for r in records]

    @ui_errors
    def pick_history(paths: list[str], evt: gr.SelectData) -> tuple[str, str]:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not isinstance(row, int) or not 0 <= row < len(paths) or not Path(paths[row]).is_file():
            raise InvalidInput("That output is no longer on disk; refresh the history.")
        path = str(resolve_inside(paths[row], [service.store.root], what="output", kind="file"))
        return path, path

    @ui_errors
    def load(progress: gr.Progress = gr.Progress()) -> tuple[str, gr.Dropdown]:
        service.engine.ensure_loaded(progress_callback(progress))
        return refresh()

    def refresh(current: str | None = None) -> tuple[str, gr.Dropdown]:
        choices = service.voices()
        keep = current if current in choices else service.engine.default_speaker()
        return service.engine.status().message, gr.Dropdown(choices=choices, value=keep)

    def refresh_rvc(current: str | None) -> gr.Dropdown:
        names = service.rvc.library.names() if service.rvc is not None else []
        return gr.Dropdown(choices=names, value=current if current in names else (names[0] if names else None))

    rvc_profile.change(rvc_profile_values, rvc_profile, rvc_params, api_visibility="private", queue=False)
    demo.load(refresh_rvc, rvc_model, rvc_model, api_visibility="private")
    if rvc_changed is not None:
        rvc_changed.change(refresh_rvc, rvc_model, rvc_model, api_visibility="private")
    text.change(lambda t: _counter(t, limit), text, counter, api_visibility="private", queue=False)
    profile.change(apply_profile, profile, sliders, api_visibility="private", queue=False)
    refresh_voices.click(refresh, voice, [status, voice], api_visibility="private")

    def model_status() -> dict[str, object]:
        """Whether XTTS is loaded, from where, on which device, or what is missing."""
        state = service.engine.status()
        return {
            "loaded": state.loaded,
            "model_dir": str(state.model_dir) if state.model_dir else None,
            "device": state.device,
            "model_id": state.model_id,
            "message": state.message,
        }

    library_changed.change(refresh, voice, [status, voice], api_visibility="private")
    gr.api(model_status, api_name="model_status")
    generating = generate.click(
        synthesize, inputs, audio, api_name="synthesize", concurrency_id=GPU, concurrency_limit=1
    )
    generating.then(list_history, None, [history, history_paths], api_visibility="private")
    streaming = stream.click(
        synthesize_stream, inputs, [live, audio], api_name="synthesize_stream", concurrency_id=GPU, concurrency_limit=1
    )
    streaming.then(list_history, None, [history, history_paths], api_visibility="private")
    stop.click(switches.stop, None, None, cancels=[generating, streaming], api_name="stop_tts", queue=False)
    load_model.click(load, None, [status, voice], api_name="load_model", concurrency_id=GPU, concurrency_limit=1)
    refresh_history.click(list_history, None, [history, history_paths], api_name="tts_history")
    history.select(pick_history, history_paths, [replay, download], api_visibility="private")

    demo.load(refresh, voice, [status, voice], api_visibility="private")
    demo.load(list_history, None, [history, history_paths], api_visibility="private")
