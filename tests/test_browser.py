"""Click through the real app in headless Chromium (Debian's), the way a person would."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import soundfile as sf
from playwright.sync_api import Page, sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def page(live_app: dict, chromium_path: str) -> Iterator[Page]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(live_app["url"])
        page.get_by_label("Text", exact=True).wait_for()
        yield page
        browser.close()


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
