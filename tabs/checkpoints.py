"""Checkpoints tab: list every checkpoint, hear it beside the base model, vote blind, score, load, export."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from core.errors import InvalidInput
from core.fs import is_inside, resolve_inside
from tabs.common import GPU, progress_callback, ranged_number, ui_errors
from train import checkpoint_export
from train.blind_test import BlindTests
from train.checkpoints import BASE
from train.review import CheckpointReview

LISTEN_ROWS = 4
TABLE_HEADERS = ["model", "step", "epoch", "train loss", "eval loss", "similarity", "WER", "CER", "length ×base",
                 "size MB", "date", "problem"]  # fmt: skip
TALLY_HEADERS = ["model", "votes", "wins", "losses", "ties", "win rate"]
DISK_HEADERS = ["name", "kind", "MB", "checkpoints"]


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


def build(
    demo: gr.Blocks, review: CheckpointReview, blind: BlindTests, *, exports_root: Path, imported_root: Path,
    voices: Callable[[], list[str]], readable_roots: Sequence[Path] = (), served_roots: Sequence[Path] = (),
) -> None:  # fmt: skip
    """Build the tab inside ``demo``'s current context and wire its events.

    A model folder typed for import must lie inside ``readable_roots``. A run's reference clip is played only
    when it lies inside ``served_roots`` (a dataset in a folder the browser may not be handed plays nothing).
    """
    gpu = {"concurrency_id": GPU, "concurrency_limit": 1}
    active = gr.Markdown()
    with gr.Row():
        run_filter = gr.Dropdown(label="Run", choices=["all runs"], value="all runs", allow_custom_value=True, scale=3)
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

    def _run(value: str | None) -> str | None:
        return None if not value or value == "all runs" else value

    def list_checkpoints(run: str | None = None) -> list[dict[str, Any]]:
        """Every checkpoint as JSON rows: run, step, path ('checkpoint'), losses, size, samples, scores."""
        return review.rows(_run(run))

    def blind_tally() -> list[dict[str, Any]]:
        """Blind A/B votes per model: votes, wins, losses, ties, win rate."""
        return blind.tally()

    def refresh_view(run: str | None, current: str | None) -> tuple[Any, ...]:
        rows = review.rows(_run(run))
        chosen, why = review.recommendation(rows)
        plotted = review.plot(rows)
        choices = [(r["label"], r["checkpoint"]) for r in rows]
        models = [("base model", BASE), *choices]
        ids = [r["checkpoint"] for r in rows]
        value = current if current in ids else (chosen or (ids[-1] if ids else None))
        runs = ["all runs", *sorted({r["run"] for r in rows if r["kind"] == "run"})]
        return (
            f"Using: **{review.active_label()}**",
            gr.update(choices=runs, value=run if run in runs else "all runs"),
            _table(rows),
            why,
            gr.update(value=str(plotted) if plotted else None, visible=plotted is not None),
            gr.update(choices=choices, value=value),
            gr.update(choices=models, value=BASE),
            gr.update(choices=models, value=value or BASE),
            gr.update(choices=voices()),
            [[r["model"], r["votes"], r["wins"], r["losses"], r["ties"], r["win_rate"]] for r in blind.tally()],
            [[r["name"], r["kind"], r["mb"], r["checkpoints"]] for r in review.catalog.disk_usage()],
        )

    def show(checkpoint: str | None) -> list[Any]:
        if not checkpoint:
            return [None] + [gr.update(visible=False), "", None, None] * LISTEN_ROWS
        heard = review.listen(checkpoint)
        reference = heard["reference"]
        out: list[Any] = [reference if reference and is_inside(reference, served_roots) else None]
        for index in range(LISTEN_ROWS):
            if index < len(heard["rows"]):
                row = heard["rows"][index]
                out += [gr.update(visible=True), f"“{row['sentence']}”", row["checkpoint"], row["base"]]
            else:
                out += [gr.update(visible=False), "", None, None]
        return out

    @ui_errors
    def render_samples(checkpoint: str, voice: str | None = None, progress: gr.Progress = gr.Progress()) -> str:
        """Render the checkpoint's test sentences (and the base model's) when missing; returns the checkpoint."""
        review.render_samples(checkpoint, voice=voice or None, progress=progress_callback(progress))
        return checkpoint

    @ui_errors
    def score_checkpoint(checkpoint: str, progress: gr.Progress = gr.Progress()) -> dict[str, Any]:
        """Speaker similarity, WER/CER and length against the base for the checkpoint's samples (stored)."""
        return review.score(checkpoint, progress=progress_callback(progress))

    @ui_errors
    def load_checkpoint(checkpoint: str) -> str:
        """Make the checkpoint (or 'base') the model every tab uses."""
        message = review.load(checkpoint)
        gr.Info(message)
        return f"Using: **{review.active_label()}**"

    @ui_errors
    def back_to_base() -> str:
        review.load(BASE)
        return f"Using: **{review.active_label()}**"

    @ui_errors
    def export_checkpoint(checkpoint: str, name: str | None = None) -> str:
        """Write a standalone Coqui model folder and its zip; returns the zip's path."""
        result = checkpoint_export.export(review.catalog, checkpoint, exports_root, name)
        gr.Info(f"Exported to {result['folder']}")
        return result["zip"]

    @ui_errors
    def speak_checkpoint(checkpoint: str, text: str, voice: str | None = None) -> str:
        """The checkpoint (or 'base') speaking ``text`` with a fixed seed."""
        return str(review.speak(checkpoint, text, voice=voice or None))

    @ui_errors
    def blind_pair(first: str, second: str, text: str, voice: str | None = None) -> tuple[str, str, str, str]:
        """Render two models as A and B in random order; returns (trial, A wav, B wav, hint)."""
        made = blind.create(
            first, second, text, lambda model, out: review.speak(model, text, voice=voice or None, target=out)
        )
        return made["trial"], made["A"], made["B"], "Listen to both, then vote. The names show after the vote."

    def _voter(choice: str) -> Callable[[str], tuple[str, list[list[Any]]]]:
        @ui_errors
        def vote(trial_id: str) -> tuple[str, list[list[Any]]]:
            if not trial_id:
                raise InvalidInput("Render a blind pair first.")
            result = blind.vote(trial_id, choice)
            verdict = "a tie" if result["winner"] is None else f"**{result['winner']}** preferred"
            text = f"A was **{result['A']}**, B was **{result['B']}**: {verdict}."
            rows = [[r["model"], r["votes"], r["wins"], r["losses"], r["ties"], r["win_rate"]] for r in blind.tally()]
            return text, rows

        return vote

    @ui_errors
    def import_checkpoint(archive: str | None, folder: str | None, name: str | None = None) -> str:
        """Import a model zip or folder (checked with weights_only loading) into models/finetuned/."""
        if archive:
            source = Path(archive)
        elif (folder or "").strip():
            source = resolve_inside(folder, readable_roots, what="model folder", kind="dir")
        else:
            raise InvalidInput("Upload a zip or type the path of a model folder.")
        imported = checkpoint_export.import_model(source, imported_root, name or None)
        gr.Info(f"Imported {imported.name}")
        return str(imported / "model.pth")

    @ui_errors
    def delete_checkpoint(checkpoint: str, confirmed: bool = False) -> None:
        if not confirmed:
            raise InvalidInput("Tick the confirmation box to delete.")
        freed = review.delete(checkpoint)
        gr.Info(f"Deleted; {freed / 1e6:.0f} MB freed.")

    @ui_errors
    def prune_run(run: str, keep: float) -> None:
        if not _run(run):
            raise InvalidInput("Pick one run in the Run list to prune.")
        count, freed = review.prune(str(run), int(keep or 0))
        gr.Info(f"Pruned {count} checkpoints; {freed / 1e6:.0f} MB freed.")

    @ui_errors
    def remove_run(run: str, confirmed: bool = False) -> None:
        if not _run(run):
            raise InvalidInput("Pick one run in the Run list to delete.")
        if not confirmed:
            raise InvalidInput("Tick the confirmation box to delete.")
        freed = review.delete_run(str(run))
        gr.Info(f"Deleted {run}; {freed / 1e6:.0f} MB freed.")

    view_outputs = [active, run_filter, table, advice, plot, picked, model_a, model_b, voice, tally, disk]
    listen_outputs = [reference] + [c for row in listen_rows for c in row]
    private = {"api_visibility": "private"}

    def then_refresh(event: Any) -> None:
        event.success(ui_errors(refresh_view), [run_filter, picked], view_outputs, **private).then(
            ui_errors(show), picked, listen_outputs, **private
        )

    gr.api(list_checkpoints, api_name="list_checkpoints")
    gr.api(blind_tally, api_name="blind_tally")
    demo.load(ui_errors(refresh_view), [run_filter, picked], view_outputs, **private)
    refresh.click(ui_errors(refresh_view), [run_filter, picked], view_outputs, **private)
    run_filter.input(ui_errors(refresh_view), [run_filter, picked], view_outputs, **private)
    picked.change(ui_errors(show), picked, listen_outputs, **private)
    then_refresh(render.click(render_samples, [picked, voice], picked, api_name="render_samples", **gpu))
    then_refresh(score.click(score_checkpoint, picked, gr.JSON(visible=False), api_name="score_checkpoint", **gpu))
    then_refresh(load.click(load_checkpoint, picked, active, api_name="load_checkpoint", **gpu))
    then_refresh(unload.click(back_to_base, None, active, api_name="back_to_base", **gpu))
    export.click(export_checkpoint, picked, exported, api_name="export_checkpoint")
    speak.click(speak_checkpoint, [picked, free_text, voice], spoken, api_name="speak_checkpoint", **gpu)
    ab_render.click(
        blind_pair, [model_a, model_b, ab_text, voice], [trial, audio_a, audio_b, reveal], api_name="blind_pair", **gpu
    )
    for button, choice in ((vote_a, "A"), (vote_b, "B"), (vote_tie, "tie")):
        button.click(_voter(choice), trial, [reveal, tally], api_name=f"blind_vote_{choice.lower()}")
    then_refresh(import_button.click(import_checkpoint, [import_zip, import_folder, import_name], picked,
                                     api_name="import_checkpoint"))  # fmt: skip
    then_refresh(delete.click(delete_checkpoint, [picked, confirm], None, api_name="delete_checkpoint"))
    then_refresh(prune.click(prune_run, [run_filter, keep_last], None, api_name="prune_run"))
    then_refresh(delete_run.click(remove_run, [run_filter, confirm], None, api_name="delete_run"))
