"""The OpenAI-compatible API, health, metrics and concurrency, against the real app on the tiny model."""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import soundfile as sf
from gradio_client import Client

from tests.conftest import running_app, speak

MANY_SENTENCES = " ".join(
    f"This is sentence number {n}, and it is long enough to need a chunk of its own in the stream."
    for n in ("one", "two", "three", "four", "five", "six")
)


@pytest.fixture(scope="module")
def api_app(tiny_xtts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    data = tmp_path_factory.mktemp("serving")
    voices = data / "models" / "voices"
    voices.mkdir(parents=True)
    speak("The quick brown fox jumps over the lazy dog, near the river bank.", voices / "Narrator.wav")
    with running_app(
        data, "--model-dir", str(tiny_xtts), "--max-text-chars", "600", "--voice-map", "nova=Narrator"
    ) as app:
        yield app


@pytest.fixture(scope="module")
def oai(api_app: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=api_app["url"] + "v1", api_key="not-needed", max_retries=0, timeout=120)


def seconds_of(data: bytes, fmt: str) -> float:
    """Decode the bytes as a player would (ffmpeg) and count the samples."""
    if fmt == "pcm":
        return len(data) / 2 / 24000
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", {"opus": "ogg", "aac": "aac"}.get(fmt, fmt), "-i", "pipe:0",
         "-f", "s16le", "-ac", "1", "-ar", "24000", "pipe:1"],
        input=data, capture_output=True, check=True,
    )  # fmt: skip
    assert decoded.stdout, f"{fmt} did not decode"
    return len(decoded.stdout) / 2 / 24000


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_every_response_format_decodes(oai: openai.OpenAI, fmt: str) -> None:
    response = oai.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello there. How are you?", response_format=fmt
    )
    seconds = seconds_of(response.content, fmt)
    # the tiny model speaks every chunk for its full length bound (~4.5 s): one chunk here
    assert 4.0 < seconds < 5.0


def test_streaming_sends_audio_before_the_whole_input_is_spoken(api_app: dict) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": MANY_SENTENCES, "response_format": "pcm", "seed": 11}
    arrivals: list[tuple[float, int]] = []
    started = time.perf_counter()
    with httpx.stream("POST", api_app["url"] + "v1/audio/speech", json=body, timeout=120) as response:
        assert response.status_code == 200
        for block in response.iter_bytes():
            arrivals.append((time.perf_counter() - started, len(block)))
    total = arrivals[-1][0]
    first = arrivals[0][0]
    print(f"first audio after {first:.3f}s, all of it after {total:.3f}s, {len(arrivals)} pieces")
    assert len(arrivals) >= 6  # every sentence is a chunk here, with pauses between
    assert first < total * 0.5


def test_the_seed_extension_repeats_the_same_take(api_app: dict) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": "Say it the same way.", "response_format": "pcm"}
    takes = [httpx.post(api_app["url"] + "v1/audio/speech", json={**body, "seed": 5}, timeout=120) for _ in range(2)]
    other = httpx.post(api_app["url"] + "v1/audio/speech", json={**body, "seed": 6}, timeout=120)
    assert takes[0].status_code == takes[1].status_code == other.status_code == 200
    assert takes[0].content == takes[1].content != other.content


def test_cloned_and_mapped_voices(oai: openai.OpenAI, api_app: dict) -> None:
    direct = oai.audio.speech.create(model="tts-1", voice="Narrator", input="By name.", response_format="wav")
    mapped = oai.audio.speech.create(model="tts-1", voice="nova", input="By alias.", response_format="wav")
    assert seconds_of(direct.content, "wav") > 0 and seconds_of(mapped.content, "wav") > 0
    voices = httpx.get(api_app["url"] + "v1/voices").json()
    assert voices["aliases"]["nova"] == "Narrator"
    assert voices["aliases"]["alloy"] == "Claribel Dervla"
    assert {v["name"] for v in voices["voices"]} >= {"Narrator", "Claribel Dervla"}
    assert [m.id for m in oai.models.list().data] == ["tts-1", "tts-1-hd", "xtts-v2"]


def test_errors_are_openai_json_with_the_right_status(oai: openai.OpenAI, api_app: dict) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        oai.audio.speech.create(model="tts-1", voice="Nobody", input="Hi")
    assert unknown.value.body["code"] == "voice_not_found"
    with pytest.raises(openai.BadRequestError, match="The text is empty"):
        oai.audio.speech.create(model="tts-1", voice="alloy", input="   ")
    with pytest.raises(openai.APIStatusError) as too_long:
        oai.audio.speech.create(model="tts-1", voice="alloy", input="x" * 601)
    assert too_long.value.status_code == 413 and "limit is 600" in too_long.value.message
    with pytest.raises(openai.BadRequestError, match="response_format must be one of"):
        oai.audio.speech.create(model="tts-1", voice="alloy", input="Hi", response_format="ogg")  # type: ignore[arg-type]
    raw = httpx.post(
        api_app["url"] + "v1/audio/speech", content=b"not json", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 400 and raw.json()["error"]["message"] == "The request body must be JSON."
    missing = httpx.post(api_app["url"] + "v1/audio/speech", json={"voice": "alloy"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"


def test_health_and_metrics_answer_while_the_gpu_is_busy(api_app: dict) -> None:
    url = api_app["url"]
    long_text = " ".join(f"Sentence number {i} keeps the model busy for a while." for i in range(8))
    worker = threading.Thread(
        target=lambda: httpx.post(
            url + "v1/audio/speech", json={"voice": "alloy", "input": long_text, "response_format": "pcm"}, timeout=300
        )
    )
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while httpx.get(url + "health").json()["queue_depth"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        latencies, depths = [], []
        for _ in range(5):
            started = time.perf_counter()
            health = httpx.get(url + "health", timeout=5).json()
            metrics = httpx.get(url + "metrics", timeout=5).text
            latencies.append(time.perf_counter() - started)
            depths.append(health["queue_depth"])
        assert max(depths) >= 1, "the synthesis should still be running"
        assert max(latencies) < 1.0
        assert health["model_loaded"] is True and health["device"] == "cpu" and health["version"]
        assert "xtts_studio_queue_depth" in metrics and 'route="/v1/audio/speech"' in metrics
    finally:
        worker.join()


def test_concurrent_api_and_ui_load_has_no_server_errors(tiny_xtts: Path, tmp_path: Path) -> None:
    with running_app(tmp_path, "--model-dir", str(tiny_xtts), "--max-queue", "6") as app:
        url = app["url"]

        def api_call(i: int) -> int:
            body = {"voice": "alloy", "input": f"Request number {i}. It has two sentences.", "response_format": "wav"}
            response = httpx.post(url + "v1/audio/speech", json=body, timeout=300)
            if response.status_code == 200:
                assert sf.info(io.BytesIO(response.content)).duration > 0
            else:
                assert response.json()["error"]["code"] == "queue_full"
            return response.status_code

        def ui_call(i: int) -> str:
            try:
                path = Client(url, verbose=False).predict(
                    text=f"UI request {i}.", language="en", api_name="/synthesize"
                )
                return "ok" if sf.info(path).duration > 0 else "empty"
            except Exception as exc:  # a clean refusal names the busy queue
                assert "busy" in str(exc).lower(), exc
                return "busy"

        with ThreadPoolExecutor(max_workers=20) as pool:
            api = [pool.submit(api_call, i) for i in range(16)]
            ui = [pool.submit(ui_call, i) for i in range(4)]
            statuses = [f.result(timeout=600) for f in api]
            ui_results = [f.result(timeout=600) for f in ui]
        print("api:", statuses, "ui:", ui_results)
        assert set(statuses) <= {200, 503} and 200 in statuses
        assert 503 in statuses  # 16 requests against a queue of 6: some must be turned away cleanly
        assert set(ui_results) <= {"ok", "busy"}
        assert httpx.get(url + "health").json()["queue_depth"] == 0
        after = httpx.post(url + "v1/audio/speech", json={"voice": "alloy", "input": "Still fine."}, timeout=120)
        assert after.status_code == 200
        metrics = httpx.get(url + "metrics").text
        assert 'status="busy"' in metrics and 'status="error"' not in metrics


def test_dropping_a_wav_makes_a_voice_the_api_can_use(api_app: dict, tmp_path: Path) -> None:
    voices = Path(api_app["data"]) / "models" / "voices"
    shutil.copy(
        speak("Another dropped reference clip, spoken slowly.", tmp_path / "x.wav"), voices / "Late Arrival.wav"
    )
    response = httpx.post(
        api_app["url"] + "v1/audio/speech",
        json={"voice": "Late Arrival", "input": "Hi.", "response_format": "wav"},
        timeout=120,  # the new voice is encoded first; a busy 2-core runner takes longer than httpx's 5 s default
    )
    assert response.status_code == 200
