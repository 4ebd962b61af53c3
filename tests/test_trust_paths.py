"""Paths from clients: every spelling of "somewhere else" is refused, through the helper, the API and the UI.

The attacker here is logged in (or the studio runs without auth): they may send any value to
any event, named or not. Nothing outside the data folders (and the operator's --allowed-dir)
may be read, listed, played or returned.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from core.errors import InvalidInput
from core.fs import child, is_inside, resolve_inside
from tests import raw_queue
from tests.conftest import browser_page, speak

SECRET = Path("/etc/hostname")  # readable by anyone, present on every Linux machine

# Each spelling aims at a file outside ``data``; ``link``/``file_link`` are symlinks inside it that point out.
OUTSIDE = [
    "/etc/hostname",
    "//etc/hostname",
    "/proc/self/environ",
    "../etc/hostname",
    "../../../../../../etc/hostname",
    "wavs/../../../../../etc/hostname",
    "  /etc/hostname  ",
    "~/.bashrc",
    "~root/.bashrc",
    "%2e%2e/%2e%2e/%2e%2e/etc/hostname",
    "..%2f..%2f..%2fetc%2fhostname",
    "%2e%2e%2f%2e%2e%2fetc%2fhostname",
    "．．／．．／．．／etc／hostname",  # fullwidth dots and solidus
    "‥/‥/‥/etc/hostname",  # two-dot leader
    "﹒﹒/﹒﹒/etc/hostname",  # small full stops
    "..\\..\\..\\etc\\hostname",
    "link/hostname",
    "file_link",
    "clip.wav\x00/../../etc/hostname",
    "\x1b[2J/etc/hostname",
    "",
    "   ",
    "/",
    "..",
]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "wavs").mkdir(parents=True)
    (root / "wavs" / "clip.wav").write_bytes(b"RIFF")
    (root / "link").symlink_to("/etc")
    (root / "file_link").symlink_to(SECRET)
    return root


@pytest.mark.parametrize("value", OUTSIDE)
def test_the_helper_refuses_every_way_out(data: Path, value: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        resolve_inside(value, [data], what="clip", kind="file")
    assert "clip" in str(refused.value)
    assert not is_inside(value, [data])


@pytest.mark.parametrize("value", ["wavs/clip.wav", "./wavs/clip.wav", "wavs/../wavs/clip.wav", "wavs/clip.wav  "])
def test_the_helper_accepts_what_is_inside(data: Path, value: str) -> None:
    assert resolve_inside(value, [data], what="clip", kind="file") == data / "wavs" / "clip.wav"
    assert resolve_inside(str(data / "wavs" / "clip.wav"), [data], kind="file") == data / "wavs" / "clip.wav"


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a\\b", "../x", "/etc", "", "．．", "link", "%2e%2e%2fx"])
def test_a_name_is_one_component_inside_its_folder(data: Path, name: str) -> None:
    with pytest.raises(InvalidInput):
        child(data, name, what="dataset name", kind="dir")
    assert child(data, "wavs", kind="dir") == data / "wavs"


# ---- the running app ----------------------------------------------------------------------------
ROWS = {"headers": ["keep", "split", "audio_file", "text", "speaker_name", "seconds"], "metadata": None}


@pytest.fixture(scope="module")
def studio(live_app: dict) -> Iterator[dict]:
    """The live app with a dataset of one real clip, and symlinks inside its data folders that point out."""
    data = Path(live_app["data"])
    dataset = data / "outputs" / "datasets" / "trust-set"
    speak("Hello there, this is a clip.", dataset / "wavs" / "a.wav")
    (dataset / "metadata_train.csv").write_text("audio_file|text|speaker_name\nwavs/a.wav|Hello there.|spk\n")
    (dataset / "wavs" / "escape.wav").symlink_to(SECRET)
    (data / "outputs" / "datasets" / "etc-link").symlink_to("/etc")
    yield {**live_app, "dataset": dataset}
    (dataset / "wavs" / "escape.wav").unlink()
    (data / "outputs" / "datasets" / "etc-link").unlink()


def _outside_cases(data: Path) -> list[tuple[str, dict, str]]:
    escape = str(data / "outputs" / "datasets" / "trust-set" / "wavs" / "escape.wav")
    link = str(data / "outputs" / "datasets" / "etc-link")
    rows = {**ROWS, "data": [[True, "train", "../../../../etc/hostname", "x", "s", 1.0]]}
    outside = "outside the folders the studio may use"
    not_checkpoint = "is not a checkpoint of this studio"
    return [
        ("/build_dataset", {"name": "evil", "folder": "/etc"}, outside),
        ("/build_dataset", {"name": "evil", "folder": "../../../../etc"}, outside),
        ("/build_dataset", {"name": "evil", "folder": "%2e%2e%2f%2e%2e%2fetc"}, "URL-encoded"),
        ("/build_dataset", {"name": "evil", "folder": "．．／．．／etc"}, "look-alike"),
        ("/build_dataset", {"name": "evil", "folder": link}, outside),
        ("/build_dataset", {"name": "evil", "folder": "datasets/trust-set", "whisper_model": "/etc"}, outside),
        ("/start_training", {"dataset": "/etc"}, outside),
        ("/start_training", {"dataset": "etc-link"}, outside),
        ("/start_training", {"dataset": "trust-set", "base_model": "/etc"}, outside),
        ("/start_training", {"dataset": "trust-set", "reference_clip": str(SECRET)}, outside),
        ("/start_training", {"dataset": "trust-set", "reference_clip": escape}, outside),
        ("/import_checkpoint", {"archive": None, "folder": "/etc"}, outside),
        ("/import_checkpoint", {"archive": None, "folder": "~"}, outside),
        ("/training_status", {"run": "../../etc"}, "is not a run name"),
        ("/training_status", {"run": "/etc"}, "is not a run name"),
        ("/resume_training", {"run": ".."}, "is not a run name"),
        ("/cancel_training", {"run": "../x"}, "is not a run name"),
        ("/delete_run", {"run": "../../etc", "confirmed": True}, "is not a run name"),
        ("/prune_run", {"run": "..", "keep": 1}, "is not a run name"),
        ("/speak_checkpoint", {"checkpoint": str(SECRET), "text": "hi"}, not_checkpoint),
        ("/export_checkpoint", {"checkpoint": str(SECRET)}, not_checkpoint),
        ("/load_checkpoint", {"checkpoint": "../../etc/hostname"}, not_checkpoint),
        ("/delete_checkpoint", {"checkpoint": str(SECRET), "confirmed": True}, not_checkpoint),
        ("/render_samples", {"checkpoint": str(SECRET)}, not_checkpoint),
        ("/score_checkpoint", {"checkpoint": str(SECRET)}, not_checkpoint),
        ("/blind_pair", {"first": str(SECRET), "second": "base", "text": "hi"}, not_checkpoint),
        ("/blind_vote_a", {"trial_id": "../../etc"}, "blind test is unknown"),
        ("/save_dataset_table", {"dataset": "../../etc", "rows": rows}, "may not contain slashes"),
        ("/save_dataset_table", {"dataset": "trust-set", "rows": rows}, "is not a clip of this dataset"),
        ("/export_voice", {"name": "../../etc/passwd"}, "There is no voice named"),
        ("/delete_voice", {"name": "../..", "confirm": True}, "There is no voice named"),
        ("/remove_voice_clip", {"name": "../x", "clip": "../../etc/passwd"}, "There is no voice named"),
        ("/rename_voice", {"name": "x", "new_name": "../../evil"}, "There is no voice named"),
        ("/synthesize", {"text": "hi", "language": "en", "voice": "../../../etc/passwd"}, "Unknown voice"),
        ("/delete_rvc_model", {"name": "../../x", "confirm": True}, "Unknown RVC model"),
        ("/rename_rvc_model", {"name": "../../x", "new_name": "y"}, "Unknown RVC model"),
    ]


def test_every_path_taking_endpoint_refuses_outside_paths(studio: dict, tmp_path: Path) -> None:
    """Each call from a fresh client, as a script would; each refused with a message that says why."""
    data = Path(studio["data"])
    before = {p for p in (data / "outputs").rglob("*")}
    for api_name, kwargs, message in _outside_cases(data):
        client = Client(studio["url"], verbose=False, download_files=str(tmp_path / "downloads"))
        with pytest.raises(AppError, match=message):
            client.predict(api_name=api_name, **kwargs)
    assert not (tmp_path / "downloads").exists() or not any((tmp_path / "downloads").rglob("*.*"))
    created = {p for p in (data / "outputs").rglob("*") if p not in before and ".work" not in p.parts}
    assert not created, f"refused calls left files behind: {created}"


def test_listing_a_run_outside_lists_nothing(studio: dict) -> None:
    assert Client(studio["url"], verbose=False).predict("../../etc", api_name="/list_checkpoints") == []


def test_file_inputs_must_have_been_uploaded(studio: dict) -> None:
    """A FileData naming a server file (not an upload) is refused by the upload check, mounted app or not."""
    url = studio["url"] + "gradio_api/"
    forged = {"path": str(SECRET), "meta": {"_type": "gradio.FileData"}}
    for api_name, data in (
        ("convert_voice", [forged, "x", "natural", 0, "rmvpe", 0.5, 3, 0, 0.5, 0.33]),
        ("import_voice", [forged]),
        ("check_clips", [[forged], None]),
        ("import_checkpoint", [forged, "", ""]),
    ):
        event = httpx.post(url + f"call/{api_name}", json={"data": data}, timeout=30).json()["event_id"]
        answer = httpx.get(url + f"call/{api_name}/{event}", timeout=60).text
        assert "event: error" in answer and "not uploaded by a user" in answer, (api_name, answer)


def test_the_file_route_serves_nothing_outside(studio: dict) -> None:
    url = studio["url"] + "gradio_api/file="
    escape = Path(studio["dataset"], "wavs", "escape.wav")
    for target in (str(SECRET), str(escape), "../../../../etc/hostname", "%2Fetc%2Fhostname"):
        response = httpx.get(url + target, timeout=30)
        assert response.status_code in (403, 404) and SECRET.read_text() not in response.text, target


def _clip_row(cell: str) -> dict:
    return {**ROWS, "data": [[True, "train", cell, "Hello there.", "spk", 1.0]]}


@pytest.mark.parametrize(
    "cell",
    [str(SECRET), "../../../../../../etc/hostname", "wavs/escape.wav", "wavs/../../../../../../etc/hostname",
     "%2e%2e%2f%2e%2e%2fetc%2fhostname", "．．／．．／etc／hostname"],
)  # fmt: skip
def test_the_clip_table_attack_through_the_raw_queue(studio: dict, cell: str) -> None:
    """The found attack: edit a row's audio_file, then fire the table's select event by hand."""
    fn_index, table = raw_queue.event_index(studio["url"], elem_id="dataset-table", trigger="select")
    event_data = {"index": [0, 2], "value": cell, "row_value": _clip_row(cell)["data"][0], "selected": True}
    done = raw_queue.call(
        studio["url"], fn_index, ["trust-set", _clip_row(cell)], trigger_id=table, event_data=event_data
    )
    assert done["success"] is False and raw_queue.files_in(done["output"]) == []
    assert re.search("outside the folders|URL-encoded|look-alike", done["output"]["error"]), done["output"]["error"]


def test_the_clip_table_still_plays_its_own_clip(studio: dict) -> None:
    fn_index, table = raw_queue.event_index(studio["url"], elem_id="dataset-table", trigger="select")
    row = _clip_row("wavs/a.wav")
    event_data = {"index": [0, 2], "value": "wavs/a.wav", "row_value": row["data"][0], "selected": True}
    done = raw_queue.call(studio["url"], fn_index, ["trust-set", row], trigger_id=table, event_data=event_data)
    assert done["success"] is True and [Path(p).name for p in raw_queue.files_in(done["output"]["data"])] == ["a.wav"]


def test_the_clip_table_attack_in_the_browser(studio: dict, chromium_path: str) -> None:
    """As a person would: pick the dataset, type /etc/hostname into the audio_file cell, click the row."""
    with browser_page(studio["url"], chromium_path) as page:
        page.get_by_role("tab", name="Dataset").click()
        picked = page.locator("#dataset-picked input")
        picked.fill("trust-set")
        picked.press("Enter")
        cell = page.locator("#dataset-table").get_by_text("wavs/a.wav").filter(visible=True).first
        cell.wait_for()
        cell.dblclick()
        page.keyboard.press("Control+A")
        page.keyboard.type(str(SECRET))
        page.keyboard.press("Enter")
        page.locator("#dataset-table").get_by_text(str(SECRET)).filter(visible=True).first.click()
        page.get_by_text("is outside the folders the studio may use").first.wait_for()
        # the player holds at most the row's own clip, heard when the cell was first clicked to edit it
        links = page.locator("#dataset-clip a[data-testid='download-link']").evaluate_all("(a) => a.map(e => e.href)")
        assert all(link.endswith("/a.wav") for link in links), links


def test_an_allowed_dir_opens_exactly_that_folder(tmp_path: Path) -> None:
    from core.settings import parse_settings

    extra = tmp_path / "recordings"
    extra.mkdir()
    settings = parse_settings(["--allowed-dir", str(extra), "--outputs-dir", str(tmp_path / "out")], env={})
    assert resolve_inside(str(extra), settings.readable_roots, kind="dir") == extra
    with pytest.raises(InvalidInput, match="outside"):
        resolve_inside(str(tmp_path), settings.readable_roots, kind="dir")
    env = {"XTTS_STUDIO_ALLOWED_DIRS": os.pathsep.join([str(extra), str(extra)])}
    assert parse_settings([], env=env).allowed_dirs == (extra,)
    with pytest.raises(InvalidInput, match="is not a folder"):
        parse_settings(["--allowed-dir", str(tmp_path / "missing")], env={})
