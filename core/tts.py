"""Text-to-speech requests end to end: validate, split, synthesise, save.

Tabs and API routes build a :class:`TTSRequest` and call :class:`TTSService`;
nothing here knows about Gradio.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from core.engine import SAMPLE_RATE, VoiceSpec, XTTSEngine
from core.errors import InvalidInput, UnknownVoice
from core.languages import normalize_language
from core.model_files import ProgressCallback
from core.outputs import OutputRecord, OutputStore
from core.profiles import DEFAULT_PROFILE, SynthesisParams, resolve_params
from core.text import split_for_synthesis, validate_text


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


@dataclass(frozen=True)
class TTSResult:
    record: OutputRecord
    chunks: list[str]
    seconds: float


@dataclass(frozen=True)
class StreamPiece:
    """A piece of streamed audio; the last piece carries the saved record instead."""

    audio: np.ndarray | None = None
    record: OutputRecord | None = None


class TTSService:
    def __init__(
        self,
        engine: XTTSEngine,
        store: OutputStore,
        *,
        max_text_chars: int,
        voice_sources: list[VoiceSource] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.max_text_chars = max_text_chars
        self.voice_sources = list(voice_sources or [])

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
        )

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
            prepared.chunks,
            language=prepared.language,
            conditioning=conditioning,
            params=prepared.params,
            seed=prepared.seed,
            progress=on_chunk,
            should_stop=should_stop,
        )
        record = self.store.save(audio, SAMPLE_RATE, {**prepared.metadata(), "mode": "whole"})
        return TTSResult(record, prepared.chunks, time.perf_counter() - started)

    def stream(
        self,
        request: TTSRequest,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[StreamPiece]:
        """Yield audio as it is made, then a final piece with the saved file."""
        prepared = self.prepare(replace(request, streaming=True), progress)
        conditioning = self.engine.conditioning(prepared.spec)
        collected: list[np.ndarray] = []
        for audio in self.engine.stream(
            prepared.chunks,
            language=prepared.language,
            conditioning=conditioning,
            params=prepared.params,
            seed=prepared.seed,
            should_stop=should_stop,
        ):
            collected.append(audio)
            yield StreamPiece(audio=audio)
        full = np.concatenate(collected) if collected else np.zeros(0, dtype=np.float32)
        record = self.store.save(full, SAMPLE_RATE, {**prepared.metadata(), "mode": "stream"})
        yield StreamPiece(record=record)


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
