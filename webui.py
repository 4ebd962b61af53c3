"""XTTS Studio: parse settings, build the shared core objects, build the tabs, serve.

One process serves the Gradio UI, its API, the OpenAI-compatible speech API, /health
and /metrics, all on one port and one resident engine. Nothing happens at import
time; ``python webui.py --help`` lists every setting.
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import uvicorn
from fastapi import FastAPI

from core import model_files
from core.constants import GRADIO_QUEUE_SIZE
from core.device import DeviceScheduler
from core.errors import StudioError
from core.logs import configure_logging
from core.model_files import ProgressCallback
from core.outputs import OutputStore
from core.rvc.convert import RVCService
from core.rvc.models import RVCLibrary
from core.rvc.support import SupportFiles
from core.scratch import confine_scratch
from core.settings import Settings, parse_settings, resolve_device
from core.tts import TTSService
from core.voices import VoiceLibrary
from core.xtts.engine import XTTSEngine
from core.xtts.loading import EngineState
from projects.render import ProjectRenderer
from projects.store import ProjectStore
from serve.auth import TOKEN_USER, Authenticator
from serve.http_api import HttpContext, StudioMiddleware, build_router, gpu_memory, is_authenticated
from serve.metrics import RequestTracker, StudioMetrics
from serve.tensorboard_proxy import build_tensorboard_router
from tabs import checkpoints as checkpoints_tab
from tabs import dataset as dataset_tab
from tabs import projects as projects_tab
from tabs import rvc as rvc_tab
from tabs import training as training_tab
from tabs import tts as tts_tab
from tabs import voices as voices_tab
from tabs.common import THEME
from train import denoise
from train.blind_test import BlindTests
from train.checkpoints import CheckpointCatalog
from train.clean_audio import SourceCleaner
from train.dataset import DatasetBuilder
from train.review import CheckpointReview
from train.runner import TrainingRunner
from train.runs import RunStore
from train.scoring import Scorer
from train.separation import VocalSeparator
from train.speakers import SpeakerEncoder
from train.tensorboard import TensorBoard
from train.transcribe import Whisper

log = logging.getLogger("xtts_studio")


@dataclass(frozen=True)
class Studio:
    """The process-wide objects every tab and route shares."""

    settings: Settings
    scheduler: DeviceScheduler
    engine: XTTSEngine
    voices: VoiceLibrary
    tts: TTSService
    tracker: RequestTracker
    auth: Authenticator
    datasets: DatasetBuilder
    training: TrainingRunner
    review: CheckpointReview
    blind: BlindTests
    rvc: RVCService
    tensorboard: TensorBoard
    projects: ProjectStore
    renderer: ProjectRenderer


def create_studio(settings: Settings) -> Studio:
    scheduler = DeviceScheduler(
        resolve_device(settings.device), max_queue=settings.max_queue, zerogpu=settings.zerogpu,
        memory_budget_bytes=settings.gpu_memory_budget_bytes, batch_memory_bytes=settings.batch_memory_bytes,
    )  # fmt: skip
    engine = XTTSEngine(
        scheduler=scheduler,
        latents_dir=settings.latents_dir,
        model_dir=settings.model_dir,
        default_model_dir=settings.default_model_dir,
        hub_url=settings.hub_url,
        batch_window_ms=settings.batch_window_ms,
    )
    whisper = Whisper(scheduler)
    speakers = SpeakerEncoder(scheduler)  # one resemblyzer for the checkpoint scores and the dataset builder
    voices = VoiceLibrary(settings.voices_dir, export_dir=settings.exports_dir / "voices", work_dir=settings.work_dir)
    rvc = RVCService(
        RVCLibrary(settings.rvc_dir),
        SupportFiles(settings.rvc_dir / "support", hub_url=settings.hub_url),
        OutputStore(settings.rvc_outputs_dir),
        scheduler=scheduler,
    )
    service = TTSService(
        engine,
        OutputStore(settings.tts_outputs_dir),
        max_text_chars=settings.max_text_chars,
        voice_sources=[voices],
        rvc=rvc,
    )
    gate = scheduler.gate
    tracker = RequestTracker(gate, StudioMetrics(queue_depth=lambda: gate.depth, gpu_memory=gpu_memory))
    auth = Authenticator(
        users=settings.users, api_keys=settings.api_keys, api_key_login=settings.api_key_login,
        access_token=generated_access_token(settings),
    )  # fmt: skip

    def prepare_base(base: Path, progress: ProgressCallback | None) -> Path:
        """The default XTTS v2 folder gets its training files (dvae.pth, mel_stats.pth) on first use."""
        if base.resolve() == settings.default_model_dir.resolve():
            names = model_files.INFERENCE_FILES + model_files.TRAINING_FILES
            return model_files.download_files(base, names, hub_url=settings.hub_url, progress=progress)
        return base

    runs = RunStore(settings.outputs_dir / "runs")
    runner = TrainingRunner(
        runs,
        device=engine.device,
        on_start=scheduler.lend,
        on_finish=scheduler.take_back,
        prepare_base=prepare_base,
    )
    catalog = CheckpointCatalog(runs, settings.finetuned_dir, settings.checkpoints_dir)
    review = CheckpointReview(
        catalog, engine, Scorer(settings.whisper_model, whisper=whisper, encoder=speakers), service.resolve_voice,
        settings.checkpoints_dir / "renders",
        state_file=settings.models_dir / "cache" / "active_checkpoint.json",
    )  # fmt: skip
    blind = BlindTests(settings.checkpoints_dir / "blind", catalog)
    cleaner = SourceCleaner(
        VocalSeparator(settings.models_dir, scheduler=scheduler), denoise.Denoiser() if denoise.available() else None
    )
    datasets = DatasetBuilder(
        settings.datasets_dir, allow_private_urls=settings.allow_private_urls, whisper=whisper, cleaner=cleaner,
        speakers=speakers,
    )  # fmt: skip
    tensorboard = TensorBoard(runs.root, settings.work_dir / "tensorboard")
    projects = ProjectStore(settings.outputs_dir / "projects")
    renderer = ProjectRenderer(projects, service, whisper, whisper_model=settings.whisper_model)
    return Studio(
        settings, scheduler, engine, voices, service, tracker, auth, datasets, runner, review, blind, rvc, tensorboard,
        projects, renderer,
    )  # fmt: skip


def generated_access_token(settings: Settings) -> str | None:
    """A random UI token for an exposed studio that has no login of its own (unless opted out)."""
    if not settings.exposed or settings.users or settings.insecure_no_auth:
        return None
    return secrets.token_urlsafe(24)


def start_engine(studio: Studio) -> None:
    """Load and warm the model if its files are here; otherwise leave it for first use."""
    engine = studio.engine
    if engine.status().state is not EngineState.READY:
        log.warning(engine.status().message)
        return
    try:
        engine.ensure_loaded()
        restored = studio.review.restore()
        if restored:
            log.info("using %s again, as when the studio stopped", restored)
        if studio.settings.warmup:
            log.info("warm-up synthesis took %.1fs", engine.warm_up())
    except StudioError as exc:
        log.error("%s", exc)


def start_up(studio: Studio) -> None:
    """Re-attach to a training still running, then load the engine: with the device lent first,
    XTTS loads onto the CPU instead of onto a GPU the training is using."""
    running = studio.training.reattach()
    if running:
        log.info("training %s is running; XTTS stays off the GPU until it ends", running)
    start_engine(studio)


def build_app(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title="XTTS Studio", analytics_enabled=False) as demo:
        with gr.Row():
            gr.Markdown("# XTTS Studio")
            if studio.auth.enabled:
                gr.Button("Sign out", link="logout", size="sm", scale=0, min_width=100)
        library_changed = gr.State(0)
        rvc_changed = gr.State(0)
        with gr.Tabs():
            with gr.Tab("Text to speech", id="tts"):
                tts_tab.build(demo, studio.tts, library_changed, studio.tracker, rvc_changed)
            with gr.Tab("Voice cloning", id="voices"):
                voices_tab.build(demo, studio.voices, studio.tts, library_changed, studio.tracker)
            with gr.Tab("Projects", id="projects"):
                projects_tab.build(
                    demo,
                    projects_tab.ProjectHandlers(studio.projects, studio.renderer, studio.tts, studio.tracker),
                    library_changed,
                )
            with gr.Tab("Voice conversion", id="rvc"):
                rvc_tab.build(demo, studio.rvc, studio.tts, rvc_changed, studio.tracker)
            with gr.Tab("Dataset", id="dataset"):
                dataset_tab.build(
                    demo, studio.datasets, studio.tracker, studio.settings.whisper_model,
                    source_roots=studio.settings.readable_roots,
                )  # fmt: skip
            with gr.Tab("Training", id="training"):
                training_tab.build(
                    demo, studio.training, studio.datasets, studio.tensorboard, studio.tracker,
                    default_base=studio.engine.model_dir,
                    enabled=not studio.settings.zerogpu, readable_roots=studio.settings.readable_roots,
                )  # fmt: skip
            with gr.Tab("Checkpoints", id="checkpoints"):
                checkpoints_tab.build(demo, checkpoints_tab.CheckpointHandlers(
                    studio.review, studio.blind, studio.tracker, exports_root=studio.settings.exports_dir / "models",
                    imported_root=studio.settings.finetuned_dir, voices=studio.tts.voices,
                    readable_roots=studio.settings.readable_roots, served_roots=studio.settings.served_roots,
                ))  # fmt: skip
    return demo


def build_http_app(studio: Studio, demo: gr.Blocks) -> FastAPI:
    """The FastAPI app: our routes first, then the Gradio UI mounted at the root."""
    settings, auth = studio.settings, studio.auth
    app = FastAPI(title="XTTS Studio", docs_url=None, redoc_url=None, openapi_url=None)
    context = HttpContext(
        service=studio.tts,
        voices=studio.voices,
        tracker=studio.tracker,
        auth=auth,
        voice_map=dict(settings.voice_map),
        secure_cookies=settings.tls_cert is not None,
    )
    app.include_router(build_router(context))
    app.include_router(build_tensorboard_router(studio.tensorboard, auth))

    app.add_middleware(StudioMiddleware, auth=auth, throttle=context.throttle)

    demo.queue(max_size=GRADIO_QUEUE_SIZE, default_concurrency_limit=4)
    mounted = gr.mount_gradio_app(
        app,
        demo,
        path="/",
        auth_dependency=(lambda request: is_authenticated(request, auth)) if auth.enabled else None,
        allowed_paths=served_folders(settings),
        max_file_size="1gb",
        theme=THEME,
        show_error=True,
    )
    # Gradio checks that file inputs were uploaded and file outputs lie in allowed_paths only once
    # an app "has launched", which a mounted app never does; mark it so the checks apply here too.
    demo.has_launched = True
    return mounted


def served_folders(settings: Settings) -> list[str]:
    """Folders whose files a handler may hand to the browser (besides Gradio's own upload cache)."""
    return [str(p) for p in settings.served_roots]


def announce_access(studio: Studio) -> None:
    """Say once how to get in when the studio is reachable from other machines."""
    settings, token = studio.settings, studio.auth.access_token
    if token:
        where = "the share link" if settings.share else f"http://{settings.host}:{settings.port}"
        print(
            f"\n  XTTS Studio is reachable from other machines and no --auth was given, so it made an access token."
            f"\n  Open {where}/login?token={token}"
            f"\n  or sign in as '{TOKEN_USER}' with the token as password; scripts send 'Authorization: Bearer <token>'."
            f"\n  The token changes at every start: set --auth or --auth-file for a lasting login.\n",
            file=sys.stderr,
            flush=True,
        )
    elif settings.exposed and not settings.auth_enabled:
        banner = "!" * 78
        log.warning(
            "\n%s\n  Listening on %s with NO authentication (--insecure-no-auth): anyone who can reach\n"
            "  this port can use the studio and its API.\n%s", banner, settings.host, banner,
        )  # fmt: skip


def serve(studio: Studio, demo: gr.Blocks) -> None:
    settings = studio.settings
    for folder in (settings.outputs_dir, settings.voices_dir):
        folder.mkdir(parents=True, exist_ok=True)
    announce_access(studio)
    if settings.share:
        log.warning("--share serves the UI through a Gradio share link; /v1, /health and /metrics stay local.")
        auth = studio.auth
        demo.queue(max_size=GRADIO_QUEUE_SIZE, default_concurrency_limit=4).launch(
            server_name=settings.host, server_port=settings.port, share=True, theme=THEME,
            auth=auth.password_is_valid if auth.users or auth.access_token else None,
            allowed_paths=served_folders(settings),
        )  # fmt: skip
        return
    app = build_http_app(studio, demo)
    scheme = "https" if settings.tls_cert else "http"
    log.info("XTTS Studio at %s://%s:%d/", scheme, settings.host, settings.port)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_level="warning",
        log_config=None,
        timeout_graceful_shutdown=5,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
    except StudioError as exc:
        configure_logging()
        log.error("%s", exc)
        return 2
    configure_logging(settings.log_format)  # before fairseq & co. can reconfigure the root logger
    confine_scratch(settings, keep_existing=True)
    try:
        studio = create_studio(settings)
    except StudioError as exc:
        log.error("%s", exc)
        return 2
    start_up(studio)
    serve(studio, build_app(studio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
