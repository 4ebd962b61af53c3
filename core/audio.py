"""Audio in: decode anything ffmpeg reads, measure it, and prepare it for XTTS.

Decoding goes through ffprobe/ffmpeg so every container works the same way
(wav, mp3, ogg, flac, m4a and the audio track of video files). An upload is
read as one plain local file: ffmpeg may use the ``file`` protocol only and only
the demuxers of audio and video files, so a playlist (HLS, ffconcat...) can
never make it read other files or URLs. Loudness is measured as ITU-R BS.1770
integrated loudness (K-weighted, gated).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soxr
from scipy import signal

from core.constants import XTTS_INPUT_RATE
from core.errors import InvalidInput

XTTS_REFERENCE_RATE = XTTS_INPUT_RATE
TARGET_LUFS = -20.0
PEAK_CEILING = 10 ** (-1.0 / 20)  # -1 dBFS
_FRAME_S = 0.02
_DECODE_TIMEOUT_S = 120
# ffmpeg demuxer names (``ffmpeg -demuxers``) of files people upload as audio or video. Formats
# that open further files or URLs named inside them (hls, concat, dash, image2...) are left out.
_UPLOAD_DEMUXERS = (
    "wav", "w64", "aiff", "caf", "au", "mp3", "ogg", "flac", "aac", "ac3", "eac3", "dts", "amr",
    "wv", "ape", "tta", "mpc", "mpc8", "mov", "matroska", "avi", "asf", "flv", "mpeg", "mpegts",
)  # fmt: skip
_REFUSED_FORMAT = re.compile(rb"\[(\w+) @ [^\]]*\] Format not on whitelist")


@dataclass(frozen=True)
class Decoded:
    """Float32 samples shaped ``[frames, channels]`` at the file's own rate."""

    samples: np.ndarray
    sample_rate: int
    codec: str

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def mono(self) -> np.ndarray:
        return self.samples.mean(axis=1) if self.samples.shape[1] > 1 else self.samples[:, 0]


@dataclass(frozen=True)
class ClipStats:
    """What the checks look at, kept in the voice record."""

    duration_s: float
    speech_s: float
    silence_ratio: float
    clipped_ratio: float
    peak_dbfs: float
    loudness_lufs: float
    sample_rate: int
    channels: int
    codec: str

    def to_dict(self) -> dict[str, float | int | str]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def ffmpeg_tool(name: str) -> str:
    """The path of an ffmpeg tool (``ffmpeg``, ``ffprobe``); a clear error when it is not installed."""
    path = shutil.which(name)
    if path is None:
        raise InvalidInput(f"{name} is not installed; the studio needs it to read audio (apt install ffmpeg).")
    return path


def local_input_args(path: Path) -> list[str]:
    """ffmpeg/ffprobe input options that read ``path`` as one plain local file.

    The ``file:`` prefix keeps a name such as ``http:x.wav`` from being taken for a protocol.
    """
    return [
        "-protocol_whitelist", "file", "-format_whitelist", ",".join(_UPLOAD_DEMUXERS),
        "-i", f"file:{path.resolve()}",
    ]  # fmt: skip


def _unreadable(name: str, stderr: bytes) -> str:
    refused = _REFUSED_FORMAT.search(stderr)
    if refused:
        kind = refused.group(1).decode()
        return (
            f"{name}: {kind} files are not accepted. Playlists and lists of other files or links are refused; "
            "upload the audio or video file itself (wav, mp3, ogg, opus, flac, m4a, aac, mp4, mkv, webm, avi, wma...)."
        )
    return f"{name}: not a readable audio or video file (unsupported or damaged)."


def decode(path: Path) -> Decoded:
    """Decode the first audio stream of ``path``; raise :class:`InvalidInput` naming the file if it cannot."""
    name = path.name
    if not path.is_file():
        raise InvalidInput(f"{name}: the file does not exist.")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{name}: the file is empty (0 bytes).")
    probe = subprocess.run(
        [ffmpeg_tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams", "-select_streams", "a",
         *local_input_args(path)],
        capture_output=True,
        timeout=_DECODE_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        raise InvalidInput(_unreadable(name, probe.stderr))
    streams = json.loads(probe.stdout or b"{}").get("streams", [])
    if not streams:
        raise InvalidInput(f"{name}: the file has no audio track.")
    stream = streams[0]
    rate = int(stream.get("sample_rate") or 0)
    channels = int(stream.get("channels") or 0)
    if rate <= 0 or channels <= 0:
        raise InvalidInput(f"{name}: the audio track has no usable sample rate or channels.")
    run = subprocess.run(
        [ffmpeg_tool("ffmpeg"), "-v", "error", "-nostdin", *local_input_args(path), "-map", "0:a:0", "-vn",
         "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels), "-ar", str(rate), "-"],
        capture_output=True,
        timeout=_DECODE_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    if run.returncode != 0 or not run.stdout:
        raise InvalidInput(f"{name}: the audio could not be decoded (damaged or unsupported codec).")
    samples = np.frombuffer(run.stdout, dtype=np.float32).reshape(-1, channels).copy()
    return Decoded(samples, rate, str(stream.get("codec_name", "unknown")))


def frame_levels_db(mono: np.ndarray, rate: int) -> np.ndarray:
    frame = max(int(rate * _FRAME_S), 1)
    usable = len(mono) // frame * frame
    if usable == 0:
        return np.array([-120.0])
    frames = mono[:usable].reshape(-1, frame)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-6))


def voiced_frames(mono: np.ndarray, rate: int) -> np.ndarray:
    """Boolean per 20 ms frame: louder than both -45 dBFS and 35 dB under the loudest frames."""
    levels = frame_levels_db(mono, rate)
    threshold = max(-45.0, float(np.percentile(levels, 95)) - 35.0)
    return levels > threshold


def integrated_loudness(mono: np.ndarray, rate: int) -> float:
    """BS.1770-4 integrated loudness in LUFS (-70 when there is nothing above the absolute gate)."""
    if rate < 8000 or len(mono) < int(0.4 * rate):
        return -70.0
    # K-weighting: a high shelf (+4 dB above ~1.7 kHz) then a high-pass (~38 Hz), as in the standard.
    shelf = biquad_high_shelf(rate, 1681.974450955533, 3.999843853973347, 0.7071752369554196)
    highpass = biquad_high_pass(rate, 38.13547087602444, 0.5003270373238773)
    weighted = signal.lfilter(*highpass, signal.lfilter(*shelf, mono.astype(np.float64)))
    block, step = int(0.4 * rate), int(0.1 * rate)
    starts = range(0, len(weighted) - block + 1, step)
    return gated_loudness(np.array([np.mean(weighted[s : s + block] ** 2) for s in starts]))


def gated_loudness(powers: np.ndarray) -> float:
    """BS.1770's gating over the mean squares of 400 ms K-weighted blocks: the loudness in LUFS."""
    loud = -0.691 + 10 * np.log10(np.maximum(powers, 1e-12))
    gated = powers[loud > -70.0]
    if gated.size == 0:
        return -70.0
    relative = -0.691 + 10 * np.log10(gated.mean()) - 10.0
    final = powers[(loud > -70.0) & (loud > relative)]
    return float(-0.691 + 10 * np.log10(final.mean())) if final.size else -70.0


def biquad_high_shelf(rate: int, f0: float, gain_db: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """The BS.1770 pre-filter (a high shelf) by the bilinear transform, exact at any sample rate."""
    k = np.tan(np.pi * f0 / rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    norm = 1 + k / q + k * k
    b = np.array([(vh + vb * k / q + k * k), 2 * (k * k - vh), (vh - vb * k / q + k * k)]) / norm
    a = np.array([norm, 2 * (k * k - 1), 1 - k / q + k * k]) / norm
    return b, a


def biquad_high_pass(rate: int, f0: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """The BS.1770 RLB weighting (a second-order high-pass) by the bilinear transform."""
    k = np.tan(np.pi * f0 / rate)
    norm = 1 + k / q + k * k
    return np.array([1.0, -2.0, 1.0]), np.array([norm, 2 * (k * k - 1), 1 - k / q + k * k]) / norm


def analyse(decoded: Decoded) -> ClipStats:
    mono = decoded.mono()
    voiced = voiced_frames(mono, decoded.sample_rate)
    peak = float(np.max(np.abs(decoded.samples))) if decoded.samples.size else 0.0
    clipped = float(np.mean(np.abs(decoded.samples) >= 0.999)) if decoded.samples.size else 0.0
    return ClipStats(
        duration_s=decoded.duration,
        speech_s=float(voiced.sum() * _FRAME_S),
        silence_ratio=float(1.0 - voiced.mean()) if voiced.size else 1.0,
        clipped_ratio=clipped,
        peak_dbfs=float(20 * np.log10(max(peak, 1e-6))),
        loudness_lufs=integrated_loudness(mono, decoded.sample_rate),
        sample_rate=decoded.sample_rate,
        channels=decoded.samples.shape[1],
        codec=decoded.codec,
    )


def trim_silence(mono: np.ndarray, rate: int, *, pad_s: float = 0.15) -> np.ndarray:
    """Cut leading and trailing silence, keeping ``pad_s`` of room around the speech."""
    voiced = voiced_frames(mono, rate)
    if not voiced.any():
        return mono
    frame = int(rate * _FRAME_S)
    first, last = np.argmax(voiced), len(voiced) - np.argmax(voiced[::-1])
    pad = int(pad_s * rate)
    return mono[max(first * frame - pad, 0) : min(last * frame + pad, len(mono))]


def normalize_loudness(mono: np.ndarray, rate: int, *, target_lufs: float = TARGET_LUFS) -> np.ndarray:
    """Gain to ``target_lufs``, then limited so the peak stays under -1 dBFS."""
    loudness = integrated_loudness(mono, rate)
    gain = 10 ** ((target_lufs - loudness) / 20) if loudness > -70.0 else 1.0
    out = mono * gain
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > PEAK_CEILING:
        out = out * (PEAK_CEILING / peak)
    return out.astype(np.float32)


def prepare_reference(decoded: Decoded, *, rate: int = XTTS_REFERENCE_RATE) -> np.ndarray:
    """Mono, resampled to ``rate``, silence trimmed, loudness-normalised: how XTTS likes a reference."""
    mono = decoded.mono().astype(np.float32)
    if decoded.sample_rate != rate:
        mono = soxr.resample(mono, decoded.sample_rate, rate).astype(np.float32)
    return normalize_loudness(trim_silence(mono, rate), rate)
