"""RVC: the model library's validation, resident conversion on tiny real-format weights, TTS post-processing."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch

from core.errors import InvalidInput, ModelUnavailable
from core.outputs import OutputStore
from core.rvc.convert import RVC_PROFILES, RVCRequest, RVCService, resolve_rvc_params
from core.rvc.models import RVCLibrary, UnknownRVCModel, clean_model_name
from core.rvc.support import SupportFiles
from core.tts import TTSRequest, TTSService
from tests.conftest import free_port, speak

UNREACHABLE_HUB = "http://127.0.0.1:9"  # discard port: connections are refused at once


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak("Hello there, this is a short test.", tmp_path_factory.mktemp("rvc-clip") / "clip.wav")


def make_service(root: Path, support: Path, hub_url: str = UNREACHABLE_HUB) -> RVCService:
    return RVCService(RVCLibrary(root / "rvc"), SupportFiles(support, hub_url=hub_url), OutputStore(root / "out"))


@pytest.fixture(scope="module")
def service(rvc_kit: Path, tmp_path_factory: pytest.TempPathFactory) -> RVCService:
    """One resident service for the module, with a v1 model (with index) and a v2 model (without)."""
    svc = make_service(tmp_path_factory.mktemp("rvc-service"), rvc_kit / "support")
    svc.library.add(rvc_kit / "tiny_v1_40k.pth", rvc_kit / "tiny_v1.index", name="Alpha")
    svc.library.add(rvc_kit / "tiny_v2_48k.pth", name="Beta")
    svc.library.add(rvc_kit / "tiny_v2_40k.pth", rvc_kit / "tiny_v2.index", name="Gamma")
    return svc


# ---- profiles and parameters ------------------------------------------------------------------


def test_profiles_are_the_documented_starting_points() -> None:
    expected = {"natural": (0.85, 3, 0.5, 0.33), "expressive": (0.90, 2, 0.6, 0.25), "stable": (0.70, 5, 0.4, 0.40)}
    for name, (index_rate, radius, rms, protect) in expected.items():
        p = RVC_PROFILES[name]
        assert (p.index_rate, p.filter_radius, p.rms_mix_rate, p.protect, p.f0_method) == (
            index_rate, radius, rms, protect, "rmvpe",
        )  # fmt: skip
    params = resolve_rvc_params("stable", pitch=12, f0_method="PM", index_rate=None)
    assert (params.pitch, params.f0_method, params.index_rate) == (12, "pm", 0.70)
    for bad in ({"pitch": 40}, {"f0_method": "magic"}, {"protect": 0.9}, {"resample_sr": 8000}, {"volume": 1}):
        with pytest.raises(InvalidInput):
            resolve_rvc_params("natural", **bad)
    with pytest.raises(InvalidInput, match="Unknown RVC profile"):
        resolve_rvc_params("loud")


# ---- the model library -------------------------------------------------------------------------


def test_upload_validates_and_records_then_rename_and_delete(rvc_kit: Path, tmp_path: Path) -> None:
    library = RVCLibrary(tmp_path / "rvc")
    info = library.add(rvc_kit / "tiny_v1_40k.pth", rvc_kit / "tiny_v1.index", name="My Voice")
    assert (info.version, info.sample_rate, info.f0, info.has_index) == ("v1", 40000, True, True)
    record = json.loads((tmp_path / "rvc" / "My Voice.json").read_text())
    assert record["version"] == "v1" and record["sample_rate"] == 40000 and record["f0"] is True
    assert record["index_file"] == "My Voice.index" and record["size_bytes"] == info.pth.stat().st_size
    assert record["index_vectors"] == 400
    v2 = library.add(rvc_kit / "tiny_v2_48k.pth")
    assert (v2.name, v2.version, v2.sample_rate, v2.has_index) == ("tiny_v2_48k", "v2", 48000, False)
    assert library.names() == ["My Voice", "tiny_v2_48k"]

    with pytest.raises(InvalidInput, match="already exists"):
        library.add(rvc_kit / "tiny_v1_48k.pth", name="My Voice")
    renamed = library.rename("My Voice", "Renamed")
    assert renamed.index is not None and renamed.index.name == "Renamed.index"
    assert sorted(p.name for p in (tmp_path / "rvc").iterdir()) == [
        "Renamed.index", "Renamed.json", "Renamed.pth", "tiny_v2_48k.json", "tiny_v2_48k.pth",
    ]  # fmt: skip
    library.delete("Renamed")
    assert library.names() == ["tiny_v2_48k"]
    with pytest.raises(UnknownRVCModel, match="Unknown RVC model 'Renamed'"):
        library.get("Renamed")


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden", "x" * 65, "  ", "semi;colon"])
def test_unsafe_names_are_refused(name: str, rvc_kit: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        clean_model_name(name)
    with pytest.raises(InvalidInput):
        RVCLibrary(tmp_path / "rvc").add(rvc_kit / "tiny_v1_40k.pth", name=name)
    assert not (tmp_path / "evil.pth").exists() and not any(tmp_path.rglob("*.pth"))


def test_dropped_files_are_picked_up_and_bad_ones_reported(rvc_kit: Path, tmp_path: Path) -> None:
    folder = tmp_path / "rvc"
    folder.mkdir()
    shutil.copy(rvc_kit / "tiny_v2_40k.pth", folder / "Dropped.pth")
    shutil.copy(rvc_kit / "tiny_v2.index", folder / "added_IVF8_Flat_nprobe_1_Dropped_v2.index")
    torch.save({"model": {"w": torch.zeros(2)}}, folder / "Broken.pth")
    library = RVCLibrary(folder)
    [info] = library.list()
    assert (info.name, info.version, info.index_file) == ("Dropped", "v2", "added_IVF8_Flat_nprobe_1_Dropped_v2.index")
    assert (folder / "Dropped.json").is_file()
    assert "Broken.pth" in library.refused() and "not an RVC voice model" in library.refused()["Broken.pth"]


class _Payload:
    """Pickles into a call of os.system: what a booby-trapped .pth does when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_malicious_pth_is_refused_and_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"weight": {"x": torch.zeros(1)}, "config": [0] * 18, "info": _Payload(marker)}, evil)

    library = RVCLibrary(tmp_path / "rvc")
    with pytest.raises(InvalidInput, match="refused: it is not a plain weights file"):
        library.add(evil)
    (tmp_path / "rvc").mkdir(exist_ok=True)
    shutil.copy(evil, tmp_path / "rvc" / "dropped_evil.pth")
    assert library.list() == [] and "dropped_evil.pth" in library.refused()
    assert not marker.exists()

    # the file really is an attack: unpickling it without weights_only runs the command
    code = f"import torch; torch.load({str(evil)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=120)
    assert marker.exists()


def test_files_that_are_not_rvc_models_are_refused(rvc_kit: Path, tmp_path: Path) -> None:
    library = RVCLibrary(tmp_path / "rvc")
    cases: list[tuple[object, str]] = [
        ({"model": torch.nn.Linear(2, 2).state_dict()}, "no 'weight' and 'config' entries"),
        (torch.zeros(3), "no 'weight' and 'config'"),
    ]
    good = torch.load(rvc_kit / "tiny_v1_40k.pth", weights_only=True)
    cases += [
        ({**good, "version": "v3"}, "unsupported RVC version"),
        ({**good, "version": "v2"}, "v2 models take 768-dim features"),
        ({**good, "f0": 7}, "f0 flag must be 0 or 1"),
        ({**good, "config": [*good["config"][:-1], 22050]}, "unsupported sample rate"),
        ({**good, "weight": {k: v for k, v in good["weight"].items() if not k.startswith("dec.")}}, "missing"),
        ({**good, "config": [*good["config"][:2], 24, *good["config"][3:]]}, "do not match its config"),
    ]
    for number, (payload, message) in enumerate(cases):
        path = tmp_path / f"case{number}.pth"
        torch.save(payload, path)
        with pytest.raises(InvalidInput, match=message):
            library.add(path)
    (tmp_path / "junk.pth").write_bytes(b"not a zip at all")
    with pytest.raises(InvalidInput, match="not a readable PyTorch file"):
        library.add(tmp_path / "junk.pth")
    with pytest.raises(InvalidInput, match="768-dim features, but an RVC v1 model needs 256"):
        library.add(rvc_kit / "tiny_v1_40k.pth", rvc_kit / "tiny_v2.index")
    assert library.list() == []


# ---- conversion ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pm", "harvest", "dio", "rmvpe", "crepe"])
def test_convert_with_each_offline_f0_method(method: str, service: RVCService, clip: Path) -> None:
    conversion, record = service.convert_file(clip, RVCRequest("Alpha", overrides={"f0_method": method, "pitch": 2}))
    duration = sf.info(clip).duration
    assert conversion.sample_rate == 40000 and record.meta["sample_rate"] == 40000
    assert abs(len(conversion.audio) / 40000 - duration) < 0.1
    assert np.isfinite(conversion.audio).all() and np.abs(conversion.audio).max() > 0
    saved, rate = sf.read(record.wav)
    assert rate == 40000 and len(saved) == len(conversion.audio)
    sidecar = json.loads(record.sidecar.read_text())
    assert sidecar["rvc"]["params"] == {
        "pitch": 2, "f0_method": method, "index_rate": 0.85, "filter_radius": 3, "resample_sr": 0,
        "rms_mix_rate": 0.5, "protect": 0.33,
    }  # fmt: skip
    assert sidecar["rvc"]["model"] == "Alpha" and sidecar["rvc"]["index"] == "Alpha.index"
    assert sidecar["source"]["file"] == "clip.wav"


def test_index_output_rates_and_resampling(service: RVCService, clip: Path) -> None:
    def run(model: str, **overrides: object) -> tuple[np.ndarray, int]:
        conversion = service.convert_file(clip, RVCRequest(model, overrides={"f0_method": "pm", **overrides}))[0]
        return conversion.audio, conversion.sample_rate

    with_index, rate = run("Gamma", index_rate=1.0)
    without_index, _ = run("Gamma", index_rate=0.0)
    assert rate == 40000 and len(with_index) == len(without_index)
    assert not np.allclose(with_index, without_index)  # the index really changes the features
    assert run("Beta")[1] == 48000  # v2 48k, no index
    assert run("Beta", resample_sr=24000)[1] == 24000
    assert run("Alpha", resample_sr=44100)[1] == 44100


def test_resident_converter_reloads_only_what_changed(service: RVCService, clip: Path) -> None:
    converter = service.converter
    request = RVCRequest("Alpha", overrides={"f0_method": "rmvpe"})
    service.convert_file(clip, request)
    hubert, rmvpe = converter._vc.hubert_model, converter._f0.models["rmvpe"]
    loads = dict(converter.loads)
    service.convert_file(clip, request)
    service.convert_file(clip, RVCRequest("Alpha", overrides={"f0_method": "pm"}))
    service.convert_file(clip, request)
    assert converter.loads == loads  # same model, same index: nothing reloaded
    service.convert_file(clip, RVCRequest("Gamma", overrides={"f0_method": "rmvpe"}))
    assert converter.loads["models"] == loads["models"] + 1
    assert converter._vc.hubert_model is hubert and converter._f0.models["rmvpe"] is rmvpe


def test_bad_input_audio_is_a_clear_error(service: RVCService, tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(InvalidInput, match="silent"):
        service.convert_file(silent, RVCRequest("Alpha", overrides={"f0_method": "pm"}))
    (tmp_path / "text.wav").write_text("hello")
    with pytest.raises(InvalidInput, match=r"text\.wav"):
        service.convert_file(tmp_path / "text.wav", RVCRequest("Alpha"))
    with pytest.raises(UnknownRVCModel):
        service.convert_file(silent, RVCRequest("Nobody"))


def test_offline_without_support_weights_names_the_file_and_folder(rvc_kit: Path, tmp_path: Path, clip: Path) -> None:
    svc = make_service(tmp_path, tmp_path / "support", hub_url=f"http://127.0.0.1:{free_port()}")
    svc.library.add(rvc_kit / "tiny_v1_40k.pth", name="Alpha")
    with pytest.raises(ModelUnavailable) as caught:
        svc.convert_file(clip, RVCRequest("Alpha"))
    message = str(caught.value)
    assert "hubert_base.pt" in message and str(tmp_path / "support") in message
    assert "lj1995/VoiceConversionWebUI/resolve/main/hubert_base.pt" in message


def test_support_weights_download_with_progress(rvc_kit: Path, tmp_path: Path) -> None:
    """Served over loopback like the hub serves them: fetched once, with progress, then used."""
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    hub = tmp_path / "hub" / "lj1995" / "VoiceConversionWebUI" / "resolve" / "main"
    hub.mkdir(parents=True)
    os.symlink(rvc_kit / "support" / "hubert_base.pt", hub / "hubert_base.pt")
    handler = lambda *a, **k: SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "hub"), **k)  # noqa: E731
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        support = SupportFiles(tmp_path / "support", hub_url=f"http://127.0.0.1:{server.server_port}")
        seen: list[str] = []
        support.ensure(["hubert_base.pt"], lambda fraction, message: seen.append(message))
    finally:
        server.shutdown()
    assert (tmp_path / "support" / "hubert_base.pt").stat().st_size == (
        rvc_kit / "support/hubert_base.pt"
    ).stat().st_size
    assert any("Downloading hubert_base.pt" in m for m in seen)


# ---- TTS post-processing -------------------------------------------------------------------------


@pytest.fixture
def tts_with(shared_engine: object, tmp_path: Path) -> Callable[[RVCService], TTSService]:
    def make(rvc: RVCService) -> TTSService:
        return TTSService(shared_engine, OutputStore(tmp_path / "tts"), max_text_chars=500, rvc=rvc)  # type: ignore[arg-type]

    return make


def test_tts_then_rvc(service: RVCService, tts_with: Callable[[RVCService], TTSService]) -> None:
    tts = tts_with(service)
    rvc = RVCRequest("Alpha", profile="expressive", overrides={"f0_method": "pm", "pitch": -3})
    result = tts.synthesize(TTSRequest(text="Hello from the pipeline.", language="en", rvc=rvc, seed=1))
    assert result.warning is None
    audio, rate = sf.read(result.record.wav)
    assert rate == 40000 and len(audio) > 0
    meta = json.loads(result.record.sidecar.read_text())
    assert meta["rvc"]["model"] == "Alpha" and meta["rvc"]["profile"] == "expressive"
    assert meta["rvc"]["params"]["pitch"] == -3 and meta["rvc"]["params"]["index_rate"] == 0.90

    pieces = list(tts.stream(TTSRequest(text="Streamed. And converted.", language="en", rvc=rvc)))
    assert all(p.audio is None or p.audio.dtype == np.float32 for p in pieces)
    final = pieces[-1]
    assert final.record is not None and final.warning is None and final.record.meta["sample_rate"] == 24000
    assert final.record.meta["rvc"]["model"] == "Alpha"

    with pytest.raises(UnknownRVCModel):
        tts.synthesize(TTSRequest(text="Nobody.", language="en", rvc=RVCRequest("Nobody")))


def test_tts_keeps_the_xtts_audio_when_rvc_fails(
    rvc_kit: Path, tmp_path: Path, tts_with: Callable[[RVCService], TTSService], caplog: pytest.LogCaptureFixture
) -> None:
    broken = make_service(tmp_path, tmp_path / "empty-support", hub_url=f"http://127.0.0.1:{free_port()}")
    broken.library.add(rvc_kit / "tiny_v1_40k.pth", name="Alpha")
    tts = tts_with(broken)
    with caplog.at_level(logging.WARNING, logger="core.tts"):
        result = tts.synthesize(TTSRequest(text="Still here.", language="en", rvc=RVCRequest("Alpha")))
    assert result.warning is not None and "XTTS audio" in result.warning and "hubert_base.pt" in result.warning
    audio, rate = sf.read(result.record.wav)
    assert rate == 24000 and len(audio) > 0
    meta = json.loads(result.record.sidecar.read_text())
    assert meta["rvc"]["model"] == "Alpha" and "hubert_base.pt" in meta["rvc"]["error"]
    assert any("RVC post-processing with Alpha failed" in r.getMessage() for r in caplog.records)


# ---- the running app: Gradio API and the OpenAI-compatible route -----------------------------------


@pytest.fixture(scope="module")
def app_with_rvc(live_app: dict, rvc_kit: Path) -> Iterator[dict]:
    """The live app with the tiny support weights in place (linked, not copied)."""
    support = Path(live_app["data"], "models", "rvc", "support")
    support.mkdir(parents=True, exist_ok=True)
    for name in ("hubert_base.pt", "rmvpe.pt"):
        if not (support / name).exists():
            os.symlink(rvc_kit / "support" / name, support / name)
    yield live_app


def test_gradio_api_upload_convert_and_manage(app_with_rvc: dict, rvc_kit: Path, clip: Path) -> None:
    from gradio_client import Client, handle_file

    client = Client(app_with_rvc["url"], verbose=False)
    client.predict(
        pth=handle_file(str(rvc_kit / "tiny_v2_40k.pth")), index=handle_file(str(rvc_kit / "tiny_v2.index")),
        name="Api Model", api_name="/upload_rvc_model",
    )  # fmt: skip
    models = {m["name"]: m for m in client.predict(api_name="/list_rvc_models")}
    assert models["Api Model"]["version"] == "v2" and models["Api Model"]["has_index"]
    original, converted = client.predict(
        audio=handle_file(str(clip)), model="Api Model", profile="stable", f0_method="pm", api_name="/convert_voice"
    )
    assert sf.info(converted).samplerate == 40000 and original
    sidecars = [json.loads(p.read_text()) for p in Path(app_with_rvc["data"], "outputs", "rvc").rglob("*.json")]
    assert any(m["rvc"]["model"] == "Api Model" and m["rvc"]["profile"] == "stable" for m in sidecars)

    client.predict(name="Api Model", new_name="Api Renamed", api_name="/rename_rvc_model")
    assert "Api Renamed" in {m["name"] for m in client.predict(api_name="/list_rvc_models")}
    client.predict(name="Api Renamed", confirm=True, api_name="/delete_rvc_model")
    assert "Api Renamed" not in {m["name"] for m in client.predict(api_name="/list_rvc_models")}


def test_openai_speech_with_rvc_model(app_with_rvc: dict, rvc_kit: Path) -> None:
    folder = Path(app_with_rvc["data"], "models", "rvc")
    shutil.copy(rvc_kit / "tiny_v1_48k.pth", folder / "Speech Model.pth")  # dropped in by hand
    url = app_with_rvc["url"] + "v1/audio/speech"
    body = {"input": "Converted speech.", "voice": "alloy", "response_format": "wav", "rvc_model": "Speech Model"}
    response = httpx.post(url, json={**body, "rvc_profile": "stable"}, timeout=180)
    assert response.status_code == 200, response.text
    rate = sf.info(io.BytesIO(response.content)).samplerate
    assert rate == 24000
    assert "RVC post-processing with Speech Model failed" not in Path(app_with_rvc["log"]).read_text()
    missing = httpx.post(url, json={**body, "rvc_model": "Nobody"}, timeout=60)
    assert missing.status_code == 400
    error = missing.json()["error"]
    assert error["param"] == "rvc_model" and "Unknown RVC model 'Nobody'" in error["message"]
    assert "Speech Model" in error["message"]
