"""Build an XTTS training set from recordings: extract, transcribe, cut, filter, write Coqui's format.

A dataset lives in ``outputs/datasets/<name>/``::

    downloads/<url-fingerprint>/   what yt-dlp fetched (".done" once complete)
    sources/<fingerprint>.wav      each source as mono 22.05 kHz
    transcripts/<fingerprint>.json words with times (a rebuild reuses them)
    wavs/<fingerprint>_<n>.wav     the clips, loudness-normalised
    metadata_train.csv, metadata_eval.csv   audio_file|text|speaker_name (see :mod:`train.coqui_csv`)
    report.json, plots/*.png, edits.json    what was kept and dropped, and the user's fixes

Sources are fingerprinted by content (links by URL), so an interrupted or repeated build
skips the downloads, extractions and transcriptions it already has. A first build that fails
removes its folder unless it got as far as work the next build reuses (finished downloads,
transcripts); a failed rebuild leaves what the dataset already had untouched.

Links may only lead to public addresses unless the builder is made with
``allow_private_urls`` (see :mod:`core.net_policy`).
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from core import fs, locks, plots
from core.audio import decode, frame_levels_db, normalize_loudness, voiced_frames
from core.constants import XTTS_INPUT_RATE
from core.device import DeviceScheduler
from core.errors import Cancelled, InvalidInput
from core.model_files import ProgressCallback
from core.net_policy import NetPolicy
from core.xtts.languages import CHAR_LIMITS
from train import sources as source_io
from train.coqui_csv import TRAIN_FILE, MetadataRow, read_splits, write_metadata
from train.segment import ClipPlan, CutOptions, plan_clips
from train.transcribe import WHISPER_RATE, Transcript, Whisper, speech_regions

log = logging.getLogger(__name__)

TRAIN_RATE = XTTS_INPUT_RATE
_STOPPED = "The build was stopped; what was done is kept and the next build resumes from it."
REASONS = ("too_short", "too_long", "silence", "clipping", "low_snr", "text_short", "text_long", "low_confidence")


@dataclass(frozen=True)
class BuildOptions:
    name: str
    speaker: str = ""
    language: str | None = None  # None: detect
    whisper_model: str = "small"
    # batched transcription (see train.transcribe); 0: Whisper's sequential loop. 1 is the fastest on a
    # CPU (bench/bench_dataset.py: the windows, not the batching, save the time); larger ones are for a GPU
    whisper_batch_size: int = 1
    eval_fraction: float = 0.1
    min_s: float = 2.0
    max_s: float = 12.0
    min_snr_db: float = 15.0
    min_confidence: float = 0.5
    max_silence: float = 0.6
    seed: int = 1234


@dataclass
class ClipRecord:
    file: str
    text: str
    source: str
    start: float
    duration: float
    snr_db: float
    confidence: float
    reason: str | None = None


@dataclass
class BuildReport:
    dataset_dir: Path
    language: str
    speaker: str
    kept: int
    kept_minutes: float
    dropped: dict[str, dict[str, float]]
    train: int
    eval: int
    sources: list[dict[str, Any]]
    transcribed_now: list[str] = field(default_factory=list)
    clips: list[ClipRecord] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.kept} clips kept ({self.kept_minutes:.1f} min): {self.train} train, {self.eval} eval."]
        for reason, numbers in self.dropped.items():
            lines.append(
                f"Dropped for {reason.replace('_', ' ')}: {int(numbers['clips'])} clips ({numbers['minutes']:.1f} min)."
            )
        failed = [s for s in self.sources if s.get("error")]
        lines += [f"Skipped {s['name']}: {s['error']}" for s in failed]
        return "\n".join(lines)


def _clean_text(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("|", " ")).strip()


def snr_db(clip: np.ndarray, noise_floor_db: float) -> float:
    levels = frame_levels_db(clip, TRAIN_RATE)
    speech = float(np.percentile(levels, 90))
    return float(min(speech - noise_floor_db, 80.0))


class DatasetBuilder:
    """Builds datasets under ``root`` (``outputs/datasets``)."""

    def __init__(self, root: Path, *, allow_private_urls: bool = False, whisper: Whisper | None = None) -> None:
        self.root = root
        self.url_policy = NetPolicy(allow_private=allow_private_urls)
        self.whisper = whisper or Whisper(DeviceScheduler("cpu"))

    def folder_for(self, name: str) -> Path:
        return self.root / fs.slug(fs.clean_name(name, noun="dataset"), fallback="dataset")

    def existing(self, name: str) -> Path:
        """The folder of the dataset called ``name`` (one path component under the root), which must exist."""
        if not name:
            raise InvalidInput("Pick or build a dataset first.")
        path = fs.child(self.root, name, what="dataset name")
        if not path.is_dir():
            raise InvalidInput(f"There is no dataset '{name}'.")
        return path

    def training_folder(self, value: str, roots: Sequence[Path]) -> Path:
        """A dataset to train on: one of this builder's by name, or a typed Coqui-format folder inside ``roots``."""
        if not value:
            raise InvalidInput("Pick a dataset (or type the path of a folder in Coqui's format).")
        if value in self.list():
            return fs.child(self.root, value, what="dataset name", kind="dir", roots=roots)
        return fs.resolve_inside(value, roots, what="dataset folder", base=self.root, kind="dir")

    def list(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / TRAIN_FILE).is_file())

    # ---- the pipeline --------------------------------------------------------------------
    def build(
        self,
        options: BuildOptions,
        *,
        urls: Sequence[str] = (),
        files: Sequence[Path] = (),
        folder: Path | None = None,
        cookies: Path | None = None,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> BuildReport:
        report_progress = progress or (lambda fraction, message: None)
        stop = should_stop or (lambda: False)
        name = fs.clean_name(options.name, noun="dataset")
        if not 0.0 <= options.eval_fraction < 0.5:
            raise InvalidInput("The eval fraction must be between 0 and 0.5.")
        if not 0 <= options.whisper_batch_size <= 64:
            raise InvalidInput("The Whisper batch size must be between 0 (sequential) and 64.")
        if not 0.5 <= options.min_s < options.max_s <= 30:
            raise InvalidInput("Clip lengths must satisfy 0.5 <= min < max <= 30 seconds.")
        inputs = list(files) + (source_io.folder_media(folder) if folder else [])
        if not urls and not inputs:
            raise InvalidInput("Add at least one link, uploaded file or server folder.")
        target = self.root / fs.slug(name, fallback="dataset")
        building = locks.try_hold(build_lock(target))
        if building is None:
            raise InvalidInput(
                f"The dataset '{name}' is being built already (here or by another studio process sharing "
                "this data folder); wait for that build to finish, or choose another name."
            )
        try:
            created = not target.exists()
            for sub in ("sources", "transcripts", "wavs", "downloads", "plots"):
                (target / sub).mkdir(parents=True, exist_ok=True)
            try:
                sources = self._fetch(urls, target, cookies, report_progress, stop) + [
                    {"name": p.name, "path": p, "origin": str(p)} for p in inputs
                ]
                return self._process(target, name, options, sources, report_progress, stop)
            except BaseException:
                if created and not _holds_work(target):
                    log.info("The build of %s failed before any reusable work; removing %s", name, target)
                    shutil.rmtree(target, ignore_errors=True)
                raise
        finally:
            locks.discard(building)  # a waiter on the old file takes the lock on a fresh one

    def _fetch(
        self,
        urls: Sequence[str],
        target: Path,
        cookies: Path | None,
        report_progress: ProgressCallback,
        stop: Callable[[], bool],
    ) -> list[dict[str, Any]]:
        """Download each link; a link that fails becomes a source with an ``error``."""
        sources: list[dict[str, Any]] = []
        for index, url in enumerate(urls):
            if stop():
                raise Cancelled(_STOPPED)
            try:
                fetched = source_io.fetch_url(
                    url, target / "downloads", policy=self.url_policy, cookies=cookies, should_stop=stop,
                    progress=lambda f, m, i=index: report_progress(0.2 * (i + f) / max(len(urls), 1), m),
                )  # fmt: skip
                sources += [{"name": p.name, "path": p, "origin": url} for p in fetched]
            except InvalidInput as exc:
                sources.append({"name": url, "origin": url, "error": str(exc)})
        return sources

    def _process(
        self,
        target: Path,
        name: str,
        options: BuildOptions,
        sources: list[dict[str, Any]],
        report_progress: ProgressCallback,
        stop: Callable[[], bool],
    ) -> BuildReport:
        """Extract, transcribe and cut each usable source, then write the dataset."""
        transcribed_now: list[str] = []
        clips: list[ClipRecord] = []
        languages: list[str] = []
        usable = [s for s in sources if "error" not in s]
        for index, source in enumerate(usable):
            if stop():
                raise Cancelled(_STOPPED)
            share = 0.2 + 0.75 * index / max(len(usable), 1)
            report_progress(share, f"Source {index + 1} of {len(usable)}: {source['name']}")
            try:
                audio, fingerprint = self._extract(source["path"], target)
                audio16k = soxr.resample(audio, TRAIN_RATE, WHISPER_RATE).astype(np.float32)
                speech = speech_regions(audio16k)  # one VAD pass serves the transcription and the cuts
                transcript, fresh = self._transcript(audio16k, speech, fingerprint, target, options, source["name"])
            except InvalidInput as exc:
                source["error"] = str(exc)
                continue
            source["fingerprint"] = fingerprint
            source["minutes"] = round(len(audio) / TRAIN_RATE / 60, 2)
            if fresh:
                transcribed_now.append(fingerprint)
            languages.append(transcript.language)
            clips += self._cut(audio, speech, fingerprint, transcript, target, options, source["name"])
        if not any("error" not in s for s in sources):
            raise InvalidInput("No source could be used:\n- " + "\n- ".join(s["error"] for s in sources))
        language = options.language or (max(set(languages), key=languages.count) if languages else "en")
        report_progress(0.97, "Writing the metadata")
        return self._finish(target, name, options, language, sources, clips, transcribed_now)

    def _extract(self, path: Path, target: Path) -> tuple[np.ndarray, str]:
        fingerprint = source_io.file_fingerprint(path)
        wav = target / "sources" / f"{fingerprint}.wav"
        if wav.is_file():
            return sf.read(wav, dtype="float32")[0], fingerprint
        decoded = decode(path)
        mono = decoded.mono().astype(np.float32)
        if decoded.sample_rate != TRAIN_RATE:
            mono = soxr.resample(mono, decoded.sample_rate, TRAIN_RATE).astype(np.float32)
        buffer = io.BytesIO()
        sf.write(buffer, mono, TRAIN_RATE, format="WAV", subtype="FLOAT")
        fs.write_bytes(wav, buffer.getvalue())
        return mono, fingerprint

    def _transcript(
        self,
        audio16k: np.ndarray,
        speech: list[tuple[float, float]],
        fingerprint: str,
        target: Path,
        options: BuildOptions,
        name: str,
    ) -> tuple[Transcript, bool]:
        """The source's transcript, from the cache when it has one for this model and requested language.

        Batched and sequential transcripts are alike (words with times), so either serves as the cache entry.
        """
        cached = target / "transcripts" / f"{fingerprint}.json"
        if cached.is_file():
            data = json.loads(cached.read_text(encoding="utf-8"))
            if data.get("model") == options.whisper_model and data.get("requested_language") == options.language:
                return Transcript.from_dict(data), False
        if not speech:
            raise InvalidInput(f"{name}: no speech was found in it (silence or music only).")
        transcript = self.whisper.transcribe(
            audio16k,
            model=options.whisper_model,
            language=options.language,
            batch_size=options.whisper_batch_size,
            regions=speech,
        )
        if not transcript.words:
            raise InvalidInput(f"{name}: Whisper heard no words in it.")
        payload = {**transcript.to_dict(), "model": options.whisper_model, "requested_language": options.language}
        fs.write_json(cached, payload)
        return transcript, True

    def _cut(
        self,
        audio: np.ndarray,
        speech: list[tuple[float, float]],
        fingerprint: str,
        transcript: Transcript,
        target: Path,
        options: BuildOptions,
        name: str,
    ) -> list[ClipRecord]:
        duration = len(audio) / TRAIN_RATE
        levels = frame_levels_db(audio, TRAIN_RATE)
        quiet = levels[~voiced_frames(audio, TRAIN_RATE)]
        noise_floor = float(np.percentile(quiet, 50)) if quiet.size >= 25 else float(np.percentile(levels, 5))
        plans = plan_clips(transcript.words, speech, duration, CutOptions(min_s=options.min_s, max_s=options.max_s))
        limit = CHAR_LIMITS.get(options.language or transcript.language, 250)
        records = []
        for number, plan in enumerate(plans, start=1):
            clip = audio[int(plan.start * TRAIN_RATE) : int(plan.end * TRAIN_RATE)]
            record = ClipRecord(
                file=f"wavs/{fingerprint}_{number:04d}.wav",
                text=_clean_text(plan.text),
                source=name,
                start=round(plan.start, 3),
                duration=round(plan.duration, 3),
                snr_db=round(snr_db(clip, noise_floor), 1),
                confidence=round(plan.confidence, 3),
            )
            record.reason = self._reason(record, clip, plan, options, limit)
            if record.reason is None:
                buffer = io.BytesIO()
                sf.write(buffer, normalize_loudness(clip, TRAIN_RATE), TRAIN_RATE, format="WAV", subtype="PCM_16")
                fs.write_bytes(target / record.file, buffer.getvalue())
            records.append(record)
        return records

    @staticmethod
    def _reason(record: ClipRecord, clip: np.ndarray, plan: ClipPlan, options: BuildOptions, limit: int) -> str | None:
        voiced = voiced_frames(clip, TRAIN_RATE)
        checks = [
            (record.duration < options.min_s, "too_short"),
            (record.duration > options.max_s, "too_long"),
            (voiced.size == 0 or 1 - voiced.mean() > options.max_silence, "silence"),
            (float(np.mean(np.abs(clip) >= 0.999)) > 0.001, "clipping"),
            (record.snr_db < options.min_snr_db, "low_snr"),
            (len(re.sub(r"\W", "", record.text)) < 3, "text_short"),
            (len(record.text) > limit, "text_long"),
            (plan.confidence < options.min_confidence, "low_confidence"),
        ]
        return next((reason for failed, reason in checks if failed), None)

    def _finish(
        self,
        target: Path,
        name: str,
        options: BuildOptions,
        language: str,
        sources: list[dict[str, Any]],
        clips: list[ClipRecord],
        transcribed_now: list[str],
    ) -> BuildReport:
        edits = _read_edits(target)
        for clip in clips:
            edit = edits.get(clip.file, {})
            if clip.reason is None and edit.get("drop"):
                clip.reason = "dropped_by_user"
            if "text" in edit:
                clip.text = _clean_text(edit["text"])
        kept = [c for c in clips if c.reason is None]
        if not kept:
            raise InvalidInput(
                "No clip passed the filters. " + "; ".join(f"{c.file}: {c.reason}" for c in clips[:5])
                if clips
                else "No clip could be cut from the sources."
            )
        order = kept[:]
        random.Random(options.seed).shuffle(order)
        n_eval = (
            max(1, round(len(order) * options.eval_fraction)) if options.eval_fraction > 0 and len(order) > 1 else 0
        )
        eval_files = {c.file for c in order[:n_eval]}
        speaker = _clean_text(options.speaker) or fs.slug(name, fallback="dataset")
        write_metadata(
            target,
            [MetadataRow(c.file, c.text, speaker) for c in kept if c.file not in eval_files],
            [MetadataRow(c.file, c.text, speaker) for c in kept if c.file in eval_files],
        )
        wanted = {c.file for c in kept}
        for stale in (target / "wavs").glob("*.wav"):
            if f"wavs/{stale.name}" not in wanted:
                stale.unlink()
        dropped: dict[str, dict[str, float]] = {}
        for clip in clips:
            if clip.reason is not None:
                entry = dropped.setdefault(clip.reason, {"clips": 0, "minutes": 0.0})
                entry["clips"] += 1
                entry["minutes"] = round(entry["minutes"] + clip.duration / 60, 3)
        report = BuildReport(
            dataset_dir=target,
            language=language,
            speaker=speaker,
            kept=len(kept),
            kept_minutes=round(sum(c.duration for c in kept) / 60, 3),
            dropped=dropped,
            train=len(kept) - len(eval_files),
            eval=len(eval_files),
            sources=[{k: str(v) if isinstance(v, Path) else v for k, v in s.items()} for s in sources],
            transcribed_now=transcribed_now,
            clips=clips,
        )
        payload = {
            **asdict(report),
            "dataset_dir": str(target),
            "options": asdict(options),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        fs.write_json(target / "report.json", payload)
        _plots(target, clips)
        return report


def report_markdown(folder: Path) -> str:
    """The dataset's last build report (report.json) as Markdown; empty when there is none."""
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    lines = [
        f"**{folder.name}** · language {report['language']} · speaker `{report['speaker']}` · built {report.get('built', '')[:19]}",
        f"- kept **{report['kept']}** clips, {report['kept_minutes']:.1f} min ({report['train']} train / {report['eval']} eval)",
    ]
    lines += [
        f"- dropped for {reason.replace('_', ' ')}: {int(v['clips'])} clips, {v['minutes']:.1f} min"
        for reason, v in report["dropped"].items()
    ]
    lines += [f"- skipped {s['name']}: {s['error']}" for s in report["sources"] if s.get("error")]
    return "\n".join(lines)


def _holds_work(target: Path) -> bool:
    """Whether a dataset folder holds work a rebuild would reuse: finished downloads or transcripts."""
    return any((target / "transcripts").glob("*.json")) or any((target / "downloads").glob("*/.done"))


def _read_edits(target: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads((target / "edits.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _plots(target: Path, clips: Sequence[ClipRecord]) -> None:
    for name, attribute, label in (
        ("lengths.png", "duration", "clip length (s)"),
        ("snr.png", "snr_db", "estimated SNR (dB)"),
    ):
        every = [getattr(c, attribute) for c in clips]
        kept = [getattr(c, attribute) for c in clips if c.reason is None]
        fig, ax = plots.subplots(size=(5, 3))
        ax.hist(every, bins=20, color="#c7c7e8", label="all")
        ax.hist(kept, bins=20, color="#5b5bd6", label="kept")
        ax.set_xlabel(label)
        ax.set_ylabel("clips")
        ax.legend()
        plots.save_png(fig, target / "plots" / name)


# ---- the clip table the user reviews ---------------------------------------------------------
TABLE_COLUMNS = ["keep", "split", "audio_file", "text", "speaker_name", "seconds"]


def load_table(target: Path) -> list[dict[str, Any]]:
    rows = []
    for split, split_rows in read_splits(target).items():
        for row in split_rows:
            wav = target / row["audio_file"]
            seconds = round(sf.info(wav).duration, 2) if wav.is_file() else 0.0
            rows.append({"keep": True, "split": split, **row, "seconds": seconds})
    if not rows:
        raise InvalidInput(f"{target.name} has no metadata yet; build it first.")
    return rows


def build_lock(target: Path) -> Path:
    """Held while the dataset in ``target`` is built or its table saved, by whichever studio process does it."""
    return target.parent / f".{target.name}.build.lock"


def save_table(target: Path, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Rewrite the CSVs from the edited rows (dropped rows leave them) and remember the edits."""
    held = locks.hold(build_lock(target), what=f"dataset {target.name} (a build is writing it)", timeout=5)
    try:
        return _save_table(target, rows)
    finally:
        locks.discard(held)


def _save_table(target: Path, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    known = {r["audio_file"]: r for r in load_table(target)}
    edits = _read_edits(target)
    train: list[tuple[str, str]] = []
    evaluation: list[tuple[str, str]] = []
    speaker = ""
    for row in rows:
        file = str(row.get("audio_file", ""))
        if file not in known:
            raise InvalidInput(f"{file} is not a clip of this dataset; reload the table.")
        text = _clean_text(str(row.get("text", "")))
        keep = str(row.get("keep", True)).strip().lower() not in ("false", "0", "no", "")
        if keep and not text:
            raise InvalidInput(f"{file}: the text is empty; fix it or untick keep.")
        if text != known[file]["text"]:
            edits.setdefault(file, {})["text"] = text
        if not keep:
            edits.setdefault(file, {})["drop"] = True
            continue
        speaker = str(row.get("speaker_name") or known[file]["speaker_name"])
        (evaluation if known[file]["split"] == "eval" else train).append((file, text))
    if not train:
        raise InvalidInput("At least one training clip must stay.")
    speaker = _clean_text(speaker) or target.name
    write_metadata(
        target, [MetadataRow(f, t, speaker) for f, t in train], [MetadataRow(f, t, speaker) for f, t in evaluation]
    )
    fs.write_json(target / "edits.json", edits)
    return len(train), len(evaluation)
