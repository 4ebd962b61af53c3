"""Clients that leave, dawdle or never read cannot starve the studio: every slot comes back.

Raw sockets do what a flaky network, a killed script or a hostile client does: close right after
sending, after the first byte, mid-stream; send a body slowly; never read the answer. Then a
normal request must succeed, the queue must be back at 0 and the process must hold no extra
threads, file descriptors or ffmpeg children.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from core.device import AdmissionGate, queue_problems
from tests import raw_queue
from tests.conftest import running_app

STORM = 20
BODY = json.dumps({"model": "tts-1", "voice": "alloy", "input": "Hello there. This is the second sentence.",
                   "response_format": "mp3"}).encode()  # fmt: skip


@pytest.fixture(scope="module")
def app(tiny_xtts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    data = tmp_path_factory.mktemp("disconnects")
    with running_app(data, "--model-dir", str(tiny_xtts), "--max-queue", "4", "--no-warmup") as running:
        yield running


def request_bytes(port: int, body: bytes = BODY, *, length: int | None = None) -> bytes:
    head = (
        f"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=60)


def health(app: dict) -> dict:
    return httpx.get(app["url"] + "health", timeout=10).json()


def settle(app: dict, timeout: float = 90.0) -> dict:
    """Wait until nothing is admitted; the last /health answer."""
    deadline = time.monotonic() + timeout
    state = health(app)
    while state["queue_depth"] and time.monotonic() < deadline:
        time.sleep(0.25)
        state = health(app)
    return state


def footprint(app: dict) -> tuple[int, int, int]:
    """Threads, open file descriptors and ffmpeg children of the studio process."""
    process = psutil.Process(app["pid"])
    ffmpeg = [c for c in process.children(recursive=True) if c.name().startswith("ffmpeg")]
    return process.num_threads(), process.num_fds(), len(ffmpeg)


def storm(app: dict, behave: Callable[[socket.socket], None], count: int = STORM) -> None:
    def one(_: int) -> None:
        sock = connect(app["port"])
        try:
            sock.sendall(request_bytes(app["port"]))
            behave(sock)
        finally:
            sock.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def a_normal_request_succeeds(app: dict) -> None:
    response = httpx.post(app["url"] + "v1/audio/speech", content=BODY, timeout=120,
                          headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 200 and len(response.content) > 1000


@pytest.fixture
def baseline(app: dict) -> tuple[int, int, int]:
    a_normal_request_succeeds(app)  # warm: threads that stay for good (pools) exist before counting
    assert settle(app)["queue_depth"] == 0
    return footprint(app)


def assert_all_given_back(app: dict, baseline: tuple[int, int, int]) -> None:
    state = settle(app)
    assert state["queue_depth"] == 0 and state["status"] == "ok", state
    a_normal_request_succeeds(app)
    deadline = time.monotonic() + 45  # idle worker threads are retired after 10 s, at the pool's next use
    while True:
        health(app)
        threads, fds, ffmpeg = footprint(app)
        if (threads <= baseline[0] + 2 and fds <= baseline[1] + 4 and ffmpeg == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert ffmpeg == 0, "an encoder was left running"
    assert threads <= baseline[0] + 2, f"threads {baseline[0]} -> {threads}"
    assert fds <= baseline[1] + 4, f"open files {baseline[1]} -> {fds}"


def test_closing_right_after_sending(app: dict, baseline: tuple[int, int, int]) -> None:
    """The reported attack: forty such requests used to fill a queue of 32 for good."""
    storm(app, lambda sock: None, count=2 * STORM)
    assert_all_given_back(app, baseline)


def test_closing_after_the_first_byte(app: dict, baseline: tuple[int, int, int]) -> None:
    storm(app, lambda sock: sock.recv(1))
    assert_all_given_back(app, baseline)


def test_closing_mid_stream(app: dict, baseline: tuple[int, int, int]) -> None:
    def read_some(sock: socket.socket) -> None:
        got = 0
        while got < 2048:
            chunk = sock.recv(512)
            if not chunk:
                break
            got += len(chunk)

    storm(app, read_some)
    assert_all_given_back(app, baseline)


@contextlib.contextmanager
def held_open(app: dict, payload: bytes, count: int = 8) -> Iterator[None]:
    """``count`` connections that sent ``payload`` and then neither send nor read any more."""
    sockets = []
    try:
        for _ in range(count):
            sock = connect(app["port"])
            sock.sendall(payload)
            sockets.append(sock)
        yield
    finally:
        for sock in sockets:
            sock.close()


def test_slow_senders_take_no_slot(app: dict, baseline: tuple[int, int, int]) -> None:
    """Bodies that never finish arriving are not admitted: others are served meanwhile."""
    with held_open(app, request_bytes(app["port"], BODY[:10], length=len(BODY))):
        assert health(app)["queue_depth"] == 0
        a_normal_request_succeeds(app)
    assert_all_given_back(app, baseline)


def test_readers_that_never_read_give_their_slots_back(app: dict, baseline: tuple[int, int, int]) -> None:
    with held_open(app, request_bytes(app["port"])):
        state = settle(app)
        assert state["queue_depth"] == 0, state
        a_normal_request_succeeds(app)
    assert_all_given_back(app, baseline)


def test_ui_streams_whose_browser_went_away(app: dict, baseline: tuple[int, int, int]) -> None:
    """Gradio's queue: a stream joined and then dropped (tab closed) gives its slot back too."""
    fn_index, button = raw_queue.event_index(app["url"], elem_id="tts-stream", trigger="click")
    inputs = raw_queue.default_inputs(app["url"], fn_index, Text="Hello there. A second sentence follows.")
    for _ in range(6):
        session = raw_queue.join(app["url"], fn_index, inputs, trigger_id=button)
        with httpx.stream("GET", app["url"] + "gradio_api/queue/data", params={"session_hash": session},
                          timeout=60) as stream:  # fmt: skip
            for line in stream.iter_lines():
                if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_generating":
                    break  # the first audio arrived: leave
    assert_all_given_back(app, baseline)


def test_health_says_degraded_when_the_queue_is_stuck(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = AdmissionGate(2)
    assert queue_problems(gate, stall_s=300) == []
    gate.enter()
    gate.enter()
    assert any("full" in p for p in queue_problems(gate, stall_s=300))
    gate.leave()
    now = time.monotonic()
    monkeypatch.setattr("core.device.time.monotonic", lambda: now + 301)
    assert any("no queued request made progress" in p for p in queue_problems(gate, stall_s=300))
    gate.progressed()
    assert queue_problems(gate, stall_s=300) == []
    gate.leave()
    assert gate.depth == 0 and queue_problems(gate, stall_s=300) == []


def test_hostile_bodies_get_openai_errors_not_500s(app: dict) -> None:
    url = app["url"] + "v1/audio/speech"
    deep = httpx.post(url, content=b"[" * 20_000 + b"]" * 20_000, headers={"Content-Type": "application/json"})
    assert deep.status_code == 400 and "nested too deeply" in deep.json()["error"]["message"]
    huge = httpx.post(url, content=b'{"input": "' + b"a" * 2_000_000 + b'"}', timeout=60)
    assert huge.status_code == 413 and "limit" in huge.json()["error"]["message"]
    not_json = httpx.post(url, content=b"voice=alloy&input=hi")
    assert not_json.status_code == 400 and not_json.json()["error"]["message"] == "The request body must be JSON."
    assert settle(app)["queue_depth"] == 0


def test_a_body_that_never_arrives_is_a_408() -> None:
    import anyio
    from starlette.requests import Request

    from serve.http_api import BodyError, read_json_body

    async def never(*_: object) -> dict:
        await anyio.sleep(3600)
        return {}

    async def read() -> BodyError:
        request = Request({"type": "http", "method": "POST", "headers": [(b"content-length", b"100")]}, never)
        try:
            await read_json_body(request, limit=1000, timeout_s=0.2)
        except BodyError as exc:
            return exc
        raise AssertionError("the body was read")

    refused = anyio.run(read)
    assert refused.status == 408 and "did not arrive" in str(refused)
