"""The real app (``python webui.py``) on the tiny model, driven through gradio_client."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import soundfile as sf
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import free_port, running_app


@pytest.fixture(scope="module")
def client(live_app: dict) -> Client:
    return Client(live_app["url"], verbose=False)


def test_every_public_event_is_named(client: Client) -> None:
    api = client.view_api(return_format="dict")
    assert {
        "/synthesize",
        "/synthesize_stream",
        "/stop_tts",
        "/load_model",
        "/tts_history",
        "/list_voices",
        "/model_status",
    } <= set(api["named_endpoints"])
    assert api["unnamed_endpoints"] == {}


def test_synthesize_with_only_text_and_language(client: Client, live_app: dict) -> None:
    path = client.predict(text="Hello from the API. Two sentences.", language="en", api_name="/synthesize")
    audio, rate = sf.read(path)
    assert rate == 24000 and len(audio) > 2400
    sidecars = list(Path(live_app["data"], "outputs", "tts").rglob("*.json"))
    metas = [json.loads(p.read_text()) for p in sidecars]
    assert any(m["text"] == "Hello from the API. Two sentences." and m["voice"] == "Claribel Dervla" for m in metas)


def test_synthesize_with_a_chosen_voice_and_profile(client: Client) -> None:
    path = client.predict(
        text="Another voice.", language="en", voice="Andrew Chipper", profile="fast", speed=1.5, api_name="/synthesize"
    )
    assert sf.info(path).samplerate == 24000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "", "language": "en"}, "The text is empty"),
        ({"text": "x" * 5001, "language": "en"}, "the limit is 5,000"),
        ({"text": "Hi", "language": "xx"}, "Unknown language 'xx'"),
        ({"text": "Hi", "language": "en", "voice": "Nobody"}, "Unknown voice 'Nobody'"),
    ],
)
def test_bad_input_is_a_clear_error(client: Client, kwargs: dict, message: str) -> None:
    with pytest.raises(AppError, match=message):
        client.predict(**kwargs, api_name="/synthesize")


def test_stream_ends_with_the_saved_file(client: Client) -> None:
    job = client.submit(text="Streaming over the API. It works.", language="en", api_name="/synthesize_stream")
    outputs = list(job)
    assert len(outputs) >= 2
    final = job.outputs()[-1][1]
    assert isinstance(final, str) and sf.info(final).samplerate == 24000


def test_history_and_voices(client: Client) -> None:
    client.predict(text="For the history.", language="en", api_name="/synthesize")
    table = client.predict(api_name="/tts_history")
    assert table["headers"] == ["Created", "Voice", "Language", "Text", "Seconds"]
    assert table["data"][0][3] == "For the history."
    builtins = [v["name"] for v in client.predict(api_name="/list_voices") if v["kind"] == "builtin"]
    assert builtins == ["Claribel Dervla", "Daisy Studious", "Andrew Chipper"]
    status = client.predict(api_name="/model_status")
    assert status["loaded"] is True and status["device"] == "cpu" and "XTTS loaded" in status["message"]


def test_without_model_and_hub_the_app_starts_and_says_what_is_missing(tmp_path: Path) -> None:
    offline_hub = f"http://127.0.0.1:{free_port()}"
    with running_app(tmp_path, "--hub-url", offline_hub) as app:
        client = Client(app["url"], verbose=False)
        status = client.predict(api_name="/model_status")
        folder = tmp_path / "models" / "xtts_v2"
        assert status["loaded"] is False
        assert "not downloaded yet" in status["message"] and str(folder) in status["message"]
        with pytest.raises(AppError, match=r"Could not download config\.json") as err:
            client.predict(text="Hello", language="en", api_name="/synthesize")
        assert str(folder) in str(err.value) and "speakers_xtts.pth" in str(err.value)
        assert "Traceback" not in str(err.value)


def test_clone_list_speak_and_delete_a_voice(client: Client, live_app: dict, tmp_path: Path) -> None:
    from gradio_client import handle_file

    from tests.conftest import speak

    clip = speak("The quick brown fox jumps over the lazy dog. Pack my box with five dozen jugs.", tmp_path / "ref.wav")
    info, preview = client.predict(
        name="API Voice", clips=[handle_file(str(clip))], language="en", description="via api", api_name="/clone_voice"
    )
    assert info["name"] == "API Voice" and info["kind"] == "cloned" and info["clips"] == 1
    assert sf.info(preview).samplerate == 24000
    listed = client.predict(api_name="/list_voices")
    assert listed[0]["name"] == "API Voice" and {"name": "Claribel Dervla", "kind": "builtin"} in listed

    path = client.predict(text="Now in my cloned voice.", language="en", voice="API Voice", api_name="/synthesize")
    assert sf.info(path).samplerate == 24000

    with pytest.raises(AppError, match="Tick the confirmation box"):
        client.predict(name="API Voice", confirm=False, api_name="/delete_voice")
    client.predict(name="API Voice", confirm=True, api_name="/delete_voice")
    assert all(v["name"] != "API Voice" for v in client.predict(api_name="/list_voices"))
    with pytest.raises(AppError, match="may not contain slashes"):
        client.predict(name="../../etc", clips=[handle_file(str(clip))], api_name="/clone_voice")
    assert not (Path(live_app["data"]) / "etc").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "Hi", "language": "en", "temperature": 50}, "Temperature must be at most"),
        ({"text": "Hi", "language": "en", "speed": 0}, "Speed must be at least"),
        ({"dataset": "x", "epochs": 0}, "Epochs must be at least 1 (got 0)"),
        ({"dataset": "x", "batch_size": -2}, "Batch size must be at least 1 (got -2)"),
    ],
)
def test_range_errors_name_the_field(live_app: dict, kwargs: dict, message: str) -> None:
    api_name = "/synthesize" if "text" in kwargs else "/start_training"
    with pytest.raises(AppError, match=re.escape(message)):
        Client(live_app["url"], verbose=False).predict(api_name=api_name, **kwargs)
