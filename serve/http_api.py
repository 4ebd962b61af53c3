"""HTTP routes beside the UI: an OpenAI-compatible speech API, health, metrics and the login page.

They run in the same process as the Gradio app and use the same resident engine, the
same device scheduler (its slot and its admission gate). Errors are OpenAI-style JSON with a fitting
status, never an HTML traceback.
"""

from __future__ import annotations

import html
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import __version__
from core.constants import XTTS_OUTPUT_RATE
from core.device import queue_problems
from core.errors import Busy, ModelUnavailable, OutOfMemory, StudioError, UnknownVoice
from core.logs import request_id
from core.rvc.convert import DEFAULT_RVC_PROFILE, RVCRequest
from core.rvc.models import UnknownRVCModel
from core.tts import TTSRequest, TTSService
from core.voices import VoiceLibrary
from core.xtts.engine import PAUSE_SECONDS
from serve.audio_stream import CONTENT_TYPES, encode_stream
from serve.auth import SESSION_COOKIE, SESSION_TTL_S, TOKEN_USER, Authenticator, FailureThrottle
from serve.metrics import CONTENT_TYPE_LATEST, RequestTracker, Ticket

log = logging.getLogger(__name__)

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
MODEL_PROFILES = {"tts-1": "fast", "tts-1-hd": "high quality"}
SPEECH_ROUTE = "/v1/audio/speech"
BODY_TIMEOUT_S = 30.0  # a client that takes longer to send its request body is dropped
SEND_TIMEOUT_S = 60.0  # a client that stops reading the stream for longer is dropped
STALL_S = 300.0  # /health says degraded when admitted work made no progress for this long


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
    throttle: FailureThrottle = field(default_factory=FailureThrottle)


class BodyError(Exception):
    """The request body could not be read: too large, too slow, or the client left."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_json_body(request: Request, *, limit: int, timeout_s: float = BODY_TIMEOUT_S) -> Any:
    """The JSON body, read with a size cap and a deadline; :class:`BodyError` otherwise."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyError(413, f"The request body is {int(declared):,} bytes; the limit is {limit:,}.")
    parts: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout_s):
            async for part in request.stream():
                size += len(part)
                if size > limit:
                    raise BodyError(413, f"The request body is over the limit of {limit:,} bytes.")
                parts.append(part)
    except TimeoutError:
        raise BodyError(408, f"The request body did not arrive within {timeout_s:.0f} s.") from None
    except ClientDisconnect:
        raise BodyError(400, "The client closed the connection before sending the whole body.") from None
    try:
        return json.loads(b"".join(parts))
    except RecursionError:
        raise BodyError(400, "The request body is nested too deeply.") from None
    except ValueError:
        raise BodyError(400, "The request body must be JSON.") from None


class TrackedStream(StreamingResponse):
    """A streamed body that gives its admission ticket back however the client behaves.

    The ticket is finished and the producer closed when the response ends for any reason:
    completed, the client gone before the first byte or mid-stream, a client that stops
    reading for ``send_timeout_s``, or the server shutting down.
    """

    def __init__(self, body: Iterator[bytes], ticket: Ticket, *, send_timeout_s: float = SEND_TIMEOUT_S,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(body, **kwargs)
        self._body, self._ticket, self._send_timeout_s = body, ticket, send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_in_time(message: Message) -> None:
            with anyio.fail_after(self._send_timeout_s):
                await send(message)

        try:
            await super().__call__(scope, receive, send_in_time)
        except (TimeoutError, ClientDisconnect, OSError) as exc:
            log.info("speech stream ended early: %s", exc.__class__.__name__)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close_body)
            self._ticket.finish("cancelled")

    def _close_body(self) -> None:
        try:
            self._body.close()  # type: ignore[attr-defined]
        except ValueError:  # still running in a worker thread: it stops at its next chunk
            log.debug("speech producer still running while its response closed")


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


class StudioMiddleware:
    """For every route: a request id, the login page in front of the UI, and wrong keys throttled.

    A request that carries an ``Authorization`` header from an address with too many recent
    failures gets 429 before its key is even checked; a wrong key counts as a failure. Plain
    ASGI (not ``BaseHTTPMiddleware``), so streamed responses see the client's disconnect.
    """

    def __init__(self, app: ASGIApp, *, auth: Authenticator, throttle: FailureThrottle) -> None:
        self.app, self.auth, self.throttle = app, auth, throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = Headers(scope=scope).get("x-request-id", "")[:64] or uuid.uuid4().hex[:12]
        token = request_id.set(rid)
        try:
            denied = self._gate(scope) if self.auth.enabled else None
            if denied is not None:
                await denied(scope, receive, send)
                return

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    MutableHeaders(scope=message).append("X-Request-ID", rid)
                await send(message)

            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)

    def _gate(self, scope: Scope) -> Response | None:
        request = Request(scope)
        header = request.headers.get("authorization")
        if header:
            client = client_address(request)
            wait = self.throttle.retry_after(client)
            if wait:
                return too_many_attempts(wait)
            if not self.auth.bearer_is_valid(header):
                self.throttle.failed(client)
        if scope["path"] == "/" and is_authenticated(request, self.auth) is None:
            return RedirectResponse("login", status_code=303)
        return None


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
    body_limit = 64 * 1024 + 8 * service.max_text_chars  # the longest text, JSON-escaped, and the options

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
        """Open to anyone (container health checks): no paths, names of folders only."""
        state = engine.status()
        gate = ctx.tracker.gate
        problems = queue_problems(gate, stall_s=STALL_S)
        return {
            "status": "degraded" if problems else ("ok" if state.loaded else "starting"),
            "problems": problems,
            "model_loaded": state.loaded,
            "model": state.model_dir.name if state.model_dir else None,
            "model_id": state.model_id,
            "device": state.device,
            "gpu_memory": gpu_memory(),
            "queue_depth": gate.depth,
            "queue_capacity": gate.capacity,
            "scheduler": engine.scheduler.status(),
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
            body = SpeechRequest.model_validate(await read_json_body(request, limit=body_limit))
        except BodyError as exc:
            return openai_error(exc.status, str(exc))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return openai_error(400, f"Invalid request: {where}: {first.get('msg')}.", param=where or None)
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
        return TrackedStream(
            encode_stream(chunks, body.response_format, XTTS_OUTPUT_RATE),
            ticket,
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
        """Synthesise chunk by chunk (each takes the device slot); the ticket ends with the stream.

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
                    seed=prepared.seed,
                    first_chunk=index,
                )
                if rvc is not None:
                    audio, _, _, warning = service.apply_rvc(audio, rvc, rate=XTTS_OUTPUT_RATE)
                    rvc = None if warning else rvc
                if index:
                    yield np.zeros(int(XTTS_OUTPUT_RATE * PAUSE_SECONDS), dtype=np.float32)
                ticket.audio_seconds += len(audio) / XTTS_OUTPUT_RATE
                ticket.progressed()
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
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
{error}<button type="submit">Sign in</button>
</form></body></html>"""


def client_address(scope_or_request: Request | Scope) -> str:
    client = scope_or_request.client if isinstance(scope_or_request, Request) else scope_or_request.get("client")
    return client[0] if client else "unknown"


def too_many_attempts(wait_s: int) -> JSONResponse:
    return openai_error(
        429, f"Too many failed sign-ins or wrong keys from this address; try again in {wait_s} s.",
        kind="rate_limit_error", code="too_many_attempts", headers={"Retry-After": str(wait_s)},
    )  # fmt: skip


def add_login_routes(router: APIRouter, ctx: HttpContext) -> None:
    def signed_in(user: str) -> Response:
        response = RedirectResponse("./", status_code=303)
        response.set_cookie(
            SESSION_COOKIE, ctx.auth.open_session(user), max_age=SESSION_TTL_S, httponly=True, samesite="lax",
            secure=ctx.secure_cookies,
        )  # fmt: skip
        return response

    def refused(page_status: int, message: str) -> HTMLResponse:
        return HTMLResponse(_LOGIN_PAGE.format(error=f'<p class="error">{html.escape(message)}</p>'), page_status)

    @router.get("/login")
    def login_page(request: Request, error: str | None = None, token: str | None = None) -> Response:
        if token is not None:
            client = client_address(request)
            wait = ctx.throttle.retry_after(client)
            if wait:
                return refused(429, f"Too many failed attempts; try again in {wait} s.")
            if ctx.auth.token_is_valid(token):
                ctx.throttle.succeeded(client)
                return signed_in(TOKEN_USER)
            ctx.throttle.failed(client)
            return refused(401, "That access token is not valid.")
        message = f'<p class="error">{html.escape(error)}</p>' if error else ""
        return HTMLResponse(_LOGIN_PAGE.format(error=message))

    @router.post("/login")
    async def login(request: Request) -> Response:
        client = client_address(request)
        wait = ctx.throttle.retry_after(client)
        if wait:
            return refused(429, f"Too many failed attempts; try again in {wait} s.")
        form = await request.form()
        user, password = str(form.get("username", "")), str(form.get("password", ""))
        if not ctx.auth.password_is_valid(user, password):
            ctx.throttle.failed(client)
            log.warning("failed sign-in for user %r from %s", user[:64], client)
            return refused(401, "Wrong user or password.")
        ctx.throttle.succeeded(client)
        return signed_in(user)

    @router.get("/logout")
    def logout(request: Request) -> Response:
        ctx.auth.logout(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response
