"""Decoding uploads: every usual container works, and an upload is only ever read as one local file."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import soundfile as sf

from core.audio import decode
from core.errors import InvalidInput

SENTENCE = "Every upload is read from the disk and from nowhere else."


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture
def clip(speech) -> Path:
    return speech(SENTENCE, name="speech.wav")


class CountingServer:
    """A loopback web server that serves ``root`` and records every path asked for."""

    def __init__(self, root: Path) -> None:
        self.asked: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.asked.append(self.path)
                data = (root / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def web(clip: Path) -> Iterator[CountingServer]:
    server = CountingServer(clip.parent)
    yield server
    server.httpd.shutdown()


@pytest.mark.parametrize(
    ("name", "options", "codec"),
    [
        ("speech.mp3", ["-c:a", "libmp3lame"], "mp3"),
        ("speech.ogg", ["-c:a", "libvorbis"], "vorbis"),
        ("speech.opus", ["-c:a", "libopus"], "opus"),
        ("speech.flac", ["-c:a", "flac"], "flac"),
        ("speech.m4a", ["-c:a", "aac"], "aac"),
        ("speech.wma", ["-c:a", "wmav2"], "wmav2"),
        ("speech.aiff", [], "pcm_s16be"),
    ],
)
def test_usual_audio_files_decode(name: str, options: list[str], codec: str, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / name
    ffmpeg("-i", str(clip), *options, str(out))
    decoded = decode(out)
    assert decoded.codec == codec
    assert decoded.duration == pytest.approx(sf.info(clip).duration, abs=0.1)
    assert decoded.mono().std() > 0.01  # the speech, not silence


def test_wav_decodes_to_its_own_samples(clip: Path) -> None:
    decoded = decode(clip)
    samples, rate = sf.read(clip, dtype="float32")
    assert decoded.codec == "pcm_s16le" and decoded.sample_rate == rate
    assert decoded.mono() == pytest.approx(samples, abs=1e-4)


@pytest.mark.parametrize(
    ("name", "video", "audio"),
    [("talk.mp4", "mpeg4", "aac"), ("talk.mkv", "mpeg4", "libvorbis"), ("talk.avi", "mpeg4", "libmp3lame")],
)
def test_the_audio_track_of_a_video_decodes(name: str, video: str, audio: str, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / name
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=64x64:d=10", "-i", str(clip), "-shortest",
           "-c:v", video, "-c:a", audio, str(out))  # fmt: skip
    decoded = decode(out)
    assert decoded.duration == pytest.approx(sf.info(clip).duration, abs=0.2)
    assert decoded.mono().std() > 0.01


def write_playlist(kind: str, folder: Path, web: CountingServer) -> Path:
    """A playlist naming a local WAV beside it and the same WAV on the loopback server."""
    shutil.copy(folder / "speech.wav", folder / "other.wav")
    remote = f"{web.url}/speech.wav"
    if kind == "hls":
        path = folder / "upload.m3u8"
        path.write_text(
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:4.0,\n{remote}\n#EXTINF:4.0,\nother.wav\n#EXT-X-ENDLIST\n"
        )
    else:
        path = folder / "upload.ffconcat"
        path.write_text(f"ffconcat version 1.0\nfile other.wav\nfile '{remote}'\n")
    return path


@pytest.mark.parametrize("kind", ["hls", "concat"])
def test_playlists_that_point_elsewhere_are_refused(kind: str, clip: Path, web: CountingServer) -> None:
    playlist = write_playlist(kind, clip.parent, web)
    with pytest.raises(InvalidInput, match=rf"{playlist.name}: {kind} files are not accepted\. Playlists") as err:
        decode(playlist)
    assert "upload the audio or video file itself" in str(err.value)
    assert web.asked == []


@pytest.mark.parametrize("name", ["concat:speech.wav", "http:speech.wav", "subfile:speech.wav"])
def test_a_name_like_a_protocol_is_read_as_a_plain_file(
    name: str, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "uploads"
    folder.mkdir()
    shutil.copy(clip, folder / name)
    monkeypatch.chdir(folder)
    decoded = decode(Path(name))
    assert decoded.codec == "pcm_s16le"
    assert decoded.duration == pytest.approx(sf.info(clip).duration, abs=0.01)
