from pathlib import Path

import pytest

from core.errors import InvalidInput
from core.settings import Settings, parse_settings, resolve_device


def test_defaults_are_safe() -> None:
    s = parse_settings([], env={})
    assert s.host == "127.0.0.1"
    assert s.port == 7860
    assert s.share is False
    assert s.auth is None
    assert s.model_dir is None
    assert s.voices_dir == s.models_dir / "voices"
    assert s.default_model_dir == s.models_dir / "xtts_v2"


def test_cli_beats_env_beats_default(tmp_path: Path) -> None:
    env = {"XTTS_STUDIO_PORT": "9000", "XTTS_STUDIO_HOST": "0.0.0.0", "XTTS_STUDIO_MODELS_DIR": str(tmp_path / "m")}
    s = parse_settings(["--port", "9100"], env=env)
    assert s.port == 9100  # CLI wins
    assert s.host == "0.0.0.0"  # env wins over default
    assert s.models_dir == (tmp_path / "m").resolve()
    assert s.voices_dir == (tmp_path / "m" / "voices").resolve()  # follows models dir


def test_model_dir_auth_share_and_warmup(tmp_path: Path) -> None:
    s = parse_settings(
        ["--model-dir", str(tmp_path), "--auth", "ann:s3cret:x", "--share", "--no-warmup"],
        env={"XTTS_STUDIO_MAX_TEXT_CHARS": "123"},
    )
    assert s.model_dir == tmp_path.resolve()
    assert s.auth == ("ann", "s3cret:x")
    assert s.share is True
    assert s.warmup is False
    assert s.max_text_chars == 123
    assert parse_settings([], env={"XTTS_STUDIO_NO_WARMUP": "1"}).warmup is False


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--auth", "nopassword"], {}, "USER:PASSWORD"),
        (["--port", "70000"], {}, "between 1 and 65535"),
        ([], {"XTTS_STUDIO_PORT": "eighty"}, "whole number"),
        (["--max-text-chars", "0"], {}, "at least 1"),
    ],
)
def test_bad_settings_are_refused(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_settings(argv, env=env)


def test_device_resolution_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this check is for machines without CUDA")
    assert resolve_device("auto") == "cpu"
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(InvalidInput, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(InvalidInput, match="Unknown --device"):
        resolve_device("tpu")


def test_settings_is_a_plain_value() -> None:
    assert Settings() == Settings()
