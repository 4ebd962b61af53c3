"""Studio settings in one place: command-line flags over environment variables over defaults.

Every environment variable is the flag's name in upper case with the prefix
``XTTS_STUDIO_`` (``--models-dir`` -> ``XTTS_STUDIO_MODELS_DIR``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "XTTS_STUDIO_"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything the app needs to start; paths are absolute."""

    host: str = "127.0.0.1"
    port: int = 7860
    device: str = "auto"
    models_dir: Path = PROJECT_ROOT / "models"
    outputs_dir: Path = PROJECT_ROOT / "outputs"
    voices_dir: Path = PROJECT_ROOT / "models" / "voices"
    model_dir: Path | None = None
    auth: tuple[str, str] | None = None
    share: bool = False
    max_text_chars: int = 5000
    warmup: bool = True
    hub_url: str = "https://huggingface.co"

    @property
    def default_model_dir(self) -> Path:
        """Where the base XTTS v2 model lives (or is downloaded to)."""
        return self.models_dir / "xtts_v2"

    @property
    def latents_dir(self) -> Path:
        return self.models_dir / "cache" / "latents"

    @property
    def tts_outputs_dir(self) -> Path:
        return self.outputs_dir / "tts"

    @property
    def exports_dir(self) -> Path:
        return self.outputs_dir / "exports"

    @property
    def work_dir(self) -> Path:
        """Scratch space for previews and checks; old entries are tidied by their owners."""
        return self.outputs_dir / ".work"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="webui.py",
        description="XTTS Studio: text-to-speech, voice cloning, RVC and XTTS fine-tuning in one web UI.",
        epilog=f"Every flag can also be set as an environment variable {ENV_PREFIX}<FLAG>, e.g. {ENV_PREFIX}PORT=8000.",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for the LAN)")
    p.add_argument("--port", type=int, help="port to listen on (default 7860)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto: CUDA when available)")
    p.add_argument("--models-dir", help="folder for models, voices and caches (default ./models)")
    p.add_argument("--outputs-dir", help="folder for generated audio, datasets and runs (default ./outputs)")
    p.add_argument("--voices-dir", help="voice library folder (default MODELS_DIR/voices)")
    p.add_argument("--model-dir", help="load this XTTS checkpoint folder instead of the default XTTS v2")
    p.add_argument("--auth", help="require a login for the UI, as USER:PASSWORD")
    p.add_argument(
        "--share", action="store_true", default=None, help="open a public Gradio share link (off by default)"
    )
    p.add_argument("--max-text-chars", type=int, help="longest text accepted for one synthesis (default 5000)")
    p.add_argument(
        "--no-warmup", dest="warmup", action="store_false", default=None, help="skip the warm-up synthesis at start"
    )
    p.add_argument("--hub-url", help="Hugging Face endpoint to download models from (default https://huggingface.co)")
    return p


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(ENV_PREFIX + name.upper().replace("-", "_"))
    return value if value not in (None, "") else None


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``argv`` (default: none) and ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    args = _parser().parse_args(list(argv or []))
    defaults = Settings()

    def pick(flag: str, default: object) -> object:
        cli = getattr(args, flag.replace("-", "_"))
        if cli is not None:
            return cli
        from_env = _env(env, flag)
        return from_env if from_env is not None else default

    def as_bool(value: object) -> bool:
        return value if isinstance(value, bool) else str(value).strip().lower() in _TRUE

    def as_int(flag: str, value: object) -> int:
        try:
            return int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidInput(f"--{flag} must be a whole number, got '{value}'.") from None

    models_dir = Path(str(pick("models-dir", defaults.models_dir))).expanduser().resolve()
    voices_default = models_dir / "voices"
    model_dir = pick("model-dir", None)
    auth_raw = pick("auth", None)
    auth = None
    if auth_raw:
        user, sep, password = str(auth_raw).partition(":")
        if not sep or not user or not password:
            raise InvalidInput("--auth must look like USER:PASSWORD.")
        auth = (user, password)
    port = as_int("port", pick("port", defaults.port))
    if not 1 <= port <= 65535:
        raise InvalidInput(f"--port must be between 1 and 65535, got {port}.")
    max_chars = as_int("max-text-chars", pick("max-text-chars", defaults.max_text_chars))
    if max_chars < 1:
        raise InvalidInput("--max-text-chars must be at least 1.")
    return Settings(
        host=str(pick("host", defaults.host)),
        port=port,
        device=str(pick("device", defaults.device)),
        models_dir=models_dir,
        outputs_dir=Path(str(pick("outputs-dir", defaults.outputs_dir))).expanduser().resolve(),
        voices_dir=Path(str(pick("voices-dir", voices_default))).expanduser().resolve(),
        model_dir=Path(str(model_dir)).expanduser().resolve() if model_dir else None,
        auth=auth,
        share=as_bool(pick("share", defaults.share)),
        max_text_chars=max_chars,
        warmup=as_bool(pick("warmup", defaults.warmup)) and not as_bool(_env(env, "no-warmup") or False),
        hub_url=str(pick("hub-url", defaults.hub_url)).rstrip("/"),
    )


def resolve_device(requested: str) -> str:
    """Turn ``auto`` into ``cuda`` or ``cpu``; refuse CUDA when there is none."""
    import torch

    requested = requested.strip().lower()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput(
            f"--device {requested} was asked for, but PyTorch sees no CUDA GPU. "
            "Check `nvidia-smi`, the driver and (in Docker) the GPU reservation, or use --device cpu."
        )
    if requested != "cpu" and not requested.startswith("cuda"):
        raise InvalidInput(f"Unknown --device '{requested}'. Use auto, cpu, cuda or cuda:N.")
    return requested
