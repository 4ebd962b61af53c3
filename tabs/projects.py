"""Projects tab: a book, script or subtitle file in; chapters of segments rendered, reviewed and exported."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr
import pandas as pd

from core.errors import InvalidInput
from core.fs import resolve_inside
from core.tts import TTSService
from core.xtts import languages
from core.xtts.profiles import DEFAULT_PROFILE, PROFILES, resolve_params
from projects.export import FORMATS, ExportRequest, export_project
from projects.loudness import TARGETS
from projects.render import ProjectRenderer
from projects.script import Settings
from projects.sources import SUFFIXES, from_text, read_source
from projects.store import ProjectStore
from serve.metrics import RequestTracker
from tabs.common import (
    GPU,
    StopSwitches,
    form_handler,
    form_inputs,
    progress_callback,
    ranged_number,
    ranged_slider,
    ui_errors,
)
from tabs.project_forms import (
    DICT_HEADERS,
    DICT_TYPES,
    SEGMENT_HEADERS,
    SETTING_KEYS,
    CreateForm,
    ExportForm,
    SegmentForm,
    SettingsForm,
    dictionary_entries,
    dictionary_rows,
    parse_tag_lines,
    segment_rows,
    summary_markdown,
    take_choices,
)


class ProjectHandlers:
    """The tab's events: each validates what the client sent and makes one call into ``projects/``."""

    def __init__(
        self, store: ProjectStore, renderer: ProjectRenderer, tts: TTSService, tracker: RequestTracker
    ) -> None:
        self.store, self.renderer, self.tts, self.tracker = store, renderer, tts, tracker
        self.switches = StopSwitches()

    def _voice(self, name: str) -> str:
        return self.tts.resolve_voice(name)[0]

    # ---- projects -----------------------------------------------------------------------

    def create_project(self, form: CreateForm) -> dict[str, Any]:
        """Create a project from pasted `text` or an uploaded .txt/.md/.epub/.srt/.vtt `source`; returns a summary."""
        if (form.text or "").strip() and form.source:
            raise InvalidInput("Paste a text or upload a file, not both.")
        if form.source:
            sources = read_source(Path(form.source))
        elif (form.text or "").strip():
            sources = from_text(form.text)
        else:
            raise InvalidInput(f"Paste the script, or upload a file ({', '.join(SUFFIXES)}).")
        resolve_params(form.profile or DEFAULT_PROFILE)
        project = self.store.create(
            form.name, sources, narrator=self._voice(form.narrator or ""),
            language=languages.normalize_language(form.language), profile=form.profile or None,
            voice_tags={tag: self._voice(voice) for tag, voice in parse_tag_lines(form.voice_tags).items()},
            voices=self.tts.voices(),
        )  # fmt: skip
        return {"name": project.name, "chapters": len(project.chapters), "segments": len(project.segments()),
                "warnings": project.warnings}  # fmt: skip

    def list_projects(self) -> list[dict[str, Any]]:
        """Every project: name, narrator, language, chapter and segment counts, segments per state."""
        listed = []
        for name in self.store.list():
            project = self.store.get(name)
            states: dict[str, int] = {}
            for segment in project.segments():
                states[segment.state] = states.get(segment.state, 0) + 1
            listed.append({
                "name": project.name, "narrator": project.narrator, "language": project.language,
                "chapters": len(project.chapters), "segments": len(project.segments()), "states": states,
            })  # fmt: skip
        return listed

    def get_project(self, project: str) -> dict[str, Any]:
        """The whole project as JSON: chapters, segments with their takes, settings, voice tags, dictionary."""
        return self.store.get(project).to_dict()

    def delete_project(self, project: str, confirm: bool = False) -> str:
        """Delete a project and every take and export of it; `confirm` must be true."""
        if not confirm:
            raise InvalidInput(f"Tick the confirmation box to delete '{project}'.")
        self.store.delete(project)
        gr.Info(f"Project '{project}' deleted.")
        return ""

    # ---- segments -----------------------------------------------------------------------

    def update_segment(self, form: SegmentForm) -> dict[str, Any]:
        """Change one segment's text, voice, language, profile or seed; it is re-rendered only if its sound changed."""
        changes: dict[str, Any] = {}
        if form.text is not None:
            changes["text"] = form.text
        if form.voice is not None:
            changes["voice"] = self._voice(form.voice) if form.voice.strip() else None
        if form.language is not None:
            changes["language"] = languages.normalize_language(form.language) if form.language.strip() else None
        if form.profile is not None:
            changes["profile"] = form.profile.strip() or None
            resolve_params(changes["profile"])
        if form.seed is not None:
            if float(form.seed) != int(form.seed) or form.seed < -1:
                raise InvalidInput(f"The seed must be a whole number (or -1 for none), not {form.seed}.")
            changes["seed"] = None if int(form.seed) == -1 else int(form.seed)
        return asdict(self.store.update_segment(form.project, str(form.segment_id), **changes))

    def lock_segment(self, project: str, segment_id: str) -> dict[str, Any]:
        """Lock a rendered segment: nothing re-renders it, and edits that change its sound are refused."""
        return asdict(self.store.set_locked(project, str(segment_id), True))

    def unlock_segment(self, project: str, segment_id: str) -> dict[str, Any]:
        """Unlock a segment, so it can be edited and rendered again."""
        return asdict(self.store.set_locked(project, str(segment_id), False))

    def choose_take(self, project: str, segment_id: str, take_index: int) -> dict[str, Any]:
        """Make take `take_index` (0-based, as project_get lists them) the one the segment is exported with."""
        if isinstance(take_index, float) and take_index.is_integer():
            take_index = int(take_index)
        return asdict(self.renderer.choose(project, str(segment_id), take_index))

    # ---- rendering ----------------------------------------------------------------------

    def render_project(
        self, project: str, chapters: str | None = None, request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> dict[str, Any]:  # fmt: skip
        """Render what needs rendering in `chapters` ("1, 3-4"; empty: all); a stopped render keeps what it made."""
        indices = self.store.get(project).chapters_numbered(chapters)
        with (
            self.tracker.track("ui_project_render", "project") as ticket,
            self.switches.armed(request) as should_stop,
        ):
            report = self.renderer.render(
                project, chapters=indices, progress=progress_callback(progress, ticket), should_stop=should_stop
            )
            ticket.audio_seconds = report.audio_seconds
        done = len(report.rendered) + len(report.flagged)
        gr.Info(
            f"{'Stopped' if report.cancelled else 'Done'}: {done} segments rendered, {len(report.flagged)} flagged."
        )
        return report.to_dict()

    def regenerate(
        self, project: str, segment_id: str, request: gr.Request | None = None, progress: gr.Progress = gr.Progress()
    ) -> dict[str, Any]:
        """A new take of one segment with a fresh seed; it becomes the chosen take, the older ones stay."""
        with (
            self.tracker.track("ui_project_regenerate", "project") as ticket,
            self.switches.armed(request) as should_stop,
        ):
            segment = self.renderer.regenerate(
                project, str(segment_id), progress=progress_callback(progress, ticket), should_stop=should_stop
            )
        return asdict(segment)

    def export(
        self, form: ExportForm, request: gr.Request | None = None, progress: gr.Progress = gr.Progress()
    ) -> dict[str, Any]:
        """Export the rendered project (audio, subtitles, segment list) with a zip; `url` is where the zip downloads.

        Paths are relative to the projects folder; the `url` is relative to the studio's address.
        """
        chapters = self.store.get(form.project).chapters_numbered(form.chapters)
        export_request = ExportRequest(
            formats=tuple(form.formats or ()), chapters=None if chapters is None else tuple(chapters),
            loudness=form.loudness,
        )  # fmt: skip
        with self.switches.armed(request) as should_stop:
            result = export_project(
                self.store, form.project, export_request, progress=progress_callback(progress), should_stop=should_stop
            )
        return {**result.to_dict(), "url": f"/gradio_api/file={quote(str(result.zip.resolve()))}"}

    def show_export(self, project: str, exported: dict[str, Any] | None) -> tuple[str | None, str]:
        """The zip to download and a summary of an export; the zip must be one of the project's."""
        if not exported:
            return None, ""
        zipped = resolve_inside(self.store.root / str(exported["zip"]), [self.store.folder(project)], kind="file",
                                what="export")  # fmt: skip
        after = exported["loudness"].get("after", {})
        lines = [
            f"**{exported['duration_s']:.1f} s** in {len(exported['chapters'])} chapters · "
            + ", ".join(f"{kind}" for kind in exported["files"]),
            f"- loudness {exported['loudness']['target']}: "
            + ", ".join(f"{key} {value}" for key, value in after.items()),
        ]
        lines += [
            f"- “{overlap['text']}” runs {overlap['seconds']:.2f} s into the next cue"
            for overlap in exported["overlaps"]
        ]
        return str(zipped), "\n".join(lines)

    def status(self, project: str) -> dict[str, Any]:
        """Segments per state, how many still need rendering, the flagged ones with reasons, rendered seconds."""
        return self.renderer.status(project)

    # ---- dictionaries and settings ------------------------------------------------------

    def set_dictionary(self, project: str, entries: pd.DataFrame) -> dict[str, Any]:
        """Replace the project's pronunciation dictionary (a DICT_HEADERS table); returns the invalidated segments."""
        changed = self.store.set_dictionary(project, dictionary_entries(entries))
        gr.Info(f"Dictionary saved; {len(changed)} segments will be rendered again.")
        return {"invalidated": changed}

    def set_global_dictionary(self, entries: pd.DataFrame) -> dict[str, Any]:
        """Replace the studio-wide pronunciation dictionary; returns the invalidated segments per project."""
        changed = self.store.set_global_dictionary(dictionary_entries(entries))
        gr.Info(f"Studio dictionary saved; {sum(map(len, changed.values()))} segments will be rendered again.")
        return {"invalidated": changed}

    def set_settings(self, form: SettingsForm) -> dict[str, Any]:
        """Replace how the project is rendered and mixed; an uploaded `background` becomes its dub track."""
        self.store.set_settings(form.project, form.settings())
        if form.background:
            self.store.set_background(form.project, Path(form.background))
        elif form.remove_background:
            self.store.set_background(form.project, None)
        return asdict(self.store.get(form.project).settings)

    # ---- views (private events) ---------------------------------------------------------

    def choices(self, current: str | None = None) -> gr.Dropdown:
        names = self.store.list()
        return gr.Dropdown(choices=names, value=current if current in names else None)

    def voice_choices(self, narrator: str | None, segment_voice: str | None) -> tuple[gr.Dropdown, gr.Dropdown]:
        voices = self.tts.voices()
        default = self.tts.engine.default_speaker()
        return (
            gr.Dropdown(choices=voices, value=narrator if narrator in voices else default),
            gr.Dropdown(choices=[("project's narrator", ""), *((v, v) for v in voices)], value=segment_voice or ""),
        )

    def show(self, project: str | None, flagged_only: bool) -> tuple[Any, ...]:
        """Summary, segments, dictionaries and settings of the opened project."""
        global_rows = dictionary_rows(self.store.global_dictionary())
        if not project:
            return ("", [], [], [], global_rows, *(getattr(Settings(), key) for key in SETTING_KEYS), "")
        opened = self.store.get(project)
        rows, ids = segment_rows(opened, self.store.entries(opened), flagged_only)
        summary = summary_markdown(opened, self.renderer.status(project))
        return (summary, rows, ids, dictionary_rows(opened.dictionary), global_rows,
                *(getattr(opened.settings, key) for key in SETTING_KEYS), opened.settings.background or "")  # fmt: skip

    def show_segments(self, project: str | None, flagged_only: bool) -> tuple[Any, ...]:
        """Summary and segments only: a segment change must not reset dictionaries or settings being edited."""
        return self.show(project, flagged_only)[:3]

    def pick_segment(self, ids: list[str], evt: gr.SelectData) -> str:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not isinstance(row, int) or not 0 <= row < len(ids):
            raise InvalidInput("That row is no longer in the table; open the project again.")
        return ids[row]

    def segment_panel(self, project: str | None, segment_id: str | None) -> tuple[Any, ...]:
        """The editor of one segment: its fields, its takes and its chosen take's audio."""
        if not project or not segment_id:
            return "", "", "", "", None, gr.Dropdown(choices=[], value=None), None
        segment = self.store.get(project).segment(segment_id)
        chosen = next((i for i, t in enumerate(segment.takes) if t.chosen), None)
        return (
            segment.text,
            segment.voice or "",
            segment.language or "",
            segment.profile or "",
            segment.seed,
            gr.Dropdown(choices=take_choices(segment), value=chosen),
            self.take_audio(project, segment_id, chosen),
        )

    def take_audio(self, project: str | None, segment_id: str | None, take_index: int | None) -> str | None:
        if not project or not segment_id or take_index is None:
            return None
        segment = self.store.get(project).segment(segment_id)
        if not isinstance(take_index, int) or not 0 <= take_index < len(segment.takes):
            return None
        return str(segment.takes[take_index].path(self.store.folder(project)))


def _settings_widgets() -> dict[str, gr.components.Component]:
    """The render and mix settings, by :class:`SettingsForm` field (all but ``project``)."""
    with gr.Row():
        widgets: dict[str, gr.components.Component] = {
            "paragraph_gap_s": ranged_slider(0, 5, value=0.6, step=0.1, label="Gap after a paragraph (s)"),
            "chapter_gap_s": ranged_slider(0, 10, value=2.0, step=0.5, label="Gap after a chapter (s)"),
            "verify": gr.Checkbox(value=True, label="Verify each take with Whisper"),
            "attempts": ranged_slider(1, 10, value=3, step=1, label="Takes per segment"),
        }
    with gr.Row():
        widgets |= {
            "max_speed": ranged_slider(1.0, 2.0, value=1.3, step=0.05, label="Fastest speed for a cue"),
            "max_stretch": ranged_slider(1.0, 1.5, value=1.2, step=0.05, label="Largest time-stretch for a cue"),
            "duck_db": ranged_slider(0, 40, value=12, step=1, label="Duck the background by (dB)"),
        }
    with gr.Row():
        widgets |= {
            "background": gr.File(label="Background track (dubs)", type="filepath", height=90),
            "remove_background": gr.Checkbox(value=False, label="Remove the background track"),
        }
    return widgets


def build(demo: gr.Blocks, handlers: ProjectHandlers, library_changed: gr.State) -> None:
    """Build the tab inside ``demo``'s current context and wire its events."""
    h = handlers
    gr.Markdown(
        "Long-form narration and dubbing: paste a script or upload a book (.txt, .md, .epub) or subtitles "
        "(.srt, .vtt). `[Alice]` at the start of a line gives the rest of the paragraph to Alice's voice; "
        "`[pause 1.5s]` inserts a pause."
    )
    with gr.Accordion("New project", open=True):
        with gr.Row():
            name = gr.Textbox(label="Project name", max_lines=1, elem_id="project-name")
            narrator = gr.Dropdown(label="Narrator voice", choices=[], allow_custom_value=True, filterable=True,
                                   elem_id="project-narrator")  # fmt: skip
            language = gr.Dropdown(choices=languages.choices(), value="en", label="Language", allow_custom_value=True)
            profile = gr.Radio(choices=list(PROFILES), value=DEFAULT_PROFILE, label="Quality profile")
        with gr.Row():
            text = gr.Textbox(label="Script", lines=6, placeholder="Paste the text here…", elem_id="project-text")
            source = gr.File(label="…or a file", type="filepath", file_types=list(SUFFIXES), elem_id="project-source")
        voice_tags = gr.Textbox(label="Voice tags, one per line: Alice = Daisy Studious", lines=2,
                                elem_id="project-tags")  # fmt: skip
        create = gr.Button("Create project", variant="primary")
    with gr.Row():
        picked = gr.Dropdown(label="Project", choices=[], allow_custom_value=True, elem_id="project-picked")
        refresh = gr.Button("Refresh", size="sm", scale=0)
    summary = gr.Markdown(elem_id="project-summary")
    with gr.Accordion("Segments", open=True):
        flagged_only = gr.Checkbox(label="Flagged only", value=False, elem_id="project-flagged-only")
        table = gr.Dataframe(headers=SEGMENT_HEADERS, interactive=False, wrap=True, max_height=420,
                             elem_id="project-segments")  # fmt: skip
        with gr.Row():
            with gr.Column(scale=3):
                segment_id = gr.Textbox(label="Segment", interactive=False, max_lines=1, elem_id="project-segment-id")
                segment_text = gr.Textbox(label="Text", lines=3, elem_id="project-segment-text")
                with gr.Row():
                    segment_voice = gr.Dropdown(label="Voice", choices=[("project's narrator", "")], value=None,
                                                allow_custom_value=True, elem_id="project-segment-voice")  # fmt: skip
                    segment_language = gr.Dropdown(choices=[("project's", ""), *languages.choices()], value=None,
                                                   label="Language", allow_custom_value=True)  # fmt: skip
                    segment_profile = gr.Dropdown(
                        choices=[("project's", ""), *((p, p) for p in PROFILES)], value=None, label="Profile"
                    )
                    segment_seed = ranged_number(label="Seed", value=None, precision=0, minimum=-1,
                                                 info="Empty: keep; -1: no fixed seed.")  # fmt: skip
                save_segment = gr.Button("Save segment")
            with gr.Column(scale=2):
                take_player = gr.Audio(label="Take", type="filepath", interactive=False, elem_id="project-take")
                takes = gr.Dropdown(label="Takes", choices=[], allow_custom_value=True, elem_id="project-takes")
                with gr.Row():
                    use_take = gr.Button("Use this take", size="sm")
                    regenerate = gr.Button("Regenerate", size="sm")
                    lock = gr.Button("Lock", size="sm")
                    unlock = gr.Button("Unlock", size="sm")
    with gr.Accordion("Render", open=True):
        with gr.Row():
            render_chapters = gr.Textbox(label="Chapters (e.g. 1, 3-4; empty: all)", max_lines=1, scale=3)
            render = gr.Button("Render", variant="primary", elem_id="project-render")
            stop = gr.Button("Stop", variant="stop")
        report = gr.JSON(label="Render report", elem_id="project-render-report")
    with gr.Accordion("Export", open=True):
        with gr.Row():
            formats = gr.CheckboxGroup(list(FORMATS), value=list(FORMATS), label="Formats")
            export_chapters = gr.Textbox(label="Chapters (e.g. 1, 3-4; empty: all)", max_lines=1)
            loudness = gr.Radio(list(TARGETS), value="podcast", label="Loudness target",
                                info="podcast: -16 LUFS; acx: audiobook RMS -23 to -18 dB, peaks under -3 dB.")  # fmt: skip
        export = gr.Button("Export", variant="primary", elem_id="project-export")
        with gr.Row():
            export_file = gr.File(label="Export (zip)", interactive=False, elem_id="project-export-file")
            export_summary = gr.Markdown(elem_id="project-export-summary")
        exported = gr.JSON(visible=False)
    with gr.Accordion("Pronunciation", open=False):
        dictionary = gr.Dataframe(headers=DICT_HEADERS, datatype=DICT_TYPES, interactive=True,
                                  label="This project's dictionary", elem_id="project-dictionary")  # fmt: skip
        save_dictionary = gr.Button("Save project dictionary")
        global_dictionary = gr.Dataframe(headers=DICT_HEADERS, datatype=DICT_TYPES, interactive=True,
                                         label="Studio-wide dictionary (every project)",
                                         elem_id="project-global-dictionary")  # fmt: skip
        save_global = gr.Button("Save studio dictionary")
    with gr.Accordion("Settings", open=False):
        settings = _settings_widgets()
        background_now = gr.Textbox(label="Background track now", interactive=False, max_lines=1)
        save_settings = gr.Button("Save settings")
    with gr.Accordion("Delete", open=False), gr.Row():
        confirm = gr.Checkbox(label="Yes, delete this project, its takes and exports for good", value=False)
        delete = gr.Button("Delete project", variant="stop")

    private = {"api_visibility": "private"}
    ids = gr.State([])
    answer = gr.JSON(visible=False)
    view = [summary, table, ids, dictionary, global_dictionary, *(settings[k] for k in SETTING_KEYS), background_now]
    panel = [segment_text, segment_voice, segment_language, segment_profile, segment_seed, takes, take_player]
    show, choices, segment_panel = ui_errors(h.show), h.choices, ui_errors(h.segment_panel)
    show_segments = ui_errors(h.show_segments)

    def refreshed(event: Any, *, everything: bool = False) -> None:
        """After a change: the segments (or the whole view, after a dictionary or settings save), then the editor."""
        shown = (show, view) if everything else (show_segments, view[:3])
        event.success(shown[0], [picked, flagged_only], shown[1], **private).then(
            segment_panel, [picked, segment_id], panel, **private
        )

    create_inputs = form_inputs(CreateForm, {"name": name, "text": text, "source": source, "narrator": narrator,
                                             "language": language, "profile": profile, "voice_tags": voice_tags})  # fmt: skip
    created = create.click(ui_errors(form_handler(CreateForm, h.create_project)), create_inputs, answer,
                           api_name="project_create")  # fmt: skip
    created.success(lambda made: gr.Dropdown(choices=h.store.list(), value=made["name"]), answer, picked, **private)
    gr.api(h.list_projects, api_name="project_list")
    gr.api(h.get_project, api_name="project_get")
    picked.change(show, [picked, flagged_only], view, **private).then(lambda: "", None, segment_id, **private)
    flagged_only.change(show, [picked, flagged_only], view, **private)
    refresh.click(choices, picked, picked, **private)
    segment_id.change(segment_panel, [picked, segment_id], panel, **private)
    table.select(ui_errors(h.pick_segment), ids, segment_id, **private)
    takes.change(ui_errors(h.take_audio), [picked, segment_id, takes], take_player, **private)
    segment_inputs = form_inputs(SegmentForm, {"project": picked, "segment_id": segment_id, "text": segment_text,
                                               "voice": segment_voice, "language": segment_language,
                                               "profile": segment_profile, "seed": segment_seed})  # fmt: skip
    refreshed(save_segment.click(ui_errors(form_handler(SegmentForm, h.update_segment)), segment_inputs, answer,
                                 api_name="project_update_segment"))  # fmt: skip
    gr.api(h.status, api_name="project_status")
    gpu = {"concurrency_id": GPU, "concurrency_limit": 1}
    refreshed(render.click(ui_errors(h.render_project), [picked, render_chapters], report, api_name="project_render",
                           **gpu))  # fmt: skip
    refreshed(regenerate.click(ui_errors(h.regenerate), [picked, segment_id], answer, api_name="project_regenerate",
                               **gpu))  # fmt: skip
    stop.click(h.switches.stop, None, None, api_name="project_stop", queue=False)
    export_inputs = form_inputs(ExportForm, {"project": picked, "formats": formats, "chapters": export_chapters,
                                             "loudness": loudness})  # fmt: skip
    exporting = export.click(ui_errors(form_handler(ExportForm, h.export)), export_inputs, exported,
                             api_name="project_export", concurrency_id="project-export", concurrency_limit=1)  # fmt: skip
    exporting.success(ui_errors(h.show_export), [picked, exported], [export_file, export_summary], **private)
    refreshed(use_take.click(ui_errors(h.choose_take), [picked, segment_id, takes], answer,
                             api_name="project_choose_take"))  # fmt: skip
    refreshed(lock.click(ui_errors(h.lock_segment), [picked, segment_id], answer, api_name="project_lock_segment"))
    refreshed(
        unlock.click(ui_errors(h.unlock_segment), [picked, segment_id], answer, api_name="project_unlock_segment")
    )
    refreshed(save_dictionary.click(ui_errors(h.set_dictionary), [picked, dictionary], answer,
                                    api_name="project_set_dictionary"), everything=True)  # fmt: skip
    refreshed(save_global.click(ui_errors(h.set_global_dictionary), global_dictionary, answer,
                                api_name="project_set_global_dictionary"), everything=True)  # fmt: skip
    settings_inputs = form_inputs(SettingsForm, {"project": picked, **settings})
    refreshed(save_settings.click(ui_errors(form_handler(SettingsForm, h.set_settings)), settings_inputs, answer,
                                  api_name="project_set_settings"), everything=True)  # fmt: skip
    deleted = delete.click(ui_errors(h.delete_project), [picked, confirm], picked, api_name="project_delete")
    deleted.success(choices, picked, picked, **private)
    voices = [narrator, segment_voice]
    demo.load(h.voice_choices, voices, voices, **private)
    library_changed.change(h.voice_choices, voices, voices, **private)
    demo.load(choices, picked, picked, **private)
    demo.load(show, [picked, flagged_only], view, **private)
