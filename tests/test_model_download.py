"""First-use download of XTTS v2, against a hub served over loopback from the tiny kit's files."""

from __future__ import annotations

import filecmp
import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core import model_files
from core.errors import ModelUnavailable
from core.xtts.engine import XTTSEngine
from tests.conftest import free_port


def git_blob_sha1(data: bytes) -> str:
    """The hash git names a file's content by: what the hub sends as a small file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Serves ``root/<name>`` at ``/coqui/XTTS-v2/resolve/main/<name>`` with the hub's headers and Range support.

    Like Hugging Face: a ``.pth`` (an LFS file) answers with ``X-Linked-Size`` and ``X-Linked-ETag`` (its
    sha256), and with ``via_cdn`` redirects to ``/cdn/<name>`` on another host name, whose ``ETag`` is
    no sha256; any other file answers with its git blob sha1 as ``ETag``. ``claims`` replaces what is
    published for a file; ``mirror`` refuses HEAD and publishes nothing. ``requests`` records each
    request as (method, path, Range).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str, str | None]] = []
        self.claims: dict[str, dict[str, str]] = {}
        self.via_cdn = False
        self.mirror = False
        self.body_delay = 0.0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.answer(body=False)

            def do_GET(self) -> None:
                self.answer(body=True)

            def answer(self, *, body: bool) -> None:
                wanted = self.headers.get("Range")
                hub.requests.append((self.command, self.path, wanted))
                match = re.fullmatch(r"/(coqui/XTTS-v2/resolve/main|cdn)/([\w.]+)", self.path)
                path = hub.root / match.group(2) if match else None
                if path is None or not path.is_file():
                    self.send_error(404)
                    return
                if self.command == "HEAD" and hub.mirror:
                    self.send_error(405)
                    return
                data = path.read_bytes()
                start = int(wanted.split("=")[1].rstrip("-")) if wanted else 0
                if match.group(1) != "cdn" and path.suffix == ".pth" and hub.via_cdn:
                    self.send_response(302)
                    self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/cdn/{path.name}")
                    self.send_header("Content-Length", "0")
                    self.published(path, data, cdn=False)
                    self.end_headers()
                    return
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if wanted else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.published(path, data, cdn=match.group(1) == "cdn")
                self.end_headers()
                if body:
                    time.sleep(hub.body_delay)
                    self.wfile.write(data[start:])

            def published(self, path: Path, data: bytes, *, cdn: bool) -> None:
                if hub.mirror:
                    return
                if cdn:
                    self.send_header("ETag", f'"{hashlib.md5(data).hexdigest() * 2}"')
                    return
                if path.suffix == ".pth":
                    headers = {
                        "X-Linked-Size": str(len(data)),
                        "X-Linked-ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                    }
                else:
                    headers = {"ETag": f'"{git_blob_sha1(data)}"'}
                for key, value in {**headers, **hub.claims.get(path.name, {})}.items():
                    self.send_header(key, value)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def gets(self, name: str) -> list[str | None]:
        """The Range header of each GET for ``name`` (None: from the start)."""
        return [r for method, path, r in self.requests if method == "GET" and path.endswith(f"/{name}")]


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
    assert sorted(p.name for p in dest.iterdir()) == sorted(model_files.INFERENCE_FILES)  # no .part, no .lock
    fractions = [f for f, m in seen if m.startswith("Downloading")]
    assert fractions == sorted(fractions) and fractions[-1] <= 1.0
    assert any("Downloading model.pth (2/4)" in m for _, m in seen)
    assert engine.loaded and engine.load_count == 1
    assert engine.speakers()  # the downloaded speakers file is used

    # a second start finds everything and downloads nothing
    hub.requests.clear()
    XTTSEngine(device="cpu", latents_dir=tmp_path / "l", default_model_dir=dest, hub_url=hub.url).ensure_loaded()
    assert hub.requests == []


def test_interrupted_download_resumes_from_the_part_file(hub: FakeHub, tiny_xtts: Path, tmp_path: Path) -> None:
    dest = tmp_path / "xtts_v2"
    dest.mkdir()
    half = (tiny_xtts / "model.pth").stat().st_size // 2
    (dest / "model.pth.part").write_bytes((tiny_xtts / "model.pth").read_bytes()[:half])
    model_files.download_files(dest, ["model.pth"], hub_url=hub.url)
    assert hub.gets("model.pth") == [f"bytes={half}-"]
    assert filecmp.cmp(dest / "model.pth", tiny_xtts / "model.pth", shallow=False)


def test_resumed_download_is_verified_over_the_whole_file(hub: FakeHub, tiny_xtts: Path, tmp_path: Path) -> None:
    """A .part spoiled before the interruption fails the sha256 check, then a retry starts clean."""
    good = (tiny_xtts / "model.pth").read_bytes()
    half = len(good) // 2
    dest = tmp_path / "xtts_v2"
    dest.mkdir()
    (dest / "model.pth.part").write_bytes(bytes(b ^ 0xFF for b in good[:16]) + good[16:half])
    with pytest.raises(ModelUnavailable) as err:
        model_files.download_files(dest, ["model.pth"], hub_url=hub.url)
    assert hub.gets("model.pth") == [f"bytes={half}-"]  # resumed, not fetched again
    message = str(err.value)
    assert f"sha256 {hashlib.sha256(good).hexdigest()}" in message
    assert f"{len(good):,} bytes" in message and "model.pth" in message
    assert list(dest.iterdir()) == []

    model_files.download_files(dest, ["model.pth"], hub_url=hub.url)
    assert hub.gets("model.pth")[-1] is None
    assert filecmp.cmp(dest / "model.pth", tiny_xtts / "model.pth", shallow=False)


def test_large_files_are_checked_against_the_hub_not_the_cdn(hub: FakeHub, tiny_xtts: Path, tmp_path: Path) -> None:
    """The hub redirects an LFS file to its CDN; the size and sha256 come from the hub's redirect."""
    hub.via_cdn = True
    model_files.download_files(tmp_path, ["model.pth", "config.json"], hub_url=hub.url)
    for name in ("model.pth", "config.json"):
        assert filecmp.cmp(tmp_path / name, tiny_xtts / name, shallow=False)
    assert ("HEAD", "/cdn/model.pth", None) not in hub.requests
    assert ("GET", "/cdn/model.pth", None) in hub.requests


@pytest.mark.parametrize(
    ("claim", "expected", "actual"),
    [
        ({"X-Linked-ETag": '"' + "ab" * 32 + '"'}, "sha256 " + "ab" * 32, "sha256 {sha}"),
        ({"X-Linked-Size": "{wrong_size}"}, "{wrong_size:,} bytes", "{size:,} bytes"),
    ],
)
def test_a_file_that_does_not_match_the_hub_is_refused(
    claim: dict[str, str], expected: str, actual: str, hub: FakeHub, tiny_xtts: Path, tmp_path: Path
) -> None:
    data = (tiny_xtts / "model.pth").read_bytes()
    facts = {"sha": hashlib.sha256(data).hexdigest(), "size": len(data), "wrong_size": len(data) + 1000}
    hub.claims["model.pth"] = {key: value.format(**facts) for key, value in claim.items()}
    with pytest.raises(ModelUnavailable) as err:
        model_files.download_files(tmp_path, ["model.pth"], hub_url=hub.url)
    message = str(err.value)
    assert "model.pth" in message and "damaged" in message
    assert expected.format(**facts) in message and actual.format(**facts) in message
    assert "Try again" in message and f"put it in {tmp_path} as model.pth" in message
    assert list(tmp_path.iterdir()) == []  # neither the file, nor a .part, nor a lock


def test_a_mirror_that_publishes_nothing_still_works_unverified(
    hub: FakeHub, tiny_xtts: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub.mirror = True
    with caplog.at_level(logging.WARNING, logger="core.model_files"):
        model_files.download_files(tmp_path, ["model.pth"], hub_url=hub.url)
    assert filecmp.cmp(tmp_path / "model.pth", tiny_xtts / "model.pth", shallow=False)
    assert "model.pth" in caplog.text and "could not be verified" in caplog.text


def test_two_downloads_of_one_file_fetch_it_once(hub: FakeHub, tiny_xtts: Path, tmp_path: Path) -> None:
    hub.body_delay = 0.5  # the first download is still running when the second asks for the file
    seen: list[str] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            model_files.download_files(tmp_path, ["model.pth"], hub_url=hub.url, progress=lambda f, m: seen.append(m))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert hub.gets("model.pth") == [None]
    assert "Waiting for another download of model.pth to finish" in seen
    assert filecmp.cmp(tmp_path / "model.pth", tiny_xtts / "model.pth", shallow=False)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


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
