"""Encode a stream of float audio chunks into the formats the OpenAI speech API offers.

wav and pcm are written directly (a WAV header with open-ended sizes, then 16-bit PCM);
mp3, opus (in Ogg), aac (ADTS) and flac go through one ffmpeg process per response,
fed on stdin and read on stdout as it produces bytes, so nothing waits for the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterable, Iterator

import numpy as np

from core.errors import InvalidInput

CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
_FFMPEG_OUTPUT = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3"],
    "opus": ["-c:a", "libopus", "-b:a", "64k", "-f", "ogg"],
    "aac": ["-c:a", "aac", "-b:a", "128k", "-f", "adts"],
    "flac": ["-c:a", "flac", "-f", "flac"],
}


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def streaming_wav_header(sample_rate: int) -> bytes:
    """A WAV header whose sizes say 'unknown' (0xFFFFFFFF), as streaming servers send."""
    unknown = 0xFFFFFFFF
    return (
        b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data" + struct.pack("<I", unknown)
    )  # fmt: skip


def encode_stream(chunks: Iterable[np.ndarray], fmt: str, sample_rate: int) -> Iterator[bytes]:
    """Bytes of ``fmt`` as each chunk of mono float audio arrives."""
    if fmt not in CONTENT_TYPES:
        raise InvalidInput(f"response_format must be one of {', '.join(CONTENT_TYPES)}; got '{fmt}'.")
    if fmt in ("wav", "pcm"):
        if fmt == "wav":
            yield streaming_wav_header(sample_rate)
        for chunk in chunks:
            yield pcm16(chunk)
        return
    yield from _ffmpeg_stream(chunks, fmt, sample_rate)


def _ffmpeg_stream(chunks: Iterable[np.ndarray], fmt: str, sample_rate: int) -> Iterator[bytes]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise InvalidInput(f"{fmt} output needs ffmpeg, which is not installed; ask for wav or pcm.")
    proc = subprocess.Popen(
        [ffmpeg, "-v", "error", "-nostdin", "-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0",
         *_FFMPEG_OUTPUT[fmt], "-flush_packets", "1", "pipe:1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            for chunk in chunks:
                proc.stdin.write(pcm16(chunk))  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        except BaseException as exc:  # raised again in the consumer
            failure.append(exc)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
            close = getattr(chunks, "close", None)
            if close is not None:  # stop the producer too when the client went away
                close()

    feeder = threading.Thread(target=feed, name=f"encode-{fmt}", daemon=True)
    feeder.start()
    try:
        while True:
            data = os.read(proc.stdout.fileno(), 1 << 16)  # type: ignore[union-attr]
            if not data:
                break
            yield data
        feeder.join()
        if failure:
            raise failure[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
