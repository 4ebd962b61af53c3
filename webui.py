"""XTTS Studio: parse settings, build the shared core objects, build the tabs, launch.

Nothing happens at import time; ``python webui.py --help`` lists every setting.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import gradio as gr

from core.engine import XTTSEngine
from core.errors import StudioError
from core.outputs import OutputStore
from core.settings import Settings, parse_settings, resolve_device
from core.tts import TTSService
from core.voices import VoiceLibrary
from tabs import tts as tts_tab
from tabs import voices as voices_tab

log = logging.getLogger("xtts_studio")

THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
)
GPU_QUEUE_SIZE = 64


@dataclass(frozen=True)
class Studio:
    """The process-wide objects every tab shares."""

    settings: Settings
    engine: XTTSEngine
    voices: VoiceLibrary
    tts: TTSService


def create_studio(settings: Settings) -> Studio:
    engine = XTTSEngine(
        device=resolve_device(settings.device),
        latents_dir=settings.latents_dir,
        model_dir=settings.model_dir,
        default_model_dir=settings.default_model_dir,
        hub_url=settings.hub_url,
    )
    voices = VoiceLibrary(settings.voices_dir, export_dir=settings.exports_dir / "voices", work_dir=settings.work_dir)
    service = TTSService(
        engine, OutputStore(settings.tts_outputs_dir), max_text_chars=settings.max_text_chars, voice_sources=[voices]
    )
    return Studio(settings, engine, voices, service)


def start_engine(studio: Studio) -> None:
    """Load and warm the model if its files are here; otherwise leave it for first use."""
    engine = studio.engine
    if not engine.status().message.startswith("XTTS is ready"):
        log.warning(engine.status().message)
        return
    try:
        engine.ensure_loaded()
        if studio.settings.warmup:
            log.info("warm-up synthesis took %.1fs", engine.warm_up())
    except StudioError as exc:
        log.error("%s", exc)


def build_app(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title="XTTS Studio", analytics_enabled=False) as demo:
        gr.Markdown("# XTTS Studio")
        library_changed = gr.State(0)
        with gr.Tabs():
            with gr.Tab("Text to speech", id="tts"):
                tts_tab.build(demo, studio.tts, library_changed)
            with gr.Tab("Voice cloning", id="voices"):
                voices_tab.build(demo, studio.voices, studio.tts, library_changed)
    return demo


def launch(studio: Studio, demo: gr.Blocks) -> None:
    settings = studio.settings
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.auth is None:
        log.warning(
            "Listening on %s without --auth: anyone on the network can use this studio. Add --auth USER:PASSWORD.",
            settings.host,
        )
    for folder in (settings.outputs_dir, settings.voices_dir):
        folder.mkdir(parents=True, exist_ok=True)
    demo.queue(max_size=GPU_QUEUE_SIZE, default_concurrency_limit=4).launch(
        server_name=settings.host,
        server_port=settings.port,
        auth=settings.auth,
        share=settings.share,
        allowed_paths=[str(settings.outputs_dir), str(settings.voices_dir)],
        max_file_size="1gb",
        theme=THEME,
        show_error=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
        studio = create_studio(settings)
    except StudioError as exc:
        log.error("%s", exc)
        return 2
    start_engine(studio)
    launch(studio, build_app(studio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
