"""Checkpoints tab: list every checkpoint, hear it beside the base model, vote blind, score, load, export."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import gradio as gr

from core.errors import InvalidInput
from core.fs import is_inside
from serve.metrics import RequestTracker, Ticket
from tabs.common import GPU, progress_callback, ranged_number, ui_errors
from train import checkpoint_export
from train.blind_test import BlindTests
from train.checkpoints import BASE
from train.model_import import import_checkpoint
from train.review import CheckpointReview

LISTEN_ROWS = 4
TABLE_HEADERS = ["model", "step", "epoch", "train loss", "eval loss", "similarity", "WER", "CER", "length ×base",
                 "size MB", "date", "problem"]  # fmt: skip
TALLY_HEADERS = ["model", "votes", "wins", "losses", "ties", "win rate"]
DISK_HEADERS = ["name", "kind", "MB", "checkpoints"]
ALL_RUNS = "all runs"


def _table(rows: list[dict[str, Any]]) -> list[list[Any]]:
    table = []
    for r in rows:
        s = r.get("scores") or {}
        table.append([
            r["label"], r["step"], r["epoch"], r["train_loss"], r["eval_loss"], s.get("similarity"), s.get("wer"),
            s.get("cer"), s.get("length_ratio") if not s.get("length_flag") else f"{s['length_ratio']} ({s['length_flag']})",
            r["size_mb"], r["date"], r["error"] or "",
        ])  # fmt: skip
    return table


def _tally_rows(blind: BlindTests) -> list[list[Any]]:
    return [[r["model"], r["votes"], r["wins"], r["losses"], r["ties"], r["win_rate"]] for r in blind.tally()]


def _run(value: str | None) -> str | None:
    return None if not value or value == ALL_RUNS else value


class CheckpointHandlers:
    """The tab's events; rendering, scoring, loading and speaking (GPU work) are admitted through ``tracker``.

    A model folder typed for import must lie inside ``readable_roots``. A run's reference clip is played only
    when it lies inside ``served_roots`` (a dataset in a folder the browser may not be handed plays nothing).
    """

    def __init__(
        self, review: CheckpointReview, blind: BlindTests, tracker: RequestTracker, *, exports_root: Path,
        imported_root: Path, voices: Callable[[], list[str]], readable_roots: Sequence[Path],
        served_roots: Sequence[Path],
    ) -> None:  # fmt: skip
        self.review, self.blind, self.tracker, self.voices = review, blind, tracker, voices
        self.exports_root, self.imported_root = exports_root, imported_root
        self.readable_roots, self.served_roots = tuple(readable_roots), tuple(served_roots)

    def _gpu(self, route: str) -> AbstractContextManager[Ticket]:
        return self.tracker.track(route, "checkpoint")

    def list_checkpoints(self, run: str | None = None) -> list[dict[str, Any]]:
        """Every checkpoint as JSON rows: run, step, path ('checkpoint'), losses, size, samples, scores."""
        return self.review.rows(_run(run))

    def blind_tally(self) -> list[dict[str, Any]]:
        """Blind A/B votes per model: votes, wins, losses, ties, win rate."""
        return self.blind.tally()

    def refresh_view(self, run: str | None, current: str | None) -> tuple[Any, ...]:
        review = self.review
        rows = review.rows(_run(run))
        chosen, why = review.recommendation(rows)
        plotted = review.plot(rows)
        choices = [(r["label"], r["checkpoint"]) for r in rows]
        models = [("base model", BASE), *choices]
        ids = [r["checkpoint"] for r in rows]
        value = current if current in ids else (chosen or (ids[-1] if ids else None))
        runs = [ALL_RUNS, *sorted({r["run"] for r in rows if r["kind"] == "run"})]
        return (
            f"Using: **{review.active_label()}**",
            gr.update(choices=runs, value=run if run in runs else ALL_RUNS),
            _table(rows),
            why,
            gr.update(value=str(plotted) if plotted else None, visible=plotted is not None),
            gr.update(choices=choices, value=value),
            gr.update(choices=models, value=BASE),
            gr.update(choices=models, value=value or BASE),
            gr.update(choices=self.voices()),
            _tally_rows(self.blind),
            [[r["name"], r["kind"], r["mb"], r["checkpoints"]] for r in review.catalog.disk_usage()],
        )

    def show(self, checkpoint: str | None) -> list[Any]:
        if not checkpoint:
            return [None] + [gr.update(visible=False), "", None, None] * LISTEN_ROWS
        heard = self.review.listen(checkpoint)
        reference = heard["reference"]
        out: list[Any] = [reference if reference and is_inside(reference, self.served_roots) else None]
        for index in range(LISTEN_ROWS):
            if index < len(heard["rows"]):
                row = heard["rows"][index]
                out += [gr.update(visible=True), f"“{row['sentence']}”", row["checkpoint"], row["base"]]
            else:
                out += [gr.update(visible=False), "", None, None]
        return out

    def render_samples(self, checkpoint: str, voice: str | None = None, progress: gr.Progress = gr.Progress()) -> str:
        """Render the checkpoint's test sentences (and the base model's) when missing; returns the checkpoint."""
        with self._gpu("ui_render_samples") as ticket:
            self.review.render_samples(checkpoint, voice=voice or None, progress=progress_callback(progress, ticket))
        return checkpoint

    def score_checkpoint(self, checkpoint: str, progress: gr.Progress = gr.Progress()) -> dict[str, Any]:
        """Speaker similarity, WER/CER and length against the base for the checkpoint's samples (stored)."""
        with self._gpu("ui_score_checkpoint") as ticket:
            return self.review.score(checkpoint, progress=progress_callback(progress, ticket))

    def load_checkpoint(self, checkpoint: str) -> str:
        """Make the checkpoint (or 'base') the model every tab uses."""
        with self._gpu("ui_load_checkpoint"):
            message = self.review.load(checkpoint)
        gr.Info(message)
        return f"Using: **{self.review.active_label()}**"

    def back_to_base(self) -> str:
        with self._gpu("ui_back_to_base"):
            self.review.load(BASE)
        return f"Using: **{self.review.active_label()}**"

    def export_checkpoint(self, checkpoint: str, name: str | None = None) -> str:
        """Write a standalone Coqui model folder and its zip; returns the zip's path."""
        result = checkpoint_export.export(self.review.catalog, checkpoint, self.exports_root, name)
        gr.Info(f"Exported to {result['folder']}")
        return result["zip"]

    def speak_checkpoint(self, checkpoint: str, text: str, voice: str | None = None) -> str:
        """The checkpoint (or 'base') speaking ``text`` with a fixed seed."""
        with self._gpu("ui_speak_checkpoint"):
            return str(self.review.speak(checkpoint, text, voice=voice or None))

    def blind_pair(self, first: str, second: str, text: str, voice: str | None = None) -> tuple[str, str, str, str]:
        """Render two models as A and B in random order; returns (trial, A wav, B wav, hint)."""
        with self._gpu("ui_blind_pair"):
            made = self.blind.create(
                first, second, text, lambda model, out: self.review.speak(model, text, voice=voice or None, target=out)
            )
        return made["trial"], made["A"], made["B"], "Listen to both, then vote. The names show after the vote."

    def voter(self, choice: str) -> Callable[[str], tuple[str, list[list[Any]]]]:
        def vote(trial_id: str) -> tuple[str, list[list[Any]]]:
            if not trial_id:
                raise InvalidInput("Render a blind pair first.")
            result = self.blind.vote(trial_id, choice)
            verdict = "a tie" if result["winner"] is None else f"**{result['winner']}** preferred"
            return f"A was **{result['A']}**, B was **{result['B']}**: {verdict}.", _tally_rows(self.blind)

        return vote

    def import_checkpoint(self, archive: str | None, folder: str | None, name: str | None = None) -> str:
        """Import a model zip or folder (checked with weights_only loading) into models/finetuned/."""
        imported = import_checkpoint(
            archive, folder, readable_roots=self.readable_roots, imported_root=self.imported_root, name=name
        )
        gr.Info(f"Imported {imported.name}")
        return str(imported / "model.pth")

    def delete_checkpoint(self, checkpoint: str, confirmed: bool = False) -> None:
        if not confirmed:
            raise InvalidInput("Tick the confirmation box to delete.")
        freed = self.review.delete(checkpoint)
        gr.Info(f"Deleted; {freed / 1e6:.0f} MB freed.")

    def prune_run(self, run: str, keep: float) -> None:
        if not _run(run):
            raise InvalidInput("Pick one run in the Run list to prune.")
        count, freed = self.review.prune(str(run), int(keep or 0))
        gr.Info(f"Pruned {count} checkpoints; {freed / 1e6:.0f} MB freed.")

    def remove_run(self, run: str, confirmed: bool = False) -> None:
        if not _run(run):
            raise InvalidInput("Pick one run in the Run list to delete.")
        if not confirmed:
            raise InvalidInput("Tick the confirmation box to delete.")
        freed = self.review.delete_run(str(run))
        gr.Info(f"Deleted {run}; {freed / 1e6:.0f} MB freed.")


def build(demo: gr.Blocks, handlers: CheckpointHandlers) -> None:
    """Build the tab inside ``demo``'s current context and wire its events to ``handlers``."""
    gpu = {"concurrency_id": GPU, "concurrency_limit": 1}
    active = gr.Markdown()
    with gr.Row():
        run_filter = gr.Dropdown(label="Run", choices=[ALL_RUNS], value=ALL_RUNS, allow_custom_value=True, scale=3)
        refresh = gr.Button("Refresh", scale=0, min_width=100)
    table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, label="Checkpoints")
    advice = gr.Markdown()
    plot = gr.Image(label="Scores against step", type="filepath", interactive=False, visible=False)
    with gr.Row():
        picked = gr.Dropdown(label="Checkpoint", choices=[], allow_custom_value=True, scale=4)
        voice = gr.Dropdown(label="Voice (empty: the run's reference clip)", choices=[], allow_custom_value=True,
                            scale=2)  # fmt: skip
    with gr.Row():
        render = gr.Button("Render samples")
        score = gr.Button("Score")
        load = gr.Button("Load into the studio", variant="primary")
        unload = gr.Button("Back to base")
        export = gr.Button("Export")
    with gr.Accordion("Listen: this checkpoint beside the base model", open=True):
        reference = gr.Audio(label="Reference clip", type="filepath", interactive=False)
        listen_rows = []
        for index in range(LISTEN_ROWS):
            with gr.Row(visible=False) as row:
                sentence = gr.Markdown()
                mine = gr.Audio(label="checkpoint", type="filepath", interactive=False, elem_id=f"ck-sample-{index}")
                base = gr.Audio(label="base model", type="filepath", interactive=False)
            listen_rows.append((row, sentence, mine, base))
        with gr.Row():
            free_text = gr.Textbox(label="Say something else", placeholder="Type a sentence", scale=4)
            speak = gr.Button("Speak", scale=0, min_width=100)
        spoken = gr.Audio(label="checkpoint speaking your sentence", type="filepath", interactive=False)
    with gr.Accordion("Blind A/B test", open=True):
        with gr.Row():
            model_a = gr.Dropdown(label="Model 1", choices=[], allow_custom_value=True)
            model_b = gr.Dropdown(label="Model 2", choices=[], allow_custom_value=True)
        ab_text = gr.Textbox(label="Sentence", value="The weather is lovely today, so let us take a walk.")
        ab_render = gr.Button("Render a blind pair")
        trial = gr.Textbox(visible=False)
        with gr.Row():
            audio_a = gr.Audio(label="A", type="filepath", interactive=False, elem_id="ab-a")
            audio_b = gr.Audio(label="B", type="filepath", interactive=False, elem_id="ab-b")
        with gr.Row():
            vote_a = gr.Button("A is better", elem_id="vote-a")
            vote_tie = gr.Button("Tie", elem_id="vote-tie")
            vote_b = gr.Button("B is better", elem_id="vote-b")
        reveal = gr.Markdown(elem_id="ab-reveal")
        tally = gr.Dataframe(headers=TALLY_HEADERS, interactive=False, label="Votes so far", elem_id="ab-tally")
    with gr.Accordion("Export, import and housekeeping", open=False):
        exported = gr.File(label="Exported model (zip)", interactive=False)
        with gr.Row():
            import_zip = gr.File(label="Import a model zip", file_types=[".zip"])
            import_folder = gr.Textbox(label="...or a model folder on this machine")
            import_name = gr.Textbox(label="Name (optional)")
        import_button = gr.Button("Import")
        disk = gr.Dataframe(headers=DISK_HEADERS, interactive=False, label="Disk use")
        with gr.Row():
            keep_last = ranged_number(label="Keep the last N checkpoints (and the best)", value=1, precision=0)
            prune = gr.Button("Prune the selected run")
        with gr.Row():
            confirm = gr.Checkbox(label="Yes, delete for good", value=False)
            delete = gr.Button("Delete the checkpoint", variant="stop")
            delete_run = gr.Button("Delete the selected run", variant="stop")

    view_outputs = [active, run_filter, table, advice, plot, picked, model_a, model_b, voice, tally, disk]
    listen_outputs = [reference] + [c for row in listen_rows for c in row]
    private = {"api_visibility": "private"}
    h = handlers

    def then_refresh(event: Any) -> None:
        event.success(ui_errors(h.refresh_view), [run_filter, picked], view_outputs, **private).then(
            ui_errors(h.show), picked, listen_outputs, **private
        )

    gr.api(h.list_checkpoints, api_name="list_checkpoints")
    gr.api(h.blind_tally, api_name="blind_tally")
    demo.load(ui_errors(h.refresh_view), [run_filter, picked], view_outputs, **private)
    refresh.click(ui_errors(h.refresh_view), [run_filter, picked], view_outputs, **private)
    run_filter.input(ui_errors(h.refresh_view), [run_filter, picked], view_outputs, **private)
    picked.change(ui_errors(h.show), picked, listen_outputs, **private)
    then_refresh(render.click(ui_errors(h.render_samples), [picked, voice], picked, api_name="render_samples", **gpu))
    then_refresh(score.click(ui_errors(h.score_checkpoint), picked, gr.JSON(visible=False),
                             api_name="score_checkpoint", **gpu))  # fmt: skip
    then_refresh(load.click(ui_errors(h.load_checkpoint), picked, active, api_name="load_checkpoint", **gpu))
    then_refresh(unload.click(ui_errors(h.back_to_base), None, active, api_name="back_to_base", **gpu))
    export.click(ui_errors(h.export_checkpoint), picked, exported, api_name="export_checkpoint")
    speak.click(ui_errors(h.speak_checkpoint), [picked, free_text, voice], spoken, api_name="speak_checkpoint", **gpu)
    ab_render.click(ui_errors(h.blind_pair), [model_a, model_b, ab_text, voice], [trial, audio_a, audio_b, reveal],
                    api_name="blind_pair", **gpu)  # fmt: skip
    for button, choice in ((vote_a, "A"), (vote_b, "B"), (vote_tie, "tie")):
        button.click(ui_errors(h.voter(choice)), trial, [reveal, tally], api_name=f"blind_vote_{choice.lower()}")
    then_refresh(import_button.click(ui_errors(h.import_checkpoint), [import_zip, import_folder, import_name], picked,
                                     api_name="import_checkpoint"))  # fmt: skip
    then_refresh(delete.click(ui_errors(h.delete_checkpoint), [picked, confirm], None, api_name="delete_checkpoint"))
    then_refresh(prune.click(ui_errors(h.prune_run), [run_filter, keep_last], None, api_name="prune_run"))
    then_refresh(delete_run.click(ui_errors(h.remove_run), [run_filter, confirm], None, api_name="delete_run"))
