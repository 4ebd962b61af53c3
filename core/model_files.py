"""Find XTTS model folders and download the base XTTS v2 model on first use.

Downloads are resumable: bytes go to ``NAME.part`` and continue from there with
an HTTP Range request; a finished file is renamed into place, so a folder never
holds a half file under its real name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
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


def _download_one(url: str, dest: Path, *, on_bytes: Callable[[int, int | None], None], timeout: float) -> None:
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={done}-"} if done else {}
    with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout) as response:
        if response.status_code == 416:  # the .part already holds the whole file
            part.replace(dest)
            return
        response.raise_for_status()
        if done and response.status_code != 206:
            done = 0  # server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        with open(part, "ab" if done else "wb") as handle:
            on_bytes(done, total)
            for block in response.iter_bytes(_CHUNK):
                handle.write(block)
                done += len(block)
                on_bytes(done, total)
            handle.flush()
            os.fsync(handle.fileno())
    part.replace(dest)


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

        log.info("downloading %s to %s", url, dest)
        try:
            _download_one(url, dest / name, on_bytes=report, timeout=timeout)
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
