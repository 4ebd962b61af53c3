"""Cache of XTTS conditioning latents, in memory and on disk.

A voice's latents depend on its reference audio and on the model that encoded
them, so the key is a hash of the model identity, the encoding settings and
the bytes of every clip. Loading another checkpoint changes the model identity,
so its latents are computed afresh rather than silently reused.

Several studio processes (replicas) may share the cache folder and the voice library. The
in-memory copy is keyed by content, so it is never stale: a clip's digest is remembered
against its file fingerprint (device, inode, size, modification and change times), and a
clip that another replica replaced (a new file under the same name) is hashed again. A
latent file written for a voice folder that another replica deleted meanwhile is dropped
rather than bringing back half a folder.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from core import fs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conditioning:
    """What XTTS conditions on: GPT latents ``[1, T, C]`` and a speaker embedding ``[1, 512, 1]``."""

    gpt_cond_latent: torch.Tensor
    speaker_embedding: torch.Tensor


_DIGESTS: OrderedDict[tuple[str, int, int, int, int, int], str] = OrderedDict()
_DIGESTS_LOCK = threading.Lock()
_DIGESTS_MAX = 4096


def fingerprint(path: Path) -> tuple[str, int, int, int, int, int]:
    """What changes whenever the file's content may have changed, without reading it."""
    st = os.stat(path)
    return (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digest(path: Path) -> str:
    """SHA-256 of the file, read again only when its :func:`fingerprint` changed."""
    key = fingerprint(path)
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _DIGESTS_LOCK:
        _DIGESTS[key] = value
        while len(_DIGESTS) > _DIGESTS_MAX:
            _DIGESTS.popitem(last=False)
    return value


def cache_key(model_id: str, clips: Iterable[Path], settings: dict[str, object]) -> str:
    """Key for the latents of ``clips`` under ``model_id`` with encoding ``settings``."""
    digest = hashlib.sha256(model_id.encode())
    digest.update(repr(sorted(settings.items())).encode())
    for clip in clips:
        digest.update(file_digest(clip).encode())
    return digest.hexdigest()[:32]


class LatentCache:
    """An LRU of conditionings in memory, backed by ``.pt`` files under ``root/<model_id>/``."""

    def __init__(self, root: Path, *, capacity: int = 64) -> None:
        self.root = root
        self.capacity = capacity
        self._memory: OrderedDict[str, Conditioning] = OrderedDict()
        self._lock = threading.Lock()

    def path_for(self, model_id: str, key: str, directory: Path | None = None) -> Path:
        """``directory/<model_id>.pt`` for a voice that keeps its own latents, else the shared cache."""
        return directory / f"{model_id}.pt" if directory is not None else self.root / model_id / f"{key}.pt"

    def get(self, model_id: str, key: str, directory: Path | None = None) -> Conditioning | None:
        path = self.path_for(model_id, key, directory)
        with self._lock:
            remembered = self._memory.get(key)
            if remembered is not None:
                self._memory.move_to_end(key)
        if remembered is not None:
            if not path.is_file():  # a voice folder that lacks its copy (a new voice with known clips)
                self._write(path, model_id, key, remembered, directory)
            return remembered
        if not path.is_file():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if data.get("key") != key:  # the clips changed since these latents were made
                return None
            found = Conditioning(data["gpt_cond_latent"], data["speaker_embedding"])
        except Exception as exc:  # a damaged cache file is recomputed, not fatal
            log.warning("ignoring unreadable latent cache %s: %s", path, exc)
            return None
        self._remember(key, found)
        return found

    def put(self, model_id: str, key: str, value: Conditioning, directory: Path | None = None) -> None:
        self._remember(key, value)
        self._write(self.path_for(model_id, key, directory), model_id, key, value, directory)

    def _write(self, path: Path, model_id: str, key: str, value: Conditioning, directory: Path | None) -> None:
        buffer = io.BytesIO()
        torch.save(
            {
                "key": key,
                "model_id": model_id,
                "gpt_cond_latent": value.gpt_cond_latent.cpu(),
                "speaker_embedding": value.speaker_embedding.cpu(),
            },
            buffer,
        )
        try:
            if directory is not None:  # a voice's latents/: never re-create a voice folder deleted meanwhile
                directory.mkdir(exist_ok=True)
            fs.write_bytes(path, buffer.getvalue())
        except Exception as exc:  # the memory copy still serves this process
            log.warning("could not write latent cache for %s: %s", key, exc)

    def _remember(self, key: str, value: Conditioning) -> None:
        with self._lock:
            self._memory[key] = value
            self._memory.move_to_end(key)
            while len(self._memory) > self.capacity:
                self._memory.popitem(last=False)
