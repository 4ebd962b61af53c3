"""The Projects tab in headless Chromium: a two-voice project built, edited, rendered, regenerated and exported."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import browser_page

SCRIPT = "The night was quiet.\n\n[Alice] Who is there?\n\nNobody answered her."


@pytest.fixture(scope="module")
def page(live_app: dict, chromium_path: str) -> Iterator[Page]:
    with browser_page(live_app["url"], chromium_path) as page:
        page.get_by_role("tab", name="Projects").click()
        page.locator("#project-name").wait_for()
        yield page


def field(page: Page, elem_id: str) -> object:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def choose(page: Page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def cell(page: Page, text: str) -> object:
    return page.locator("#project-segments").get_by_text(text, exact=True).filter(visible=True).first


def project_file(live_app: dict, slug: str) -> dict:
    return json.loads(Path(live_app["data"], "outputs", "projects", slug, "project.json").read_text())


def test_build_a_two_voice_project_and_edit_a_segment(page: Page, live_app: dict) -> None:
    field(page, "project-name").fill("Browser Book")
    choose(page, "project-narrator", "Claribel Dervla")
    field(page, "project-text").fill(SCRIPT)
    field(page, "project-tags").fill("Alice = Daisy Studious")
    page.get_by_role("button", name="Create project").click()
    cell(page, "Who is there?").wait_for()
    cell(page, "Daisy Studious").wait_for()
    segments = project_file(live_app, "browser-book")["chapters"][0]["segments"]
    assert [(s["text"], s["voice"]) for s in segments] == [
        ("The night was quiet.", None), ("Who is there?", "Daisy Studious"), ("Nobody answered her.", None),
    ]  # fmt: skip

    cell(page, "Nobody answered her.").click()
    page.wait_for_function(
        "id => document.querySelector('#project-segment-id textarea, #project-segment-id input').value === id",
        arg=segments[2]["id"],
    )
    page.wait_for_function(  # the editor fills in after the selection settles
        "() => document.querySelector('#project-segment-text textarea').value === 'Nobody answered her.'"
    )
    field(page, "project-segment-text").fill("Nobody answered at all.")
    page.get_by_role("button", name="Save segment").click()
    cell(page, "Nobody answered at all.").wait_for()
    assert project_file(live_app, "browser-book")["chapters"][0]["segments"][2]["text"] == "Nobody answered at all."


def wait_for_file(live_app: dict, check: Callable[[dict], bool], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        project = project_file(live_app, "browser-book")
        if check(project) or time.monotonic() > deadline:
            return project
        time.sleep(0.2)


def test_render_then_regenerate_one_segment(page: Page, live_app: dict) -> None:
    page.get_by_role("button", name="Settings ▼").click()
    takes = page.get_by_label("number input for Takes per segment")
    takes.fill("1")
    takes.press("Enter")
    # as a person sees the slider move before pressing Save: a press sent before it moved sends the old value
    expect(page.get_by_label("range slider for Takes per segment")).to_have_value("1")
    page.get_by_role("button", name="Save settings").click()
    assert wait_for_file(live_app, lambda p: p["settings"]["attempts"] == 1)["settings"]["attempts"] == 1

    page.locator("#project-render").click()
    page.locator("#project-render-report").get_by_text("audio_seconds").wait_for(timeout=300_000)
    segments = wait_for_file(live_app, lambda p: all(s["takes"] for s in p["chapters"][0]["segments"]))
    segments = segments["chapters"][0]["segments"]
    assert [len(s["takes"]) for s in segments] == [1, 1, 1]
    assert {s["state"] for s in segments} <= {"rendered", "flagged"}

    cell(page, "Who is there?").click()
    page.locator("#project-take a[data-testid='download-link']").wait_for()
    page.get_by_role("button", name="Regenerate").click()
    page.locator("#project-takes input").wait_for()
    page.wait_for_function(
        "() => document.querySelector('#project-takes input').value.startsWith('Take 2')", timeout=120_000
    )
    alice = project_file(live_app, "browser-book")["chapters"][0]["segments"][1]
    assert alice["voice"] == "Daisy Studious" and [t["chosen"] for t in alice["takes"]] == [False, True]
    link = page.locator("#project-take a[data-testid='download-link']").get_attribute("href")
    assert link and link.endswith(Path(alice["takes"][1]["file"]).name)


def test_export_and_download_the_zip(page: Page) -> None:
    page.locator("#project-export").click()
    link = page.locator("#project-export-file a[data-testid='download-link']")
    link.wait_for(timeout=300_000)
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    with zipfile.ZipFile(io.BytesIO(response.body())) as archive:
        names = sorted(Path(name).name for name in archive.namelist())
        subtitles = next(archive.read(n).decode() for n in archive.namelist() if n.endswith(".srt"))
    book = [f"browser-book.{kind}" for kind in ("m4b", "mp3", "srt", "vtt", "wav")]
    assert names == [*book, "segments.json"]
    assert "Who is there?" in subtitles and "Nobody answered at all." in subtitles
    page.locator("#project-export-summary").get_by_text("loudness podcast").wait_for()
