"""Fine-tuning tab: pick a dataset, press start, watch the losses, hear every checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import soundfile as sf

from core.errors import InvalidInput
from core.fs import child, resolve_inside
from core.xtts import languages
from tabs.common import ranged_number, ui_errors
from train.config import PRESETS, TrainingConfig, preset
from train.coqui_csv import read_metadata
from train.dataset import DatasetBuilder
from train.runner import TrainingRunner
from train.tensorboard import TensorBoard

STATUS_FIELDS = ("state", "step", "total_steps", "epoch", "elapsed_s", "eta_s", "error")
TENSORBOARD_LINK = "tensorboard/"  # relative to the studio's page, so it works behind a reverse proxy too


def _dataset_path(datasets: DatasetBuilder, value: str, roots: Sequence[Path]) -> Path:
    """A dataset by name, or a typed folder in Coqui's format inside ``roots``."""
    if not value:
        raise InvalidInput("Pick a dataset (or type the path of a folder in Coqui's format).")
    if value in datasets.list():
        return child(datasets.root, value, what="dataset name", kind="dir", roots=roots)
    return resolve_inside(value, roots, what="dataset folder", base=datasets.root, kind="dir")


def _status_markdown(state: dict[str, Any]) -> str:
    if not state:
        return "No run selected."
    parts = [f"**{state.get('run', '')}**: {state.get('state')}", f"step {state.get('step', 0)}/{state.get('total_steps', '?')}",
             f"epoch {state.get('epoch', 0)}", f"elapsed {state.get('elapsed_s', 0):.0f} s"]  # fmt: skip
    if "eta_s" in state:
        parts.append(f"ETA {state['eta_s']:.0f} s")
    text = " · ".join(parts)
    checkpoints = ", ".join(f"{c['step']}{' (best)' if c['best'] else ''}" for c in state.get("checkpoints", []))
    if checkpoints:
        text += f"\n\nCheckpoints at steps: {checkpoints}"
    if state.get("error"):
        text += f"\n\n**Error:** {state['error']}"
    warnings = state.get("preflight", {}).get("warnings", [])
    if warnings:
        text += "\n\n" + "\n".join(f"- {w}" for w in warnings)
    return text


def build(
    demo: gr.Blocks, runner: TrainingRunner, datasets: DatasetBuilder, tensorboard: TensorBoard, *,
    default_base: Path, enabled: bool = True, readable_roots: Sequence[Path] = (),
) -> None:  # fmt: skip
    """Build the tab inside ``demo``'s current context and wire its events.

    Folders and files typed into it (dataset, base model, reference clip) must lie inside
    ``readable_roots`` (the data folders and the operator's ``--allowed-dir``).
    """
    roots = tuple(readable_roots) or (datasets.root, default_base)
    if not enabled:
        gr.Markdown("Training is disabled on this hardware (Hugging Face ZeroGPU gives GPU time per request only).")
        return
    with gr.Row():
        with gr.Column():
            dataset = gr.Dropdown(
                label="Dataset", choices=datasets.list(), allow_custom_value=True, elem_id="train-dataset"
            )
            base_model = gr.Textbox(label="Base model folder", value=str(default_base), max_lines=1)
            with gr.Row():
                run_name = gr.Textbox(label="Run name", value="run", max_lines=1)
                language = gr.Dropdown(
                    choices=languages.choices(), value="en", label="Language", allow_custom_value=True
                )
            with gr.Row():
                preset_choice = gr.Radio(choices=list(PRESETS), value="standard", label="Preset")
                apply_preset = gr.Button("Fill from preset", size="sm")
            with gr.Row():
                epochs = ranged_number(label="Epochs", value=10, precision=0, minimum=1)
                batch_size = ranged_number(label="Batch size", value=2, precision=0, minimum=1, elem_id="train-batch")
                grad_accum = ranged_number(label="Gradient accumulation", value=1, precision=0, minimum=1)
            effective = gr.Markdown("Effective batch: 2")
        with gr.Column():
            with gr.Row():
                learning_rate = ranged_number(label="Learning rate", value=5e-6)
                weight_decay = ranged_number(label="Weight decay", value=1e-2)
                seed = ranged_number(label="Seed", value=1, precision=0)
            with gr.Row():
                max_audio_s = ranged_number(label="Max clip seconds", value=11.0)
                max_text_len = ranged_number(label="Max text length", value=200, precision=0)
            with gr.Row():
                save_every = ranged_number(
                    label="Save every N steps (0: ~10 saves per run)", value=0, precision=0, minimum=0
                )
                keep = ranged_number(
                    label="Keep the last K checkpoints (plus the best)", value=2, precision=0, minimum=1
                )
            test_sentences = gr.Textbox(label="Test sentences, one per line (empty: a default set)", lines=2, value="")
            reference = gr.Textbox(
                label="Reference clip for samples (empty: the dataset's first clip)", value="", max_lines=1
            )
            gpu = runner.device.startswith("cuda")
            with gr.Row():
                mixed = gr.Checkbox(label="Mixed precision (GPU)", value=False, interactive=gpu)
                checkpointing = gr.Checkbox(label="Gradient checkpointing (GPU)", value=False, interactive=gpu)
    with gr.Row():
        start = gr.Button("Start training", variant="primary")
        cancel = gr.Button("Cancel", variant="stop")
        resume = gr.Button("Resume")
        board = gr.Button("Open TensorBoard")
    with gr.Row():
        run = gr.Dropdown(label="Run", choices=[], allow_custom_value=True, elem_id="train-run")
        board_link = gr.Markdown()
    status = gr.Markdown(elem_id="train-status")
    with gr.Row():
        losses = gr.Image(label="Losses", type="filepath", interactive=False, height=300, elem_id="train-losses")
        with gr.Column():
            sample = gr.Audio(label="Latest sample", type="filepath", interactive=False, elem_id="train-sample")
            sample_label = gr.Markdown()
    log_tail = gr.Textbox(label="Log", lines=10, max_lines=10, interactive=False, autoscroll=True)
    timer = gr.Timer(2.0)

    fields = [dataset, base_model, run_name, language, epochs, batch_size, grad_accum, learning_rate, weight_decay,
              max_audio_s, max_text_len, save_every, keep, seed, test_sentences, reference, mixed, checkpointing]  # fmt: skip

    @ui_errors
    def start_training(
        dataset: str, base_model: str = str(default_base), run_name: str = "run", language: str = "en",
        epochs: int = 10, batch_size: int = 2, grad_accum: int = 1, learning_rate: float = 5e-6,
        weight_decay: float = 1e-2, max_audio_s: float = 11.0, max_text_len: int = 200, save_every: int = 0,
        keep_checkpoints: int = 2, seed: int = 1, test_sentences: str = "", reference_clip: str = "",
        mixed_precision: bool = False, gradient_checkpointing: bool = False, progress: gr.Progress = gr.Progress(),
    ) -> str:  # fmt: skip
        """Check everything and start a fine-tuning run in the background; returns the run id."""
        base = resolve_inside(base_model, roots, what="base model folder", kind="dir") if base_model else default_base
        reference = resolve_inside(reference_clip, roots, what="reference clip", kind="file") if reference_clip else ""
        config = TrainingConfig(
            dataset=str(_dataset_path(datasets, dataset, roots)), base_model=str(base),
            run_name=run_name or "run", language=language, epochs=int(epochs), batch_size=int(batch_size),
            grad_accum=int(grad_accum), learning_rate=float(learning_rate), weight_decay=float(weight_decay),
            max_audio_s=float(max_audio_s), max_text_len=int(max_text_len), save_every=int(save_every),
            keep_checkpoints=int(keep_checkpoints), seed=int(seed),
            test_sentences=[s for s in (test_sentences or "").splitlines() if s.strip()], reference_clip=str(reference),
            mixed_precision=bool(mixed_precision) and gpu, gradient_checkpointing=bool(gradient_checkpointing) and gpu,
        )  # fmt: skip
        started = runner.start(config, progress=lambda f, m: progress(f, desc=m))
        gr.Info(f"Training {started} started.")
        return started

    @ui_errors
    def training_status(run: str) -> dict[str, Any]:
        """State, step, epoch, timings, checkpoints, samples and losses of a run."""
        state = runner.status(run)
        state["losses"] = runner.store.losses(runner.store.folder(run))
        return state

    @ui_errors
    def cancel_training(run: str) -> dict[str, Any]:
        """Ask a running training to save and stop."""
        return runner.cancel(run)

    @ui_errors
    def resume_training(run: str) -> str:
        """Continue a cancelled or failed run from its last checkpoint."""
        return runner.resume(run)

    def list_runs() -> list[dict[str, Any]]:
        """Every run with its state and progress."""
        return [{k: r.get(k) for k in ("run", *STATUS_FIELDS)} for r in runner.store.list()]

    def show(run: str | None) -> tuple[str, str | None, str | None, str, str]:
        if not run:
            return "No run selected.", None, None, "", ""
        try:
            state = runner.status(run)
            folder = runner.store.folder(run)
        except InvalidInput as exc:
            return str(exc), None, None, "", ""
        plot = runner.store.loss_plot(folder) if state.get("trainer_dir") else None
        samples = state.get("samples", {})
        latest_step = max(samples, key=int) if samples else None
        latest = samples[latest_step][0] if latest_step and samples[latest_step] else None
        label = f"Step {latest_step}: first test sentence" if latest else "No samples yet."
        return _status_markdown(state), str(plot) if plot else None, latest, label, runner.store.log_tail(folder)

    def fill_preset(name: str, dataset_value: str, *current: Any) -> list[Any]:
        path = _dataset_path(datasets, dataset_value, roots)
        rows = read_metadata(path / "metadata_train.csv") if (path / "metadata_train.csv").is_file() else []
        minutes = sum(sf.info(path / r["audio_file"]).duration for r in rows if (path / r["audio_file"]).is_file()) / 60
        base = TrainingConfig(dataset=str(path), base_model="", epochs=int(current[0]), batch_size=int(current[1]))
        filled = preset(name, base, train_clips=len(rows), minutes=minutes)
        return [filled.epochs, filled.batch_size, filled.grad_accum]

    @ui_errors
    def open_tensorboard() -> str:
        """Start TensorBoard over every run (if it is not running); returns its address relative to the studio."""
        tensorboard.ensure_running()
        return TENSORBOARD_LINK

    def tensorboard_link() -> str:
        open_tensorboard()
        return f"TensorBoard: [{TENSORBOARD_LINK}]({TENSORBOARD_LINK})"

    def runs_dropdown(current: str | None = None) -> gr.Dropdown:
        names = [r["run"] for r in runner.store.list()]
        return gr.Dropdown(choices=names, value=current if current in names else (names[0] if names else None))

    view = [status, losses, sample, sample_label, log_tail]
    start.click(start_training, fields, run, api_name="start_training").success(
        runs_dropdown, run, run, api_visibility="private"
    ).success(show, run, view, api_visibility="private")
    cancel.click(cancel_training, run, gr.JSON(visible=False), api_name="cancel_training").then(
        show, run, view, api_visibility="private"
    )
    resume.click(resume_training, run, gr.Textbox(visible=False), api_name="resume_training").then(
        show, run, view, api_visibility="private"
    )
    gr.api(training_status, api_name="training_status")
    gr.api(list_runs, api_name="list_runs")
    run.change(show, run, view, api_visibility="private")
    timer.tick(show, run, view, api_visibility="private", show_progress="hidden")
    apply_preset.click(
        fill_preset,
        [preset_choice, dataset, epochs, batch_size],
        [epochs, batch_size, grad_accum],
        api_visibility="private",
    )
    for number in (batch_size, grad_accum):
        number.change(
            lambda b, g: f"Effective batch: {int(b or 1) * int(g or 1)}",
            [batch_size, grad_accum],
            effective,
            api_visibility="private",
        )
    board.click(tensorboard_link, None, board_link, api_visibility="private")
    gr.api(open_tensorboard, api_name="open_tensorboard")
    demo.load(runs_dropdown, run, run, api_visibility="private")
    demo.load(lambda: gr.Dropdown(choices=datasets.list()), None, dataset, api_visibility="private")
