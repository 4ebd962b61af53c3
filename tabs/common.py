"""Glue every tab shares: turning core errors into toasts and progress into callbacks."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import threading
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import gradio as gr

from core.errors import StudioError
from core.model_files import ProgressCallback
from core.rvc.convert import DEFAULT_RVC_PROFILE, F0_METHODS, RANGES, RVC_PROFILES
from serve.metrics import Ticket

log = logging.getLogger(__name__)

GPU = "gpu"  # concurrency_id shared by every event that uses the model
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
)
F = TypeVar("F", bound=Callable[..., Any])


def _check_range(label: str | None, value: object, minimum: float | None, maximum: float | None) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    name = label or "The value"
    if minimum is not None and value < minimum:
        raise gr.Error(f"{name} must be at least {minimum:g} (got {value:g}).", print_exception=False)
    if maximum is not None and value > maximum:
        raise gr.Error(f"{name} must be at most {maximum:g} (got {value:g}).", print_exception=False)


def _named_range(field: gr.Number | gr.Slider) -> gr.Number | gr.Slider:
    """Check the field's range before Gradio does, so the message names the field.

    Wrapping the instance's ``preprocess`` rather than subclassing: Gradio writes a ``.pyi``
    stub next to the source file of any component subclass.
    """
    check = field.preprocess

    def preprocess(payload: Any) -> Any:
        _check_range(field.label, payload, field.minimum, field.maximum)
        return check(payload)

    field.preprocess = preprocess  # type: ignore[method-assign]
    return field


def ranged_number(*args: Any, **kwargs: Any) -> gr.Number:
    """``gr.Number`` whose range error names the field ("Epochs must be at least 1 (got 0).")."""
    return _named_range(gr.Number(*args, **kwargs))  # type: ignore[return-value]


def ranged_slider(*args: Any, **kwargs: Any) -> gr.Slider:
    """``gr.Slider`` whose range error names the field."""
    return _named_range(gr.Slider(*args, **kwargs))  # type: ignore[return-value]


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


def form_handler(form_cls: type, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(form, *rest)`` as the function Gradio calls with one argument per field of the dataclass ``form_cls``.

    Gradio reads an endpoint's parameter names, order and ``None`` defaults from its handler's
    signature; the one built here is the form's fields (names, defaults, types) followed by
    ``fn``'s own parameters after the form (``request``, ``progress``), so the API stays
    what it would be with the fields spelt out. A generator ``fn`` stays a generator.
    """
    hints = typing.get_type_hints(form_cls)
    own = inspect.signature(fn)
    form_parameter, *rest = own.parameters.values()
    fields = [f for f in dataclasses.fields(form_cls) if f.init]
    parameters = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
            annotation=hints[f.name],
        )
        for f in fields
    ]
    signature = inspect.Signature([*parameters, *rest], return_annotation=own.return_annotation)
    names = [f.name for f in fields]

    def split(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        return form_cls(**{name: values.pop(name) for name in names}), values

    if inspect.isgeneratorfunction(fn):

        def handler(*args: Any, **kwargs: Any) -> Any:
            form, rest = split(args, kwargs)
            yield from fn(form, **rest)

    else:

        def handler(*args: Any, **kwargs: Any) -> Any:
            form, rest = split(args, kwargs)
            return fn(form, **rest)

    handler.__name__ = handler.__qualname__ = getattr(fn, "__name__", "handler")
    handler.__doc__ = fn.__doc__
    handler.__signature__ = signature  # type: ignore[attr-defined]
    own_hints = typing.get_type_hints(fn)
    own_hints.pop(form_parameter.name, None)
    handler.__annotations__ = {**{f.name: hints[f.name] for f in fields}, **own_hints}
    return handler


def form_inputs(form_cls: type, widgets: Mapping[str, Any]) -> list[Any]:
    """The widgets in the order of ``form_cls``'s fields, one for each field and no other."""
    names = [f.name for f in dataclasses.fields(form_cls) if f.init]
    if set(widgets) != set(names):
        missing, extra = sorted(set(names) - set(widgets)), sorted(set(widgets) - set(names))
        raise ValueError(f"{form_cls.__name__} widgets do not match its fields: missing {missing}, extra {extra}")
    return [widgets[name] for name in names]


def progress_callback(progress: gr.Progress, ticket: Ticket | None = None) -> ProgressCallback:
    """Adapt ``gr.Progress`` to the plain callback core functions take.

    With the admission ``ticket`` of the work, each report also tells the gate the work is moving,
    so a long build or render is not taken for a stalled queue (/health).
    """

    def report(fraction: float, message: str) -> None:
        if ticket is not None:
            ticket.progressed()
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


RVC_PARAM_NAMES = ("pitch", "f0_method", "index_rate", "filter_radius", "resample_sr", "rms_mix_rate", "protect")
RESAMPLE_CHOICES = [
    ("model's own rate", 0),
    *((f"{rate:,} Hz", rate) for rate in (16000, 22050, 24000, 32000, 40000, 44100, 48000)),
]


def rvc_param_widgets(prefix: str) -> list[gr.components.Component]:
    """The RVC parameter widgets, in :data:`RVC_PARAM_NAMES` order, starting at the default profile."""
    start = RVC_PROFILES[DEFAULT_RVC_PROFILE]

    def slider(name: str, label: str, step: float, info: str) -> gr.Slider:
        low, high = RANGES[name]
        elem_id = f"{prefix}-{name.replace('_', '-')}"
        return ranged_slider(low, high, value=getattr(start, name), step=step, label=label, info=info, elem_id=elem_id)

    return [
        slider("pitch", "Pitch shift (semitones)", 1, "+12 is an octave up (e.g. a male voice into a female model)."),
        gr.Dropdown(
            list(F0_METHODS),
            value=start.f0_method,
            label="f0 method",
            elem_id=f"{prefix}-f0-method",
            info="rmvpe: best overall; fcpe: fast; pm/harvest/dio: classic, CPU-friendly; crepe: smooth, slow.",
        ),
        slider("index_rate", "Index rate", 0.01, "How much of the model's own timbre (from its .index) to use."),
        slider("filter_radius", "Filter radius", 1, "Median filter on the pitch curve (3+ smooths breathy noise)."),
        gr.Dropdown(RESAMPLE_CHOICES, value=0, label="Resample output to", elem_id=f"{prefix}-resample-sr"),
        slider("rms_mix_rate", "RMS mix rate", 0.01, "1 keeps the converted loudness; lower follows the input's."),
        slider("protect", "Protect", 0.01, "Keeps breaths and consonants unconverted; 0.5 turns it off."),
    ]


def rvc_profile_values(name: str) -> list[object]:
    """Widget values for an RVC profile, in :data:`RVC_PARAM_NAMES` order."""
    params = RVC_PROFILES.get(name, RVC_PROFILES[DEFAULT_RVC_PROFILE])
    return [getattr(params, field) for field in RVC_PARAM_NAMES]
