"""Dataset tab: links, uploads or a server folder in; a reviewed XTTS training set out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from core.fs import resolve_inside
from core.xtts import languages
from serve.metrics import RequestTracker
from tabs.common import GPU, StopSwitches, form_handler, form_inputs, progress_callback, ranged_slider, ui_errors
from train.clean_audio import Mode
from train.dataset import PLOTS, BuildOptions, DatasetBuilder
from train.dataset_review import SHOW, TABLE_COLUMNS, load_table, report_markdown, save_table
from train.sources import parse_urls, uploaded
from train.transcribe import WHISPER_SIZES


@dataclass(frozen=True)
class BuildForm:
    """What Build dataset sends: the parameters of the ``build_dataset`` endpoint."""

    name: str
    urls: str = ""
    files: list[str] | None = None
    folder: str = ""
    cookies: str | None = None
    speaker: str = ""
    language: str = "auto"
    whisper_model: str = ""  # empty: the studio's --whisper-model
    eval_fraction: float = 0.1
    min_s: float = 2.0
    max_s: float = 12.0
    min_snr_db: float = 15.0
    min_confidence: float = 0.5
    separation: str = "auto"
    denoise: str = "auto"
    keep_speakers: int = 1
    reference: str | None = None  # an uploaded clip of the speaker to keep
    whisper_batch_size: int = 1
    whisper_beam_size: int = 0


class DatasetHandlers:
    """The tab's events; a build (Whisper on the GPU) is admitted through ``tracker``.

    A server folder or Whisper model folder typed into the form must lie inside ``source_roots``.
    """

    def __init__(
        self, datasets: DatasetBuilder, tracker: RequestTracker, default_whisper: str, source_roots: Sequence[Path]
    ) -> None:
        self.datasets, self.tracker = datasets, tracker
        self.default_whisper, self.source_roots = default_whisper, tuple(source_roots)
        self.switches = StopSwitches()

    def options(self, form: BuildForm) -> BuildOptions:
        whisper_model = form.whisper_model or self.default_whisper
        if whisper_model not in (*WHISPER_SIZES, self.default_whisper):
            whisper_model = str(
                resolve_inside(whisper_model, self.source_roots, what="Whisper model folder", kind="dir")
            )
        return BuildOptions(
            name=form.name, speaker=form.speaker, language=None if form.language in (None, "", "auto") else form.language,
            whisper_model=whisper_model, eval_fraction=form.eval_fraction, min_s=form.min_s, max_s=form.max_s,
            min_snr_db=form.min_snr_db, min_confidence=form.min_confidence, separation=form.separation or "auto",
            denoise=form.denoise or "auto", keep_speakers=int(form.keep_speakers),
            reference=str(uploaded([form.reference])[0]) if form.reference else "",
            whisper_batch_size=int(form.whisper_batch_size), whisper_beam_size=int(form.whisper_beam_size),
        )  # fmt: skip

    def build_dataset(
        self, form: BuildForm, request: gr.Request | None = None, progress: gr.Progress = gr.Progress()
    ) -> tuple[str, str]:
        """Build (or resume) a dataset; returns its name and a summary."""
        options = self.options(form)
        folder = (
            resolve_inside(form.folder, self.source_roots, what="source folder", kind="dir")
            if (form.folder or "").strip()
            else None
        )
        with self.tracker.track("ui_build_dataset", "dataset") as ticket, self.switches.armed(request) as should_stop:
            report = self.datasets.build(
                options, urls=parse_urls(form.urls), files=uploaded(form.files), folder=folder,
                cookies=Path(form.cookies) if form.cookies else None, progress=progress_callback(progress, ticket),
                should_stop=should_stop,
            )  # fmt: skip
        gr.Info(report.summary().splitlines()[0])
        return report.dataset_dir.name, report.summary()

    def show(self, dataset: str | None, show: str = "all") -> tuple[Any, ...]:
        """The report, its plots and the clip table (``show``: all, kept or removed clips)."""
        if not dataset:
            return "", *(None for _ in PLOTS), pd.DataFrame(columns=TABLE_COLUMNS)
        path = self.datasets.existing(dataset)
        plots = [str(path / "plots" / name) if (path / "plots" / name).is_file() else None for name, *_ in PLOTS]
        return report_markdown(path), *plots, pd.DataFrame(load_table(path, show or "all"), columns=TABLE_COLUMNS)

    def list_datasets(self) -> list[str]:
        """Names of the datasets under outputs/datasets."""
        return self.datasets.list()

    def save_dataset_table(self, dataset: str, rows: pd.DataFrame) -> str:
        """Save the reviewed clip table (text fixes, dropped rows); the CSVs are rewritten atomically."""
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows["data"], columns=rows["headers"])
        train, evaluation = save_table(self.datasets.existing(dataset), frame.to_dict("records"))
        gr.Info(f"Saved: {train} train and {evaluation} eval clips.")
        return dataset

    def play(self, dataset: str, rows: pd.DataFrame, evt: gr.SelectData) -> str | None:
        """The selected row's clip; the cell comes from the browser, so it must name a file of this dataset."""
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not dataset or not isinstance(row, int) or not 0 <= row < len(rows):
            return None
        folder = self.datasets.existing(dataset)
        return str(resolve_inside(str(rows.iloc[row]["audio_file"]), [folder], what="clip", kind="file"))

    def refresh_list(self, current: str | None = None) -> gr.Dropdown:
        names = self.datasets.list()
        return gr.Dropdown(choices=names, value=current if current in names else None)

    def choices(self) -> gr.Dropdown:
        """Choices only: a page still loading must not clear a dataset the person already picked."""
        return gr.Dropdown(choices=self.datasets.list())


def _filters() -> dict[str, gr.Slider]:
    """The clip filters, by :class:`BuildForm` field."""
    with gr.Row():
        split = {
            "eval_fraction": ranged_slider(0.0, 0.3, value=0.1, step=0.05, label="Eval fraction"),
            "min_s": ranged_slider(0.5, 6, value=2.0, step=0.5, label="Min clip seconds"),
            "max_s": ranged_slider(6, 30, value=12.0, step=1, label="Max clip seconds"),
        }
    with gr.Row():
        quality = {
            "min_snr_db": ranged_slider(0, 40, value=15, step=1, label="Min SNR (dB)"),
            "min_confidence": ranged_slider(0.0, 1.0, value=0.5, step=0.05, label="Min word confidence"),
        }
    return {**split, **quality}


def _cleaning() -> dict[str, Any]:
    """The cleaning and transcription settings, by :class:`BuildForm` field."""
    modes = [m.value for m in Mode]
    with gr.Row():
        cleaning = {
            "separation": gr.Radio(modes, value="auto", label="Separate the voice from music (auto: when a music bed is detected)"),
            "denoise": gr.Radio(modes, value="auto", label="Remove noise (auto: for a noisy source)"),
        }  # fmt: skip
    with gr.Row():
        speakers = {
            "keep_speakers": ranged_slider(0, 8, value=1, step=1, label="Voices to keep (0: all; 2+: one speaker name each)"),
            "reference": gr.File(label="Reference clip of the speaker to keep (optional)", type="filepath", height=90,
                                 file_types=["audio", "video"]),
        }  # fmt: skip
    with gr.Row():
        whisper = {
            "whisper_batch_size": ranged_slider(0, 64, value=1, step=1, label="Whisper batch size (0: sequential)"),
            "whisper_beam_size": ranged_slider(0, 10, value=0, step=1, label="Whisper beam size (0: 1 on CPU, 5 on GPU)"),
        }  # fmt: skip
    return {**cleaning, **speakers, **whisper}


def build(
    demo: gr.Blocks, datasets: DatasetBuilder, tracker: RequestTracker, default_whisper: str = "small", *,
    source_roots: Sequence[Path] = (),
) -> None:  # fmt: skip
    """Build the tab inside ``demo``'s current context and wire its events.

    A server folder typed as a source must lie inside ``source_roots``.
    """
    handlers = DatasetHandlers(datasets, tracker, default_whisper, source_roots)
    gr.Markdown(
        "Turn recordings into a training set for XTTS: audio is extracted, transcribed with Whisper (word "
        "timestamps), cut at sentence ends and pauses into 2-12 s clips, filtered, and written in Coqui's format."
    )
    with gr.Row():
        with gr.Column():
            name = gr.Textbox(label="Dataset name", max_lines=1, elem_id="dataset-name")
            urls = gr.Textbox(
                label="Links (one per line: videos, playlists, anything yt-dlp supports)", lines=3, value=""
            )
            files = gr.File(
                label="Audio or video files", file_count="multiple", type="filepath", elem_id="dataset-files"
            )
            folder = gr.Textbox(label="…or a folder on the server", max_lines=1, value="")
            cookies = gr.File(label="Cookies file (cookies.txt, for YouTube's bot check)", type="filepath", height=90)
        with gr.Column():
            speaker = gr.Textbox(label="Speaker name (default: the dataset name)", max_lines=1, value="")
            language = gr.Dropdown(
                choices=[("Detect", "auto"), *languages.choices()], value="auto", label="Language",
                allow_custom_value=True,
            )  # fmt: skip
            whisper = gr.Dropdown(
                choices=list(WHISPER_SIZES), value=default_whisper, label="Whisper model (or a local model folder)",
                allow_custom_value=True,
            )  # fmt: skip
            filters = _filters()
            with gr.Accordion("Cleaning and transcription", open=False):
                cleaning = _cleaning()
            with gr.Row():
                start = gr.Button("Build dataset", variant="primary")
                stop = gr.Button("Stop", variant="stop")
    with gr.Row():
        picked = gr.Dropdown(label="Dataset", choices=[], allow_custom_value=True, elem_id="dataset-picked")
        refresh = gr.Button("Refresh", size="sm", scale=0)
    summary = gr.Markdown(elem_id="dataset-summary")
    with gr.Row():
        plot_images = [gr.Image(label=label, type="filepath", interactive=False, height=260) for _, _, label in PLOTS]
    show = gr.Radio(list(SHOW), value="all", label="Clips to show (removed: listen to what was taken out)")
    table = gr.Dataframe(
        headers=TABLE_COLUMNS, datatype=["bool", "str", "str", "str", "str", "number", "str", "number"],
        interactive=True, elem_id="dataset-table", max_height=420,
        label="Clips (edit text, untick keep to drop, tick a removed clip to restore it, then save)",
    )  # fmt: skip
    with gr.Row():
        clip_player = gr.Audio(label="Selected clip", type="filepath", interactive=False, elem_id="dataset-clip")
        save = gr.Button("Save edits")

    view = [summary, *plot_images, table]
    private = {"api_visibility": "private"}
    inputs = form_inputs(BuildForm, {"name": name, "urls": urls, "files": files, "folder": folder, "cookies": cookies,
                                     "speaker": speaker, "language": language, "whisper_model": whisper, **filters,
                                     **cleaning})  # fmt: skip
    build_dataset = ui_errors(form_handler(BuildForm, handlers.build_dataset))
    building = start.click(
        build_dataset, inputs, [picked, summary], api_name="build_dataset", concurrency_id=GPU, concurrency_limit=1
    )
    refresh_list = handlers.refresh_list  # one function object, so its events share one queue group
    building.success(refresh_list, picked, picked, **private).success(
        ui_errors(handlers.show), [picked, show], view, **private
    )
    stop.click(handlers.switches.stop, None, None, api_name="stop_dataset_build", queue=False)
    picked.change(ui_errors(handlers.show), [picked, show], view, **private)
    refresh.click(refresh_list, picked, picked, **private)
    show.change(ui_errors(handlers.show), [picked, show], view, **private)
    saved = gr.Textbox(visible=False)
    save.click(ui_errors(handlers.save_dataset_table), [picked, table], saved, api_name="save_dataset_table").success(
        ui_errors(handlers.show), [picked, show], view, **private
    )
    table.select(ui_errors(handlers.play), [picked, table], clip_player, **private)
    gr.api(handlers.list_datasets, api_name="list_datasets")
    demo.load(handlers.choices, None, picked, **private)
