import pytest

from core.errors import InvalidInput
from core.xtts.languages import CHAR_LIMITS, normalize_language
from core.xtts.profiles import PROFILES, resolve_params
from core.xtts.text import split_for_synthesis, split_sentences, validate_text

LONG_EN = (
    "The studio keeps one model in memory. It splits long text into sentences! Does it keep every word? "
    "It does, and it packs short ones together; then it speaks them one by one. "
) * 6


def words(chunks: list[str]) -> list[str]:
    return " ".join(chunks).split()


def test_validate_text() -> None:
    assert validate_text("  hi  ", max_chars=10) == "hi"
    with pytest.raises(InvalidInput, match="empty"):
        validate_text("   \n ", max_chars=10)
    with pytest.raises(InvalidInput, match="11 characters; the limit is 10"):
        validate_text("x" * 11, max_chars=10)


def test_long_english_is_split_within_the_limit_without_losing_words() -> None:
    chunks = split_for_synthesis(LONG_EN, "en", target_chars=120)
    assert len(chunks) > 5
    assert all(len(c) <= 120 for c in chunks)
    assert words(chunks) == LONG_EN.split()


def test_sentences_and_packing() -> None:
    assert split_sentences("Hello there. How are you? Fine!", "en") == ["Hello there.", "How are you?", "Fine!"]
    # short sentences are packed up to the target, never beyond the language limit
    assert split_for_synthesis("Hi. Yes. No.", "en", target_chars=100) == ["Hi. Yes. No."]
    assert split_for_synthesis("Hi. Yes. No.", "en", target_chars=5) == ["Hi.", "Yes.", "No."]
    assert split_for_synthesis("Hi. Yes. No.", "en", target_chars=100, first_alone=True) == ["Hi.", "Yes. No."]


def test_run_on_sentence_is_cut_at_clauses_then_spaces() -> None:
    run_on = ", ".join(f"clause number {i} goes on" for i in range(40))
    chunks = split_for_synthesis(run_on, "en")
    assert all(len(c) <= CHAR_LIMITS["en"] for c in chunks)
    assert words(chunks) == run_on.split()
    no_punct = " ".join(["word"] * 200)
    assert all(len(c) <= CHAR_LIMITS["en"] for c in split_for_synthesis(no_punct, "en"))


def test_cjk_and_languages_without_pysbd() -> None:
    zh = "你好。今天天气很好！我们去公园吧？" * 10
    chunks = split_for_synthesis(zh, "zh-cn")
    assert all(len(c) <= CHAR_LIMITS["zh-cn"] for c in chunks)
    assert "".join(chunks) == zh
    pt = "Olá, tudo bem? Sim. Vamos ao parque hoje."
    assert split_sentences(pt, "pt") == ["Olá, tudo bem?", "Sim.", "Vamos ao parque hoje."]


def test_language_normalisation() -> None:
    assert normalize_language("EN") == "en"
    assert normalize_language("zh") == "zh-cn"
    with pytest.raises(InvalidInput, match="Unknown language 'xx'"):
        normalize_language("xx")
    with pytest.raises(InvalidInput, match="Choose one of: en"):
        normalize_language("de", supported=["en"])


def test_profiles_and_overrides() -> None:
    fast, hq = resolve_params("fast"), resolve_params("High Quality")
    assert fast == PROFILES["fast"] and hq == PROFILES["high quality"]
    assert fast.chunk_chars < PROFILES["balanced"].chunk_chars < hq.chunk_chars
    tuned = resolve_params("balanced", temperature=0.5, top_k=12.0, speed=None)
    assert tuned.temperature == 0.5 and tuned.top_k == 12 and isinstance(tuned.top_k, int)
    assert tuned.speed == PROFILES["balanced"].speed  # None leaves the profile's value
    assert "chunk_chars" not in tuned.generation_kwargs()


@pytest.mark.parametrize(
    ("profile", "overrides", "message"),
    [
        ("turbo", {}, "Unknown profile 'turbo'"),
        ("fast", {"temperature": 3.0}, "temperature must be between"),
        ("fast", {"top_k": "many"}, "top_k must be a number"),
        ("fast", {"beam": 2}, "Unknown synthesis parameter"),
    ],
)
def test_bad_profile_requests(profile: str, overrides: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        resolve_params(profile, **overrides)
