"""The Projects tab's named endpoints on the real app, each call from a fresh gradio_client.Client, as a script calls."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.conftest import speak

NARRATOR, ALICE = "Claribel Dervla", "Daisy Studious"
DICT_HEADERS = ["pattern", "replacement", "regex", "case_sensitive", "whole_word", "language"]


def call(app: dict, api_name: str, *args: Any, **kwargs: Any) -> Any:
    return Client(app["url"], verbose=False).predict(*args, api_name=api_name, **kwargs)


def table(*rows: list[Any]) -> dict[str, Any]:
    return {"headers": DICT_HEADERS, "data": [list(row) for row in rows], "metadata": None}


def projects_root(app: dict) -> Path:
    return Path(app["data"], "outputs", "projects")


def test_create_from_text_with_a_voice_tag_then_list_and_get(live_app: dict) -> None:
    summary = call(
        live_app, "/project_create", name="Tagged Story", narrator=NARRATOR, language="en",
        text="The door opened slowly.\n\n[Alice] Is anyone there?\n\n[Bob] Nobody answered.",
        voice_tags=f"Alice = {ALICE}",
    )  # fmt: skip
    assert summary["name"] == "Tagged Story" and summary["chapters"] == 1 and summary["segments"] == 3
    assert summary["warnings"] == ["Unknown voice tag [Bob]: the narrator reads that text."]
    listed = {p["name"]: p for p in call(live_app, "/project_list")}
    assert listed["Tagged Story"]["segments"] == 3 and listed["Tagged Story"]["states"] == {"pending": 3}
    project = call(live_app, "/project_get", "Tagged Story")
    segments = project["chapters"][0]["segments"]
    assert [s["text"] for s in segments] == ["The door opened slowly.", "Is anyone there?", "Nobody answered."]
    assert [s["voice"] for s in segments] == [None, ALICE, None]
    assert project["narrator"] == NARRATOR and project["voice_tags"] == {"Alice": ALICE}
    assert (projects_root(live_app) / "tagged-story" / "project.json").is_file()


def test_create_from_an_uploaded_markdown_file(live_app: dict, tmp_path: Path) -> None:
    book = tmp_path / "book.md"
    book.write_text("# One\n\nFirst chapter text.\n\n# Two\n\nSecond chapter. It has two sentences.\n")
    summary = call(live_app, "/project_create", name="Markdown Book", source=handle_file(str(book)), narrator=NARRATOR)
    assert summary["chapters"] == 2 and summary["warnings"] == []
    project = call(live_app, "/project_get", "Markdown Book")
    assert [c["title"] for c in project["chapters"]] == ["One", "Two"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "text": "Hello."}, "The project name is empty"),
        ({"name": "../../etc", "text": "Hello."}, "may not contain slashes"),
        ({"name": "Nothing"}, "Paste the script, or upload a file"),
        ({"name": "Nobody", "text": "Hello.", "narrator": "Nobody"}, "Unknown voice 'Nobody'"),
        ({"name": "Bad tag", "text": "Hello.", "voice_tags": "Alice = Ghost"}, "Unknown voice 'Ghost'"),
        ({"name": "Bad line", "text": "Hello.", "voice_tags": "just a name"}, "Voice tag line 1"),
        ({"name": "Lang", "text": "Hello.", "language": "xx"}, "Unknown language 'xx'"),
        ({"name": "Tagged Story", "text": "Again."}, "exists already"),
    ],
)
def test_create_refuses_bad_input_with_a_clear_message(live_app: dict, kwargs: dict, message: str) -> None:
    with pytest.raises(AppError, match=message) as err:
        call(live_app, "/project_create", **kwargs)
    assert "Traceback" not in str(err.value)
    assert not Path(live_app["data"], "etc").exists()


def test_edit_a_segment(live_app: dict) -> None:
    call(live_app, "/project_create", name="Edits", text="One line here.\n\nAnother line there.", narrator=NARRATOR)
    first, second = call(live_app, "/project_get", "Edits")["chapters"][0]["segments"]
    edited = call(live_app, "/project_update_segment", "Edits", first["id"], text="A new line.", voice=ALICE, seed=7)
    assert edited["text"] == "A new line." and edited["voice"] == ALICE and edited["seed"] == 7
    kept = call(live_app, "/project_update_segment", "Edits", first["id"], language="de", profile="fast")
    assert (kept["text"], kept["voice"], kept["language"], kept["profile"]) == ("A new line.", ALICE, "de", "fast")
    back = call(live_app, "/project_update_segment", "Edits", first["id"], voice="", language="", profile="", seed=-1)
    assert (back["voice"], back["language"], back["profile"], back["seed"]) == (None, None, None, None)
    for kwargs, message in [
        ({"segment_id": "nope"}, "has no segment 'nope'"),
        ({"segment_id": second["id"], "voice": "Ghost"}, "Unknown voice 'Ghost'"),
        ({"segment_id": second["id"], "text": "  "}, "the text is empty"),
        ({"segment_id": second["id"], "seed": -5}, r"Seed must be at least -1 \(got -5\)"),
        ({"segment_id": second["id"], "profile": "ultra"}, "ultra is not in the list of choices"),
    ]:
        with pytest.raises(AppError, match=message):
            call(live_app, "/project_update_segment", "Edits", **kwargs)
    with pytest.raises(AppError, match="There is no project named 'Missing'"):
        call(live_app, "/project_update_segment", "Missing", first["id"], text="x")
    with pytest.raises(AppError, match="render it before locking it"):
        call(live_app, "/project_lock_segment", "Edits", second["id"])
    assert call(live_app, "/project_unlock_segment", "Edits", second["id"])["state"] == "pending"


def test_dictionaries_invalidate_only_what_they_change(live_app: dict) -> None:
    call(live_app, "/project_create", name="Words", text="The GUI is here.\n\nNothing to change.", narrator=NARRATOR)
    gui, other = call(live_app, "/project_get", "Words")["chapters"][0]["segments"]
    changed = call(live_app, "/project_set_dictionary", "Words", table(["GUI", "gooey", False, False, True, ""]))
    assert changed == {"invalidated": [gui["id"]]}
    entries = call(live_app, "/project_get", "Words")["dictionary"]
    assert entries == [{"pattern": "GUI", "replacement": "gooey", "regex": False, "case_sensitive": False,
                        "whole_word": True, "language": None}]  # fmt: skip
    with pytest.raises(AppError, match="not a valid regular expression"):
        call(live_app, "/project_set_dictionary", "Words", table(["(", "x", True, False, True, ""]))
    studio = call(live_app, "/project_set_global_dictionary", table(["change", "alter", False, False, True, "en"]))
    assert studio["invalidated"]["Words"] == [other["id"]]
    assert call(live_app, "/project_set_global_dictionary", table())["invalidated"]["Words"] == [other["id"]]


def test_settings_and_a_background_track(live_app: dict, tmp_path: Path) -> None:
    call(live_app, "/project_create", name="Dub", text="Some words.", narrator=NARRATOR)
    track = speak("Background murmur for the dub.", tmp_path / "bed.wav")
    saved = call(live_app, "/project_set_settings", "Dub", paragraph_gap_s=1.0, verify=False, attempts=2, duck_db=6,
                 background=handle_file(str(track)))  # fmt: skip
    assert saved["paragraph_gap_s"] == 1.0 and saved["verify"] is False and saved["attempts"] == 2
    assert saved["background"] == "background.wav"
    assert sf.info(projects_root(live_app) / "dub" / "background.wav").frames == sf.info(track).frames
    kept = call(live_app, "/project_set_settings", "Dub", chapter_gap_s=3.0)
    assert kept["background"] == "background.wav" and kept["verify"] is True and kept["chapter_gap_s"] == 3.0
    assert call(live_app, "/project_set_settings", "Dub", remove_background=True)["background"] is None
    assert not (projects_root(live_app) / "dub" / "background.wav").exists()
    with pytest.raises(AppError, match="Takes per segment must be at least 1"):
        call(live_app, "/project_set_settings", "Dub", attempts=0)
    with pytest.raises(AppError, match="Fastest speed for a cue must be at most 2"):
        call(live_app, "/project_set_settings", "Dub", max_speed=3)


def test_delete_needs_the_confirmation(live_app: dict) -> None:
    call(live_app, "/project_create", name="Doomed", text="Short.", narrator=NARRATOR)
    with pytest.raises(AppError, match="Tick the confirmation box"):
        call(live_app, "/project_delete", "Doomed")
    call(live_app, "/project_delete", "Doomed", True)
    assert "Doomed" not in [p["name"] for p in call(live_app, "/project_list")]
    with pytest.raises(AppError, match="There is no project named 'Doomed'"):
        call(live_app, "/project_get", "Doomed")
    for api_name in ("/project_get", "/project_status"):
        with pytest.raises(AppError, match="may not contain slashes"):
            call(live_app, api_name, "../outputs")
    with pytest.raises(AppError, match="may not contain slashes"):
        call(live_app, "/project_delete", "../../models", True)
    assert Path(live_app["data"], "models").is_dir()


@pytest.fixture(scope="module")
def rendered(live_app: dict) -> dict:
    """A three-segment, two-voice project rendered once (one take per segment, verified by Whisper)."""
    call(live_app, "/project_create", name="Rendered", narrator=NARRATOR, voice_tags=f"Alice = {ALICE}",
         text="The rain stopped at dawn.\n\n[Alice] Shall we go out?\n\nThey walked to the river.")  # fmt: skip
    call(live_app, "/project_set_settings", "Rendered", attempts=1)
    with pytest.raises(AppError, match="'2' is not a chapter of 'Rendered': it has chapters 1 to 1"):
        call(live_app, "/project_render", "Rendered", "2")
    report = call(live_app, "/project_render", "Rendered", "1")
    return {"report": report, "project": call(live_app, "/project_get", "Rendered")}


def test_render_then_status(live_app: dict, rendered: dict) -> None:
    report, project = rendered["report"], rendered["project"]
    segments = project["chapters"][0]["segments"]
    assert sorted(report["rendered"] + report["flagged"]) == sorted(s["id"] for s in segments)
    assert report["cancelled"] is False and report["audio_seconds"] > 0
    folder = projects_root(live_app) / "rendered"
    for segment in segments:
        (take,) = segment["takes"]
        assert take["chosen"] and sf.info(folder / take["file"]).samplerate == 24000
        assert take["passed"] is not None and (take["passed"] or take["reasons"])
    status = call(live_app, "/project_status", "Rendered")
    assert sum(status["states"].values()) == 3 and status["to_render"] == 0 and status["rendered_seconds"] > 0
    assert [f["id"] for f in status["flagged"]] == report["flagged"]
    assert all(f["reasons"] for f in status["flagged"]) and status["rendering"] is False
    again = call(live_app, "/project_render", "Rendered")
    assert again["skipped"] == 3 and again["rendered"] == again["flagged"] == []


def test_regenerate_choose_lock_and_unlock(live_app: dict, rendered: dict) -> None:
    first = rendered["project"]["chapters"][0]["segments"][0]["id"]
    regenerated = call(live_app, "/project_regenerate", "Rendered", first)
    assert len(regenerated["takes"]) == 2 and [t["chosen"] for t in regenerated["takes"]] == [False, True]
    assert regenerated["takes"][0]["seed"] != regenerated["takes"][1]["seed"]
    chosen = call(live_app, "/project_choose_take", "Rendered", first, 0)
    assert [t["chosen"] for t in chosen["takes"]] == [True, False]
    with pytest.raises(AppError, match="has 2 takes; there is no take 5"):
        call(live_app, "/project_choose_take", "Rendered", first, 5)
    assert call(live_app, "/project_lock_segment", "Rendered", first)["state"] == "locked"
    with pytest.raises(AppError, match="is locked; unlock it before changing how it sounds"):
        call(live_app, "/project_update_segment", "Rendered", first, text="Changed.")
    with pytest.raises(AppError, match="is locked; unlock it before regenerating it"):
        call(live_app, "/project_regenerate", "Rendered", first)
    unlocked = call(live_app, "/project_unlock_segment", "Rendered", first)
    assert unlocked["state"] == ("flagged" if unlocked["takes"][0]["passed"] is False else "rendered")
    with pytest.raises(AppError, match="has no segment 'nope'"):
        call(live_app, "/project_regenerate", "Rendered", "nope")


def test_stop_ends_a_render_of_the_same_session(live_app: dict) -> None:
    """Stop is per session: the client that started the render stops it; what was rendered is kept."""
    call(live_app, "/project_create", name="Stopped", narrator=NARRATOR,
         text="One sentence here.\n\nA second one there.\n\nAnd a third at the end.")  # fmt: skip
    call(live_app, "/project_set_settings", "Stopped", verify=False, attempts=1)
    client = Client(live_app["url"], verbose=False)
    job = client.submit("Stopped", "", api_name="/project_render")
    deadline = time.monotonic() + 120
    while not call(live_app, "/project_status", "Stopped")["rendering"] and time.monotonic() < deadline:
        time.sleep(0.2)
    client.predict(api_name="/project_stop")
    report = job.result(timeout=120)
    assert report["cancelled"] is True and len(report["rendered"]) < 3
    assert call(live_app, "/project_status", "Stopped")["to_render"] == 3 - len(report["rendered"])


def test_export_returns_data_and_a_download_url(live_app: dict, rendered: dict) -> None:
    exported = call(live_app, "/project_export", "Rendered", ["wav", "srt", "json"], "1", "podcast")
    assert set(exported["files"]) == {"wav", "srt", "json"} and exported["duration_s"] > 0
    assert exported["zip"].startswith("rendered/exports/") and exported["loudness"]["target"] == "podcast"
    zipped = projects_root(live_app) / exported["zip"]
    assert exported["url"] == f"/gradio_api/file={zipped.resolve()}"
    response = httpx.get(live_app["url"] + exported["url"].lstrip("/"), timeout=30)
    assert response.status_code == 200 and response.content == zipped.read_bytes()
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = sorted(Path(name).name for name in archive.namelist())
    assert names == ["rendered.srt", "rendered.wav", "segments.json"]
    srt = (projects_root(live_app) / exported["files"]["srt"]).read_text()
    assert "Shall we go out?" in srt and "-->" in srt
    for args, message in [
        ((["ogg"], "", "podcast"), "'ogg' .* is not in the list of choices"),
        (([], "", "podcast"), "Choose at least one export format"),
        ((["wav"], "3", "podcast"), "'3' is not a chapter of 'Rendered'"),
        ((["wav"], "", "loud"), "'loud' .* is not in the list of choices"),
    ]:
        with pytest.raises(AppError, match=message):
            call(live_app, "/project_export", "Rendered", *args)
    call(live_app, "/project_create", name="Unrendered", text="Nothing rendered yet.", narrator=NARRATOR)
    with pytest.raises(AppError, match="no chosen take"):
        call(live_app, "/project_export", "Unrendered", ["wav"])
    assert list((projects_root(live_app) / "unrendered").rglob("*.zip")) == []
