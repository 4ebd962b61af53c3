"""Find XTTS model folders and download the base XTTS v2 model on first use.

Downloads are resumable: bytes go to ``NAME.part`` and continue from there with
an HTTP Range request; a finished file is renamed into place, so a folder never
holds a half file under its real name. Before that rename the file is checked
against the size and sha256 the hub publishes (``X-Linked-Size``/``X-Linked-ETag``
for large files, ``Content-Length``/``ETag`` for small ones); a damaged file is
deleted, never put in place. One download per file at a time: a second caller,
in another thread or process, waits on ``NAME.lock`` and then finds the file.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.errors import ModelUnavailable

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]

XTTS_V2_REPO = "coqui/XTTS-v2"
INFERENCE_FILES = ("config.json", "model.pth", "vocab.json", "speakers_xtts.pth")
REQUIRED_FILES = ("config.json", "model.pth", "vocab.json")
TRAINING_FILES = ("dvae.pth", "mel_stats.pth")
_CHUNK = 1 << 20
_MAX_HUB_REDIRECTS = 5
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Sizes and Range offsets count the file's own bytes, never a compressed transfer.
_IDENTITY = {"Accept-Encoding": "identity"}


def missing_files(folder: Path, names: Sequence[str] = REQUIRED_FILES) -> list[str]:
    return [name for name in names if not (folder / name).is_file()]


def check_model_dir(folder: Path) -> Path:
    """Return ``folder`` if it holds a loadable XTTS checkpoint, else raise with what is missing."""
    if not folder.is_dir():
        raise ModelUnavailable(
            f"The model folder {folder} does not exist. Pass an XTTS checkpoint folder to --model-dir."
        )
    missing = missing_files(folder)
    if missing:
        raise ModelUnavailable(
            f"The model folder {folder} is missing {', '.join(missing)}. "
            "An XTTS checkpoint folder needs config.json, model.pth and vocab.json (speakers_xtts.pth is optional)."
        )
    return folder


def hub_file_url(hub_url: str, name: str, repo: str = XTTS_V2_REPO) -> str:
    return f"{hub_url.rstrip('/')}/{repo}/resolve/main/{name}"


@dataclass(frozen=True)
class Published:
    """What the hub says a file is: its size in bytes and its sha256, each None when not sent."""

    size: int | None
    sha256: str | None

    def describe(self) -> str:
        parts = [
            f"{self.size:,} bytes" if self.size is not None else "",
            f"sha256 {self.sha256}" if self.sha256 else "",
        ]
        return ", ".join(p for p in parts if p)


def _etag_sha256(etag: str | None) -> str | None:
    """The sha256 an ETag carries, if it is one (a small file's ETag is a git sha1 instead)."""
    if etag is None:
        return None
    value = etag.strip().removeprefix("W/").strip('"').lower()
    return value if _SHA256.fullmatch(value) else None


def _head_on_hub(url: str, *, timeout: float) -> httpx.Response:
    """HEAD ``url``, following only redirects within the hub.

    A redirect to another host (the hub's CDN, for large files) is not followed:
    the hub's own answer carries the file's size and hash in ``X-Linked-*``, the CDN's does not.
    """
    for _ in range(_MAX_HUB_REDIRECTS):
        response = httpx.head(url, headers=_IDENTITY, follow_redirects=False, timeout=timeout)
        location = response.headers.get("Location")
        if not response.is_redirect or location is None or not httpx.URL(location).is_relative_url:
            return response
        url = str(response.url.join(location))
    return response


def published_metadata(url: str, *, timeout: float) -> Published:
    """The size and sha256 the hub publishes for ``url``; a server that does not answer HEAD publishes none."""
    response = _head_on_hub(url, timeout=timeout)
    if response.status_code in (405, 501):
        return Published(None, None)
    if response.is_error:  # a redirect is a fine answer here: it carries the X-Linked-* headers
        response.raise_for_status()
    headers = response.headers
    size = headers.get("X-Linked-Size")
    etag = headers.get("X-Linked-ETag")
    if not response.is_redirect:  # the answer is the file itself, so its own headers describe it
        plain = headers.get("Content-Encoding", "identity") == "identity"
        size = size or (headers.get("Content-Length") if plain else None)
        etag = etag or headers.get("ETag")
    return Published(int(size) if size and size.isdigit() else None, _etag_sha256(etag))


def _damaged(name: str, url: str, dest: Path, published: Published, got: Published) -> ModelUnavailable:
    return ModelUnavailable(
        f"The download of {name} from {url} is damaged: the hub publishes {published.describe()}, "
        f"but the file received has {got.describe()}. The damaged file was deleted. Try again "
        f"(a flaky connection or a proxy can spoil a download), or download {url} by hand "
        f"and put it in {dest.parent} as {name}."
    )


def _verify(part: Path, dest: Path, *, url: str, published: Published, digest: hashlib._Hash) -> None:
    """Raise (deleting ``part``) unless ``part`` has the published size and sha256."""
    got = Published(part.stat().st_size, digest.hexdigest() if published.sha256 else None)
    size_ok = published.size is None or got.size == published.size
    hash_ok = published.sha256 is None or got.sha256 == published.sha256
    if not (size_ok and hash_ok):
        part.unlink(missing_ok=True)
        raise _damaged(dest.name, url, dest, published, got)
    if published.size is None and published.sha256 is None:
        log.warning("%s: %s publishes no size or sha256, so the download could not be verified", dest.name, url)
    elif published.sha256 is None:
        log.info("%s: size verified; %s publishes no sha256 for it", dest.name, url)


def _resume_state(part: Path, published: Published) -> tuple[int, hashlib._Hash]:
    """Bytes already in ``part`` and their running sha256, so the hash covers the whole file."""
    done = part.stat().st_size if part.exists() else 0
    if done and published.size is not None and done > published.size:
        part.unlink()  # longer than the file can be: not worth resuming
        done = 0
    if not done:
        return 0, hashlib.sha256()
    with open(part, "rb") as handle:
        return done, hashlib.file_digest(handle, "sha256")


def _download_one(url: str, dest: Path, *, on_bytes: Callable[[int, int | None], None], timeout: float) -> None:
    part = dest.with_name(dest.name + ".part")
    published = published_metadata(url, timeout=timeout)
    done, digest = _resume_state(part, published)
    if published.size is None or done < published.size:
        digest = _fetch_rest(url, part, done, digest, size=published.size, on_bytes=on_bytes, timeout=timeout)
    else:
        on_bytes(done, published.size)
    _verify(part, dest, url=url, published=published, digest=digest)
    part.replace(dest)


def _fetch_rest(
    url: str,
    part: Path,
    done: int,
    digest: hashlib._Hash,
    *,
    size: int | None,
    on_bytes: Callable[[int, int | None], None],
    timeout: float,
) -> hashlib._Hash:
    """Append the bytes after ``done`` to ``part`` (all of them if the server ignores Range); return the file's hash."""
    headers = {**_IDENTITY, **({"Range": f"bytes={done}-"} if done else {})}
    with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout) as response:
        if response.status_code == 416:  # the .part already holds the whole file
            return digest
        response.raise_for_status()
        if done and response.status_code != 206:
            done, digest = 0, hashlib.sha256()  # server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = size if size is not None else (done + int(length) if length is not None else None)
        with open(part, "ab" if done else "wb") as handle:
            on_bytes(done, total)
            for block in response.iter_bytes(_CHUNK):
                handle.write(block)
                digest.update(block)
                done += len(block)
                on_bytes(done, total)
            handle.flush()
            os.fsync(handle.fileno())
    return digest


@contextmanager
def _exclusive(dest: Path, *, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold ``<dest>.lock`` so that one thread or process at a time fetches ``dest``.

    The lock file is removed on release. A waiter that then gets the lock on the
    removed file sees it is no longer the one at that path and locks the new one,
    so two holders can never overlap.
    """
    lock_path = dest.with_name(dest.name + ".lock")
    fd = _lock(lock_path, on_wait=on_wait)
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def _lock(lock_path: Path, *, on_wait: Callable[[], None]) -> int:
    """An open descriptor holding the exclusive lock on the file now at ``lock_path``."""
    waited = False
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited:
                    on_wait()
                    waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, lock_path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _fetch(
    url: str, target: Path, *, on_bytes: Callable[[int, int | None], None], on_wait: Callable[[], None], timeout: float
) -> None:
    """Download ``url`` to ``target`` unless another thread or process got it there first."""
    with _exclusive(target, on_wait=on_wait):
        if target.is_file():
            return
        log.info("downloading %s to %s", url, target)
        _download_one(url, target, on_bytes=on_bytes, timeout=timeout)


def download_url(url: str, dest: Path, *, progress: ProgressCallback | None = None, timeout: float = 30.0) -> Path:
    """Fetch one file from any ``url`` to ``dest``, resumable and one download at a time, as above.

    Raises ``httpx.HTTPError`` or ``OSError`` (a partial download stays for the next try); the caller
    says what the file is for and what to do.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)

    def report(done: int, total: int | None) -> None:
        if progress is not None:
            size = f"{done / 1e6:,.0f} / {total / 1e6:,.0f} MB" if total else f"{done / 1e6:,.0f} MB"
            progress(done / total if total else 0.0, f"Downloading {dest.name}: {size}")

    def wait() -> None:
        log.info("%s is being downloaded by another task; waiting for it", dest.name)
        if progress is not None:
            progress(0.0, f"Waiting for another download of {dest.name} to finish")

    _fetch(url, dest, on_bytes=report, on_wait=wait, timeout=timeout)
    if progress is not None:
        progress(1.0, "Download complete")
    return dest


def download_files(
    dest: Path,
    names: Sequence[str],
    *,
    hub_url: str,
    repo: str = XTTS_V2_REPO,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
    remote_names: Mapping[str, str] | None = None,
) -> Path:
    """Fetch ``names`` from ``repo`` on the hub into ``dest``, skipping files already there.

    ``remote_names`` maps a local name to its path in the repository where they differ.
    """
    dest.mkdir(parents=True, exist_ok=True)
    todo = [name for name in names if not (dest / name).is_file()]
    for index, name in enumerate(todo):
        url = hub_file_url(hub_url, (remote_names or {}).get(name, name), repo)

        def report(done: int, total: int | None, name: str = name, index: int = index) -> None:
            if progress is None:
                return
            share = done / total if total else 0.0
            size = f"{done / 1e6:,.0f} / {total / 1e6:,.0f} MB" if total else f"{done / 1e6:,.0f} MB"
            progress((index + share) / len(todo), f"Downloading {name} ({index + 1}/{len(todo)}): {size}")

        def wait(name: str = name, index: int = index) -> None:
            log.info("%s is being downloaded by another task; waiting for it", name)
            if progress is not None:
                progress(index / len(todo), f"Waiting for another download of {name} to finish")

        try:
            _fetch(url, dest / name, on_bytes=report, on_wait=wait, timeout=timeout)
        except (httpx.HTTPError, OSError) as exc:
            missing = ", ".join(n for n in names if not (dest / n).is_file())
            raise ModelUnavailable(
                f"Could not download {name} from {hub_url} ({exc.__class__.__name__}: {exc}). "
                f"Still missing: {missing}. Download them from {hub_url}/{repo} and put them in {dest}, "
                "or start the studio with --model-dir pointing at an XTTS checkpoint folder. "
                "A partial download is kept and resumes on the next try."
            ) from exc
    if progress is not None:
        progress(1.0, "Download complete")
    return dest


def ensure_default_model(dest: Path, *, hub_url: str, progress: ProgressCallback | None = None) -> Path:
    """Return the base XTTS v2 folder, downloading whatever inference files it lacks."""
    if not missing_files(dest, INFERENCE_FILES):
        return dest
    return download_files(dest, INFERENCE_FILES, hub_url=hub_url, progress=progress)
