"""Dataset tab: links, uploads or a server folder in; a reviewed XTTS training set out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import pandas as pd

from core.errors import InvalidInput
from core.fs import child, resolve_inside
from core.xtts import languages
from tabs.common import GPU, StopSwitches, progress_callback, ranged_slider, ui_errors
from train.dataset import TABLE_COLUMNS, BuildOptions, DatasetBuilder, load_table, save_table
from train.sources import parse_urls, uploaded
from train.transcribe import WHISPER_SIZES


def _report_markdown(folder: Path) -> str:
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    lines = [
        f"**{folder.name}** · language {report['language']} · speaker `{report['speaker']}` · built {report.get('built', '')[:19]}",
        f"- kept **{report['kept']}** clips, {report['kept_minutes']:.1f} min ({report['train']} train / {report['eval']} eval)",
    ]
    lines += [
        f"- dropped for {reason.replace('_', ' ')}: {int(v['clips'])} clips, {v['minutes']:.1f} min"
        for reason, v in report["dropped"].items()
    ]
    lines += [f"- skipped {s['name']}: {s['error']}" for s in report["sources"] if s.get("error")]
    return "\n".join(lines)


def build(
    demo: gr.Blocks, datasets: DatasetBuilder, default_whisper: str = "small", *, source_roots: Sequence[Path] = ()
) -> None:
    """Build the tab inside ``demo``'s current context and wire its events.

    A server folder typed as a source must lie inside ``source_roots``.
    """
    switches = StopSwitches()
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
                choices=[("Detect", "auto"), *languages.choices()],
                value="auto",
                label="Language",
                allow_custom_value=True,
            )
            whisper = gr.Dropdown(
                choices=list(WHISPER_SIZES), value=default_whisper, label="Whisper model (or a local model folder)",
                allow_custom_value=True,
            )  # fmt: skip
            with gr.Row():
                eval_fraction = ranged_slider(0.0, 0.3, value=0.1, step=0.05, label="Eval fraction")
                min_s = ranged_slider(0.5, 6, value=2.0, step=0.5, label="Min clip seconds")
                max_s = ranged_slider(6, 30, value=12.0, step=1, label="Max clip seconds")
            with gr.Row():
                min_snr = ranged_slider(0, 40, value=15, step=1, label="Min SNR (dB)")
                min_conf = ranged_slider(0.0, 1.0, value=0.5, step=0.05, label="Min word confidence")
            with gr.Row():
                start = gr.Button("Build dataset", variant="primary")
                stop = gr.Button("Stop", variant="stop")
    with gr.Row():
        picked = gr.Dropdown(label="Dataset", choices=[], allow_custom_value=True, elem_id="dataset-picked")
        refresh = gr.Button("Refresh", size="sm", scale=0)
    summary = gr.Markdown(elem_id="dataset-summary")
    with gr.Row():
        lengths_plot = gr.Image(label="Clip lengths", type="filepath", interactive=False, height=260)
        snr_plot = gr.Image(label="SNR", type="filepath", interactive=False, height=260)
    table = gr.Dataframe(
        headers=TABLE_COLUMNS, datatype=["bool", "str", "str", "str", "str", "number"], interactive=True,
        label="Clips (edit text, untick keep to drop, then save)", elem_id="dataset-table", max_height=420,
    )  # fmt: skip
    with gr.Row():
        clip_player = gr.Audio(label="Selected clip", type="filepath", interactive=False, elem_id="dataset-clip")
        save = gr.Button("Save edits")

    def folder_of(dataset: str) -> Path:
        if not dataset:
            raise InvalidInput("Pick or build a dataset first.")
        path = child(datasets.root, dataset, what="dataset name")
        if not path.is_dir():
            raise InvalidInput(f"There is no dataset '{dataset}'.")
        return path

    def show(dataset: str | None) -> tuple[str, str | None, str | None, pd.DataFrame]:
        if not dataset:
            return "", None, None, pd.DataFrame(columns=TABLE_COLUMNS)
        path = folder_of(dataset)
        plots = [str(p) if p.is_file() else None for p in (path / "plots" / "lengths.png", path / "plots" / "snr.png")]
        return _report_markdown(path), plots[0], plots[1], pd.DataFrame(load_table(path), columns=TABLE_COLUMNS)

    @ui_errors
    def build_dataset(
        name: str,
        urls: str = "",
        files: list[str] | None = None,
        folder: str = "",
        cookies: str | None = None,
        speaker: str = "",
        language: str = "auto",
        whisper_model: str = default_whisper,
        eval_fraction: float = 0.1,
        min_s: float = 2.0,
        max_s: float = 12.0,
        min_snr_db: float = 15.0,
        min_confidence: float = 0.5,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[str, str]:
        """Build (or resume) a dataset; returns its name and a summary."""
        if whisper_model and whisper_model not in (*WHISPER_SIZES, default_whisper):
            whisper_model = str(resolve_inside(whisper_model, source_roots, what="Whisper model folder", kind="dir"))
        options = BuildOptions(
            name=name, speaker=speaker, language=None if language in (None, "", "auto") else language,
            whisper_model=whisper_model or default_whisper, eval_fraction=eval_fraction, min_s=min_s, max_s=max_s,
            min_snr_db=min_snr_db, min_confidence=min_confidence,
        )  # fmt: skip
        with switches.armed(request) as should_stop:
            report = datasets.build(
                options, urls=parse_urls(urls), files=uploaded(files),
                folder=resolve_inside(folder, source_roots, what="source folder", kind="dir") if (folder or "").strip() else None,
                cookies=Path(cookies) if cookies else None, progress=progress_callback(progress), should_stop=should_stop,
            )  # fmt: skip
        gr.Info(report.summary().splitlines()[0])
        return report.dataset_dir.name, report.summary()

    def list_datasets() -> list[str]:
        """Names of the datasets under outputs/datasets."""
        return datasets.list()

    @ui_errors
    def save_dataset_table(dataset: str, rows: pd.DataFrame) -> str:
        """Save the reviewed clip table (text fixes, dropped rows); the CSVs are rewritten atomically."""
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows["data"], columns=rows["headers"])
        train, evaluation = save_table(folder_of(dataset), frame.to_dict("records"))
        gr.Info(f"Saved: {train} train and {evaluation} eval clips.")
        return dataset

    @ui_errors
    def play(dataset: str, rows: pd.DataFrame, evt: gr.SelectData) -> str | None:
        """The selected row's clip; the cell comes from the browser, so it must name a file of this dataset."""
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not dataset or not isinstance(row, int) or not 0 <= row < len(rows):
            return None
        folder = folder_of(dataset)
        return str(resolve_inside(str(rows.iloc[row]["audio_file"]), [folder], what="clip", kind="file"))

    def refresh_list(current: str | None = None) -> gr.Dropdown:
        names = datasets.list()
        return gr.Dropdown(choices=names, value=current if current in names else None)

    view = [summary, lengths_plot, snr_plot, table]
    inputs = [
        name,
        urls,
        files,
        folder,
        cookies,
        speaker,
        language,
        whisper,
        eval_fraction,
        min_s,
        max_s,
        min_snr,
        min_conf,
    ]
    building = start.click(
        build_dataset, inputs, [picked, summary], api_name="build_dataset", concurrency_id=GPU, concurrency_limit=1
    )
    building.success(refresh_list, picked, picked, api_visibility="private").success(
        ui_errors(show), picked, view, api_visibility="private"
    )
    stop.click(switches.stop, None, None, api_name="stop_dataset_build", queue=False)
    picked.change(ui_errors(show), picked, view, api_visibility="private")
    refresh.click(refresh_list, picked, picked, api_visibility="private")
    saved = gr.Textbox(visible=False)
    save.click(save_dataset_table, [picked, table], saved, api_name="save_dataset_table").success(
        ui_errors(show), picked, view, api_visibility="private"
    )
    table.select(play, [picked, table], clip_player, api_visibility="private")
    gr.api(list_datasets, api_name="list_datasets")
    # choices only: a page still loading must not clear a dataset the person already picked
    demo.load(lambda: gr.Dropdown(choices=datasets.list()), None, picked, api_visibility="private")
