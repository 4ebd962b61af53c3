"""Quality profiles: named starting points for XTTS's sampling parameters.

- fast: short chunks, so the first audio comes sooner and each GPT pass is cheaper.
- balanced: XTTS v2's own defaults.
- high quality: cooler, narrower sampling and a stronger repetition penalty for
  steadier speech with fewer run-ons, over whole-sentence chunks.

Any field can be overridden per request; values are checked against safe ranges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from core.errors import InvalidInput

# (min, max) for every tunable; outside these XTTS babbles or stalls.
RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.05, 1.5),
    "top_p": (0.05, 1.0),
    "top_k": (1, 200),
    "repetition_penalty": (1.0, 20.0),
    "length_penalty": (0.5, 2.0),
    "speed": (0.5, 2.0),
    "chunk_chars": (40, 400),
}


@dataclass(frozen=True)
class SynthesisParams:
    """Everything that shapes one synthesis besides text, language and voice."""

    temperature: float = 0.75
    top_p: float = 0.85
    top_k: int = 50
    repetition_penalty: float = 5.0
    length_penalty: float = 1.0
    speed: float = 1.0
    chunk_chars: int = 200

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def generation_kwargs(self) -> dict[str, float | int]:
        """The keyword arguments XTTS's ``inference`` takes."""
        data = self.to_dict()
        data.pop("chunk_chars")
        return data


PROFILES: dict[str, SynthesisParams] = {
    "fast": SynthesisParams(temperature=0.8, top_p=0.9, top_k=60, repetition_penalty=5.0, chunk_chars=100),
    "balanced": SynthesisParams(),
    "high quality": SynthesisParams(temperature=0.65, top_p=0.8, top_k=30, repetition_penalty=10.0, chunk_chars=400),
}
DEFAULT_PROFILE = "balanced"


def resolve_params(profile: str | None = None, **overrides: float | int | None) -> SynthesisParams:
    """Start from ``profile`` and apply the overrides that are not ``None``."""
    name = (profile or DEFAULT_PROFILE).strip().lower()
    if name not in PROFILES:
        raise InvalidInput(f"Unknown profile '{profile}'. Choose one of: {', '.join(PROFILES)}.")
    known = {f.name for f in fields(SynthesisParams)}
    unknown = set(overrides) - known
    if unknown:
        raise InvalidInput(f"Unknown synthesis parameter(s): {', '.join(sorted(unknown))}.")
    changes: dict[str, float | int] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        changes[key] = checked_number(key, value, RANGES[key], integer=key in ("top_k", "chunk_chars"))
    return replace(PROFILES[name], **changes)


def checked_number(key: str, value: object, bounds: tuple[float, float], *, integer: bool) -> float | int:
    """``value`` as a number within ``bounds`` (rounded when ``integer``), or :class:`InvalidInput` naming ``key``."""
    low, high = bounds
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"{key} must be a number, got '{value}'.") from None
    if not low <= number <= high:
        raise InvalidInput(f"{key} must be between {low:g} and {high:g}, got {number:g}.")
    return round(number) if integer else number
