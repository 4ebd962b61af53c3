"""Where dataset audio comes from: links yt-dlp can fetch, uploaded files, and a folder on the server."""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core import net_policy
from core.errors import Cancelled, InvalidInput, StudioError
from core.model_files import ProgressCallback
from core.net_policy import NetPolicy
from core.xtts.latents import file_digest

log = logging.getLogger(__name__)

MEDIA_SUFFIXES = {
    ".wav",
    ".mp3",
    ".ogg",
    ".flac",
    ".m4a",
    ".aac",
    ".opus",
    ".wma",
    ".mp4",
    ".mkv",
    ".webm",
    ".mov",
    ".avi",
}
BOT_CHECK = "confirm you're not a bot"
_BACKOFF_S = (2.0, 5.0, 10.0)


def file_fingerprint(path: Path) -> str:
    return file_digest(path)[:16]


def url_fingerprint(url: str) -> str:
    return hashlib.sha256(url.strip().encode()).hexdigest()[:16]


def folder_media(folder: Path) -> list[Path]:
    """Audio and video files under a server folder (recursively), in name order."""
    if not folder.is_dir():
        raise InvalidInput(f"The folder {folder} does not exist on the server.")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
    if not found:
        raise InvalidInput(f"The folder {folder} holds no audio or video files ({', '.join(sorted(MEDIA_SUFFIXES))}).")
    return found


def parse_urls(text: str | None) -> list[str]:
    urls = [line.strip() for line in (text or "").splitlines() if line.strip() and not line.strip().startswith("#")]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"'{url}' is not a web link (it should start with http:// or https://).")
    return list(dict.fromkeys(urls))


def fetch_url(
    url: str,
    cache: Path,
    *,
    policy: NetPolicy = net_policy.PUBLIC_ONLY,
    cookies: Path | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Path]:
    """Download the best audio of ``url`` (a video or a playlist) into ``cache/<fingerprint>/``.

    ``policy`` says which addresses may be reached: the link is checked first, then every
    connection yt-dlp makes (redirects included) when it is made. A finished download leaves
    a ``.done`` marker, so a rebuild does not fetch it again. YouTube's "Sign in to confirm
    you're not a bot" is retried with backoff, then reported with what to do about it.
    """
    policy.check_url(url)
    folder = cache / url_fingerprint(url)
    done = folder / ".done"
    if done.is_file():
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    try:
        with net_policy.guarded(policy) as guard:
            _download(url, _ytdl_options(url, folder, cookies, progress, should_stop), guard, sleep)
    except InvalidInput:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".part")
    )
    if not files:
        shutil.rmtree(folder, ignore_errors=True)
        raise InvalidInput(f"{url} gave no audio to download.")
    done.write_text(url)
    return files


def _ytdl_options(
    url: str,
    folder: Path,
    cookies: Path | None,
    progress: ProgressCallback | None,
    should_stop: Callable[[], bool] | None,
) -> dict[str, Any]:
    def hook(status: dict) -> None:
        if should_stop is not None and should_stop():
            raise Cancelled("Stopped while downloading.")
        if progress is None:
            return
        total = status.get("total_bytes") or status.get("total_bytes_estimate")
        done_bytes = status.get("downloaded_bytes") or 0
        name = Path(str(status.get("filename", url))).name
        share = done_bytes / total if total else 0.0
        progress(
            share, f"Downloading {name}: {done_bytes / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else "")
        )

    options: dict[str, Any] = {
        "format": "bestaudio/best",
        "outtmpl": str(folder / "%(playlist_index|0)03d-%(id)s.%(ext)s"),
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "progress_hooks": [hook],
        "retries": 3,
        "socket_timeout": 20,
        "ignoreerrors": False,
        "restrictfilenames": True,
        # yt-dlp's own downloaders connect from this thread, where the network policy sees every
        # connection; an external one (ffmpeg for HLS) or parallel fragment threads would not be seen
        "external_downloader": {"default": "native"},
        "concurrent_fragment_downloads": 1,
    }
    if cookies is not None:
        options["cookiefile"] = str(cookies)
    return options


def _download(url: str, options: dict[str, Any], guard: net_policy.Guard, sleep: Callable[[float], None]) -> None:
    """Run yt-dlp, retrying YouTube's bot check; failures become :class:`InvalidInput`."""
    from yt_dlp import YoutubeDL
    from yt_dlp.utils import DownloadError

    for attempt in range(len(_BACKOFF_S) + 1):
        try:
            with YoutubeDL(options) as ydl:
                ydl.extract_info(url, download=True)
            return
        except Exception as exc:
            # a refusal surfaces wrapped in whatever yt-dlp makes of a failed connection or program
            if guard.refused and not isinstance(exc, StudioError):
                raise InvalidInput(f"Could not download {url}: {guard.refused[0]}") from exc
            if not isinstance(exc, DownloadError):
                raise
            message = str(exc).removeprefix("ERROR: ")
            if BOT_CHECK in message.lower() and attempt < len(_BACKOFF_S):
                log.warning("%s asked for a bot check; retrying in %.0fs", url, _BACKOFF_S[attempt])
                sleep(_BACKOFF_S[attempt])
                continue
            if BOT_CHECK in message.lower():
                raise InvalidInput(
                    f'YouTube refused {url} with "Sign in to confirm you\'re not a bot" (tried {attempt + 1} times). '
                    "Export your browser's YouTube cookies to a cookies.txt file and add it under 'Cookies file'."
                ) from exc
            raise InvalidInput(f"Could not download {url}: {message}") from exc


def uploaded(paths: Sequence[str | Path] | None) -> list[Path]:
    files = [Path(p) for p in (paths or [])]
    for path in files:
        if not path.is_file():
            raise InvalidInput(f"The upload {path.name} is missing; upload it again.")
        if path.stat().st_size == 0:
            raise InvalidInput(f"The upload {path.name} is empty (0 bytes).")
    return files
