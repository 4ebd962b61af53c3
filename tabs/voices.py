"""Voice cloning tab: check and prepare reference clips, clone once, manage the library."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from core.errors import InvalidInput
from core.reference import save_prepared
from core.tts import TTSService
from core.voices import VoiceInfo, VoiceLibrary
from core.xtts import languages
from serve.metrics import RequestTracker
from tabs.common import GPU, form_handler, form_inputs, progress_callback, ui_errors

CLIP_HEADERS = ["Clip", "Seconds", "Speech s", "Silence", "Clipped", "Loudness LUFS", "Sample rate", "Verdict"]
VOICE_HEADERS = ["Name", "Kind", "Language", "Clips", "Speech s", "Description", "Created"]


def _paths(files: list[Any] | None, recording: str | None) -> list[Path]:
    paths = [Path(f if isinstance(f, str) else f.name) for f in (files or [])]
    if recording:
        paths.append(Path(recording))
    return paths


def _voice_rows(voices: list[VoiceInfo]) -> list[list[object]]:
    return [
        [v.name, v.kind, v.language, len(v.clips) or 1, round(v.speech_s, 1), v.description, v.created[:10]]
        for v in voices
    ]


def _details(voice: VoiceInfo) -> str:
    if voice.kind == "file":
        return (
            f"**{voice.name}** is a plain WAV file in the voice folder ({voice.path.name}); it is encoded on first use."
        )
    clips = "\n".join(
        f"- `{c['file']}` from *{c.get('source', '?')}*: {c.get('prepared_s', 0):.1f} s" for c in voice.clips
    )
    models = ", ".join(voice.latents_for) or "none yet"
    return (
        f"**{voice.name}** · {languages.LANGUAGES.get(voice.language, voice.language)} · created {voice.created[:19]}\n\n"
        f"{voice.description or '*No description.*'}\n\n{clips}\n\nLatents computed for models: {models}"
    )


def bump(version: int) -> int:
    return (version or 0) + 1


def show_pair(label: str | None, pairing: dict[str, str]) -> tuple[str | None, str | None]:
    if not label:
        return None, None
    return pairing.get(f"src:{label}") or None, pairing.get(label) or None


@dataclass(frozen=True)
class CloneForm:
    """What Create voice sends: the parameters of the ``clone_voice`` endpoint."""

    name: str
    clips: list[Any] | None
    recording: str | None = None
    language: str = "en"
    description: str = ""


class VoiceHandlers:
    """The tab's events; encoding and previews (GPU work) are admitted through ``tracker``."""

    def __init__(self, library: VoiceLibrary, service: TTSService, tracker: RequestTracker) -> None:
        self.library, self.engine, self.tracker = library, service.engine, tracker

    def run_check(
        self, files: list[Any] | None, recorded: str | None
    ) -> tuple[list[list[object]], gr.Dropdown, dict[str, str]]:
        checked = self.library.check(_paths(files, recorded))
        saved = save_prepared(checked, self.library.work_dir / "voice-check")
        rows, pairing = [], {}
        for index, (clip, prepared) in enumerate(zip(checked, saved, strict=True)):
            stats = clip.stats
            if stats is None:
                rows.append([clip.source.name, None, None, None, None, None, None, clip.verdict])
                continue
            rows.append([
                clip.source.name, round(stats.duration_s, 1), round(stats.speech_s, 1), f"{stats.silence_ratio:.0%}",
                f"{stats.clipped_ratio:.2%}", round(stats.loudness_lufs, 1), stats.sample_rate, clip.verdict,
            ])  # fmt: skip
            label = f"{index + 1}. {clip.source.name}"
            pairing[label] = str(prepared) if prepared else ""
            pairing[f"src:{label}"] = str(clip.source)
        labels = [k for k in pairing if not k.startswith("src:")]
        return rows, gr.Dropdown(choices=labels, value=labels[0] if labels else None), pairing

    def clone_voice(self, form: CloneForm, progress: gr.Progress = gr.Progress()) -> tuple[dict[str, Any], str | None]:
        """Clone a voice from reference clips; returns its record and the preview WAV."""
        with self.tracker.track("ui_clone", "balanced") as ticket:
            voice = self.library.create(
                form.name, _paths(form.clips, form.recording), engine=self.engine, language=form.language,
                description=form.description, progress=progress_callback(progress, ticket),
            )  # fmt: skip
        gr.Info(f"Voice '{voice.name}' saved. It is now in the Text to speech tab's voice list.")
        return voice.to_dict(), str(voice.preview) if voice.preview else None

    def list_voices(self) -> list[dict[str, Any]]:
        """Every voice: cloned and dropped-in voices of the library, then the model's built-in speakers."""
        rows = [v.to_dict() for v in self.library.list()]
        taken = {r["name"] for r in rows}
        rows += [{"name": s, "kind": "builtin"} for s in self.engine.speakers() if s not in taken]
        return rows

    def refresh_library(self, current: str | None = None) -> tuple[list[list[object]], gr.Dropdown]:
        voices = self.library.list()
        names = [v.name for v in voices]
        return _voice_rows(voices), gr.Dropdown(choices=names, value=current if current in names else None)

    def show_voice(self, name: str | None) -> tuple[str, str | None, str, gr.Dropdown, bool]:
        if not name:
            return "", None, "", gr.Dropdown(choices=[], value=None), False
        try:
            voice = self.library.get(name)
        except InvalidInput as exc:
            return str(exc), None, "", gr.Dropdown(choices=[], value=None), False
        clip_files = [c["file"] for c in voice.clips]
        preview_path = str(voice.preview) if voice.preview else None
        return _details(voice), preview_path, voice.description, gr.Dropdown(choices=clip_files, value=None), False

    def rename_voice(self, name: str, new_name: str) -> str:
        """Rename a cloned voice; returns the new name."""
        return self.library.rename(name, new_name).name

    def describe_voice(self, name: str, description: str) -> str:
        """Change a cloned voice's description."""
        return self.library.describe(name, description=description).name

    def add_voice_clips(self, name: str, clips: list[Any] | None, progress: gr.Progress = gr.Progress()) -> str:
        """Add reference clips to a cloned voice and re-encode it."""
        progress(0.1, desc="Checking and re-encoding")
        with self.tracker.track("ui_add_voice_clips", "voice"):
            return self.library.add_clips(name, _paths(clips, None), engine=self.engine).name

    def remove_voice_clip(self, name: str, clip: str) -> str:
        """Remove one clip (as listed, e.g. clips/02.wav) from a cloned voice and re-encode it."""
        if not clip:
            raise InvalidInput("Pick the clip to remove.")
        with self.tracker.track("ui_remove_voice_clip", "voice"):
            return self.library.remove_clip(name, clip, engine=self.engine).name

    def regenerate_preview(self, name: str) -> str:
        """Re-encode a voice for the loaded model and render its preview again."""
        with self.tracker.track("ui_regenerate_voice_preview", "voice"):
            return self.library.regenerate_preview(name, engine=self.engine).name

    def delete_voice(self, name: str, confirm: bool = False) -> str:
        """Delete a voice from the library; `confirm` must be true."""
        if not name:
            raise InvalidInput("Pick the voice to delete.")
        if not confirm:
            raise InvalidInput(f"Tick the confirmation box to delete '{name}'.")
        self.library.delete(name)
        gr.Info(f"Voice '{name}' deleted.")
        return ""

    def export_voice(self, name: str) -> str:
        """Export a cloned voice as a zip file."""
        if not name:
            raise InvalidInput("Pick the voice to export.")
        return str(self.library.export(name))

    def import_voice(self, archive: str | None) -> str:
        """Import a voice from a zip made by export_voice; returns its name."""
        if not archive:
            raise InvalidInput("Choose a voice zip to import.")
        voice = self.library.import_zip(Path(archive))
        gr.Info(f"Voice '{voice.name}' imported.")
        return voice.name


def build(
    demo: gr.Blocks, library: VoiceLibrary, service: TTSService, library_changed: gr.State, tracker: RequestTracker
) -> None:
    """Build the tab inside ``demo``'s current context; bump ``library_changed`` after every change."""
    handlers = VoiceHandlers(library, service, tracker)
    gr.Markdown(
        "Clone a voice from 6 to 30 seconds of clean speech (at least 3 s, at most 5 minutes in total). "
        "Accepted: wav, mp3, ogg, flac, m4a and the audio of video files."
    )
    with gr.Accordion("Create a voice", open=True):
        with gr.Row():
            uploads = gr.File(label="Reference clips", file_count="multiple", type="filepath", elem_id="clone-files")
            recording = gr.Audio(label="…or record one", sources=["microphone"], type="filepath")
        with gr.Row():
            name = gr.Textbox(label="Name", max_lines=1, elem_id="clone-name")
            language = gr.Dropdown(choices=languages.choices(), value="en", label="Language", allow_custom_value=True)
            description = gr.Textbox(label="Description", max_lines=2, value="")
        with gr.Row():
            check = gr.Button("Check clips")
            create = gr.Button("Create voice", variant="primary")
        report = gr.Dataframe(headers=CLIP_HEADERS, interactive=False, label="Clip check", elem_id="clone-report")
        with gr.Row():
            compare = gr.Dropdown(label="Compare clip", choices=[], interactive=True, allow_custom_value=True)
            original = gr.Audio(label="Original", type="filepath", interactive=False)
            prepared = gr.Audio(label="Prepared for XTTS", type="filepath", interactive=False)
        created_preview = gr.Audio(
            label="Preview of the new voice", type="filepath", interactive=False, elem_id="clone-preview"
        )
        pairs = gr.State({})

    with gr.Accordion("Voice library", open=True):
        with gr.Row():
            with gr.Column(scale=3):
                voices_table = gr.Dataframe(headers=VOICE_HEADERS, interactive=False, elem_id="voice-table")
                refresh = gr.Button("Refresh", size="sm")
            with gr.Column(scale=2):
                picked = gr.Dropdown(
                    label="Voice", choices=[], interactive=True, allow_custom_value=True, elem_id="voice-picked"
                )
                details = gr.Markdown()
                preview = gr.Audio(label="Preview", type="filepath", interactive=False, elem_id="voice-preview")
        with gr.Accordion("Edit the selected voice", open=False):
            with gr.Row():
                new_name = gr.Textbox(label="New name", max_lines=1)
                rename = gr.Button("Rename")
            with gr.Row():
                new_description = gr.Textbox(label="Description", max_lines=2)
                save_description = gr.Button("Save description")
            with gr.Row():
                more_clips = gr.File(label="Add clips", file_count="multiple", type="filepath", height=120)
                add = gr.Button("Add clips (re-encodes)")
            with gr.Row():
                clip_choice = gr.Dropdown(label="Clip", choices=[], interactive=True, allow_custom_value=True)
                remove = gr.Button("Remove clip (re-encodes)")
                regenerate = gr.Button("Re-render preview")
            with gr.Row():
                confirm = gr.Checkbox(label="Yes, delete this voice for good", value=False)
                delete = gr.Button("Delete voice", variant="stop")
        with gr.Accordion("Export and import", open=False):
            with gr.Row():
                export = gr.Button("Export the selected voice as zip")
                exported = gr.File(label="Exported voice", interactive=False)
            with gr.Row():
                import_file = gr.File(label="Voice zip to import", file_types=[".zip"], type="filepath", height=120)
                import_button = gr.Button("Import")

    library_outputs = [voices_table, picked]
    detail_outputs = [details, preview, new_description, clip_choice, confirm]
    selected = gr.Textbox(visible=False)  # the name to select after a change
    created_info = gr.JSON(visible=False)
    private = {"api_visibility": "private"}
    gpu = {"concurrency_id": GPU, "concurrency_limit": 1}
    refresh_library, show_voice = handlers.refresh_library, handlers.show_voice  # one queue group each, as one function

    def after_change(event: Any, select: gr.components.Component) -> None:
        """Refresh the library views and tell the other tabs (TTS voice list) that voices changed."""
        event.success(refresh_library, select, library_outputs, **private).then(
            show_voice, picked, detail_outputs, **private
        ).then(bump, library_changed, library_changed, **private)

    check.click(ui_errors(handlers.run_check), [uploads, recording], [report, compare, pairs], api_name="check_clips")
    compare.change(show_pair, [compare, pairs], [original, prepared], **private)
    clone_inputs = form_inputs(CloneForm, {"name": name, "clips": uploads, "recording": recording,
                                           "language": language, "description": description})  # fmt: skip
    clone = ui_errors(form_handler(CloneForm, handlers.clone_voice))
    creating = create.click(clone, clone_inputs, [created_info, created_preview], api_name="clone_voice", **gpu)
    after_change(creating, name)
    gr.api(handlers.list_voices, api_name="list_voices")
    refresh.click(refresh_library, picked, library_outputs, **private)
    picked.change(show_voice, picked, detail_outputs, **private)
    for button, handler, inputs, api_name, on_gpu in [
        (rename, handlers.rename_voice, [picked, new_name], "rename_voice", False),
        (save_description, handlers.describe_voice, [picked, new_description], "describe_voice", False),
        (add, handlers.add_voice_clips, [picked, more_clips], "add_voice_clips", True),
        (remove, handlers.remove_voice_clip, [picked, clip_choice], "remove_voice_clip", True),
        (regenerate, handlers.regenerate_preview, [picked], "regenerate_voice_preview", True),
        (delete, handlers.delete_voice, [picked, confirm], "delete_voice", False),
        (import_button, handlers.import_voice, [import_file], "import_voice", False),
    ]:
        event = button.click(ui_errors(handler), inputs, selected, api_name=api_name, **(gpu if on_gpu else {}))
        after_change(event, selected)
    export.click(ui_errors(handlers.export_voice), picked, exported, api_name="export_voice")
    demo.load(refresh_library, picked, library_outputs, **private)
