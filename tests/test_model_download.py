"""First-use download of XTTS v2, against a hub served over loopback from the tiny kit's files."""

from __future__ import annotations

import filecmp
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core import model_files
from core.engine import XTTSEngine
from core.errors import ModelUnavailable
from tests.conftest import free_port


class FakeHub:
    """Serves ``root/<name>`` at ``/coqui/XTTS-v2/resolve/main/<name>`` with HTTP Range support."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ranges: list[str | None] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                match = re.fullmatch(r"/coqui/XTTS-v2/resolve/main/([\w.]+)", self.path)
                path = hub.root / match.group(1) if match else None
                if path is None or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                wanted = self.headers.get("Range")
                hub.ranges.append(wanted)
                start = int(wanted.split("=")[1].rstrip("-")) if wanted else 0
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if wanted else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hub(tiny_xtts: Path) -> Iterator[FakeHub]:
    server = FakeHub(tiny_xtts)
    yield server
    server.server.shutdown()


def test_first_use_downloads_with_progress_then_loads(hub: FakeHub, tiny_xtts: Path, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "xtts_v2"
    engine = XTTSEngine(device="cpu", latents_dir=tmp_path / "l", default_model_dir=dest, hub_url=hub.url)
    status = engine.status().message
    assert "not downloaded yet" in status and str(dest) in status and "model.pth" in status

    seen: list[tuple[float, str]] = []
    engine.ensure_loaded(progress=lambda f, m: seen.append((f, m)))
    for name in model_files.INFERENCE_FILES:
        assert filecmp.cmp(dest / name, tiny_xtts / name, shallow=False)
    assert not list(dest.glob("*.part"))
    fractions = [f for f, m in seen if m.startswith("Downloading")]
    assert fractions == sorted(fractions) and fractions[-1] <= 1.0
    assert any("Downloading model.pth (2/4)" in m for _, m in seen)
    assert engine.loaded and engine.load_count == 1
    assert engine.speakers()  # the downloaded speakers file is used

    # a second start finds everything and downloads nothing
    hub.ranges.clear()
    XTTSEngine(device="cpu", latents_dir=tmp_path / "l", default_model_dir=dest, hub_url=hub.url).ensure_loaded()
    assert hub.ranges == []


def test_interrupted_download_resumes_from_the_part_file(hub: FakeHub, tiny_xtts: Path, tmp_path: Path) -> None:
    dest = tmp_path / "xtts_v2"
    dest.mkdir()
    half = (tiny_xtts / "model.pth").stat().st_size // 2
    (dest / "model.pth.part").write_bytes((tiny_xtts / "model.pth").read_bytes()[:half])
    model_files.download_files(dest, ["model.pth"], hub_url=hub.url)
    assert hub.ranges == [f"bytes={half}-"]
    assert filecmp.cmp(dest / "model.pth", tiny_xtts / "model.pth", shallow=False)


def test_offline_hub_gives_a_message_naming_files_and_folder(tmp_path: Path) -> None:
    dest = tmp_path / "xtts_v2"
    offline = f"http://127.0.0.1:{free_port()}"
    engine = XTTSEngine(device="cpu", latents_dir=tmp_path / "l", default_model_dir=dest, hub_url=offline)
    with pytest.raises(ModelUnavailable) as err:
        engine.ensure_loaded()
    message = str(err.value)
    assert "Could not download config.json" in message
    assert "config.json, model.pth, vocab.json, speakers_xtts.pth" in message
    assert str(dest) in message and "--model-dir" in message
    assert not engine.loaded


def test_missing_file_on_the_hub_is_reported(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"Could not download nothing\.bin .*404"):
        model_files.download_files(tmp_path, ["nothing.bin"], hub_url=hub.url)
