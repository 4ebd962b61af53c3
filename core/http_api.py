"""HTTP routes beside the UI: an OpenAI-compatible speech API, health, metrics and the login page.

They run in the same process as the Gradio app and use the same resident engine, the
same GPU lock and the same admission gate. Errors are OpenAI-style JSON with a fitting
status, never an HTML traceback.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from core import __version__
from core.audio_stream import CONTENT_TYPES, encode_stream
from core.auth import SESSION_COOKIE, SESSION_TTL_S, Authenticator
from core.engine import PAUSE_SECONDS, SAMPLE_RATE
from core.errors import Busy, ModelUnavailable, OutOfMemory, StudioError, UnknownVoice
from core.metrics import CONTENT_TYPE_LATEST, RequestTracker, Ticket
from core.rvc import DEFAULT_RVC_PROFILE, RVCRequest
from core.rvc_models import UnknownRVCModel
from core.tts import TTSRequest, TTSService
from core.voices import VoiceLibrary

log = logging.getLogger(__name__)

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
MODEL_PROFILES = {"tts-1": "fast", "tts-1-hd": "high quality"}
SPEECH_ROUTE = "/v1/audio/speech"


class SpeechRequest(BaseModel):
    """The body of ``POST /v1/audio/speech``; ``language``, ``profile``, ``rvc_*`` and ``seed`` are extensions."""

    model_config = ConfigDict(extra="ignore")

    model: str = "tts-1"
    input: str
    voice: str
    response_format: str = "mp3"
    speed: float = 1.0
    language: str | None = None
    profile: str | None = None
    rvc_model: str | None = None
    rvc_profile: str | None = None
    seed: int | None = None


@dataclass
class HttpContext:
    service: TTSService
    voices: VoiceLibrary
    tracker: RequestTracker
    auth: Authenticator
    voice_map: dict[str, str] = field(default_factory=dict)
    secure_cookies: bool = False


def openai_error(status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def gpu_memory() -> dict[str, int]:
    """Free and total memory of the current CUDA device (empty without one); never takes the GPU lock."""
    if not torch.cuda.is_available():
        return {}
    free, total = torch.cuda.mem_get_info()
    return {"free": int(free), "total": int(total), "allocated": int(torch.cuda.memory_allocated())}


def is_authenticated(request: Request, auth: Authenticator) -> str | None:
    """The user behind ``request`` (Bearer key or login cookie), or ``None``."""
    if auth.bearer_is_valid(request.headers.get("authorization")):
        return "api-key"
    return auth.session_user(request.cookies.get(SESSION_COOKIE))


def _error_for(exc: Exception) -> tuple[JSONResponse, str]:
    """Map a core exception to an OpenAI-style response and a metrics status label."""
    if isinstance(exc, UnknownVoice):
        return openai_error(404, str(exc), code="voice_not_found", param="voice"), "client_error"
    if isinstance(exc, UnknownRVCModel):
        return openai_error(400, str(exc), code="rvc_model_not_found", param="rvc_model"), "client_error"
    if isinstance(exc, Busy):
        return openai_error(503, str(exc), kind="server_busy", code="queue_full", headers={"Retry-After": "2"}), "busy"
    if isinstance(exc, ModelUnavailable | OutOfMemory):
        return openai_error(503, str(exc), kind="server_error", code="model_unavailable"), "error"
    if isinstance(exc, StudioError):
        return openai_error(400, str(exc)), "client_error"
    log.exception("unexpected error in the speech API")
    return openai_error(500, "Internal error; the details are in the server log.", kind="server_error"), "error"


def build_router(ctx: HttpContext) -> APIRouter:
    router = APIRouter()
    service, engine = ctx.service, ctx.service.engine

    def alias(name: str) -> str:
        key = name.strip().lower()
        if key in ctx.voice_map:
            return ctx.voice_map[key]
        if key in OPENAI_VOICES and name not in service.voices():
            speakers = engine.speakers() or service.voices()
            if speakers:
                return speakers[OPENAI_VOICES.index(key) % len(speakers)]
        return name

    def require_auth(request: Request) -> JSONResponse | None:
        if ctx.auth.enabled and is_authenticated(request, ctx.auth) is None:
            return openai_error(
                401, "Missing or invalid API key. Send 'Authorization: Bearer KEY'.", code="invalid_api_key"
            )
        return None

    @router.get("/health")
    def health() -> dict[str, Any]:
        state = engine.status()
        return {
            "status": "ok" if state.loaded else "starting",
            "model_loaded": state.loaded,
            "model": str(state.model_dir) if state.model_dir else None,
            "model_id": state.model_id,
            "device": state.device,
            "gpu_memory": gpu_memory(),
            "queue_depth": ctx.tracker.gate.depth,
            "version": __version__,
        }

    @router.get("/metrics")
    def metrics(request: Request) -> Response:
        denied = require_auth(request)
        return denied or Response(ctx.tracker.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/v1/models")
    def models(request: Request) -> Response:
        denied = require_auth(request)
        if denied:
            return denied
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "xtts-studio"}
            for name in ("tts-1", "tts-1-hd", "xtts-v2")
        ]
        return JSONResponse({"object": "list", "data": data})

    @router.get("/v1/voices")
    def voices(request: Request) -> Response:
        denied = require_auth(request)
        if denied:
            return denied
        listed = [v.to_dict() for v in ctx.voices.list()]
        listed += [{"name": s, "kind": "builtin"} for s in engine.speakers() if s not in {v["name"] for v in listed}]
        aliases = {name: alias(name) for name in OPENAI_VOICES} if engine.loaded else dict(ctx.voice_map)
        return JSONResponse({"voices": listed, "aliases": aliases})

    @router.post(SPEECH_ROUTE)
    async def speech(request: Request) -> Response:
        denied = require_auth(request)
        if denied:
            return denied
        try:
            body = SpeechRequest.model_validate(await request.json())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return openai_error(400, f"Invalid request: {where}: {first.get('msg')}.", param=where or None)
        except ValueError:
            return openai_error(400, "The request body must be JSON.")
        profile = (body.profile or MODEL_PROFILES.get(body.model, "balanced")).lower()
        if len(body.input.strip()) > service.max_text_chars:
            ctx.tracker.refuse(SPEECH_ROUTE, profile, "client_error")
            return openai_error(
                413, f"input is {len(body.input):,} characters; the limit is {service.max_text_chars:,}.", param="input",
                code="input_too_long",
            )  # fmt: skip
        if body.response_format not in CONTENT_TYPES:
            return openai_error(
                400, f"response_format must be one of {', '.join(CONTENT_TYPES)}.", param="response_format"
            )
        try:
            ticket = ctx.tracker.start(SPEECH_ROUTE, profile)
        except Busy as exc:
            return _error_for(exc)[0]
        try:
            prepared, conditioning = await anyio.to_thread.run_sync(lambda: _prepare(body, profile))
        except Exception as exc:
            response, status = _error_for(exc)
            ticket.finish(status)
            return response
        chunks = _produce(prepared, conditioning, ticket)
        return StreamingResponse(
            encode_stream(chunks, body.response_format, SAMPLE_RATE),
            media_type=CONTENT_TYPES[body.response_format],
            headers={"X-Voice": prepared.voice.encode("ascii", "replace").decode()},
        )

    def _prepare(body: SpeechRequest, profile: str) -> tuple[Any, Any]:
        engine.ensure_loaded()
        voice = alias(body.voice)
        language = body.language
        if language is None:
            spec_voice = next((v for v in ctx.voices.list() if v.name == voice), None)
            language = spec_voice.language if spec_voice is not None and spec_voice.kind == "cloned" else "en"
        rvc = RVCRequest(body.rvc_model, profile=body.rvc_profile or DEFAULT_RVC_PROFILE) if body.rvc_model else None
        request = TTSRequest(
            text=body.input,
            language=language,
            voice=voice,
            profile=profile,
            overrides={"speed": body.speed},
            rvc=rvc,
            seed=body.seed,
        )
        prepared = service.prepare(request)
        return prepared, engine.conditioning(prepared.spec)

    def _produce(prepared: Any, conditioning: Any, ticket: Ticket) -> Iterator[np.ndarray]:
        """Synthesise chunk by chunk (the lock is taken per chunk); the ticket ends with the stream.

        With ``rvc_model`` each chunk is converted before it is sent; after a failed conversion
        (logged) the rest of the stream is plain XTTS audio.
        """
        status = "error"
        rvc = prepared.rvc
        try:
            for index, chunk in enumerate(prepared.chunks):
                audio = engine.synthesize(
                    [chunk],
                    language=prepared.language,
                    conditioning=conditioning,
                    params=prepared.params,
                    seed=prepared.seed if index == 0 else None,
                )
                if rvc is not None:
                    audio, _, _, warning = service.apply_rvc(audio, rvc, rate=SAMPLE_RATE)
                    rvc = None if warning else rvc
                if index:
                    yield np.zeros(int(SAMPLE_RATE * PAUSE_SECONDS), dtype=np.float32)
                ticket.audio_seconds += len(audio) / SAMPLE_RATE
                yield audio
            status = "ok"
        except GeneratorExit:
            status = "cancelled"
            raise
        except Exception:
            log.exception("speech stream failed after it started")
            raise
        finally:
            ticket.finish(status)

    add_login_routes(router, ctx)
    return router


_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>XTTS Studio: sign in</title>
<style>
body{{font-family:system-ui,sans-serif;background:#f4f4f8;display:flex;min-height:100vh;align-items:center;justify-content:center;margin:0}}
form{{background:#fff;padding:2rem;border-radius:12px;box-shadow:0 2px 12px #0002;width:min(22rem,90vw)}}
h1{{font-size:1.3rem;margin:0 0 1rem}} label{{display:block;margin:.8rem 0 .3rem}}
input{{width:100%;padding:.6rem;box-sizing:border-box;border:1px solid #bbb;border-radius:6px}}
button{{margin-top:1.2rem;width:100%;padding:.7rem;border:0;border-radius:6px;background:#5b5bd6;color:#fff;font-size:1rem}}
.error{{color:#b00020;margin:.5rem 0 0}}
</style></head><body>
<form method="post" action="login">
<h1>XTTS Studio</h1>
<label for="username">User</label><input id="username" name="username" autocomplete="username" required>
<label for="password">Password or API key</label><input id="password" name="password" type="password" autocomplete="current-password" required>
{error}<button type="submit">Sign in</button>
</form></body></html>"""


def add_login_routes(router: APIRouter, ctx: HttpContext) -> None:
    @router.get("/login")
    def login_page(error: str | None = None) -> HTMLResponse:
        message = f'<p class="error">{html.escape(error)}</p>' if error else ""
        return HTMLResponse(_LOGIN_PAGE.format(error=message))

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        token = ctx.auth.login(str(form.get("username", "")), str(form.get("password", "")))
        if token is None:
            log.warning("failed sign-in for user %r", str(form.get("username", ""))[:64])
            page = _LOGIN_PAGE.format(error='<p class="error">Wrong user or password.</p>')
            return HTMLResponse(page, status_code=401)
        response = RedirectResponse("./", status_code=303)
        response.set_cookie(
            SESSION_COOKIE, token, max_age=SESSION_TTL_S, httponly=True, samesite="lax", secure=ctx.secure_cookies
        )
        return response

    @router.get("/logout")
    def logout(request: Request) -> Response:
        ctx.auth.logout(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response
