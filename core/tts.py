"""Text-to-speech requests end to end: validate, split, synthesise, save.

Tabs and API routes build a :class:`TTSRequest` and call :class:`TTSService`;
nothing here knows about Gradio. A request may ask for RVC as a finishing step:
if that conversion fails, the XTTS audio is kept and the result carries a warning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import soxr

from core.constants import XTTS_OUTPUT_RATE
from core.errors import InvalidInput, StudioError, UnknownVoice
from core.model_files import ProgressCallback
from core.outputs import OutputRecord, OutputStore
from core.rvc.convert import DEFAULT_RVC_PROFILE, RVCRequest, RVCService
from core.xtts.engine import VoiceSpec, XTTSEngine
from core.xtts.languages import normalize_language
from core.xtts.latents import Conditioning
from core.xtts.profiles import DEFAULT_PROFILE, SynthesisParams, resolve_params
from core.xtts.text import split_for_synthesis, validate_text

log = logging.getLogger(__name__)


class VoiceSource(Protocol):
    """Something that knows voices by name (the voice library plugs in here)."""

    def names(self) -> list[str]: ...

    def resolve(self, name: str) -> VoiceSpec | None: ...


@dataclass(frozen=True)
class TTSRequest:
    text: str
    language: str = "en"
    voice: str | None = None
    profile: str = DEFAULT_PROFILE
    overrides: dict[str, float | int | None] = field(default_factory=dict)
    seed: int | None = None
    streaming: bool = False  # the first sentence gets a chunk of its own, for a quick start
    rvc: RVCRequest | None = None  # convert the result with this RVC model afterwards


@dataclass(frozen=True)
class PreparedRequest:
    """A request that passed every check, ready for the engine."""

    text: str
    language: str
    voice: str
    spec: VoiceSpec
    profile: str
    params: SynthesisParams
    chunks: list[str]
    seed: int | None
    model: str
    rvc: RVCRequest | None = None

    def metadata(self) -> dict[str, object]:
        return {
            "model": self.model,
            "text": self.text,
            "language": self.language,
            "voice": self.voice,
            "profile": self.profile,
            "params": self.params.to_dict(),
            "seed": self.seed,
            "chunks": len(self.chunks),
        }

    def speech(self, conditioning: Conditioning) -> dict[str, Any]:
        """The engine's keyword arguments for this request's text, language, voice and seed."""
        return {
            "language": self.language,
            "conditioning": conditioning,
            "params": self.params,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class TTSResult:
    record: OutputRecord
    chunks: list[str]
    seconds: float
    warning: str | None = None  # set when RVC post-processing failed and the XTTS audio was kept


@dataclass(frozen=True)
class StreamPiece:
    """A piece of streamed audio; the last piece carries the saved record instead."""

    audio: np.ndarray | None = None
    record: OutputRecord | None = None
    warning: str | None = None


class TTSService:
    def __init__(
        self,
        engine: XTTSEngine,
        store: OutputStore,
        *,
        max_text_chars: int,
        voice_sources: list[VoiceSource] | None = None,
        rvc: RVCService | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.max_text_chars = max_text_chars
        self.voice_sources = list(voice_sources or [])
        self.rvc = rvc

    def voices(self) -> list[str]:
        """Every voice a request may name: library voices first, then built-in speakers."""
        names: list[str] = []
        for source in self.voice_sources:
            names.extend(n for n in source.names() if n not in names)
        names.extend(n for n in self.engine.speakers() if n not in names)
        return names

    def resolve_voice(self, name: str | None) -> tuple[str, VoiceSpec]:
        wanted = (name or "").strip()
        if not wanted:
            default = self.engine.default_speaker()
            if default is None:
                raise InvalidInput("Choose a voice: this model has no built-in speakers.")
            return default, VoiceSpec(speaker=default)
        for source in self.voice_sources:
            spec = source.resolve(wanted)
            if spec is not None:
                return wanted, spec
        if wanted in self.engine.speakers():
            return wanted, VoiceSpec(speaker=wanted)
        shown = ", ".join(self.voices()[:12]) or "none"
        raise UnknownVoice(f"Unknown voice '{wanted}'. Available voices include: {shown}.")

    def prepare(self, request: TTSRequest, progress: ProgressCallback | None = None) -> PreparedRequest:
        """Check everything cheap first, then load the model (downloading it if needed)."""
        text = validate_text(request.text, max_chars=self.max_text_chars)
        language = normalize_language(request.language)
        params = resolve_params(request.profile, **request.overrides)
        if request.rvc is not None:
            if self.rvc is None:
                raise InvalidInput("RVC post-processing is not available in this studio.")
            request.rvc.params()  # a bad RVC setting or model is the request's fault: refuse it before synthesis
            self.rvc.library.get(request.rvc.model)
        self.engine.ensure_loaded(progress)
        language = normalize_language(language, supported=self.engine.languages())
        voice, spec = self.resolve_voice(request.voice)
        chunks = split_for_synthesis(text, language, target_chars=params.chunk_chars, first_alone=request.streaming)
        status = self.engine.status()
        return PreparedRequest(
            text=text,
            language=language,
            voice=voice,
            spec=spec,
            profile=(request.profile or DEFAULT_PROFILE).strip().lower(),
            params=params,
            chunks=chunks,
            seed=request.seed,
            model=f"{status.model_dir} ({status.model_id})",
            rvc=request.rvc,
        )

    def apply_rvc(
        self,
        audio: np.ndarray,
        request: RVCRequest,
        progress: ProgressCallback | None = None,
        *,
        rate: int | None = None,
    ) -> tuple[np.ndarray, int, dict[str, Any], str | None]:
        """Convert XTTS audio with RVC; on failure keep it and say why (audio, rate, sidecar entry, warning).

        ``rate`` resamples the converted audio (streams keep XTTS's rate throughout).
        """
        assert self.rvc is not None
        profile = (request.profile or DEFAULT_RVC_PROFILE).strip().lower()
        try:
            conversion = self.rvc.convert_array(audio, XTTS_OUTPUT_RATE, request, progress)
        except Exception as exc:
            if isinstance(exc, StudioError):
                reason = str(exc)
                log.warning("RVC post-processing with %s failed; keeping the XTTS audio: %s", request.model, reason)
            else:
                reason = f"{exc.__class__.__name__}: {exc}"
                log.exception("RVC post-processing with %s failed; keeping the XTTS audio", request.model)
            warning = f"RVC conversion failed, so this is the XTTS audio without it. {reason}"
            return audio, XTTS_OUTPUT_RATE, {"model": request.model, "profile": profile, "error": reason}, warning
        converted, out_rate = conversion.audio, conversion.sample_rate
        if rate is not None and out_rate != rate:
            converted, out_rate = soxr.resample(converted, out_rate, rate).astype(np.float32), rate
        return converted, out_rate, conversion.metadata(profile), None

    def synthesize(
        self,
        request: TTSRequest,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TTSResult:
        started = time.perf_counter()
        prepared = self.prepare(request, progress)
        conditioning = self.engine.conditioning(prepared.spec)

        def on_chunk(done: int, total: int) -> None:
            if progress is not None:
                progress(done / total, f"Synthesised {done} of {total} chunks")

        audio = self.engine.synthesize(
            prepared.chunks, **prepared.speech(conditioning), progress=on_chunk, should_stop=should_stop
        )
        meta: dict[str, Any] = {**prepared.metadata(), "mode": "whole"}
        rate, warning = XTTS_OUTPUT_RATE, None
        if prepared.rvc is not None:
            audio, rate, meta["rvc"], warning = self.apply_rvc(audio, prepared.rvc, progress)
        record = self.store.save(audio, rate, meta)
        return TTSResult(record, prepared.chunks, time.perf_counter() - started, warning)

    def stream(
        self,
        request: TTSRequest,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[StreamPiece]:
        """Yield audio as it is made, then a final piece with the saved file.

        With RVC each chunk is converted as it comes and resampled to XTTS's rate; after a
        failed conversion the rest of the stream is XTTS audio and the last piece warns.
        """
        prepared = self.prepare(replace(request, streaming=True), progress)
        conditioning = self.engine.conditioning(prepared.spec)
        collected: list[np.ndarray] = []
        rvc_meta: dict[str, Any] | None = None
        warning: str | None = None
        for audio in self.engine.stream(prepared.chunks, **prepared.speech(conditioning), should_stop=should_stop):
            if prepared.rvc is not None and warning is None and np.any(np.abs(audio) > 1e-4):  # pauses pass through
                audio, _, rvc_meta, warning = self.apply_rvc(audio, prepared.rvc, rate=XTTS_OUTPUT_RATE)
            collected.append(audio)
            yield StreamPiece(audio=audio)
        full = np.concatenate(collected) if collected else np.zeros(0, dtype=np.float32)
        meta: dict[str, Any] = {**prepared.metadata(), "mode": "stream"}
        if rvc_meta is not None:
            meta["rvc"] = rvc_meta
        record = self.store.save(full, XTTS_OUTPUT_RATE, meta)
        yield StreamPiece(record=record, warning=warning)


def history_rows(records: list[OutputRecord]) -> list[list[object]]:
    """Rows for a history table: time, voice, language, text, seconds."""
    rows: list[list[object]] = []
    for record in records:
        meta = record.meta
        text = str(meta.get("text", ""))
        rows.append(
            [
                str(meta.get("created", ""))[:19].replace("T", " "),
                meta.get("voice", ""),
                meta.get("language", ""),
                text if len(text) <= 80 else text[:77] + "...",
                meta.get("duration_s", 0.0),
            ]
        )
    return rows
