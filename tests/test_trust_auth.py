"""Auth edges: exposed starts are never an open door, share links need a login, secrets stay off argv."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
from gradio_client import Client

import webui
from core.settings import parse_settings
from tests.conftest import running_app

KEY = "sk-contract-12345678"


def settings_for(tmp_path: Path, *args: str) -> Any:
    return parse_settings([*args, "--models-dir", str(tmp_path / "m"), "--outputs-dir", str(tmp_path / "o")], env={})


@pytest.mark.parametrize(
    ("args", "gets_token"),
    [
        ((), False),  # loopback: the studio is only reachable from this machine
        (("--host", "0.0.0.0"), True),
        (("--host", "192.168.1.20", "--api-key", KEY), True),  # API keys alone leave the UI open: a token guards it
        (("--host", "0.0.0.0", "--auth", "ann:a-long-password"), False),
        (("--share", "--api-key", KEY), True),
        (("--share",), True),
        (("--host", "0.0.0.0", "--insecure-no-auth"), False),  # the operator's explicit choice
    ],
)
def test_an_exposed_start_without_a_login_gets_a_token(tmp_path: Path, args: tuple[str, ...], gets_token: bool) -> None:
    token = webui.generated_access_token(settings_for(tmp_path, *args))
    assert (token is not None) == gets_token
    if token:
        assert len(token) >= 32


def test_a_share_link_always_has_a_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The share tunnel cannot exist here, so launch() is caught; what it is given is what matters."""
    launched: dict[str, Any] = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs))
    studio = webui.create_studio(settings_for(tmp_path, "--share", "--api-key", KEY))
    webui.serve(studio, webui.build_app(studio))
    check = launched["auth"]
    token = studio.auth.access_token
    assert launched["share"] is True and callable(check)
    assert check("studio", token) and not check("anyone", KEY) and not check("studio", "guess")
    printed = capsys.readouterr().err
    assert printed.count(token) == 1  # said once, in the sign-in link
    launched.clear()
    studio = webui.create_studio(settings_for(tmp_path, "--share", "--auth", "ann:a-long-password"))
    webui.serve(studio, webui.build_app(studio))
    assert launched["auth"]("ann", "a-long-password") and not launched["auth"]("ann", "nope")
    assert studio.auth.access_token is None


@pytest.fixture(scope="module")
def exposed(tiny_xtts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Listening on every interface with no auth flag (tests still talk to it over loopback only)."""
    data = tmp_path_factory.mktemp("exposed")
    with running_app(data, "--host", "0.0.0.0", "--model-dir", str(tiny_xtts), "--no-warmup") as app:
        found = re.findall(r"login\?token=([\w-]+)", Path(app["log"]).read_text())
        assert len(found) == 1, "the token is printed exactly once"
        yield {**app, "token": found[0]}


def test_the_exposed_studio_wants_the_token(exposed: dict) -> None:
    url, token = exposed["url"], exposed["token"]
    assert httpx.get(url, follow_redirects=False).status_code == 303
    assert httpx.get(url + "config").status_code == 401
    assert httpx.post(url + "v1/audio/speech", json={"voice": "alloy", "input": "Hi"}).status_code == 401
    assert httpx.get(url + "login", params={"token": "wrong-token"}).status_code == 401
    signed_in = httpx.get(url + "login", params={"token": token}, follow_redirects=False)
    assert signed_in.status_code == 303
    cookies = signed_in.cookies
    assert httpx.get(url, cookies=cookies).status_code == 200
    page = httpx.post(url + "login", data={"username": "studio", "password": token}, follow_redirects=False)
    assert page.status_code == 303
    client = Client(url, verbose=False, headers={"Authorization": f"Bearer {token}"})
    assert client.predict(api_name="/model_status")["loaded"] is True


def test_anonymous_health_shows_no_paths(exposed: dict) -> None:
    body = httpx.get(exposed["url"] + "health").text
    state = json.loads(body)
    assert state["status"] == "ok" and state["model"] == "xtts"
    assert str(exposed["data"]) not in body and "/" not in json.dumps(state["model"])
    assert not re.search(r'"/(root|home|tmp|usr|data|app)\b', body)


def test_secrets_can_come_from_files_and_the_environment(tmp_path: Path) -> None:
    logins = tmp_path / "logins"
    logins.write_text("# who may sign in\nann:first-password\nbob:second:password\n")
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n")
    settings = parse_settings(["--auth-file", str(logins), "--api-keys-file", str(keys)], env={})
    assert settings.users == {"ann": "first-password", "bob": "second:password"} and settings.api_keys == (KEY,)
    from_env = parse_settings([], env={"XTTS_STUDIO_AUTH_FILE": str(logins), "XTTS_STUDIO_API_KEYS_FILE": str(keys)})
    assert from_env.users == settings.users and from_env.api_keys == (KEY,)
    assert "first-password" not in repr(settings) and KEY not in repr(settings)
    logins.write_text("no-colon-here\n")
    with pytest.raises(Exception, match="USER:PASSWORD"):
        parse_settings(["--auth-file", str(logins)], env={})
