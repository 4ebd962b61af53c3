"""The voice library: cloned voices as folders, written atomically.

Layout of ``<voices_dir>/<voice-id>/``::

    voice.json        name, language, description, clips and their statistics, times, model identity
    clips/01.wav ...  prepared reference clips (mono 22.05 kHz, trimmed, loudness-normalised)
    latents/<model>.pt conditioning latents, one file per XTTS checkpoint identity
    preview.wav       a short sentence in the voice

Every change is built in a hidden staging folder and renamed into place with
:func:`core.fs.staged_folder`, so a crash leaves the old voice or the new one,
never half of one; :func:`core.fs.recover` tidies leftovers (and rolls back an
interrupted replacement) when the library opens. Plain ``.wav`` files dropped
into ``<voices_dir>`` are voices too, named after the file and encoded on first use.

The library's lock guards only the short steps: checking a name is free and
renaming a folder into place. Encoding a voice and speaking its preview wait for
the device, so they run outside it, in the staging folder; a lookup of any voice
(a built-in speaker's too) never waits behind a clone that waits for the GPU.

The lock is a file lock (:class:`core.locks.FileLock` on ``.voices.lock`` beside the folder),
so studio processes sharing the folder (replicas) take turns too; every listing reads
the folder again, so a voice cloned by another replica is there on the next request,
without a restart.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from core import fs, locks
from core.audio import XTTS_REFERENCE_RATE
from core.constants import XTTS_OUTPUT_RATE
from core.errors import InvalidInput
from core.model_files import ProgressCallback
from core.outputs import wav_bytes
from core.reference import CheckedClip, check_clips, require_usable
from core.xtts.engine import VoiceSpec, XTTSEngine
from core.xtts.languages import LANGUAGES, PREVIEW_SENTENCES, normalize_language
from core.xtts.profiles import PROFILES

log = logging.getLogger(__name__)

RECORD = "voice.json"
FORMAT_VERSION = 1
_MEMBER = re.compile(r"^(voice\.json|preview\.wav|clips/[\w.-]+\.wav|latents/[\w.-]+\.pt)$")
_IMPORT_MAX_BYTES = 512 * 1024 * 1024
_IMPORT_MAX_MEMBERS = 256


def _folder_name(name: str) -> str:
    return fs.slug(name, fallback="voice")


@dataclass(frozen=True)
class VoiceInfo:
    """What the UI and API show about a voice."""

    name: str
    kind: str  # "cloned" (a library folder) or "file" (a dropped .wav)
    path: Path
    language: str = "en"
    description: str = ""
    created: str = ""
    clips: list[dict[str, Any]] = field(default_factory=list)
    speech_s: float = 0.0
    latents_for: list[str] = field(default_factory=list)
    preview: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "language": self.language,
            "description": self.description,
            "created": self.created,
            "clips": len(self.clips),
            "speech_s": round(self.speech_s, 1),
            "latents_for": self.latents_for,
        }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class VoiceLibrary:
    """Create, list, change, export and import voices under ``root``."""

    def __init__(self, root: Path, *, export_dir: Path, work_dir: Path) -> None:
        self.root = root
        self.export_dir = export_dir
        self.work_dir = work_dir
        self.root.mkdir(parents=True, exist_ok=True)
        # name checks and renames into place only; never device work
        self._lock = locks.FileLock(self.root.parent / f".{self.root.name}.lock", what="voice library")  # beside it
        with self._lock:
            fs.recover(self.root)

    # ---- reading -------------------------------------------------------------------------
    def _read(self, folder: Path) -> VoiceInfo | None:
        try:
            record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
            name = str(record["name"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping voice folder %s: %s", folder.name, exc)
            return None
        clips = list(record.get("clips", []))
        latents = sorted(p.stem for p in (folder / "latents").glob("*.pt"))
        preview = folder / "preview.wav"
        return VoiceInfo(
            name=name,
            kind="cloned",
            path=folder,
            language=str(record.get("language", "en")),
            description=str(record.get("description", "")),
            created=str(record.get("created", "")),
            clips=clips,
            speech_s=sum(float(c.get("stats", {}).get("speech_s", 0.0)) for c in clips),
            latents_for=latents,
            preview=preview if preview.is_file() else None,
        )

    def list(self) -> list[VoiceInfo]:
        """Library voices (sorted by name), then dropped .wav files whose names are free."""
        with self._lock:
            voices = [
                info
                for folder in sorted(self.root.iterdir())
                if folder.is_dir() and not folder.name.startswith(".") and (info := self._read(folder))
            ]
            voices.sort(key=lambda v: v.name.casefold())
            taken = {v.name.casefold() for v in voices}
            for wav in sorted(self.root.glob("*.wav")):
                if wav.stem.casefold() not in taken and not wav.name.startswith("."):
                    voices.append(VoiceInfo(name=wav.stem, kind="file", path=wav))
                    taken.add(wav.stem.casefold())
            return voices

    def names(self) -> list[str]:
        return [v.name for v in self.list()]

    def get(self, name: str) -> VoiceInfo:
        wanted = (name or "").strip().casefold()
        for voice in self.list():
            if voice.name.casefold() == wanted:
                return voice
        raise InvalidInput(f"There is no voice named '{name}' in the library.")

    def _cloned(self, name: str) -> VoiceInfo:
        voice = self.get(name)
        if voice.kind != "cloned":
            raise InvalidInput(f"'{voice.name}' is a plain file in the voice folder; clone it as a voice to change it.")
        return voice

    def resolve(self, name: str) -> VoiceSpec | None:
        """The engine's view of a library voice (``None`` if there is no such voice)."""
        try:
            voice = self.get(name)
        except InvalidInput:
            return None
        if voice.kind == "file":
            return VoiceSpec(clips=(voice.path,))
        clips = tuple(voice.path / c["file"] for c in voice.clips)
        return VoiceSpec(clips=clips, latents_dir=voice.path / "latents")

    # ---- creating ------------------------------------------------------------------------
    def check(self, clips: Sequence[Path], names: Sequence[str] | None = None) -> list[CheckedClip]:
        """Measure and prepare clips without saving anything (the UI shows the result)."""
        return check_clips(list(clips), names=names)

    def _ensure_free(self, name: str, *, ignore: Path | None = None) -> None:
        for voice in self.list():
            if voice.name.casefold() == name.casefold() and voice.path != ignore:
                raise InvalidInput(
                    f"A voice named '{voice.name}' already exists. Choose another name or delete it first."
                )
        target = self.root / _folder_name(name)
        if target.exists() and target != ignore:
            raise InvalidInput(
                f"The name '{name}' is too close to an existing voice folder ({target.name}); choose another."
            )

    @staticmethod
    def _write_clips(folder: Path, checked: Sequence[CheckedClip], first_index: int = 1) -> list[dict[str, Any]]:
        entries = []
        for offset, clip in enumerate(checked):
            relative = f"clips/{first_index + offset:02d}.wav"
            fs.write_bytes(folder / relative, wav_bytes(clip.prepared, XTTS_REFERENCE_RATE))  # type: ignore[arg-type]
            entries.append({
                "file": relative,
                "source": clip.source.name,
                "prepared_s": round(clip.prepared_seconds, 3),
                "stats": clip.stats.to_dict() if clip.stats else {},
            })  # fmt: skip
        return entries

    def _encode_and_preview(self, folder: Path, record: dict[str, Any], engine: XTTSEngine) -> None:
        """Compute the latents into ``folder`` and speak the preview sentence into ``preview.wav``.

        This waits for the device: never call it holding the library's lock.
        """
        engine.ensure_loaded()
        spec = VoiceSpec(clips=tuple(folder / c["file"] for c in record["clips"]), latents_dir=folder / "latents")
        conditioning = engine.conditioning(spec)
        language = record["language"] if record["language"] in engine.languages() else engine.languages()[0]
        audio = engine.synthesize(
            [PREVIEW_SENTENCES.get(language, PREVIEW_SENTENCES["en"])],
            language=language,
            conditioning=conditioning,
            params=PROFILES["balanced"],
            seed=0,
        )
        fs.write_bytes(folder / "preview.wav", wav_bytes(audio, XTTS_OUTPUT_RATE))
        record["model"] = {"id": engine.model_id, "dir": str(engine.status().model_dir)}

    def create(
        self,
        name: str,
        clips: Sequence[Path],
        *,
        engine: XTTSEngine,
        language: str = "en",
        description: str = "",
        clip_names: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> VoiceInfo:
        """Check and prepare ``clips``, encode them once, save the voice and its preview.

        The name is checked before the work and again, under the lock, just before the voice is
        renamed into place: if another voice took it meanwhile, nothing is saved.
        """
        name = fs.clean_name(name, noun="voice")
        language = normalize_language(language)
        report = progress or (lambda fraction, message: None)
        self._ensure_free(name)
        report(0.05, "Checking the clips")
        checked = self.check(clips, clip_names)
        require_usable(checked)
        with fs.staged_folder(self.root / _folder_name(name)) as staging:
            record: dict[str, Any] = {
                "format": FORMAT_VERSION,
                "name": name,
                "language": language,
                "description": description.strip(),
                "created": _now(),
                "updated": _now(),
                "clips": self._write_clips(staging.path, checked),
            }
            report(0.4, "Encoding the voice")
            self._encode_and_preview(staging.path, record, engine)
            fs.write_json(staging.path / RECORD, record)
            report(0.95, "Saving")
            with self._lock:
                self._ensure_free(name)
                staging.commit()
        report(1.0, "Voice saved")
        return self.get(name)

    # ---- changing ------------------------------------------------------------------------
    def _rewrite(
        self, voice: VoiceInfo, change: Any, engine: XTTSEngine | None = None, *, new_name: str | None = None
    ) -> VoiceInfo:
        """Copy the voice to staging, let ``change(staging, record)`` edit it, re-encode if asked, swap in.

        The copy is changed and encoded outside the lock; under it, just before the swap, the
        voice must still be as it was copied (not changed or deleted meanwhile) and the name free.
        """
        name = new_name or voice.name
        with fs.staged_folder(self.root / _folder_name(name), replaces=voice.path) as staging:
            original = (voice.path / RECORD).read_bytes()
            shutil.copytree(voice.path, staging.path, dirs_exist_ok=True)
            record = json.loads(original)
            record["name"] = name
            change(staging.path, record)
            if engine is not None:
                shutil.rmtree(staging.path / "latents", ignore_errors=True)
                self._encode_and_preview(staging.path, record, engine)
            record["updated"] = _now()
            fs.write_json(staging.path / RECORD, record)
            with self._lock:
                try:
                    unchanged = (voice.path / RECORD).read_bytes() == original
                except OSError:
                    unchanged = False
                if not unchanged:
                    raise InvalidInput(
                        f"'{voice.name}' was changed or deleted while this change was being made; "
                        "nothing was saved. Try again."
                    )
                self._ensure_free(name, ignore=voice.path)
                staging.commit()
        return self.get(name)

    def rename(self, name: str, new_name: str) -> VoiceInfo:
        voice = self._cloned(name)
        new_name = fs.clean_name(new_name, noun="voice")
        self._ensure_free(new_name, ignore=voice.path)
        return self._rewrite(voice, lambda folder, record: None, new_name=new_name)

    def describe(self, name: str, *, description: str | None = None, language: str | None = None) -> VoiceInfo:
        voice = self._cloned(name)
        lang = normalize_language(language) if language else None

        def change(folder: Path, record: dict[str, Any]) -> None:
            if description is not None:
                record["description"] = description.strip()
            if lang is not None:
                record["language"] = lang

        return self._rewrite(voice, change)

    def add_clips(
        self, name: str, clips: Sequence[Path], *, engine: XTTSEngine, clip_names: Sequence[str] | None = None
    ) -> VoiceInfo:
        voice = self._cloned(name)
        checked = self.check(clips, clip_names)
        require_usable(checked)

        def change(folder: Path, record: dict[str, Any]) -> None:
            taken = [int(Path(c["file"]).stem) for c in record["clips"]]
            record["clips"] += self._write_clips(folder, checked, first_index=max(taken, default=0) + 1)

        return self._rewrite(voice, change, engine)

    def remove_clip(self, name: str, clip_file: str, *, engine: XTTSEngine) -> VoiceInfo:
        voice = self._cloned(name)
        remaining = [c for c in voice.clips if c["file"] != clip_file]
        if len(remaining) == len(voice.clips):
            raise InvalidInput(f"'{voice.name}' has no clip {clip_file}.")
        speech = sum(float(c.get("stats", {}).get("speech_s", 0.0)) for c in remaining)
        if not remaining or speech < 3.0:
            raise InvalidInput(
                f"Removing {clip_file} would leave {speech:.1f} s of speech; a voice needs at least 3 s. Add a clip first."
            )

        def change(folder: Path, record: dict[str, Any]) -> None:
            record["clips"] = [c for c in record["clips"] if c["file"] != clip_file]
            (folder / clip_file).unlink(missing_ok=True)

        return self._rewrite(voice, change, engine)

    def regenerate_preview(self, name: str, *, engine: XTTSEngine) -> VoiceInfo:
        voice = self._cloned(name)
        return self._rewrite(voice, lambda folder, record: None, engine)

    def delete(self, name: str) -> None:
        with self._lock:
            voice = self.get(name)
            if voice.kind == "file":
                voice.path.unlink()
                return
            fs.remove_folder(voice.path)

    # ---- export and import ---------------------------------------------------------------
    def export(self, name: str) -> Path:
        """Zip the voice folder into ``export_dir`` (written atomically) and return the zip."""
        voice = self._cloned(name)
        self.export_dir.mkdir(parents=True, exist_ok=True)
        target = self.export_dir / f"{voice.path.name}-{time.strftime('%Y%m%d-%H%M%S')}.zip"

        def fill(handle: Any) -> None:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(voice.path.rglob("*")):
                    if path.is_file() and not path.name.startswith("."):
                        archive.write(path, path.relative_to(voice.path).as_posix())

        return fs.write_with(target, fill)

    def import_zip(self, archive_path: Path, *, new_name: str | None = None) -> VoiceInfo:
        """Add a voice from a zip made by :meth:`export`; nothing in it is executed or trusted blindly."""
        try:
            archive = zipfile.ZipFile(archive_path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InvalidInput(f"{archive_path.name} is not a zip file exported from a voice library.") from exc
        label = archive_path.name
        with archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            names = [m.filename for m in members]
            nested = [n for n in names if n.count("/") == 1 and n.endswith("/" + RECORD)]
            prefix = nested[0][: -len(RECORD)] if RECORD not in names and len(nested) == 1 else ""
            if len(members) > _IMPORT_MAX_MEMBERS:
                raise InvalidInput(f"{label} does not look like an exported voice.")
            if sum(m.file_size for m in members) > _IMPORT_MAX_BYTES:
                raise InvalidInput(f"{label} unpacks to more than 512 MB; that is not a voice export.")
            wanted = {}
            for member in members:
                inner = member.filename[len(prefix) :] if member.filename.startswith(prefix) else member.filename
                if not _MEMBER.match(inner) or ".." in inner:
                    raise InvalidInput(f"{label} contains an unexpected file '{member.filename}'; not imported.")
                wanted[inner] = member
            if RECORD not in wanted:
                raise InvalidInput(f"{label} has no {RECORD}; it is not a voice export.")
            try:
                record = json.loads(archive.read(wanted[RECORD]))
                list(record["clips"])
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidInput(f"{label}: its {RECORD} is damaged.") from exc
            name = fs.clean_name(new_name or record.get("name"), noun="voice")
            self._ensure_free(name)
            with fs.staged_folder(self.root / _folder_name(name)) as staging:
                for inner, member in wanted.items():
                    out = staging.path / inner
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(archive.read(member))
                self._validate_import(staging.path, label, record, name)
                with self._lock:
                    self._ensure_free(name)
                    staging.commit()
        return self.get(name)

    def _validate_import(self, folder: Path, label: str, record: dict[str, Any], name: str) -> None:
        """Check the unpacked clips and latents in ``folder``, then write the record under ``name``."""
        clips = list(record["clips"])
        if not clips:
            raise InvalidInput(f"{label}: the voice has no clips.")
        for clip in clips:
            path = folder / str(clip.get("file", ""))
            if not _MEMBER.match(str(clip.get("file", ""))) or not path.is_file():
                raise InvalidInput(f"{label}: clip {clip.get('file')} is listed but missing.")
            try:
                sf.info(path)
            except RuntimeError as exc:
                raise InvalidInput(f"{label}: clip {clip.get('file')} is not a readable WAV file.") from exc
        for latent in (folder / "latents").glob("*.pt"):
            try:
                data = torch.load(latent, map_location="cpu", weights_only=True)
                if not all(isinstance(data.get(k), torch.Tensor) for k in ("gpt_cond_latent", "speaker_embedding")):
                    raise ValueError("not voice latents")
            except Exception:
                latent.unlink()  # recomputed on first use; never trusted if it is not plain tensors
                log.warning("dropped unusable latents %s from %s", latent.name, label)
        record["name"] = name
        record["language"] = record.get("language") if record.get("language") in LANGUAGES else "en"
        record["imported"] = _now()
        fs.write_json(folder / RECORD, record)
