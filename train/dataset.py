"""Build an XTTS training set from recordings: extract, transcribe, cut, filter, write Coqui's format.

A dataset lives in ``outputs/datasets/<name>/``::

    downloads/<url-fingerprint>/   what yt-dlp fetched (".done" once complete)
    sources/<fingerprint>.wav      each source as mono 22.05 kHz
    transcripts/<fingerprint>.json words with times (a rebuild reuses them)
    sources/<fingerprint>.vocals.wav, ….denoised.wav   the source cleaned (see :mod:`train.clean_audio`)
    wavs/<fingerprint>_<n>.wav     the kept clips, loudness-normalised
    removed/<fingerprint>_<n>.wav  the clips a filter or the user removed, to listen to and restore
    metadata_train.csv, metadata_eval.csv   audio_file|text|speaker_name (see :mod:`train.coqui_csv`)
    report.json, plots/*.png, edits.json    what was kept and dropped, and the user's fixes

Each source is cleaned first (vocals separated from a music bed, noise removed, each when it
is needed or asked for), then transcribed and cut; the candidate clips of all sources are then
matched to one speaker (or several, kept apart by name) by :mod:`train.speakers`.

Sources are fingerprinted by content (links by URL), so an interrupted or repeated build
skips the downloads, extractions and transcriptions it already has. A first build that fails
removes its folder unless it got as far as work the next build reuses (finished downloads,
transcripts); a failed rebuild leaves what the dataset already had untouched.

Links may only lead to public addresses unless the builder is made with
``allow_private_urls`` (see :mod:`core.net_policy`).
"""

from __future__ import annotations

import functools
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
from train import denoise
from train import sources as source_io
from train.clean_audio import CleanedSource, SourceCleaner, mode
from train.coqui_csv import TRAIN_FILE, MetadataRow, write_metadata
from train.dataset_review import NOT_SPEECH, build_lock, clean_text, read_edits, reason_text
from train.segment import ClipPlan, CutOptions, plan_clips
from train.speakers import SpeakerEncoder, select_speakers
from train.transcribe import WHISPER_RATE, Transcript, Whisper, speech_regions

log = logging.getLogger(__name__)

TRAIN_RATE = XTTS_INPUT_RATE
_STOPPED = "The build was stopped; what was done is kept and the next build resumes from it."
REASONS = (
    "too_short", "too_long", "silence", "clipping", "low_snr", "text_short", "text_long", "low_confidence",
    "other_speaker", "dropped_by_user",
)  # fmt: skip


@dataclass(frozen=True)
class BuildOptions:
    name: str
    speaker: str = ""
    language: str | None = None  # None: detect
    whisper_model: str = "small"
    # windows per decoding call of batched transcription (see train.transcribe); 0: Whisper's sequential
    # loop. 1 suits a CPU, where the windows are shared among workers (the windows, not the batching,
    # save the time there: bench/bench_dataset.py); larger ones are for a GPU
    whisper_batch_size: int = 1
    # 0: greedy (1) on a CPU, where it takes about a third less time for a little more word error; 5 on a GPU
    whisper_beam_size: int = 0
    separation: str = "auto"  # keep the vocals: "auto" when a music bed is detected, "on", "off"
    denoise: str = "auto"  # speech enhancement: "auto" for a noisy source, "on", "off"
    keep_speakers: int = 1  # 0: every voice; N: the N biggest voices, the target first, each its own speaker_name
    reference: str = ""  # a clip of the target speaker (a path the caller has checked)
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
    similarity: float | None = None  # to the target speaker (cosine of speaker embeddings)
    speaker: str | None = None  # its speaker_name, when several voices are kept
    detail: str = ""  # more about the reason, e.g. "two voices in one clip"

    @property
    def removed_file(self) -> str:
        return "removed/" + self.file.removeprefix("wavs/")


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
    minutes_in: float = 0.0
    speakers: list[dict[str, Any]] = field(default_factory=list)  # the voices found: cluster, seconds, kept as

    def summary(self) -> str:
        lines = [
            f"{self.kept} clips kept ({self.kept_minutes:.1f} of {self.minutes_in:.1f} min): "
            f"{self.train} train, {self.eval} eval."
        ]
        for reason, numbers in self.dropped.items():
            clips = f"{int(numbers['clips'])} clips, " if reason != NOT_SPEECH else ""
            lines.append(f"Removed, {reason_text(reason)}: {clips}{numbers['minutes']:.1f} min.")
        failed = [s for s in self.sources if s.get("error")]
        lines += [f"Skipped {s['name']}: {s['error']}" for s in failed]
        return "\n".join(lines)


def snr_db(clip: np.ndarray, noise_floor_db: float) -> float:
    levels = frame_levels_db(clip, TRAIN_RATE)
    speech = float(np.percentile(levels, 90))
    return float(min(speech - noise_floor_db, 80.0))


class DatasetBuilder:
    """Builds datasets under ``root`` (``outputs/datasets``)."""

    def __init__(
        self,
        root: Path,
        *,
        allow_private_urls: bool = False,
        whisper: Whisper | None = None,
        cleaner: SourceCleaner | None = None,
        speakers: SpeakerEncoder | None = None,
    ) -> None:
        """``cleaner`` defaults to denoising only (no separation model); ``speakers`` to an encoder on Whisper's device."""
        self.root = root
        self.url_policy = NetPolicy(allow_private=allow_private_urls)
        self.whisper = whisper or Whisper(DeviceScheduler("cpu"))
        self.cleaner = cleaner or SourceCleaner(None, denoise.Denoiser() if denoise.available() else None)
        self.speakers = speakers or SpeakerEncoder(self.whisper.scheduler)

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
        if not 0 <= options.whisper_beam_size <= 10:
            raise InvalidInput("The Whisper beam size must be between 1 and 10 (0: the device's default).")
        if not 0.5 <= options.min_s < options.max_s <= 30:
            raise InvalidInput("Clip lengths must satisfy 0.5 <= min < max <= 30 seconds.")
        if not 0 <= options.keep_speakers <= 8:
            raise InvalidInput("Keep between 0 (every voice) and 8 speakers.")
        mode(options.separation, "Separation"), mode(options.denoise, "Denoise")
        reference = self._reference(options.reference)
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
                return self._process(target, name, options, sources, reference, report_progress, stop)
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
        reference: np.ndarray | None,
        report_progress: ProgressCallback,
        stop: Callable[[], bool],
    ) -> BuildReport:
        """Extract, clean, transcribe and cut each usable source, keep the target voice, then write the dataset."""
        transcribed_now: list[str] = []
        clips: list[ClipRecord] = []
        languages: list[str] = []
        usable = [s for s in sources if "error" not in s]
        for index, source in enumerate(usable):
            if stop():
                raise Cancelled(_STOPPED)
            share, step = 0.2 + 0.65 * index / max(len(usable), 1), 0.65 / max(len(usable), 1)
            label = f"Source {index + 1} of {len(usable)}: {source['name']}"
            report_progress(share, label)
            try:
                audio, fingerprint = self._extract(source["path"], target)
                progress = functools.partial(_scaled, report_progress, share, 0.5 * step, label)
                cleaned = self._clean(audio, target / "sources" / fingerprint, options, stop, progress)
                audio16k = soxr.resample(cleaned.audio, TRAIN_RATE, WHISPER_RATE).astype(np.float32)
                speech = speech_regions(audio16k)  # one VAD pass serves the transcription and the cuts
                report_progress(share + 0.5 * step, f"{label}: transcribing")
                transcript, fresh = self._transcript(
                    audio16k, speech, fingerprint, cleaned.cleaning, target, options, source["name"]
                )
            except InvalidInput as exc:
                source["error"] = str(exc)
                continue
            source.update(fingerprint=fingerprint, minutes=round(len(audio) / TRAIN_RATE / 60, 3), **cleaned.facts)
            source["cleaning"] = cleaned.cleaning
            if fresh:
                transcribed_now.append(fingerprint)
            languages.append(transcript.language)
            clips += self._cut(cleaned.audio, speech, fingerprint, transcript, target, options, source["name"])
        if not any("error" not in s for s in sources):
            raise InvalidInput("No source could be used:\n- " + "\n- ".join(s["error"] for s in sources))
        language = options.language or (max(set(languages), key=languages.count) if languages else "en")
        speaker = clean_text(options.speaker) or fs.slug(name, fallback="dataset")
        report_progress(0.87, "Matching the clips to the speaker")
        voices = self._select_speakers(target, clips, options, speaker, reference, stop)
        report_progress(0.97, "Writing the metadata")
        return self._finish(target, options, language, speaker, sources, clips, voices, transcribed_now)

    def _clean(
        self,
        audio: np.ndarray,
        cache: Path,
        options: BuildOptions,
        stop: Callable[[], bool],
        progress: ProgressCallback,
    ) -> CleanedSource:
        try:
            return self.cleaner.clean(
                audio, TRAIN_RATE, cache, separation=mode(options.separation, "Separation"),
                denoise=mode(options.denoise, "Denoise"), progress=progress, should_stop=stop,
            )  # fmt: skip
        except Cancelled:
            raise Cancelled(_STOPPED) from None

    def _reference(self, path: str) -> np.ndarray | None:
        """The reference clip as 16 kHz mono, checked before any work starts."""
        if not path:
            return None
        decoded = decode(Path(path))
        mono = decoded.mono().astype(np.float32)
        if len(mono) < decoded.sample_rate:
            raise InvalidInput("The reference clip must hold at least one second of the speaker's voice.")
        return soxr.resample(mono, decoded.sample_rate, WHISPER_RATE).astype(np.float32)

    def _select_speakers(
        self,
        target: Path,
        clips: list[ClipRecord],
        options: BuildOptions,
        speaker: str,
        reference: np.ndarray | None,
        stop: Callable[[], bool],
    ) -> list[dict[str, Any]]:
        """Mark the candidate clips of other voices (and of two voices) ``other_speaker``; returns the voices found."""
        candidates = [c for c in clips if c.reason is None]
        if not options.keep_speakers or len(candidates) < 2:
            return []
        audio = []
        for clip in candidates:
            if stop():
                raise Cancelled(_STOPPED)
            wav, rate = sf.read(target / clip.file, dtype="float32")
            audio.append(soxr.resample(wav, rate, WHISPER_RATE).astype(np.float32))
        selection = select_speakers(
            audio, encoder=self.speakers, reference=reference, keep_clusters=options.keep_speakers,
            speaker_name=speaker,
        )  # fmt: skip
        for clip, voice in zip(candidates, selection.clips, strict=True):
            clip.similarity = round(float(voice.similarity), 3)
            if voice.keep:
                clip.speaker = voice.speaker if options.keep_speakers > 1 else None
            else:
                clip.reason, clip.detail = "other_speaker", voice.reason or ""
        kept_as = {v.cluster: v.speaker for v in selection.clips if v.keep}
        return [
            {
                "cluster": c.id, "clips": c.clips, "minutes": round(c.seconds / 60, 3),
                "similarity_to_reference": None if c.similarity_to_reference is None else round(c.similarity_to_reference, 3),
                "kept_as": kept_as.get(c.id), "target": c.id == selection.target,
            }
            for c in selection.clusters
        ]  # fmt: skip

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
        cleaning: str,
        target: Path,
        options: BuildOptions,
        name: str,
    ) -> tuple[Transcript, bool]:
        """The source's transcript, from the cache when it has one for this model, language and cleaning.

        Batched and sequential transcripts are alike (words with times), so either serves as the cache entry;
        so do greedy and beam search ones.
        """
        cached = target / "transcripts" / f"{fingerprint}.json"
        key = {"model": options.whisper_model, "requested_language": options.language, "cleaning": cleaning}
        if cached.is_file():
            data = json.loads(cached.read_text(encoding="utf-8"))
            if all(data.get(k, "none" if k == "cleaning" else None) == v for k, v in key.items()):
                return Transcript.from_dict(data), False
        if not speech:
            raise InvalidInput(f"{name}: no speech was found in it (silence or music only).")
        transcript = self.whisper.transcribe(
            audio16k,
            model=options.whisper_model,
            language=options.language,
            batch_size=options.whisper_batch_size,
            regions=speech,
            beam_size=options.whisper_beam_size or self.whisper.default_beam_size(),
        )
        if not transcript.words:
            raise InvalidInput(f"{name}: Whisper heard no words in it.")
        fs.write_json(cached, {**transcript.to_dict(), **key})
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
                text=clean_text(plan.text),
                source=name,
                start=round(plan.start, 3),
                duration=round(plan.duration, 3),
                snr_db=round(snr_db(clip, noise_floor), 1),
                confidence=round(plan.confidence, 3),
            )
            record.reason = self._reason(record, clip, plan, options, limit)
            buffer = io.BytesIO()  # every clip: _finish moves the removed ones aside, to listen to and restore
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
        options: BuildOptions,
        language: str,
        speaker: str,
        sources: list[dict[str, Any]],
        clips: list[ClipRecord],
        voices: list[dict[str, Any]],
        transcribed_now: list[str],
    ) -> BuildReport:
        edits = read_edits(target)
        for clip in clips:
            edit = edits.get(clip.file, {})
            if clip.reason is None and edit.get("drop"):
                clip.reason = "dropped_by_user"
            elif clip.reason is not None and edit.get("restore"):
                clip.reason, clip.detail = None, f"restored by the user (was {reason_text(clip.reason)})"
            if "text" in edit:
                clip.text = clean_text(edit["text"])
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
        write_metadata(
            target,
            [MetadataRow(c.file, c.text, c.speaker or speaker) for c in kept if c.file not in eval_files],
            [MetadataRow(c.file, c.text, c.speaker or speaker) for c in kept if c.file in eval_files],
        )
        _place_clip_files(target, clips)
        minutes_in = sum(float(s.get("minutes", 0.0)) for s in sources)
        dropped: dict[str, dict[str, float]] = {}
        for clip in clips:
            if clip.reason is not None:
                entry = dropped.setdefault(clip.reason, {"clips": 0, "minutes": 0.0})
                entry["clips"] += 1
                entry["minutes"] = round(entry["minutes"] + clip.duration / 60, 3)
        outside = minutes_in - sum(c.duration for c in clips) / 60
        dropped[NOT_SPEECH] = {"clips": 0, "minutes": round(max(outside, 0.0), 3)}
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
            minutes_in=round(minutes_in, 3),
            speakers=voices,
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


def _place_clip_files(target: Path, clips: Sequence[ClipRecord]) -> None:
    """Kept clips stay in ``wavs/`` (where :meth:`DatasetBuilder._cut` writes every clip), removed ones move to
    ``removed/``; other files there (clips no longer cut, older copies) are deleted."""
    (target / "removed").mkdir(exist_ok=True)
    for clip in clips:
        if clip.reason is not None and (target / clip.file).is_file():
            (target / clip.file).replace(target / clip.removed_file)
    wanted = {c.file if c.reason is None else c.removed_file for c in clips}
    for folder in ("wavs", "removed"):
        for stale in (target / folder).glob("*.wav"):
            if f"{folder}/{stale.name}" not in wanted:
                stale.unlink()


def _scaled(progress: ProgressCallback, start: float, share: float, label: str, fraction: float, message: str) -> None:
    progress(start + share * fraction, f"{label}: {message}")


def _holds_work(target: Path) -> bool:
    """Whether a dataset folder holds work a rebuild would reuse: finished downloads, separated sources, transcripts."""
    return (
        any((target / "transcripts").glob("*.json"))
        or any((target / "downloads").glob("*/.done"))
        or any((target / "sources").glob("*.vocals*.wav"))  # separation: the slowest step of all
    )


PLOTS = (
    ("lengths.png", "duration", "clip length (s)"),
    ("snr.png", "snr_db", "estimated SNR (dB)"),
    ("similarity.png", "similarity", "similarity to the target speaker"),
)


def _plots(target: Path, clips: Sequence[ClipRecord]) -> None:
    """Histograms of every clip against the kept ones; similarity only when speakers were matched."""
    for name, attribute, label in PLOTS:
        every = [v for c in clips if (v := getattr(c, attribute)) is not None]
        kept = [v for c in clips if c.reason is None and (v := getattr(c, attribute)) is not None]
        if not every:
            (target / "plots" / name).unlink(missing_ok=True)
            continue
        fig, ax = plots.subplots(size=(5, 3))
        ax.hist(every, bins=20, color="#c7c7e8", label="all")
        ax.hist(kept, bins=20, color="#5b5bd6", label="kept")
        ax.set_xlabel(label)
        ax.set_ylabel("clips")
        ax.legend()
        plots.save_png(fig, target / "plots" / name)
