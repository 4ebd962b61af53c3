"""Glue every tab shares: turning core errors into toasts and progress into callbacks."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import gradio as gr

from core.errors import StudioError
from core.model_files import ProgressCallback

log = logging.getLogger(__name__)

GPU = "gpu"  # concurrency_id shared by every event that uses the model
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
)
F = TypeVar("F", bound=Callable[..., Any])


def _as_ui_error(exc: Exception) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, StudioError):
        return gr.Error(str(exc), print_exception=False)
    log.exception("unexpected error in a UI handler")
    return gr.Error(
        f"Something went wrong ({exc.__class__.__name__}: {exc}). The details are in the server log.",
        print_exception=False,
    )


def ui_errors(fn: F) -> F:
    """Show :class:`StudioError` (and anything unexpected) as a toast, never a traceback."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise _as_ui_error(exc) from exc

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _as_ui_error(exc) from exc

    return wrapper  # type: ignore[return-value]


def progress_callback(progress: gr.Progress) -> ProgressCallback:
    """Adapt ``gr.Progress`` to the plain callback core functions take."""

    def report(fraction: float, message: str) -> None:
        progress(min(max(fraction, 0.0), 1.0), desc=message)

    return report


class StopSwitches:
    """Per-session stop flags: a Stop button flips the flag its session's running work checks."""

    def __init__(self) -> None:
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "anonymous"

    @contextlib.contextmanager
    def armed(self, request: gr.Request | None) -> Iterator[Callable[[], bool]]:
        """A fresh flag for this session's new work; yields the ``should_stop`` callable."""
        flag = threading.Event()
        key = self._key(request)
        with self._lock:
            self._flags[key] = flag
        try:
            yield flag.is_set
        finally:
            with self._lock:
                if self._flags.get(key) is flag:
                    del self._flags[key]

    def stop(self, request: gr.Request | None) -> None:
        with self._lock:
            flag = self._flags.get(self._key(request))
        if flag is not None:
            flag.set()
