"""The RVC model library: validated ``.pth`` voice models with optional ``.index`` files.

Layout of ``<models_dir>/rvc/``::

    <name>.pth    the voice model, exactly as RVC saved it
    <name>.index  the faiss feature index (optional)
    <name>.json   what validation found: version, sample rate, f0, index, sizes, times

A ``.pth`` is only ever opened with ``torch.load(..., weights_only=True)``: a pickle
that would run code is refused before anything in it executes. Its contents must
then look like an RVC voice model (tensor weights whose shapes match the saved
synthesizer config, version v1/v2, a known sample rate, an f0 flag), or it is
refused with a message saying what is wrong. ``.pth`` files dropped into the folder
by hand are validated and recorded when the library is next listed; their index
is picked up if it is named ``<name>.index`` or, as RVC's trainer names it,
``added_..._<name>_v2.index``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import re
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core import fs, locks
from core.errors import InvalidInput

log = logging.getLogger(__name__)

FEATURE_DIMS = {"v1": 256, "v2": 768}
SAMPLE_RATES = {"32k": 32000, "40k": 40000, "48k": 48000}
CONFIG_LENGTH = 18  # RVC's synthesizer config list: spec channels ... gin channels, sample rate
_REQUIRED_WEIGHTS = (
    "enc_p.emb_phone.weight",
    "emb_g.weight",
    "dec.conv_pre.weight",
    "flow.flows.0.enc.in_layers.0.bias",
)


class UnknownRVCModel(InvalidInput):
    """A request names an RVC model the library does not have."""


@dataclass(frozen=True)
class RVCModelInfo:
    """One model in the library, as its JSON record describes it."""

    name: str
    version: str
    sample_rate: int
    f0: bool
    size_bytes: int
    index_file: str | None
    index_size_bytes: int
    info: str
    added: str
    pth: Path
    index: Path | None

    @property
    def has_index(self) -> bool:
        return self.index is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(pth=str(self.pth), index=str(self.index) if self.index else None, has_index=self.has_index)
        return data

    def describe(self) -> str:
        index = f"index {self.index_size_bytes / 1e6:.1f} MB" if self.index else "no index"
        pitch = "f0" if self.f0 else "no f0"
        return f"{self.version}, {self.sample_rate // 1000} kHz, {pitch}, {self.size_bytes / 1e6:.1f} MB, {index}"


def clean_model_name(raw: str | None) -> str:
    """A model name (a trailing ``.pth`` dropped) that is safe as the models' file name, or :class:`InvalidInput`."""
    name = (raw or "").strip()
    if name.lower().endswith(".pth"):
        name = name[:-4]
    return fs.clean_name(name, noun="RVC model", file_name=True)


def _load_weights_only(path: Path) -> Any:
    """``torch.load`` that refuses (never runs) pickles needing anything beyond tensors and containers."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # not a call to anything: just bytes that are no pickle we read
            raise InvalidInput(f"{path.name} is not a readable PyTorch file (it is damaged or not a .pth).") from None
        log.warning("refused %s: %s", path.name, next((ln for ln in str(exc).splitlines() if "GLOBAL" in ln), ""))
        raise InvalidInput(
            f"{path.name} was refused: it is not a plain weights file (its pickle asks for code or objects "
            "beyond tensors, so it was not loaded). Use the .pth that RVC's training saved in its weights folder."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"{path.name} is not a readable PyTorch file ({exc.__class__.__name__}: {exc}).") from None


def _synthesizer_class(version: str, f0: int) -> Any:
    from tts_with_rvc.infer.lib.infer_pack.models import (
        SynthesizerTrnMs256NSFsid,
        SynthesizerTrnMs256NSFsid_nono,
        SynthesizerTrnMs768NSFsid,
        SynthesizerTrnMs768NSFsid_nono,
    )

    return {
        ("v1", 1): SynthesizerTrnMs256NSFsid,
        ("v1", 0): SynthesizerTrnMs256NSFsid_nono,
        ("v2", 1): SynthesizerTrnMs768NSFsid,
        ("v2", 0): SynthesizerTrnMs768NSFsid_nono,
    }[(version, f0)]


def inspect_checkpoint(path: Path) -> dict[str, Any]:
    """Validate an RVC voice model without executing its pickle; return version, rate, f0 and info."""
    import torch

    name = path.name
    data = _load_weights_only(path)
    not_rvc = f"{name} is not an RVC voice model"
    if not isinstance(data, dict) or "weight" not in data or "config" not in data:
        keys = ", ".join(sorted(map(str, data))[:8]) if isinstance(data, dict) else type(data).__name__
        raise InvalidInput(f"{not_rvc}: it has no 'weight' and 'config' entries (found: {keys or 'nothing'}).")
    weight, config = data["weight"], data["config"]
    if not isinstance(weight, dict) or not weight or not all(isinstance(v, torch.Tensor) for v in weight.values()):
        raise InvalidInput(f"{not_rvc}: its 'weight' entry is not a dictionary of tensors.")
    if not isinstance(config, list | tuple) or len(config) != CONFIG_LENGTH:
        raise InvalidInput(f"{not_rvc}: its 'config' is not RVC's {CONFIG_LENGTH}-entry synthesizer config.")
    missing = [key for key in _REQUIRED_WEIGHTS if key not in weight]
    if missing:
        raise InvalidInput(f"{not_rvc}: weights {', '.join(missing)} are missing.")
    version = str(data.get("version", "v1"))
    if version not in FEATURE_DIMS:
        raise InvalidInput(f"{name}: unsupported RVC version '{version}' (v1 and v2 are supported).")
    try:
        f0 = int(data.get("f0", 1))
    except (TypeError, ValueError):
        f0 = -1
    if f0 not in (0, 1):
        raise InvalidInput(f"{name}: its f0 flag must be 0 or 1, got {data.get('f0')!r}.")
    try:
        sample_rate = int(config[-1])
    except (TypeError, ValueError):
        sample_rate = SAMPLE_RATES.get(str(config[-1]), 0)
    declared = data.get("sr")
    if sample_rate not in SAMPLE_RATES.values() or (
        declared is not None and SAMPLE_RATES.get(str(declared)) not in (None, sample_rate)
    ):
        raise InvalidInput(f"{name}: unsupported sample rate {config[-1]!r} / {declared!r} (32k, 40k or 48k).")
    phone = weight["enc_p.emb_phone.weight"]
    if phone.ndim != 2 or phone.shape[1] != FEATURE_DIMS[version]:
        raise InvalidInput(
            f"{name}: says RVC {version} but its feature input is {tuple(phone.shape)}; "
            f"{version} models take {FEATURE_DIMS[version]}-dim features."
        )
    expected = [key for key in weight if "enc_q" not in key]
    try:
        net_config = list(config)
        net_config[-3] = weight["emb_g.weight"].shape[0]
        net = _synthesizer_class(version, f0)(*net_config, is_half=False)
        state = {k: v for k, v in net.state_dict().items() if "enc_q" not in k}
        wrong = [k for k in state if k not in weight or weight[k].shape != state[k].shape]
        extra = [k for k in expected if k not in state]
    except Exception as exc:  # the config is user data: any failure to build from it means "not usable"
        raise InvalidInput(f"{not_rvc}: its config does not build a synthesizer ({exc.__class__.__name__}).") from None
    if wrong or extra:
        shown = ", ".join((wrong + extra)[:4])
        raise InvalidInput(f"{not_rvc}: its weights do not match its config ({shown}...).")
    return {"version": version, "sample_rate": sample_rate, "f0": bool(f0), "info": str(data.get("info", ""))[:200]}


def inspect_index(path: Path, version: str) -> int:
    """Check that ``path`` is a faiss index of the model's feature size; return its vector count."""
    import faiss

    try:
        index = faiss.read_index(str(path))
    except Exception as exc:  # faiss raises RuntimeError with C++ text for anything unreadable
        raise InvalidInput(f"{path.name} is not a faiss index ({str(exc).splitlines()[0][:160]}).") from None
    if index.d != FEATURE_DIMS[version]:
        raise InvalidInput(
            f"{path.name} holds {index.d}-dim features, but an RVC {version} model needs {FEATURE_DIMS[version]}; "
            "use the index trained with this model."
        )
    if index.ntotal == 0:
        raise InvalidInput(f"{path.name} is an empty index (it has no features).")
    return int(index.ntotal)


class RVCLibrary:
    """Lists, adds, renames and deletes RVC models under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # a file lock: studio processes sharing the folder (replicas) add, rename and delete in turn
        self._lock = locks.FileLock(root.parent / f".{root.name}.lock", what="RVC model library")  # beside it
        self._refused: dict[str, tuple[float, str]] = {}

    def _record_path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def _find_index(self, stem: str) -> Path | None:
        exact = self.root / f"{stem}.index"
        if exact.is_file():
            return exact
        named = [p for p in self.root.glob("*.index") if re.search(rf"_{re.escape(stem)}(_v[12])?\.index$", p.name)]
        return named[0] if len(named) == 1 else None

    def _read_record(self, pth: Path) -> RVCModelInfo | None:
        try:
            record = json.loads(self._record_path(pth.stem).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if record.get("size_bytes") != pth.stat().st_size or record.get("mtime_ns") != pth.stat().st_mtime_ns:
            return None  # the .pth changed since it was checked
        index = self.root / record["index_file"] if record.get("index_file") else None
        if index is not None and not index.is_file():
            return None
        return self._info(pth, record, index)

    @staticmethod
    def _info(pth: Path, record: dict[str, Any], index: Path | None) -> RVCModelInfo:
        return RVCModelInfo(
            name=pth.stem,
            version=record["version"],
            sample_rate=int(record["sample_rate"]),
            f0=bool(record["f0"]),
            size_bytes=int(record["size_bytes"]),
            index_file=index.name if index else None,
            index_size_bytes=index.stat().st_size if index else 0,
            info=str(record.get("info", "")),
            added=str(record.get("added", "")),
            pth=pth,
            index=index,
        )

    def _write_record(self, pth: Path, found: dict[str, Any], index: Path | None, index_vectors: int) -> RVCModelInfo:
        stat = pth.stat()
        record = {
            "name": pth.stem,
            **found,
            "size_bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "index_file": index.name if index else None,
            "index_vectors": index_vectors,
            "added": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        fs.write_json(self._record_path(pth.stem), record)
        return self._info(pth, record, index)

    def _check_dropped(self, pth: Path) -> RVCModelInfo | None:
        """Validate a ``.pth`` without a current record; remember refusals until the file changes."""
        mtime = pth.stat().st_mtime
        refused = self._refused.get(pth.name)
        if refused is not None and refused[0] == mtime:
            return None
        try:
            clean_model_name(pth.stem)
            found = inspect_checkpoint(pth)
            index = self._find_index(pth.stem)
            vectors = inspect_index(index, found["version"]) if index else 0
        except InvalidInput as exc:
            log.warning("skipping %s in %s: %s", pth.name, self.root, exc)
            self._refused[pth.name] = (mtime, str(exc))
            return None
        log.info("picked up RVC model %s from %s", pth.name, self.root)
        return self._write_record(pth, found, index, vectors)

    def list(self) -> list[RVCModelInfo]:
        """Every usable model, by name; dropped-in files are validated and recorded on the way."""
        if not self.root.is_dir():
            return []
        models = []
        with self._lock:
            for pth in sorted(self.root.glob("*.pth"), key=lambda p: p.stem.casefold()):
                info = self._read_record(pth) or self._check_dropped(pth)
                if info is not None:
                    models.append(info)
        return models

    def refused(self) -> dict[str, str]:
        """Files in the folder that are not usable models, with the reason (after :meth:`list`)."""
        present = {p.name for p in self.root.glob("*.pth")} if self.root.is_dir() else set()
        return {name: why for name, (_, why) in self._refused.items() if name in present}

    def names(self) -> list[str]:
        return [m.name for m in self.list()]

    def get(self, name: str | None) -> RVCModelInfo:
        wanted = (name or "").strip()
        if wanted.lower().endswith(".pth"):
            wanted = wanted[:-4]
        for info in self.list():
            if info.name == wanted:
                return info
        shown = ", ".join(self.names()[:12]) or "none yet (upload one in the Voice conversion tab)"
        raise UnknownRVCModel(f"Unknown RVC model '{name}'. Available RVC models: {shown}.")

    def add(self, pth_file: Path, index_file: Path | None = None, name: str | None = None) -> RVCModelInfo:
        """Validate an uploaded model (and index), then copy it into the library under ``name``."""
        if not pth_file or not Path(pth_file).is_file():
            raise InvalidInput("Choose a .pth RVC model file to upload.")
        pth_file = Path(pth_file)
        if pth_file.suffix.lower() != ".pth":
            raise InvalidInput(f"{pth_file.name} is not a .pth file; RVC voice models are .pth files.")
        if index_file is not None and Path(index_file).suffix.lower() != ".index":
            raise InvalidInput(f"{Path(index_file).name} is not an .index file.")
        final = clean_model_name(name or pth_file.stem)
        found = inspect_checkpoint(pth_file)
        vectors = inspect_index(Path(index_file), found["version"]) if index_file else 0
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            if (self.root / f"{final}.pth").exists():
                raise InvalidInput(f"An RVC model named '{final}' already exists. Rename or delete it first.")
            index = self.root / f"{final}.index" if index_file else None
            staged: list[tuple[Path, Path]] = [(pth_file, self.root / f"{final}.pth")]
            if index_file and index is not None:
                staged.insert(0, (Path(index_file), index))
            try:
                for source, target in staged:
                    fs.copy_file(source, target)
                info = self._write_record(self.root / f"{final}.pth", found, index, vectors)
            except BaseException:
                for _, target in staged:  # nothing half-added stays behind
                    target.unlink(missing_ok=True)
                raise
        log.info("added RVC model %s (%s)", final, info.describe())
        return info

    def rename(self, old: str, new: str) -> RVCModelInfo:
        info = self.get(old)
        final = clean_model_name(new)
        if final == info.name:
            return info
        with self._lock:
            if (self.root / f"{final}.pth").exists():
                raise InvalidInput(f"An RVC model named '{final}' already exists.")
            record = json.loads(self._record_path(info.name).read_text(encoding="utf-8"))
            index = None
            if info.index is not None:  # first: a new .pth without a record finds its index by name
                index = self.root / f"{final}.index"
                _second_name(info.index, index)
            pth = self.root / f"{final}.pth"
            _second_name(info.pth, pth)
            record.update(name=final, index_file=index.name if index else None)
            fs.write_json(self._record_path(final), record)
            for stale in (info.pth, self._record_path(info.name), info.index):
                if stale is not None:
                    stale.unlink(missing_ok=True)
        log.info("renamed RVC model %s to %s", info.name, final)
        return self._info(pth, record, index)

    def delete(self, name: str) -> None:
        info = self.get(name)
        with self._lock:
            info.pth.unlink(missing_ok=True)
            if info.index is not None:
                info.index.unlink(missing_ok=True)
            self._record_path(info.name).unlink(missing_ok=True)
        log.info("deleted RVC model %s", info.name)


def _second_name(source: Path, target: Path) -> None:
    """Give ``source`` the name ``target`` as well (a hard link); move it where links are not supported.

    A rename links the new names, writes the new record, then removes the old names, so a
    crash at any point leaves the model usable under its old name or its new one (for a
    moment both), never a model without its index.
    """
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        os.replace(source, target)
