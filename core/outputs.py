"""Generated audio on disk: each WAV with a JSON sidecar of everything that made it.

Files live in ``outputs/tts/YYYY-MM-DD/`` and are written atomically (sidecar
first, then the WAV, so every WAV that exists has its record).
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from core import fs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputRecord:
    """One generated file and its sidecar contents."""

    wav: Path
    meta: dict[str, Any]

    @property
    def sidecar(self) -> Path:
        return self.wav.with_suffix(".json")


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes of float audio in [-1, 1]."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


class OutputStore:
    """Saves and lists generated audio under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, audio: np.ndarray, sample_rate: int, meta: dict[str, Any]) -> OutputRecord:
        now = time.time()
        day = time.strftime("%Y-%m-%d", time.localtime(now))
        stamp = time.strftime("%H%M%S", time.localtime(now))
        name = f"{stamp}_{fs.slug(str(meta.get('text', '')), fallback='audio', limit=32)}_{secrets.token_hex(3)}"
        wav = self.root / day / f"{name}.wav"
        record = {
            **meta,
            "file": wav.name,
            "sample_rate": sample_rate,
            "duration_s": round(len(audio) / sample_rate, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
        }
        fs.write_json(wav.with_suffix(".json"), record)
        fs.write_bytes(wav, wav_bytes(audio, sample_rate))
        return OutputRecord(wav, record)

    def recent(self, limit: int = 20) -> list[OutputRecord]:
        """The newest ``limit`` outputs that have both a WAV and a readable sidecar."""
        if not self.root.is_dir():
            return []
        wavs = sorted(self.root.glob("*/*.wav"), key=lambda p: p.stat().st_mtime, reverse=True)
        records: list[OutputRecord] = []
        for wav in wavs:
            try:
                meta = json.loads(wav.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.debug("skipping %s: %s", wav, exc)
                continue
            records.append(OutputRecord(wav, meta))
            if len(records) >= limit:
                break
        return records
