"""The languages XTTS v2 speaks, with the names the UI shows."""

from __future__ import annotations

from core.errors import InvalidInput

LANGUAGES: dict[str, str] = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "pl": "Polish",
    "tr": "Turkish",
    "ru": "Russian",
    "nl": "Dutch",
    "cs": "Czech",
    "ar": "Arabic",
    "zh-cn": "Chinese",
    "hu": "Hungarian",
    "ko": "Korean",
    "ja": "Japanese",
    "hi": "Hindi",
}

# Characters per chunk the XTTS tokenizer accepts before it warns of truncation
# (the limits coqui-tts ships in its tokenizer). Chunks are kept under these.
CHAR_LIMITS: dict[str, int] = {
    "en": 250,
    "de": 253,
    "fr": 273,
    "es": 239,
    "it": 213,
    "pt": 203,
    "pl": 224,
    "zh-cn": 82,
    "ar": 166,
    "cs": 186,
    "ru": 182,
    "nl": 251,
    "tr": 226,
    "ja": 71,
    "hu": 224,
    "ko": 95,
    "hi": 150,
}


def normalize_language(code: str | None, *, supported: list[str] | None = None) -> str:
    """Return the canonical code for ``code`` or raise :class:`InvalidInput`.

    ``supported`` narrows the check to what a loaded model declares.
    """
    raw = (code or "").strip().lower()
    if raw == "zh":
        raw = "zh-cn"
    allowed = supported if supported else list(LANGUAGES)
    if raw not in allowed:
        shown = ", ".join(allowed)
        raise InvalidInput(f"Unknown language '{code}'. Choose one of: {shown}.")
    return raw


def choices() -> list[tuple[str, str]]:
    """(label, code) pairs for a dropdown."""
    return [(f"{name} ({code})", code) for code, name in LANGUAGES.items()]


# A short sentence per language for voice previews.
PREVIEW_SENTENCES: dict[str, str] = {
    "en": "Hello! This is how my new voice sounds.",
    "es": "¡Hola! Así suena mi nueva voz.",
    "fr": "Bonjour ! Voici comment sonne ma nouvelle voix.",
    "de": "Hallo! So klingt meine neue Stimme.",
    "it": "Ciao! Ecco come suona la mia nuova voce.",
    "pt": "Olá! É assim que soa a minha nova voz.",
    "pl": "Cześć! Tak brzmi mój nowy głos.",
    "tr": "Merhaba! Yeni sesim böyle duyuluyor.",
    "ru": "Привет! Вот как звучит мой новый голос.",
    "nl": "Hallo! Zo klinkt mijn nieuwe stem.",
    "cs": "Ahoj! Takhle zní můj nový hlas.",
    "ar": "مرحبا! هكذا يبدو صوتي الجديد.",
    "zh-cn": "你好！这就是我的新声音。",
    "hu": "Szia! Így szól az új hangom.",
    "ko": "안녕하세요! 제 새 목소리는 이렇게 들립니다.",
    "ja": "こんにちは！これが私の新しい声です。",
    "hi": "नमस्ते! मेरी नई आवाज़ ऐसी सुनाई देती है।",
}
