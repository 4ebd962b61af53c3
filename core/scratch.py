"""Keep the scratch files of the studio and its libraries inside the data folders.

Libraries write temp and cache files to places of their own choosing: Gradio its upload
cache, PyTorch and Triton compile caches, matplotlib its font cache, Hugging Face its hub
cache, TensorBoard ``/tmp/.tensorboard-info``, PulseAudio's client (loaded with the audio
libraries) a link under ``~/.config/pulse``. Pointing the environment variables they
read (and Python's ``tempfile``) at folders under the models and outputs folders, before
any of them runs, keeps every write of the process and its children there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from core.settings import Settings


def scratch_env(settings: Settings) -> dict[str, str]:
    """The variables to set, each pointing at a folder under the data folders."""
    work, cache = settings.work_dir, settings.models_dir / "cache"
    return {
        "TMPDIR": str(work / "tmp"),
        "GRADIO_TEMP_DIR": str(work / "gradio"),
        "XDG_CACHE_HOME": str(cache),
        "XDG_CONFIG_HOME": str(work / "config"),  # libraries' own settings (PulseAudio's client keeps a link there)
        "MPLCONFIGDIR": str(cache / "matplotlib"),
        "HF_HOME": str(cache / "huggingface"),
        "TORCH_HOME": str(cache / "torch"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
        "NUMBA_CACHE_DIR": str(cache / "numba"),
    }


def confine_scratch(settings: Settings, *, keep_existing: bool = False) -> dict[str, str]:
    """Create the scratch folders, export the variables and make the work folder the cwd.

    ``keep_existing`` leaves variables the operator set on purpose alone (the cache ones,
    so a shared Hugging Face cache still works); the temp folders are always ours.
    Returns what was set.
    """
    applied: dict[str, str] = {}
    for name, folder in scratch_env(settings).items():
        if keep_existing and name not in ("TMPDIR", "GRADIO_TEMP_DIR") and os.environ.get(name):
            continue
        Path(folder).mkdir(parents=True, exist_ok=True)
        os.environ[name] = applied[name] = folder
    tempfile.tempdir = None  # read TMPDIR again
    os.chdir(settings.work_dir)
    return applied
