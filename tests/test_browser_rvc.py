"""The Voice conversion tab in headless Chromium: upload an RVC model, convert a clip, hear both."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import browser_page, speak
from tests.test_browser import fetch_wav


@pytest.fixture(scope="module")
def page(live_app: dict, rvc_kit: Path, chromium_path: str) -> Iterator[Page]:
    support = Path(live_app["data"], "models", "rvc", "support")
    support.mkdir(parents=True, exist_ok=True)
    for name in ("hubert_base.pt", "rmvpe.pt"):  # the support weights, linked rather than copied
        if not (support / name).exists():
            os.symlink(rvc_kit / "support" / name, support / name)
    with browser_page(live_app["url"], chromium_path) as page:
        page.get_by_label("Text", exact=True).wait_for()
        yield page


def test_upload_a_model_and_convert_a_clip(
    page: Page, live_app: dict, rvc_kit: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    clip = speak("A sentence to convert in the browser.", tmp_path_factory.mktemp("rvc-browser") / "to_convert.wav")
    page.get_by_role("tab", name="Voice conversion").click()
    page.locator("#rvc-upload-pth input[type=file]").set_input_files(str(rvc_kit / "tiny_v1_40k.pth"))
    page.locator("#rvc-upload-index input[type=file]").set_input_files(str(rvc_kit / "tiny_v1.index"))
    page.locator("#rvc-upload-name textarea, #rvc-upload-name input").first.fill("Browser Voice")
    page.get_by_role("button", name="Add model").click()
    page.locator("#rvc-models").get_by_text("Browser Voice").filter(visible=True).first.wait_for()
    page.locator("#rvc-summary").get_by_text("v1, 40 kHz, f0").wait_for()

    page.locator("#rvc-input input[type=file]").set_input_files(str(clip))
    page.get_by_label("stable").check()
    # the profile fills the sliders (a change event); a Convert pressed before that sends the old values
    index_rate = page.locator("input[type=number][aria-label*='Index rate']")
    expect(index_rate).to_have_value("0.7")
    page.get_by_role("button", name="Convert", exact=True).click()
    link = page.locator("#rvc-result a[data-testid='download-link']")
    link.wait_for(timeout=120_000)
    rate, samples = fetch_wav(page, link.get_attribute("href"))
    assert rate == 40000 and samples > 0
    page.locator("#rvc-original").get_by_role("button", name="Play", exact=True).wait_for()
    page.locator("#rvc-result").get_by_role("button", name="Play", exact=True).wait_for()

    sidecars = [json.loads(p.read_text()) for p in Path(live_app["data"], "outputs", "rvc").rglob("*.json")]
    mine = [m for m in sidecars if m["rvc"]["model"] == "Browser Voice"]
    assert mine and mine[0]["rvc"]["profile"] == "stable" and mine[0]["rvc"]["params"]["index_rate"] == 0.7
    assert mine[0]["source"]["file"].endswith(".wav")


def test_tts_with_rvc_post_processing(page: Page) -> None:
    page.get_by_role("tab", name="Text to speech").click()
    page.get_by_text("RVC voice conversion").click()
    page.locator("#tts-rvc-enabled input").check()
    page.locator("#tts-rvc-model input").click()
    page.get_by_role("option", name="Browser Voice").click()
    page.get_by_label("Text", exact=True).fill("Spoken, then converted.")
    page.get_by_role("button", name="Generate").click()
    page.locator("#tts-history").get_by_text("Spoken, then converted.").filter(visible=True).first.wait_for()
    rate, samples = fetch_wav(page, page.locator("#tts-result a[data-testid='download-link']").get_attribute("href"))
    assert rate == 40000 and samples > 0
