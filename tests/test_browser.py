"""Click through the real app in headless Chromium (Debian's), the way a person would."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf
from playwright.sync_api import Page

from tests.conftest import browser_page, press_play


@pytest.fixture(scope="module")
def page(live_app: dict, chromium_path: str) -> Iterator[Page]:
    with browser_page(live_app["url"], chromium_path) as page:
        page.get_by_label("Text", exact=True).wait_for()
        yield page


def fetch_wav(page: Page, url: str) -> tuple[int, int]:
    response = page.request.get(url)
    assert response.ok, url
    audio, rate = sf.read(io.BytesIO(response.body()))
    return rate, len(audio)


def test_type_generate_and_hear_the_result(page: Page) -> None:
    text = page.get_by_label("Text", exact=True)
    text.fill("Hello from the browser. This is a test.")
    page.get_by_text("39 / 5,000 characters").wait_for()
    page.get_by_role("button", name="Generate").click()

    link = page.locator("#tts-result a[data-testid='download-link']")
    link.wait_for()
    rate, samples = fetch_wav(page, link.get_attribute("href"))
    assert rate == 24000 and samples > 0
    page.locator("#tts-result").get_by_role("button", name="Play", exact=True).wait_for()

    # the new output shows up in the history and can be replayed from there
    page.locator("#tts-history").get_by_text("Hello from the browser. This is a test.").filter(
        visible=True
    ).first.click()
    page.locator("#tts-replay a[data-testid='download-link']").wait_for()


def test_empty_text_shows_an_error_toast(page: Page) -> None:
    page.get_by_label("Text", exact=True).fill("   ")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("The text is empty. Type something to speak.").wait_for(timeout=10_000)


def test_profile_sets_the_sliders(page: Page) -> None:
    page.get_by_text("Advanced").click()
    page.get_by_label("high quality").check()
    temperature = page.get_by_label("number input for Temperature")
    page.wait_for_function("el => el.value === '0.65'", arg=temperature.element_handle())


def test_clone_a_voice_then_speak_with_it(page: Page, live_app: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.conftest import speak

    clip = speak(
        "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
        tmp_path_factory.mktemp("clone") / "my_reference.wav",
    )
    page.get_by_role("tab", name="Voice cloning").click()
    page.locator("#clone-files input[type=file]").set_input_files(str(clip))
    page.get_by_role("button", name="Check clips").click()
    page.locator("#clone-report").get_by_text("my_reference.wav").filter(visible=True).first.wait_for()
    page.locator("#clone-name textarea, #clone-name input").first.fill("Browser Fox")
    page.get_by_role("button", name="Create voice").click()
    page.locator("#clone-preview a[data-testid='download-link']").wait_for()
    page.locator("#voice-table").get_by_text("Browser Fox").filter(visible=True).first.wait_for()

    page.get_by_role("tab", name="Text to speech").click()
    page.locator("#tts-voice input").click()
    page.get_by_role("option", name="Browser Fox").click()
    page.get_by_label("Text", exact=True).fill("Speaking in the voice I just cloned.")
    page.get_by_role("button", name="Generate").click()
    page.locator("#tts-history").get_by_text("Speaking in the voice I just cloned.").filter(
        visible=True
    ).first.wait_for()
    sidecars = [json.loads(p.read_text()) for p in Path(live_app["data"], "outputs", "tts").rglob("*.json")]
    assert any(m["voice"] == "Browser Fox" and m["text"] == "Speaking in the voice I just cloned." for m in sidecars)


def test_build_a_dataset_from_an_upload_and_edit_a_row(
    page: Page, live_app: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.test_dataset import SENTENCES, make_talk

    video, _ = make_talk(tmp_path_factory.mktemp("dataset-upload"), SENTENCES[:3], name="upload")
    page.get_by_role("tab", name="Dataset").click()
    page.locator("#dataset-name textarea, #dataset-name input").first.fill("Browser Set")
    page.locator("#dataset-files input[type=file]").set_input_files(str(video))
    page.get_by_role("button", name="Build dataset").click()
    page.locator("#dataset-summary").get_by_text("kept 3 clips").wait_for()

    cell = page.locator("#dataset-table").get_by_text("journey of a thousand miles").filter(visible=True).first
    cell.dblclick()
    page.keyboard.press("Control+A")
    page.keyboard.type("An edited sentence.")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Save edits").click()
    page.get_by_text("Saved: 2 train and 1 eval clips.").wait_for()
    folder = Path(live_app["data"], "outputs", "datasets", "browser-set")
    rows = (folder / "metadata_train.csv").read_text() + (folder / "metadata_eval.csv").read_text()
    assert "|An edited sentence.|browser-set" in rows and "journey of a thousand" not in rows


def test_train_from_the_tab_and_hear_a_sample(page: Page, live_app: dict) -> None:
    from tests.test_training import make_dataset

    dataset = make_dataset(Path(live_app["data"], "outputs", "datasets", "ui-train-set"))  # typed as a folder path
    page.get_by_role("tab", name="Training").click()
    field = page.locator("#train-dataset input")
    field.fill(str(dataset))
    field.press("Enter")
    page.get_by_label("Epochs").fill("2")
    page.get_by_label("Save every N steps (0: ~10 saves per run)").fill("2")
    page.get_by_role("button", name="Start training").click()
    page.locator("#train-status").get_by_text("step").first.wait_for()
    page.locator("#train-status").get_by_text("completed").wait_for(timeout=600_000)
    page.locator("#train-losses img").first.wait_for()
    link = page.locator("#train-sample a[data-testid='download-link']")
    link.wait_for()
    rate, samples = fetch_wav(page, link.get_attribute("href"))
    assert rate == 24000 and samples > 0
    press_play(page.locator("#train-sample"))
