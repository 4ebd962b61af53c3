"""Fine-tuning tab: pick a dataset, press start, watch the losses, hear every checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from core.errors import InvalidInput
from core.fs import resolve_inside
from core.xtts import languages
from serve.metrics import RequestTracker
from tabs.common import form_handler, form_inputs, progress_callback, ranged_number, ui_errors
from train.config import PRESETS, TrainingConfig, preset_for_dataset
from train.dataset import DatasetBuilder
from train.launch import parse_gpus
from train.runner import TrainingRunner
from train.tensorboard import PAGE_LINK, TensorBoard

STATUS_FIELDS = ("state", "step", "total_steps", "epoch", "elapsed_s", "eta_s", "error")


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


def effective_batch(batch_size: float | None, grad_accum: float | None) -> str:
    return f"Effective batch: {int(batch_size or 1) * int(grad_accum or 1)}"


@dataclass(frozen=True)
class TrainingForm:
    """What Start training sends: the parameters of the ``start_training`` endpoint."""

    dataset: str
    base_model: str = ""  # empty: the studio's XTTS model folder
    run_name: str = "run"
    language: str = "en"
    epochs: int = 10
    batch_size: int = 2
    grad_accum: int = 1
    learning_rate: float = 5e-6
    weight_decay: float = 1e-2
    max_audio_s: float = 11.0
    max_text_len: int = 200
    save_every: int = 0
    keep_checkpoints: int = 2
    seed: int = 1
    test_sentences: str = ""
    reference_clip: str = ""
    mixed_precision: bool = False
    gradient_checkpointing: bool = False
    gpus: str = ""  # "0,1": one training process per GPU; empty: the studio's device


class TrainingHandlers:
    """The tab's events. Folders and files typed into it (dataset, base model, reference clip) must lie inside
    ``roots``; starting or resuming a run (which takes the GPU) is admitted through ``tracker``."""

    def __init__(
        self, runner: TrainingRunner, datasets: DatasetBuilder, tensorboard: TensorBoard, tracker: RequestTracker,
        *, default_base: Path, roots: Sequence[Path],
    ) -> None:  # fmt: skip
        self.runner, self.datasets, self.tensorboard, self.tracker = runner, datasets, tensorboard, tracker
        self.default_base, self.roots = default_base, tuple(roots)
        self.gpu = runner.device.startswith("cuda")

    def config(self, form: TrainingForm) -> TrainingConfig:
        gpus = parse_gpus(form.gpus)
        roots = self.roots
        base = (
            resolve_inside(form.base_model, roots, what="base model folder", kind="dir")
            if form.base_model
            else self.default_base
        )
        reference = (
            resolve_inside(form.reference_clip, roots, what="reference clip", kind="file")
            if form.reference_clip
            else ""
        )
        return TrainingConfig(
            dataset=str(self.datasets.training_folder(form.dataset, roots)), base_model=str(base),
            run_name=form.run_name or "run", language=form.language, epochs=int(form.epochs),
            batch_size=int(form.batch_size), grad_accum=int(form.grad_accum), learning_rate=float(form.learning_rate),
            weight_decay=float(form.weight_decay), max_audio_s=float(form.max_audio_s),
            max_text_len=int(form.max_text_len), save_every=int(form.save_every),
            keep_checkpoints=int(form.keep_checkpoints), seed=int(form.seed),
            test_sentences=[s for s in (form.test_sentences or "").splitlines() if s.strip()],
            reference_clip=str(reference), mixed_precision=bool(form.mixed_precision) and self.gpu,
            gradient_checkpointing=bool(form.gradient_checkpointing) and self.gpu, gpus=gpus,
        )  # fmt: skip

    def start_training(self, form: TrainingForm, progress: gr.Progress = gr.Progress()) -> str:
        """Check everything and start a fine-tuning run in the background; returns the run id."""
        config = self.config(form)
        with self.tracker.track("ui_start_training", "training") as ticket:
            started = self.runner.start(config, progress=progress_callback(progress, ticket))
        gr.Info(f"Training {started} started.")
        return started

    def training_status(self, run: str) -> dict[str, Any]:
        """State, step, epoch, timings, checkpoints, samples and losses of a run."""
        state = self.runner.status(run)
        state["losses"] = self.runner.store.losses(self.runner.store.folder(run))
        return state

    def cancel_training(self, run: str) -> dict[str, Any]:
        """Ask a running training to save and stop."""
        return self.runner.cancel(run)

    def resume_training(self, run: str) -> str:
        """Continue a cancelled or failed run from its last checkpoint."""
        with self.tracker.track("ui_resume_training", "training"):
            return self.runner.resume(run)

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run with its state and progress."""
        return [{k: r.get(k) for k in ("run", *STATUS_FIELDS)} for r in self.runner.store.list()]

    def show(self, run: str | None) -> tuple[str, str | None, str | None, str, str]:
        if not run:
            return "No run selected.", None, None, "", ""
        store = self.runner.store
        try:
            state = self.runner.status(run)
            folder = store.folder(run)
        except InvalidInput as exc:
            return str(exc), None, None, "", ""
        plot = store.loss_plot(folder) if state.get("trainer_dir") else None
        samples = state.get("samples", {})
        latest_step = max(samples, key=int) if samples else None
        latest = samples[latest_step][0] if latest_step and samples[latest_step] else None
        label = f"Step {latest_step}: first test sentence" if latest else "No samples yet."
        return _status_markdown(state), str(plot) if plot else None, latest, label, store.log_tail(folder)

    def fill_preset(self, name: str, dataset_value: str, epochs: float, batch_size: float) -> list[Any]:
        path = self.datasets.training_folder(dataset_value, self.roots)
        filled = preset_for_dataset(name, path, epochs=int(epochs), batch_size=int(batch_size))
        return [filled.epochs, filled.batch_size, filled.grad_accum]

    def open_tensorboard(self) -> str:
        """Start TensorBoard over every run (if it is not running); returns its address relative to the studio."""
        self.tensorboard.ensure_running()
        return PAGE_LINK

    def tensorboard_link(self) -> str:
        self.open_tensorboard()
        return f"TensorBoard: [{PAGE_LINK}]({PAGE_LINK})"

    def runs_dropdown(self, current: str | None = None) -> gr.Dropdown:
        names = [r["run"] for r in self.runner.store.list()]
        return gr.Dropdown(choices=names, value=current if current in names else (names[0] if names else None))

    def dataset_choices(self) -> gr.Dropdown:
        return gr.Dropdown(choices=self.datasets.list())


def _tuning(gpu: bool) -> dict[str, gr.components.Component]:
    """The second column of settings, by :class:`TrainingForm` field."""
    with gr.Row():
        learning_rate = ranged_number(label="Learning rate", value=5e-6)
        weight_decay = ranged_number(label="Weight decay", value=1e-2)
        seed = ranged_number(label="Seed", value=1, precision=0)
    with gr.Row():
        max_audio_s = ranged_number(label="Max clip seconds", value=11.0)
        max_text_len = ranged_number(label="Max text length", value=200, precision=0)
    with gr.Row():
        save_every = ranged_number(label="Save every N steps (0: ~10 saves per run)", value=0, precision=0, minimum=0)
        keep = ranged_number(label="Keep the last K checkpoints (plus the best)", value=2, precision=0, minimum=1)
    test_sentences = gr.Textbox(label="Test sentences, one per line (empty: a default set)", lines=2, value="")
    reference = gr.Textbox(label="Reference clip for samples (empty: the dataset's first clip)", value="", max_lines=1)
    with gr.Row():
        mixed = gr.Checkbox(label="Mixed precision (GPU)", value=False, interactive=gpu)
        checkpointing = gr.Checkbox(label="Gradient checkpointing (GPU)", value=False, interactive=gpu)
    gpus = gr.Textbox(
        label="GPUs (e.g. 0,1: one training process per GPU; empty: the studio's device)", value="", max_lines=1
    )
    return {
        "learning_rate": learning_rate, "weight_decay": weight_decay, "seed": seed, "max_audio_s": max_audio_s,
        "max_text_len": max_text_len, "save_every": save_every, "keep_checkpoints": keep,
        "test_sentences": test_sentences, "reference_clip": reference, "mixed_precision": mixed,
        "gradient_checkpointing": checkpointing, "gpus": gpus,
    }  # fmt: skip


def build(
    demo: gr.Blocks, runner: TrainingRunner, datasets: DatasetBuilder, tensorboard: TensorBoard,
    tracker: RequestTracker, *, default_base: Path, enabled: bool = True, readable_roots: Sequence[Path] = (),
) -> None:  # fmt: skip
    """Build the tab inside ``demo``'s current context and wire its events.

    Folders and files typed into it (dataset, base model, reference clip) must lie inside
    ``readable_roots`` (the data folders and the operator's ``--allowed-dir``).
    """
    roots = tuple(readable_roots) or (datasets.root, default_base)
    if not enabled:
        gr.Markdown("Training is disabled on this hardware (Hugging Face ZeroGPU gives GPU time per request only).")
        return
    handlers = TrainingHandlers(runner, datasets, tensorboard, tracker, default_base=default_base, roots=roots)
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
            tuning = _tuning(handlers.gpu)
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

    fields = form_inputs(TrainingForm, {
        "dataset": dataset, "base_model": base_model, "run_name": run_name, "language": language, "epochs": epochs,
        "batch_size": batch_size, "grad_accum": grad_accum, **tuning,
    })  # fmt: skip
    view = [status, losses, sample, sample_label, log_tail]
    private = {"api_visibility": "private"}
    show, runs_dropdown = handlers.show, handlers.runs_dropdown  # one function object each: one queue group each
    start_training = ui_errors(form_handler(TrainingForm, handlers.start_training))
    start.click(start_training, fields, run, api_name="start_training").success(
        runs_dropdown, run, run, **private
    ).success(show, run, view, **private)
    cancel.click(ui_errors(handlers.cancel_training), run, gr.JSON(visible=False), api_name="cancel_training").then(
        show, run, view, **private
    )
    resume.click(ui_errors(handlers.resume_training), run, gr.Textbox(visible=False), api_name="resume_training").then(
        show, run, view, **private
    )
    gr.api(ui_errors(handlers.training_status), api_name="training_status")
    gr.api(handlers.list_runs, api_name="list_runs")
    run.change(show, run, view, **private)
    timer.tick(show, run, view, show_progress="hidden", **private)
    apply_preset.click(
        handlers.fill_preset, [preset_choice, dataset, epochs, batch_size], [epochs, batch_size, grad_accum], **private
    )
    for number in (batch_size, grad_accum):
        number.change(effective_batch, [batch_size, grad_accum], effective, **private)
    board.click(handlers.tensorboard_link, None, board_link, **private)
    gr.api(ui_errors(handlers.open_tensorboard), api_name="open_tensorboard")
    demo.load(runs_dropdown, run, run, **private)
    demo.load(handlers.dataset_choices, None, dataset, **private)
