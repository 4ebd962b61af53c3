"""ffmpeg runs that report progress and can be stopped: decoding a background, encoding MP3 and M4B.

ffmpeg streams, so a ten-hour book is encoded in bounded memory. A stopped run is killed
and raises :class:`Cancelled`; the caller removes what it was writing.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from core.audio import ffmpeg_tool, local_input_args
from core.errors import Cancelled, InvalidInput, StudioError

Progress = Callable[[float], None]
ShouldStop = Callable[[], bool]


def run_ffmpeg(
    args: Sequence[str],
    *,
    duration_s: float,
    what: str,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> None:
    """Run ffmpeg with ``args`` (inputs and outputs); ``progress`` gets the fraction of ``duration_s`` done."""
    command = [
        ffmpeg_tool("ffmpeg"),
        "-v",
        "error",
        "-nostdin",
        "-y",
        "-progress",
        "pipe:1",
        "-stats_period",
        "0.5",
        *args,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read() if proc.stderr else b""), daemon=True)
    reader.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if should_stop is not None and should_stop():
                raise Cancelled(f"The export was stopped while {what}; nothing was saved.")
            key, _, value = line.decode("ascii", "replace").strip().partition("=")
            if key == "out_time_us" and progress is not None and duration_s > 0 and value.isdigit():
                progress(min(int(value) / 1e6 / duration_s, 1.0))
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join()
    if proc.returncode != 0:
        detail = b"".join(errors).decode("utf-8", "replace").strip().splitlines()
        raise StudioError(f"ffmpeg failed while {what}: {detail[-1] if detail else f'exit code {proc.returncode}'}")


def channels_of(source: Path) -> int:
    """How many channels the first audio stream of ``source`` has (:class:`InvalidInput` if none)."""
    probe = subprocess.run(
        [ffmpeg_tool("ffprobe"), "-v", "error", "-of", "json", "-show_streams", "-select_streams", "a", *local_input_args(source)],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    streams = json.loads(probe.stdout or b"{}").get("streams", []) if probe.returncode == 0 else []
    if not streams or not int(streams[0].get("channels") or 0):
        raise InvalidInput(f"{source.name}: not a readable audio file with an audio track.")
    return int(streams[0]["channels"])


def decode_to_raw(source: Path, target: Path, rate: int, **kwargs: object) -> int:
    """Decode ``source`` into ``target`` as mono float32 samples at ``rate`` (raw); returns the frame count.

    The channels are averaged, as :meth:`core.audio.Decoded.mono` does (ffmpeg's own downmix
    would make a stereo track 3 dB louder).
    """
    count = channels_of(source)
    mono = "pan=mono|c0=" + "+".join(f"{1 / count:.6f}*c{k}" for k in range(count))
    run_ffmpeg(
        [*local_input_args(source), "-map", "0:a:0", "-vn", "-af", f"{mono},aresample={rate}:resampler=soxr",
         "-f", "f32le", "-c:a", "pcm_f32le", f"file:{target}"],
        duration_s=0.0, what=f"reading the background {source.name}", **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    return target.stat().st_size // 4


def ffmetadata(title: str, artist: str, chapters: Sequence[tuple[str, float, float]]) -> str:
    """An ffmpeg metadata file: the title, the artist and chapter marks (title, start s, end s)."""
    lines = [";FFMETADATA1", f"title={_escape(title)}", f"album={_escape(title)}", f"artist={_escape(artist)}"]
    for name, start, end in chapters:
        lines += ["", "[CHAPTER]", "TIMEBASE=1/1000", f"START={round(start * 1000)}", f"END={round(end * 1000)}"]
        lines.append(f"title={_escape(name)}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    flat = " ".join(value.split())
    for char in "\\=;#":
        flat = flat.replace(char, "\\" + char)
    return flat


def encode(
    wav: Path,
    metadata: Path,
    target: Path,
    *,
    kind: str,
    duration_s: float,
    acx: bool = False,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> Path:
    """Encode ``wav`` as ``kind`` ("mp3" or "m4b") with the title and chapters of ``metadata``."""
    if kind == "mp3":
        # ACX wants 192 kb/s constant bit rate at 44.1 kHz; ID3v2.3 carries the chapters (CHAP frames)
        codec = ["-c:a", "libmp3lame", "-b:a", "192k" if acx else "128k", *(["-ar", "44100"] if acx else []),
                 "-id3v2_version", "3", "-f", "mp3"]  # fmt: skip
    else:
        codec = ["-c:a", "aac", "-aac_coder", "fast", "-b:a", "64k", "-movflags", "+faststart", "-f", "ipod"]
    run_ffmpeg(
        ["-i", f"file:{wav}", "-f", "ffmetadata", "-i", f"file:{metadata}", "-map", "0:a", "-map_metadata", "1",
         "-map_chapters", "1", *codec, f"file:{target}"],
        duration_s=duration_s, what=f"encoding the {kind.upper()}", progress=progress, should_stop=should_stop,
    )  # fmt: skip
    return target
