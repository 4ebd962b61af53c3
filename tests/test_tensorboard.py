"""TensorBoard behind the studio's login: the real app, its real TensorBoard child, and the proxy on its own.

The module shares one studio started with ``--host 0.0.0.0`` and a login; every request goes
to 127.0.0.1. The tests run in file order: the first checks that refused requests start
nothing, the last stops the shared studio.
"""

from __future__ import annotations

import json
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from gradio_client import Client

from core.errors import StudioError
from serve.auth import SESSION_COOKIE, Authenticator
from serve.tensorboard_proxy import build_tensorboard_router
from tests.conftest import free_port, running_app

KEY = "sk-board-12345678"
RUN = "demo-run"


def write_events(runs: Path) -> None:
    """A run folder with a few scalar points, as the trainer writes them."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(runs / RUN))
    for step, value in enumerate((3.0, 2.0, 1.5)):
        writer.add_scalar("loss", value, step)
    writer.close()


def studio_process(app: dict) -> psutil.Process:
    outputs = str(app["data"] / "outputs")
    found = [p for p in psutil.process_iter(["cmdline"]) if "webui.py" in " ".join(p.info["cmdline"] or [])]
    return next(p for p in found if outputs in p.info["cmdline"])


def tensorboard_children(app: dict) -> list[psutil.Process]:
    children = studio_process(app).children(recursive=True)
    return [c for c in children if "tensorboard.main" in " ".join(c.cmdline())]


@pytest.fixture(scope="module")
def board_app(tiny_xtts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    data = tmp_path_factory.mktemp("board")
    write_events(data / "outputs" / "runs")
    args = ("--model-dir", str(tiny_xtts), "--auth", "admin:pa55word", "--api-key", KEY, "--host", "0.0.0.0")
    with running_app(data, *args) as app:
        yield app


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def test_without_credentials_tensorboard_is_refused(board_app: dict) -> None:
    url = board_app["url"]
    for headers in ({}, {"Authorization": "Bearer sk-wrong-key-000"}):
        response = httpx.get(url + "tensorboard/data/logdir", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert httpx.post(url + "tensorboard/data/plugin/scalars/scalars_multirun", headers=headers).status_code == 401
    page = httpx.get(url + "tensorboard/", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "../login"
    deep = httpx.get(url + "tensorboard/data/runs", headers={"Accept": "text/html,*/*"})
    assert deep.status_code == 303 and str(deep.url.join(deep.headers["location"])) == url + "login"
    assert httpx.get(url + "tensorboard/", headers={"Accept": "text/html"}, follow_redirects=True).url == url + "login"
    assert tensorboard_children(board_app) == []  # a refused request starts nothing


def test_the_button_flow_and_the_api_key_reach_tensorboard(board_app: dict) -> None:
    url = board_app["url"]
    client = Client(url, verbose=False, headers=bearer())
    assert client.predict(api_name="/open_tensorboard") == "tensorboard/"
    page = httpx.get(url + "tensorboard/", headers=bearer())
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<meta name="tb-relative-root" content="./">' in page.text
    assert httpx.get(url + "tensorboard/data/runs", headers=bearer()).json() == [RUN]
    logdir = httpx.get(url + "tensorboard/data/logdir", headers=bearer()).json()["logdir"]
    assert Path(logdir) == board_app["data"] / "outputs" / "runs"
    scalars = httpx.get(url + "tensorboard/data/plugin/scalars/scalars", params={"run": RUN, "tag": "loss"},
                        headers=bearer())  # fmt: skip
    assert [point[1:] for point in scalars.json()] == [[0, 3.0], [1, 2.0], [2, 1.5]]
    many = httpx.post(url + "tensorboard/data/plugin/scalars/scalars_multirun", data={"tag": "loss", "runs": RUN},
                      headers=bearer())  # fmt: skip
    assert many.status_code == 200 and [point[2] for point in many.json()[RUN]] == [3.0, 2.0, 1.5]


def test_a_login_cookie_reaches_tensorboard(board_app: dict) -> None:
    url = board_app["url"]
    login = httpx.post(url + "login", data={"username": "admin", "password": "pa55word"})
    assert login.status_code == 303
    cookies = {SESSION_COOKIE: login.cookies[SESSION_COOKIE]}
    page = httpx.get(url + "tensorboard/", headers={"Accept": "text/html"}, cookies=cookies)
    assert page.status_code == 200 and "tb-relative-root" in page.text
    assert httpx.get(url + "tensorboard/data/runs", cookies=cookies).json() == [RUN]
    assert httpx.get(url + "tensorboard", cookies=cookies, follow_redirects=True).url == url + "tensorboard/"


def test_tensorboard_listens_on_loopback_only_and_keeps_its_temp_files(board_app: dict) -> None:
    httpx.get(url := board_app["url"] + "tensorboard/data/logdir", headers=bearer()).raise_for_status()
    assert url.startswith("http://127.0.0.1:")
    studio_ips = {c.laddr.ip for c in studio_process(board_app).net_connections("inet") if c.status == "LISTEN"}
    assert studio_ips == {"0.0.0.0"}  # the studio itself is on every interface...
    (child,) = tensorboard_children(board_app)
    listening = [c for c in child.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}  # ...TensorBoard is not
    assert child.cmdline()[child.cmdline().index("--host") + 1] == "127.0.0.1"
    info = f".tensorboard-info/pid-{child.pid}.info"
    assert not (Path(tempfile.gettempdir()) / info).exists()
    work = board_app["data"] / "outputs" / ".work" / "tensorboard" / "tmp"
    assert json.loads((work / info).read_text())["port"] == listening[0].laddr.port


def test_a_dead_tensorboard_is_started_again(board_app: dict) -> None:
    httpx.get(board_app["url"] + "tensorboard/data/logdir", headers=bearer()).raise_for_status()
    (child,) = tensorboard_children(board_app)
    child.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:  # the studio reaps it later
        assert time.monotonic() < deadline, "SIGKILL did not stop TensorBoard"
        time.sleep(0.05)
    assert httpx.get(board_app["url"] + "tensorboard/data/runs", headers=bearer()).json() == [RUN]
    (again,) = tensorboard_children(board_app)
    assert again.pid != child.pid


def test_tensorboard_stops_with_the_studio(board_app: dict) -> None:
    """Last in the module: it stops the shared studio as ``running_app`` would."""
    httpx.get(board_app["url"] + "tensorboard/data/logdir", headers=bearer()).raise_for_status()
    (child,) = tensorboard_children(board_app)
    studio = studio_process(board_app)
    studio.terminate()
    studio.wait(timeout=30)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


# ---- the proxy on its own, in front of a loopback server that echoes what it receives -------------


class Echo(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        seen = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body.decode()}
        payload = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Set-Cookie", "intruder=1")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


class EchoBoard:
    """Stands in for ``TensorBoard``: ``ensure_running`` hands out the echo server's URL."""

    def __init__(self, base: str | None) -> None:
        self.base = base
        self.stopped = False

    def ensure_running(self) -> str:
        if self.base is None:
            raise StudioError("TensorBoard exited at start: no such flag.")
        return self.base

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tensorboard"
    server.shutdown()


def proxy_app(board: EchoBoard, auth: Authenticator) -> FastAPI:
    app = FastAPI()
    app.include_router(build_tensorboard_router(board, auth))
    return app


def test_the_proxy_passes_the_request_but_not_the_studio_credentials(echo_url: str) -> None:
    auth = Authenticator(users={"ann": "secret-pass"}, api_keys=(KEY,))
    token = auth.login("ann", "secret-pass")
    board = EchoBoard(echo_url)
    with TestClient(proxy_app(board, auth), base_url="http://studio") as client:
        client.cookies.set(SESSION_COOKIE, token or "")
        answer = client.put(
            "/tensorboard/data/plugin/x?run=a%20b&tag=loss", content=b"tag=loss&runs=a",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Bearer {KEY}",
                     "X-Custom": "kept"},
        )  # fmt: skip
        seen = answer.json()
        assert "intruder" not in answer.headers.get("set-cookie", "")
    assert board.stopped  # the app's shutdown stops TensorBoard
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["method"] == "PUT" and seen["path"] == "/tensorboard/data/plugin/x?run=a%20b&tag=loss"
    assert seen["body"] == "tag=loss&runs=a"
    assert headers["content-type"] == "application/x-www-form-urlencoded" and headers["x-custom"] == "kept"
    assert "authorization" not in headers and "cookie" not in headers
    assert headers["host"].startswith("127.0.0.1:")


def test_the_proxy_says_503_when_tensorboard_cannot_run() -> None:
    with TestClient(proxy_app(EchoBoard(None), Authenticator())) as client:
        failed = client.get("/tensorboard/data/runs")
    assert failed.status_code == 503
    assert failed.json()["error"] == {
        "message": "TensorBoard exited at start: no such flag.", "type": "server_error", "param": None,
        "code": "tensorboard_unavailable",
    }  # fmt: skip
    nobody = f"http://127.0.0.1:{free_port()}/tensorboard"  # a port nothing listens on
    with TestClient(proxy_app(EchoBoard(nobody), Authenticator())) as client:
        gone = client.get("/tensorboard/data/runs")
    assert gone.status_code == 503 and gone.json()["error"]["code"] == "tensorboard_unavailable"
