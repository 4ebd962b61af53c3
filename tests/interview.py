"""A synthetic interview: two espeak-ng voices taking turns over a music bed and room noise.

Every sentence's voiced span is known, so a dataset built from it can be checked against the script.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from core.audio import voiced_frames
from tests.make_tiny_models import espeak

RATE = 22050
PAUSE_S = 0.9
# Two espeak-ng voices a speaker encoder tells apart (keyword arguments of espeak()): resemblyzer puts
# them at cosine 0.55 on average (0.63 at most) while each voice's own clips sit above 0.85. Pitch
# alone barely moves it (en+m3 at -p 25 and at the default are 0.91 alike), the variant does.
VOICE_A: dict[str, object] = {"voice": "en+m3", "pitch": 25}
VOICE_B: dict[str, object] = {"voice": "en-us+f5", "pitch": 85}

HOST = [
    "Welcome back to the show, it is good to have you here tonight.",
    "Tell me how the whole project started in the first place.",
    "What did your family say when you told them about it?",
    "How long did it take before the first customers arrived?",
    "Was there a moment when you wanted to give up on all of it?",
    "What would you tell someone who wants to start out today?",
    "Where do you see the company five years from now?",
    "Thank you so much for coming in and talking with us.",
]
GUEST = [
    "It started in my garage with a broken radio and a lot of patience.",
    "My mother laughed at first, but my father lent me his old tools.",
    "The first order came after nine months of building and testing.",
    "We packed every order by hand all through that first winter.",
    "There were many nights when the numbers simply did not add up.",
    "A friend reminded me why I had begun, and that kept me going.",
    "Start small, listen to the people who use your work, and be honest.",
    "I would like to hire twenty more people in the next few years.",
    "We are opening a second workshop near the river next spring.",
    "The best part of the job is hearing from people who fixed their radios.",
    "Every week we read the letters our customers send us.",
    "Most of our parts now come from a small factory in the north.",
    "Our newest radio runs for a whole week on one battery.",
    "We teach a repair class at the library on Saturday mornings.",
    "It has been a pleasure to be here, thank you for having me.",
    "I still keep that first broken radio on the shelf in my office.",
]


@dataclass(frozen=True)
class Line:
    speaker: str  # "guest" or "host"
    text: str
    start: float  # voiced span in the mix, seconds
    end: float


def script(guest_lines: int = 16) -> list[tuple[str, str]]:
    """Alternating turns: the guest (the voice the dataset wants) answers, the host asks in between."""
    turns: list[tuple[str, str]] = []
    for index, text in enumerate(GUEST[:guest_lines]):
        turns.append(("guest", text))
        if index % 2 == 1:
            turns.append(("host", HOST[(index // 2) % len(HOST)]))
    return turns


def music_bed(seconds: float, rate: int = RATE, *, seed: int = 7) -> np.ndarray:
    """Chords changing every two beats over a kick drum and hi-hats at 120 bpm, peak about 1."""
    t = np.arange(int(seconds * rate)) / rate
    beat = 0.5
    chords = ((220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6), (196.0, 246.9, 311.1))
    pad = np.zeros_like(t)
    for index, chord in enumerate(chords):
        on = (np.floor(t / (4 * beat)) % len(chords)) == index
        pad += on * sum(np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t) for f in chord)
    phase = t % beat
    kick = np.sin(2 * np.pi * (50 + 80 * np.exp(-phase * 30)) * phase) * np.exp(-phase * 12)
    rng = np.random.default_rng(seed)
    hat_phase = (t + beat / 2) % beat
    hats = rng.standard_normal(len(t)) * np.exp(-hat_phase * 60) * 0.3
    bed = 0.15 * pad + 0.8 * kick + hats
    return (bed / np.max(np.abs(bed))).astype(np.float32)


def rms_db(audio: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(audio, dtype=np.float64))) + 1e-12))


def make_interview(
    folder: Path,
    turns: list[tuple[str, str]],
    voices: dict[str, dict[str, object]],
    *,
    music_db: float = -22.0,
    noise_db: float = -45.0,
    name: str = "interview",
) -> tuple[Path, list[Line]]:
    """A video of ``turns`` (speaker, text) spoken with ``voices`` (espeak args by speaker) over music and noise.

    ``music_db`` and ``noise_db`` are the bed's and the noise's RMS relative to the speech's RMS.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pieces, lines, offset = [np.zeros(int(1.5 * RATE), dtype=np.float32)], [], 1.5
    for index, (speaker, text) in enumerate(turns):
        audio, rate = sf.read(espeak(text, folder / f"{name}_{index}.wav", **voices[speaker]), dtype="float32")
        assert rate == RATE
        audio = audio / (np.max(np.abs(audio)) + 1e-9) * 0.5
        voiced = np.flatnonzero(voiced_frames(audio, RATE))
        lines.append(Line(speaker, text, offset + voiced[0] * 0.02, offset + (voiced[-1] + 1) * 0.02))
        pieces += [audio, np.zeros(int(PAUSE_S * RATE), dtype=np.float32)]
        offset += (len(audio) + int(PAUSE_S * RATE)) / RATE
    pieces.append(np.zeros(int(1.5 * RATE), dtype=np.float32))
    speech = np.concatenate(pieces)
    frames = np.repeat(voiced_frames(speech, RATE), int(0.02 * RATE))
    level = rms_db(speech[np.pad(frames, (0, max(0, len(speech) - len(frames))))[: len(speech)]])
    bed = music_bed(len(speech) / RATE)
    bed *= 10 ** ((level + music_db - rms_db(bed)) / 20)
    noise = np.random.default_rng(3).standard_normal(len(speech)).astype(np.float32)
    noise *= 10 ** ((level + noise_db - rms_db(noise)) / 20)
    mix = np.clip(speech + bed + noise, -1, 1).astype(np.float32)
    wav = folder / f"{name}.wav"
    sf.write(wav, mix, RATE)
    video = folder / f"{name}.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=black:s=64x64:d={offset + 2:.1f}", "-i",
         str(wav), "-shortest", "-c:v", "mpeg4", "-c:a", "aac", "-b:a", "160k", str(video)],
        check=True,
    )  # fmt: skip
    return video, lines
