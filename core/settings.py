"""Studio settings in one place: command-line flags over environment variables over defaults.

Every environment variable is the flag's name in upper case with the prefix
``XTTS_STUDIO_`` (``--models-dir`` -> ``XTTS_STUDIO_MODELS_DIR``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.constants import DEFAULT_MAX_QUEUE
from core.errors import InvalidInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "XTTS_STUDIO_"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SPACES_STORAGE = Path("/data")  # where Hugging Face Spaces mounts persistent storage
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
    auth: tuple[str, str] | None = field(default=None, repr=False)
    file_users: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    share: bool = False
    max_text_chars: int = 5000
    warmup: bool = True
    hub_url: str = "https://huggingface.co"
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_queue: int = DEFAULT_MAX_QUEUE
    gpu_memory_budget_gb: float | None = None
    batch_window_ms: float | None = None  # None: 30 ms on CUDA, 0 (off) on the CPU
    batch_memory_mb: int = 2048
    log_format: str = "text"
    voice_map: tuple[tuple[str, str], ...] = ()
    zerogpu: bool = False
    whisper_model: str = "small"
    allowed_dirs: tuple[Path, ...] = ()
    allow_private_urls: bool = False
    insecure_no_auth: bool = False
    api_key_login: bool = False

    @property
    def auth_enabled(self) -> bool:
        return bool(self.users) or bool(self.api_keys)

    @property
    def users(self) -> dict[str, str]:
        """UI logins: every line of ``--auth-file``, then the ``--auth`` pair."""
        return dict([*self.file_users, *([self.auth] if self.auth else [])])

    @property
    def gpu_memory_budget_bytes(self) -> int | None:
        return None if self.gpu_memory_budget_gb is None else int(self.gpu_memory_budget_gb * 2**30)

    @property
    def batch_memory_bytes(self) -> int:
        return self.batch_memory_mb * 2**20

    @property
    def exposed(self) -> bool:
        """Reachable from other machines: a non-loopback address or a public share link."""
        return self.share or self.host not in LOOPBACK_HOSTS

    @property
    def data_roots(self) -> tuple[Path, ...]:
        """The folders the studio writes to; what a client names must lie inside these (or ``allowed_dirs``)."""
        return (self.models_dir, self.outputs_dir, self.voices_dir)

    @property
    def readable_roots(self) -> tuple[Path, ...]:
        """Where a server folder typed into the UI may point: the data folders, ``--model-dir``, ``--allowed-dir``."""
        return (*self.data_roots, *([self.model_dir] if self.model_dir else []), *self.allowed_dirs)

    @property
    def served_roots(self) -> tuple[Path, ...]:
        """Folders whose files the browser may be handed: outputs, voices and ``--allowed-dir``."""
        return (self.outputs_dir, self.voices_dir, *self.allowed_dirs)

    @property
    def default_model_dir(self) -> Path:
        """Where the base XTTS v2 model lives (or is downloaded to)."""
        return self.models_dir / "xtts_v2"

    @property
    def latents_dir(self) -> Path:
        return self.models_dir / "cache" / "latents"

    @property
    def rvc_dir(self) -> Path:
        """RVC voice models (.pth, .index, .json records); support weights in its ``support/``."""
        return self.models_dir / "rvc"

    @property
    def rvc_outputs_dir(self) -> Path:
        return self.outputs_dir / "rvc"

    @property
    def tts_outputs_dir(self) -> Path:
        return self.outputs_dir / "tts"

    @property
    def datasets_dir(self) -> Path:
        return self.outputs_dir / "datasets"

    @property
    def finetuned_dir(self) -> Path:
        """Imported fine-tuned model folders."""
        return self.models_dir / "finetuned"

    @property
    def checkpoints_dir(self) -> Path:
        """Checkpoint reviews: renders, blind tests, plots, imported models' samples."""
        return self.outputs_dir / "checkpoints"

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
    p.add_argument("--auth-file", help="file with one USER:PASSWORD login per line (# comments allowed)")
    p.add_argument(
        "--api-key-login", action="store_true", default=None,
        help="also accept an API key as the UI password (off: logins and API keys are separate)",
    )  # fmt: skip
    p.add_argument(
        "--insecure-no-auth", action="store_true", default=None,
        help="serve a non-loopback address or a share link with no login at all (default: a generated access token)",
    )  # fmt: skip
    p.add_argument(
        "--allowed-dir", action="append",
        help="a server folder the UI may read from besides the data folders (dataset sources, base models, "
        "imports); repeatable; env: paths separated by ':'",
    )  # fmt: skip
    p.add_argument(
        "--allow-private-urls", action="store_true", default=None,
        help="let the dataset builder download from loopback, link-local and private addresses",
    )  # fmt: skip
    p.add_argument(
        "--share", action="store_true", default=None, help="open a public Gradio share link (off by default)"
    )
    p.add_argument("--max-text-chars", type=int, help="longest text accepted for one synthesis (default 5000)")
    p.add_argument(
        "--no-warmup", dest="warmup", action="store_false", default=None, help="skip the warm-up synthesis at start"
    )
    p.add_argument("--hub-url", help="Hugging Face endpoint to download models from (default https://huggingface.co)")
    p.add_argument("--api-key", action="append", help="accept this key as 'Authorization: Bearer KEY' (repeatable)")
    p.add_argument("--api-keys-file", help="file with one API key per line (# comments allowed)")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM); needs --tls-key")
    p.add_argument("--tls-key", help="private key (PEM) for --tls-cert")
    p.add_argument(
        "--max-queue", type=int, help="requests that may wait for the GPU before new ones get 503 (default 32)"
    )
    p.add_argument(
        "--gpu-memory-budget", type=float, metavar="GB",
        help="device memory the studio's resident models may use together; past it the least recently used "
        "move off the device (default: no limit)",
    )  # fmt: skip
    p.add_argument(
        "--batch-window-ms", type=float, metavar="MS",
        help="how long a synthesis chunk that arrives while others wait or run may wait to be decoded together "
        "with them (a lone request never waits); 0 turns batching off (default 30 on CUDA, 0 on the CPU and ZeroGPU)",
    )  # fmt: skip
    p.add_argument(
        "--batch-memory-mb", type=int, metavar="MB",
        help="device memory one batch of chunks may use; with the model's size it bounds the rows per batch "
        "(default 2048; on CUDA also no more than is free)",
    )  # fmt: skip
    p.add_argument(
        "--log-format", choices=["text", "json"], help="log as text (default) or JSON lines with request ids"
    )
    p.add_argument(
        "--voice-map",
        help="OpenAI voice names to studio voices, e.g. 'alloy=Narrator,echo=Daisy Studious' (others: built-in speakers)",
    )
    p.add_argument(
        "--whisper-model",
        help="Whisper for the dataset builder: a size (tiny ... large-v3, downloaded on first use) or a local "
        "faster-whisper model folder (default small)",
    )
    return p


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(ENV_PREFIX + name.upper().replace("-", "_"))
    return value if value not in (None, "") else None


def _platform_defaults(env: Mapping[str, str]) -> dict[str, object]:
    """Host, port and storage that hosting platforms hand over in their own variables.

    Hugging Face Spaces sets GRADIO_SERVER_NAME/PORT and mounts persistent storage at /data;
    many container hosts set PORT.
    """
    found: dict[str, object] = {}
    if env.get("GRADIO_SERVER_NAME"):
        found["host"] = env["GRADIO_SERVER_NAME"]
    port = env.get("GRADIO_SERVER_PORT") or env.get("PORT")
    if port:
        found["port"] = port
    if env.get("SPACE_ID") and SPACES_STORAGE.is_dir() and os.access(SPACES_STORAGE, os.W_OK):
        found["models-dir"] = SPACES_STORAGE / "models"
        found["outputs-dir"] = SPACES_STORAGE / "outputs"
    return found


def _secret_lines(path: str, what: str) -> list[str]:
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInput(f"Could not read the {what} file {path}: {exc.strerror}.") from None
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _login(raw: str, where: str) -> tuple[str, str]:
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise InvalidInput(f"{where} must look like USER:PASSWORD.")
    return user, password


def _voice_map(raw: str | None) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        alias, sep, voice = item.partition("=")
        if not sep or not alias.strip() or not voice.strip():
            raise InvalidInput(f"--voice-map entries look like alloy=VOICE; got '{item.strip()}'.")
        pairs.append((alias.strip().lower(), voice.strip()))
    return tuple(pairs)


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``argv`` (default: none) and ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    args = _parser().parse_args(list(argv or []))
    defaults = Settings()
    platform = _platform_defaults(env)

    def pick(flag: str, default: object) -> object:
        cli = getattr(args, flag.replace("-", "_"))
        if cli is not None:
            return cli
        from_env = _env(env, flag)
        if from_env is not None:
            return from_env
        return platform.get(flag, default)

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
    auth = _login(str(auth_raw), "--auth") if auth_raw else None
    auth_file = pick("auth-file", None)
    file_users = tuple(
        _login(line, f"Each line of {auth_file}")
        for line in (_secret_lines(str(auth_file), "logins") if auth_file else [])
    )
    allowed_raw = list(args.allowed_dir or []) or [d for d in (_env(env, "allowed-dirs") or "").split(os.pathsep) if d]
    allowed_dirs = tuple(dict.fromkeys(Path(d).expanduser().resolve() for d in allowed_raw))
    for folder in allowed_dirs:
        if not folder.is_dir():
            raise InvalidInput(f"--allowed-dir {folder} is not a folder.")
    port = as_int("port", pick("port", defaults.port))
    if not 1 <= port <= 65535:
        raise InvalidInput(f"--port must be between 1 and 65535, got {port}.")
    max_chars = as_int("max-text-chars", pick("max-text-chars", defaults.max_text_chars))
    if max_chars < 1:
        raise InvalidInput("--max-text-chars must be at least 1.")
    max_queue = as_int("max-queue", pick("max-queue", defaults.max_queue))
    if max_queue < 1:
        raise InvalidInput("--max-queue must be at least 1.")
    budget_raw = pick("gpu-memory-budget", None)
    try:
        budget = None if budget_raw is None else float(budget_raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"--gpu-memory-budget must be a number of GB, got '{budget_raw}'.") from None
    if budget is not None and budget <= 0:
        raise InvalidInput("--gpu-memory-budget must be more than 0 GB.")
    window_raw = pick("batch-window-ms", None)
    try:
        batch_window = None if window_raw is None else float(window_raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"--batch-window-ms must be a number of milliseconds, got '{window_raw}'.") from None
    if batch_window is not None and not 0 <= batch_window <= 1000:
        raise InvalidInput("--batch-window-ms must be between 0 and 1000.")
    batch_memory = as_int("batch-memory-mb", pick("batch-memory-mb", defaults.batch_memory_mb))
    if batch_memory < 1:
        raise InvalidInput("--batch-memory-mb must be at least 1.")
    keys = list(args.api_key or [])
    env_keys = _env(env, "api-keys")
    if env_keys and not keys:
        keys = [k.strip() for k in env_keys.split(",") if k.strip()]
    keys_file = pick("api-keys-file", None)
    if keys_file:
        keys += _secret_lines(str(keys_file), "API keys")
    if any(len(k) < 8 for k in keys):
        raise InvalidInput("API keys must be at least 8 characters long.")
    tls_cert, tls_key = pick("tls-cert", None), pick("tls-key", None)
    if bool(tls_cert) != bool(tls_key):
        raise InvalidInput("--tls-cert and --tls-key go together; give both or neither.")
    for tls_file in (tls_cert, tls_key):
        if tls_file and not Path(str(tls_file)).expanduser().is_file():
            raise InvalidInput(f"The TLS file {tls_file} does not exist.")
    log_format = str(pick("log-format", defaults.log_format))
    if log_format not in ("text", "json"):
        raise InvalidInput("--log-format must be text or json.")
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
        api_keys=tuple(dict.fromkeys(keys)),
        tls_cert=Path(str(tls_cert)).expanduser().resolve() if tls_cert else None,
        tls_key=Path(str(tls_key)).expanduser().resolve() if tls_key else None,
        max_queue=max_queue,
        gpu_memory_budget_gb=budget,
        batch_window_ms=batch_window,
        batch_memory_mb=batch_memory,
        log_format=log_format,
        voice_map=_voice_map(pick("voice-map", None)),  # type: ignore[arg-type]
        zerogpu=as_bool(env.get("SPACES_ZERO_GPU", False)),
        whisper_model=str(pick("whisper-model", defaults.whisper_model)),
        file_users=file_users,
        allowed_dirs=allowed_dirs,
        allow_private_urls=as_bool(pick("allow-private-urls", False)),
        insecure_no_auth=as_bool(pick("insecure-no-auth", False)),
        api_key_login=as_bool(pick("api-key-login", False)),
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
