"""Objective scores for a checkpoint's samples, and a recommendation drawn from them.

- Speaker similarity: cosine between resemblyzer embeddings of each sample and the mean
  embedding of the reference clips. Resemblyzer is a speaker encoder independent of XTTS
  (its weights ship inside its PyPI package, so it works offline).
- Intelligibility: word and character error rate of a faster-whisper transcript against
  the sentence (jiwer), on normalised text.
- Length: seconds per character against the base model's renders of the same sentences;
  far shorter means truncated speech, far longer means run-on babble.

Scores are written to ``scores.json`` beside the samples with a fingerprint of the files
they were computed on, so they are re-read until the samples change.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core import fs, plots
from core.audio import decode
from core.device import DeviceScheduler
from train.speakers import SpeakerEncoder
from train.transcribe import WHISPER_RATE, Whisper

log = logging.getLogger(__name__)

SCORES_FILE = "scores.json"
TRUNCATED_BELOW = 0.6  # length ratio against the base model
RUN_ON_ABOVE = 1.7


def spoken_form(text: str, language: str) -> str:
    """``text`` with numbers, symbols and abbreviations spelled out as XTTS's own cleaner reads them.

    Whisper writes "12" where the text says "twelve" and the other way round; comparing both
    in this form keeps that from counting as an error. Unchanged for a language it does not know.
    """
    from TTS.tts.layers.xtts.tokenizer import multilingual_cleaners

    try:
        return multilingual_cleaners(text, language.split("-")[0])
    except (KeyError, NotImplementedError, ValueError, IndexError):
        return text


def normalise_text(text: str, language: str | None = None) -> str:
    """Lower case, no punctuation, single spaces: what WER should compare (spoken form with ``language``)."""
    if language:
        text = spoken_form(text, language)
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s']", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def error_rates(reference: str, hypothesis: str, language: str | None = None) -> tuple[float, float]:
    """(WER, CER) of ``hypothesis`` against ``reference``; an empty transcript is all wrong."""
    import jiwer

    ref, hyp = normalise_text(reference, language), normalise_text(hypothesis, language)
    if not ref:
        return (0.0, 0.0) if not hyp else (1.0, 1.0)
    if not hyp:
        return 1.0, 1.0
    return float(jiwer.wer(ref, hyp)), float(jiwer.cer(ref, hyp))


def load_16k(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz, what both Whisper and the speaker encoder take."""
    import soxr

    decoded = decode(path)
    return soxr.resample(decoded.mono(), decoded.sample_rate, WHISPER_RATE).astype(np.float32)


def fingerprint(files: Sequence[Path]) -> str:
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


class Scorer:
    """Scores samples; the speaker encoder and Whisper load once and stay resident."""

    def __init__(
        self, whisper_model: str, *, whisper: Whisper | None = None, encoder: SpeakerEncoder | None = None
    ) -> None:
        self.whisper_model = whisper_model
        self.whisper = whisper or Whisper(DeviceScheduler("cpu"))
        self.encoder = encoder or SpeakerEncoder(self.whisper.scheduler)
        self._references: dict[str, np.ndarray] = {}

    def reference_embedding(self, clips: Sequence[Path]) -> np.ndarray:
        key = fingerprint(clips) + "|" + "|".join(str(c) for c in clips)
        if key not in self._references:
            embeddings = [e for e, _ in self.encoder.analyse_many([load_16k(clip) for clip in clips])]
            mean = np.mean(embeddings, axis=0)
            self._references[key] = mean / (np.linalg.norm(mean) or 1.0)
        return self._references[key]

    def _transcribe(self, clips: Sequence[np.ndarray], language: str) -> list[str]:
        return self.whisper.texts(clips, model=self.whisper_model, language=language)

    def score(
        self,
        samples: Sequence[Path],
        sentences: Sequence[str],
        reference_clips: Sequence[Path],
        *,
        language: str,
        base_seconds_per_char: float | None,
    ) -> dict[str, Any]:
        """Per-sample and mean scores for ``samples`` (sample i speaks ``sentences[i]``)."""
        if not samples:
            raise ValueError("no samples to score")
        reference = self.reference_embedding(reference_clips) if reference_clips else None
        audios = [load_16k(path) for path in samples]
        transcripts = self._transcribe(audios, language)  # together: on a CPU, Whisper's workers share them
        embeddings = [e for e, _ in self.encoder.analyse_many(audios)] if reference is not None else []
        per_sample = []
        for index, (path, audio, transcript) in enumerate(zip(samples, audios, transcripts, strict=True)):
            sentence = sentences[index] if index < len(sentences) else ""
            wer, cer = error_rates(sentence, transcript, language)
            similarity = None
            if reference is not None:
                embedding = embeddings[index]  # a zero vector when no voice is left once silence is trimmed
                norm = float(np.linalg.norm(embedding))
                similarity = float(np.dot(embedding, reference) / norm) if norm else 0.0
            seconds = len(audio) / WHISPER_RATE
            per_sample.append({
                "file": path.name, "sentence": sentence, "transcript": transcript, "wer": round(wer, 4),
                "cer": round(cer, 4), "similarity": None if similarity is None else round(similarity, 4),
                "seconds": round(seconds, 3), "seconds_per_char": round(seconds / max(1, len(sentence)), 4),
            })  # fmt: skip
        result = summarise(per_sample, base_seconds_per_char)
        return {"samples": per_sample, **result}

    def score_folder(
        self, folder: Path, sentences: Sequence[str], reference_clips: Sequence[Path], *, language: str,
        base_seconds_per_char: float | None,
    ) -> dict[str, Any]:  # fmt: skip
        """Scores of the samples in ``folder``: re-read from ``scores.json`` while the samples are unchanged."""
        samples = sorted(folder.glob("[0-9]*.wav"), key=lambda p: int(p.stem))
        stored = read_scores(folder)
        if stored is not None and stored.get("fingerprint") == fingerprint(samples):
            return stored
        scores = self.score(
            samples, sentences, reference_clips, language=language, base_seconds_per_char=base_seconds_per_char
        )
        scores["fingerprint"] = fingerprint(samples)
        fs.write_json(folder / SCORES_FILE, scores)
        return scores


def summarise(per_sample: list[dict[str, Any]], base_seconds_per_char: float | None) -> dict[str, Any]:
    similarities = [s["similarity"] for s in per_sample if s["similarity"] is not None]
    seconds_per_char = float(np.mean([s["seconds_per_char"] for s in per_sample]))
    ratio = seconds_per_char / base_seconds_per_char if base_seconds_per_char else None
    flag = None
    if ratio is not None and ratio < TRUNCATED_BELOW:
        flag = "truncated"
    elif ratio is not None and ratio > RUN_ON_ABOVE:
        flag = "run-on"
    return {
        "similarity": round(float(np.mean(similarities)), 4) if similarities else None,
        "wer": round(float(np.mean([s["wer"] for s in per_sample])), 4),
        "cer": round(float(np.mean([s["cer"] for s in per_sample])), 4),
        "seconds_per_char": round(seconds_per_char, 4),
        "length_ratio": None if ratio is None else round(ratio, 3),
        "length_flag": flag,
    }


def read_scores(folder: Path) -> dict[str, Any] | None:
    import json

    path = folder / SCORES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def quality(scores: dict[str, Any]) -> float:
    """One number to rank by: sounds like the speaker, and says the words (CER is steadier than WER)."""
    similarity = scores.get("similarity")
    return (0.0 if similarity is None else float(similarity)) * (1.0 - min(1.0, float(scores.get("cer", 1.0))))


def recommend(rows: Sequence[dict[str, Any]]) -> tuple[str | None, str]:
    """The checkpoint to use among scored ``rows`` (from the catalog), and why, in words."""
    scored = [r for r in rows if r.get("scores")]
    if not scored:
        return None, "Score some checkpoints to get a recommendation."
    fine = [r for r in scored if not r["scores"].get("length_flag")]
    flagged = [r for r in scored if r["scores"].get("length_flag")]
    pool = fine or scored
    best = max(pool, key=lambda r: (quality(r["scores"]), -(r.get("eval_loss") or 0.0)))
    s = best["scores"]
    parts = [
        f"**{best['label']}** scores best (similarity × (1 − CER) = {quality(s):.3f}):",
        f"speaker similarity {_fmt(s.get('similarity'))}, WER {s['wer']:.0%}, CER {s['cer']:.0%}",
    ]
    if s.get("length_ratio") is not None:
        parts.append(f"length {s['length_ratio']:.2f}× the base model's")
    reason = " ".join(parts[:1]) + " " + ", ".join(parts[1:]) + "."
    runner_up = sorted(pool, key=lambda r: quality(r["scores"]), reverse=True)[1:2]
    if runner_up:
        reason += f" Next: {runner_up[0]['label']} ({quality(runner_up[0]['scores']):.3f})."
    if flagged:
        reason += (
            " Set aside for their length: "
            + ", ".join(f"{r['label']} ({r['scores']['length_flag']})" for r in flagged)
            + "."
        )
    if not fine:
        reason += " Every scored checkpoint has a length problem; listen before trusting any."
    return best["checkpoint"], reason


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def scores_plot(rows: Sequence[dict[str, Any]], target: Path) -> Path | None:
    """Similarity, WER and CER against step, one line per run; None when nothing is scored."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("scores") and row.get("step") is not None and row["kind"] == "run":
            runs.setdefault(row["run"], []).append(row)
    if not runs:
        return None
    fig, axes = plots.subplots(2, size=(8, 3))
    for run, points in runs.items():
        points = sorted(points, key=lambda r: r["step"])
        steps = [p["step"] for p in points]
        similarity = [p["scores"].get("similarity") or 0.0 for p in points]
        axes[0].plot(steps, similarity, marker="o", markersize=3, label=run)
        axes[1].plot(steps, [p["scores"]["wer"] for p in points], marker="o", markersize=3, label=f"{run} WER")
        axes[1].plot(steps, [p["scores"]["cer"] for p in points], marker="x", markersize=3, label=f"{run} CER",
                     linestyle="--")  # fmt: skip
    axes[0].set_title("speaker similarity (higher is better)", fontsize=9)
    axes[1].set_title("error rates (lower is better)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return plots.save_png(fig, target)
