"""The support weights RVC needs besides a voice model: HuBERT, RMVPE and FCPE.

They are downloaded from the Hugging Face hub on first use, with progress, into
``<models_dir>/rvc/support/``, resumably (``core.model_files``). The RVC package
asks for them through a ``ModelStore``-shaped ``get(repo_id, filename)``; this
class answers from that folder, so the package never calls ``hf_hub_download``
(which, offline, would spend about 23 s in retries before failing).
"""

from __future__ import annotations

import logging
from pathlib import Path

from core import model_files
from core.errors import ModelUnavailable
from core.model_files import ProgressCallback

log = logging.getLogger(__name__)

RVC_REPO = "lj1995/VoiceConversionWebUI"
# local file name -> (repository, path in the repository)
SUPPORT_FILES: dict[str, tuple[str, str]] = {
    "hubert_base.pt": (RVC_REPO, "hubert_base.pt"),
    "rmvpe.pt": (RVC_REPO, "rmvpe.pt"),
    "fcpe.pt": ("IAHispano/Applio", "Resources/predictors/fcpe.pt"),
}


def files_for(f0_method: str) -> list[str]:
    """The support files a conversion with ``f0_method`` needs (HuBERT always)."""
    method = f0_method.strip().lower()
    return ["hubert_base.pt"] + ([f"{method}.pt"] if method in ("rmvpe", "fcpe") else [])


class SupportFiles:
    """HuBERT/RMVPE/FCPE in ``folder``, fetched from ``hub_url`` when missing."""

    def __init__(self, folder: Path, *, hub_url: str) -> None:
        self.folder = folder
        self.hub_url = hub_url

    def missing(self, names: list[str]) -> list[str]:
        return [name for name in names if not (self.folder / name).is_file()]

    def ensure(self, names: list[str], progress: ProgressCallback | None = None) -> None:
        """Download whichever of ``names`` are missing; raise naming the file and folder if that fails."""
        for name in self.missing(names):
            repo, remote = SUPPORT_FILES[name]
            try:
                model_files.download_files(
                    self.folder,
                    [name],
                    hub_url=self.hub_url,
                    repo=repo,
                    progress=progress,
                    remote_names={name: remote},
                )
            except ModelUnavailable as exc:
                cause = exc.__cause__
                reason = f"{cause.__class__.__name__}: {cause}" if cause else str(exc)
                raise ModelUnavailable(
                    f"RVC needs {name}, which is not in {self.folder} and could not be downloaded "
                    f"from {self.hub_url} ({reason}). On an offline machine, download "
                    f"{model_files.hub_file_url(self.hub_url, remote, repo)} elsewhere and put it in {self.folder} "
                    f"as {name}."
                ) from exc

    def get(self, repo_id: str, filename: str, *, repo_filename: str | None = None) -> Path:
        """The ``tts_with_rvc`` ModelStore interface: a local path, downloading first if needed."""
        del repo_id, repo_filename  # the names are ours to map (SUPPORT_FILES)
        if filename not in SUPPORT_FILES:
            raise ModelUnavailable(f"RVC asked for an unknown support file {filename}.")
        self.ensure([filename])
        return self.folder / filename
