"""UI login and API keys on the real app; and the authenticator on its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from gradio_client import Client

from serve import auth as auth_module
from serve.auth import Authenticator
from tests.conftest import browser_page, running_app

KEY = "sk-test-12345678"


@pytest.fixture(scope="module")
def locked_app(tiny_xtts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    data = tmp_path_factory.mktemp("locked")
    with running_app(data, "--model-dir", str(tiny_xtts), "--auth", "admin:pa55word", "--api-key", KEY) as app:
        yield app


def test_openai_routes_need_the_key(locked_app: dict) -> None:
    url = locked_app["url"]
    for key in (None, "sk-wrong-key-000"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.post(url + "v1/audio/speech", json={"voice": "alloy", "input": "Hi"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(url + "v1/models", headers=headers).status_code == 401
        assert httpx.get(url + "metrics", headers=headers).status_code == 401
    assert httpx.get(url + "health").status_code == 200  # container health checks need no secret
    client = openai.OpenAI(base_url=url + "v1", api_key=KEY, max_retries=0)
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input="Authorised.", response_format="wav")
    assert len(audio.content) > 44
    assert httpx.get(url + "metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_gradio_api_needs_the_key_too(locked_app: dict) -> None:
    url = locked_app["url"]
    call = url + "gradio_api/call/synthesize"
    assert httpx.post(call, json={"data": ["Hi", "en"]}).status_code == 401
    assert (
        httpx.post(call, json={"data": ["Hi", "en"]}, headers={"Authorization": "Bearer sk-nope-nope"}).status_code
        == 401
    )
    assert httpx.get(url + "config").status_code == 401
    with pytest.raises(Exception):  # noqa: B017 - the client's own error for a refused connection
        Client(url, verbose=False)
    client = Client(url, verbose=False, headers={"Authorization": f"Bearer {KEY}"})
    path = client.predict(text="Through the Gradio API.", language="en", api_name="/synthesize")
    assert Path(path).stat().st_size > 44


def test_a_project_export_download_url_needs_the_key(locked_app: dict) -> None:
    """``project_export`` hands back ``/gradio_api/file=<zip>``: that URL is behind the same login."""
    exports = Path(locked_app["data"], "outputs", "projects", "book", "exports")
    exports.mkdir(parents=True)
    zipped = exports / "20261202-000000-abcd.zip"
    zipped.write_bytes(b"PK\x05\x06" + bytes(18))
    url = f"{locked_app['url']}gradio_api/file={zipped.resolve()}"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer sk-nope-nope"}).status_code == 401
    allowed = httpx.get(url, headers={"Authorization": f"Bearer {KEY}"})
    assert allowed.status_code == 200 and allowed.content == zipped.read_bytes()


def test_login_page_then_the_studio(locked_app: dict, chromium_path: str) -> None:
    url = locked_app["url"]
    assert httpx.get(url, follow_redirects=False).status_code == 303
    with browser_page(url, chromium_path) as page:
        assert page.url.endswith("/login")
        page.get_by_label("User").fill("admin")
        page.get_by_label("Password").fill("wrong")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Wrong user or password.").wait_for()
        page.get_by_label("User").fill("admin")
        page.get_by_label("Password").fill("pa55word")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Text", exact=True).wait_for(timeout=30_000)
        page.get_by_role("tab", name="Voice cloning").wait_for()


def test_authenticator_sessions_and_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authenticator(users={"ann": "secret-pass"}, api_keys=(KEY,))
    assert auth.enabled and not Authenticator().enabled
    assert auth.bearer_is_valid(f"Bearer {KEY}") and auth.bearer_is_valid(f"bearer {KEY}")
    assert not auth.bearer_is_valid(KEY) and not auth.bearer_is_valid("Bearer ") and not auth.bearer_is_valid(None)
    assert auth.login("ann", "wrong") is None
    token = auth.login("ann", "secret-pass")
    assert token and auth.session_user(token) == "ann"
    assert auth.login("anyone", KEY) is None  # logins and API keys are separate by default
    assert Authenticator(api_keys=(KEY,), api_key_login=True).login("anyone", KEY)  # unless the operator merges them
    auth.logout(token)
    assert auth.session_user(token) is None
    expiring = auth.login("ann", "secret-pass")
    later = time.time() + auth_module.SESSION_TTL_S + 1
    monkeypatch.setattr(auth_module.time, "time", lambda: later)
    assert auth.session_user(expiring) is None


def test_secrets_stay_out_of_settings_repr_and_logs(locked_app: dict) -> None:
    from core.settings import parse_settings

    text = repr(parse_settings(["--auth", "admin:pa55word", "--api-key", KEY], env={}))
    assert "pa55word" not in text and KEY not in text
    log = Path(locked_app["log"]).read_text()
    assert "pa55word" not in log and KEY not in log


def test_failed_sign_ins_and_wrong_keys_are_throttled(locked_app: dict) -> None:
    """Last in this module: it locks 127.0.0.1 out of further attempts for a while."""
    url = locked_app["url"]
    signed_in = httpx.post(url + "login", data={"username": "admin", "password": "pa55word"}, follow_redirects=False)
    cookies = signed_in.cookies
    statuses = [
        httpx.post(url + "login", data={"username": "admin", "password": "guess"}).status_code
        for _ in range(auth_module.MAX_FAILURES)
    ]
    assert statuses[0] == 401 and set(statuses) <= {401, 429}  # wrong keys sent by earlier tests count too
    right = httpx.post(url + "login", data={"username": "admin", "password": "pa55word"}, follow_redirects=False)
    assert right.status_code == 429 and "try again" in right.text
    keyed = httpx.get(url + "v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert keyed.status_code == 429 and int(keyed.headers["Retry-After"]) > 0  # no key is even checked now
    assert httpx.get(url, cookies=cookies).status_code == 200  # a session opened before goes on working


def test_the_throttle_counts_per_address_and_forgets() -> None:
    throttle = auth_module.FailureThrottle(limit=3, window_s=60)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert 0 < throttle.retry_after("10.0.0.1") <= 61 and throttle.retry_after("10.0.0.2") == 0
    throttle.succeeded("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 0
