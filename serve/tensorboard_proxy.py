"""``/tensorboard/``: the loopback-only TensorBoard, served through the studio behind its login.

TensorBoard has no authentication of its own. Each request here passes the same check as
every other route (an API key or the login cookie) and is then forwarded to the child on
127.0.0.1, which is started on the first request if the Training tab has not done so.
The studio's cookies and ``Authorization`` header are not forwarded.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio
import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from core.errors import StudioError
from serve.auth import Authenticator
from serve.http_api import is_authenticated, openai_error

log = logging.getLogger(__name__)

PREFIX = "/tensorboard"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding",
     "upgrade"}
)  # fmt: skip
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "cookie", "authorization", "content-length"}
_NOT_RETURNED = _HOP_BY_HOP | {"content-length", "set-cookie"}


class Upstream(Protocol):
    """What the proxy needs from ``train.tensorboard.TensorBoard``."""

    def ensure_running(self) -> str:
        """Start the server if needed; its base URL (``http://127.0.0.1:PORT/tensorboard``)."""
        ...

    def stop(self) -> None: ...


def build_tensorboard_router(board: Upstream, auth: Authenticator) -> APIRouter:
    """The proxy routes; TensorBoard is stopped when the app shuts down."""
    client = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(120.0, connect=5.0))

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()
            await anyio.to_thread.run_sync(board.stop)

    router = APIRouter(lifespan=lifespan)

    @router.get(PREFIX, include_in_schema=False)
    def with_slash() -> RedirectResponse:
        return RedirectResponse("tensorboard/", status_code=307)

    @router.api_route(PREFIX + "/{path:path}", methods=METHODS, include_in_schema=False)
    async def proxy(request: Request, path: str) -> Response:
        refused = _refusal(request, auth, path)
        if refused is not None:
            return refused
        try:
            base = await anyio.to_thread.run_sync(board.ensure_running)
        except StudioError as exc:
            return _unavailable(str(exc))
        outgoing = client.build_request(
            request.method,
            httpx.URL(f"{base}/{path}", query=request.url.query.encode("ascii")),
            headers=[(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED],
            content=await request.body(),
        )
        try:
            answer = await client.send(outgoing, stream=True)
        except httpx.TransportError as exc:
            log.warning("TensorBoard did not answer %s: %s", path or "/", exc)
            return _unavailable("TensorBoard did not answer; reload the page to start it again.")
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in _NOT_RETURNED}
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=headers,
            background=BackgroundTask(answer.aclose),
        )

    return router


def _refusal(request: Request, auth: Authenticator, path: str) -> Response | None:
    """``None`` when the request may pass; else a redirect to the login page (browsers) or a 401."""
    if not auth.enabled or is_authenticated(request, auth) is not None:
        return None
    if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("../" * (path.count("/") + 1) + "login", status_code=303)
    return openai_error(401, "Sign in first, or send 'Authorization: Bearer KEY'.", code="invalid_api_key")


def _unavailable(message: str) -> JSONResponse:
    return openai_error(503, message, kind="server_error", code="tensorboard_unavailable")
