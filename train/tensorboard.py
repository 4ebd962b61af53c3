"""TensorBoard over every run: one child process on loopback, started on demand.

TensorBoard has no login, so the child listens on 127.0.0.1 whatever ``--host`` the
studio has; the studio serves it at ``/tensorboard/`` behind its own authentication
(``serve.tensorboard_proxy``). The child gets ``--port 0`` (the OS picks a free port) and
a TMPDIR inside the studio's work folder, so the info file TensorBoard writes there
(``.tensorboard-info/pid-<pid>.info``) tells us the port and nothing lands in /tmp.
``--load_fast=false`` keeps to the Python loader: no second (Rust) server process.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from core.errors import StudioError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
PATH_PREFIX = "/tensorboard"
PAGE_LINK = PATH_PREFIX.lstrip("/") + "/"  # relative to the studio's page, so it works behind a reverse proxy too
INFO_DIR = ".tensorboard-info"  # TensorBoard's own name, under its temp folder


class TensorBoardUnavailable(StudioError):
    """TensorBoard could not be started or stopped answering."""


class TensorBoard:
    """Starts, watches and stops the one TensorBoard child for the runs folder ``logdir``."""

    def __init__(
        self, logdir: Path, work_dir: Path, *, reload_interval: float = 10.0, start_timeout: float = 90.0
    ) -> None:
        self.logdir = logdir
        self.work_dir = work_dir
        self.reload_interval = reload_interval
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._child: subprocess.Popen | None = None
        self._url: str | None = None
        atexit.register(self.stop)

    @property
    def temp_dir(self) -> Path:
        """The child's TMPDIR."""
        return self.work_dir / "tmp"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "tensorboard.log"

    @property
    def pid(self) -> int | None:
        """The running child's process id, or ``None``."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "tensorboard.main",
            "--logdir", str(self.logdir),
            "--host", LOOPBACK,
            "--port", "0",
            "--path_prefix", PATH_PREFIX,
            "--reload_interval", str(self.reload_interval),
            "--load_fast", "false",
        ]  # fmt: skip

    def ensure_running(self) -> str:
        """Start the child (again, if it died) and wait until it answers; returns its base URL.

        The URL is ``http://127.0.0.1:PORT/tensorboard``, without a trailing slash.
        """
        with self._lock:
            if self._url is not None and self.pid is not None:
                return self._url
            if self._child is not None:
                log.warning("TensorBoard exited (code %s); starting it again", self._child.poll())
            self._stop_child()
            self._url = self._start()
            return self._url

    def stop(self) -> None:
        """Stop the child if it runs (the studio calls this when it shuts down)."""
        with self._lock:
            self._stop_child()

    def _start(self) -> str:
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TMPDIR": str(self.temp_dir)}
        with open(self.log_file, "wb") as sink:
            self._child = subprocess.Popen(
                self.command(), cwd=self.work_dir, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                env=env,
            )  # fmt: skip
        try:
            url = self._wait_until_answering(self._child)
        except TensorBoardUnavailable:
            self._stop_child()
            raise
        log.info("TensorBoard for %s at %s (pid %d)", self.logdir, url, self._child.pid)
        return url

    def _wait_until_answering(self, child: subprocess.Popen) -> str:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise TensorBoardUnavailable(
                    f"TensorBoard exited at start (code {child.returncode}): {self._log_tail()} "
                    f"The whole log is {self.log_file}."
                )
            port = self._port_of(child.pid)
            if port is not None and _answers(f"http://{LOOPBACK}:{port}{PATH_PREFIX}"):
                return f"http://{LOOPBACK}:{port}{PATH_PREFIX}"
            time.sleep(0.2)
        raise TensorBoardUnavailable(
            f"TensorBoard did not answer within {self.start_timeout:.0f} s; its log is {self.log_file}."
        )

    def _port_of(self, pid: int) -> int | None:
        """The port from the info file TensorBoard writes once its socket is bound."""
        try:
            return int(json.loads((self.temp_dir / INFO_DIR / f"pid-{pid}.info").read_text())["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " / ".join(lines[-3:]) or "(empty log)"

    def _stop_child(self) -> None:
        child, self._child, self._url = self._child, None, None
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/data/logdir", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False
