"""Deployment files: Docker, compose, the example env file and the Hugging Face Spaces set-up.

No Docker engine runs here, so the files are checked by reading them, and the
container's own entry command and health check are run with the container's settings.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from core import settings as settings_module
from core.settings import parse_settings
from core.xtts.engine import VoiceSpec, XTTSEngine
from core.xtts.profiles import PROFILES
from tests.conftest import ROOT, free_port, wait_for_http

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", DOCKERFILE, flags=re.MULTILINE):
        for pair in shlex.split(line):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def exec_form(instruction: str) -> list[str]:
    """The JSON array of an exec-form instruction (continuation lines joined)."""
    for line in DOCKERFILE.replace("\\\n", " ").splitlines():
        if line.startswith(instruction + " "):
            return json.loads(line[line.index("[") :])
    raise AssertionError(f"no {instruction} instruction")


def test_dockerfile_essentials() -> None:
    assert re.search(r"^USER studio$", DOCKERFILE, flags=re.MULTILINE)
    assert "EXPOSE 7860" in DOCKERFILE and 'VOLUME ["/app/models", "/app/outputs"]' in DOCKERFILE
    assert "ARG BASE_IMAGE=nvidia/cuda:" in DOCKERFILE  # the CPU build swaps the base image
    env = dockerfile_env()
    assert env["XTTS_STUDIO_HOST"] == "0.0.0.0" and env["XTTS_STUDIO_PORT"] == "7860"
    assert exec_form("CMD") == ["/opt/venv/bin/python", "webui.py"]
    assert "/health" in DOCKERFILE.split("HEALTHCHECK", 1)[1]


def test_compose_file() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["xtts-studio"]
    assert service["restart"] == "unless-stopped"
    assert service["ports"] == ["${XTTS_STUDIO_PUBLISH:-7860}:7860"]
    assert set(service["volumes"]) == {"./models:/app/models", "./outputs:/app/outputs"}
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert service["env_file"][0]["path"] == ".env"


def test_example_env_file_is_understood() -> None:
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    parsed = parse_settings([], env=env)
    assert parsed.auth == ("admin", "change-me") and parsed.api_keys == ("change-this-long-random-key",)


def test_container_entry_command_serves_health(tiny_xtts: Path, tmp_path: Path) -> None:
    """Run CMD with the image's ENV (paths and port moved into this test) and its HEALTHCHECK."""
    port = free_port()
    env = {
        **os.environ,
        **dockerfile_env(),
        "XTTS_STUDIO_PORT": str(port),
        "XTTS_STUDIO_MODEL_DIR": str(tiny_xtts),
        "XTTS_STUDIO_MODELS_DIR": str(tmp_path / "models"),
        "XTTS_STUDIO_OUTPUTS_DIR": str(tmp_path / "outputs"),
    }
    command = [sys.executable, *exec_form("CMD")[1:]]
    log = tmp_path / "container.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", proc, log)
        check = exec_form("HEALTHCHECK")
        result = subprocess.run([sys.executable, *check[1:]], env=env, timeout=30, check=False)
        assert result.returncode == 0
        token = re.search(r"/login\?token=(\S+)", log.read_text())
        assert token, "an exposed container start with no --auth must print a generated access token"
        page = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=False, timeout=30)
        assert page.status_code == 303 and page.headers["location"].endswith("login")
        signed_in = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30,
                              headers={"Authorization": f"Bearer {token.group(1)}"})  # fmt: skip
        assert signed_in.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    time.sleep(0.1)


def test_readme_makes_the_repo_a_gradio_space() -> None:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    pinned = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), flags=re.MULTILINE).group(1)
    assert front["sdk"] == "gradio" and front["app_file"] == "webui.py"
    assert front["sdk_version"] == pinned and str(front["python_version"]) == "3.11"


def test_spaces_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spaces = parse_settings([], env={"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"})
    assert (spaces.host, spaces.port) == ("0.0.0.0", 7861)
    assert parse_settings([], env={"PORT": "8080"}).port == 8080
    monkeypatch.setattr(settings_module, "SPACES_STORAGE", tmp_path)
    stored = parse_settings([], env={"SPACE_ID": "someone/xtts-studio"})
    assert stored.models_dir == tmp_path / "models" and stored.outputs_dir == tmp_path / "outputs"
    assert parse_settings([], env={"SPACES_ZERO_GPU": "true"}).zerogpu is True


def test_zerogpu_wrapping_is_harmless_elsewhere(tiny_xtts: Path, tmp_path: Path) -> None:
    engine = XTTSEngine(device="cpu", latents_dir=tmp_path, model_dir=tiny_xtts, zerogpu=True)
    voice = engine.conditioning(VoiceSpec(speaker="Daisy Studious"))
    audio = engine.synthesize(["Wrapped for ZeroGPU."], language="en", conditioning=voice, params=PROFILES["fast"])
    assert len(audio) > 0
