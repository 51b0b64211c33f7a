"""The search page in a real headless Chromium (Debian's ``chromium``, driven by Playwright's Python
driver; Playwright's own browser download is never used): a typed query, an uploaded image and
typed class names each show what SearchIndex answers, and an API error is shown on the page."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from test_serve import OPTIONS, LiveServer, make_index, png_bytes
from vislang.serve.app import create_app

CHROMIUM = shutil.which("chromium") or next((p for p in ("/usr/bin/chromium",) if Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it with apt-get, which failed here)"
)
CARDS = """els => els.map(e => [Number(e.dataset.id), e.dataset.key,
                               e.querySelector('.caption') ? e.querySelector('.caption').textContent : null])"""
THUMBS_LOADED = "() => [...document.querySelectorAll('.card img.thumb')].every(i => i.complete && i.naturalWidth > 0)"


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_run):
    index, images = make_index(tmp_path_factory, tiny_run)
    with LiveServer(create_app(index, OPTIONS)) as server, sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []  # script errors and refused content (CSP) on the page
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        page.set_default_timeout(60_000)
        page.goto(server.url + "/")
        page.wait_for_function("() => document.getElementById('info').textContent.includes('images')")
        yield index, images, page, errors
        browser.close()


def shown(hits) -> list[list]:
    return [[h.id, h.key, h.caption] for h in hits]


def wait_for_status(page, words: str) -> None:
    page.wait_for_function("words => document.getElementById('status').textContent.includes(words)", arg=words)


def test_a_typed_query_shows_the_index_results(site, tmp_path):
    index, images, page, errors = site
    assert f"{len(images)} images, with captions" in page.inner_text("#info")
    page.fill("#q", "a green square")
    page.select_option("#k", "10")
    page.click("#search")
    wait_for_status(page, "green square")
    assert page.eval_on_selector_all(".card", CARDS) == shown(index.text_to_images("a green square", 10))
    page.wait_for_function(THUMBS_LOADED)
    scores = page.eval_on_selector_all(".card .score", "els => els.map(e => e.textContent)")
    assert scores == [f"{h.score:.4f}" for h in index.text_to_images("a green square", 10)]
    page.fill("#q", "a blue circle")
    page.press("#q", "Enter")  # the form submits on Enter too
    wait_for_status(page, "blue circle")
    assert page.eval_on_selector_all(".card", CARDS) == shown(index.text_to_images("a blue circle", 10))
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not errors, errors


def test_an_uploaded_image_finds_images_captions_and_labels(site, tmp_path):
    index, images, page, errors = site
    query = tmp_path / "query.png"
    query.write_bytes(png_bytes(images[7]))
    page.set_input_files("#file", str(query))
    page.select_option("#k", "10")
    page.click("#by-image")
    wait_for_status(page, "images like the image")
    assert page.eval_on_selector_all(".card", CARDS) == shown(index.image_to_images(images[7], 10))
    page.click("#to-text")
    wait_for_status(page, "captions for the image")
    assert page.eval_on_selector_all(".card", CARDS) == shown(index.image_to_texts(images[7], 10))
    page.fill("#classes", "red circle, blue square, green circle")
    page.click("#label")
    page.wait_for_selector(".label")
    labels = page.eval_on_selector_all(".label", "els => els.map(e => [e.dataset.name, Number(e.dataset.prob)])")
    expected = index.labels(images[7], ["red circle", "blue square", "green circle"])
    assert [name for name, _ in labels] == [name for name, _ in expected]
    assert [p for _, p in labels] == pytest.approx([p for _, p in expected], abs=1e-5)
    assert not errors, errors


def test_an_api_error_is_shown_on_the_page_and_the_page_goes_on(site, tmp_path):
    index, _, page, errors = site
    fake = tmp_path / "notes.png"
    fake.write_bytes(b"this is text with an image's name")
    page.set_input_files("#file", str(fake))
    page.click("#by-image")
    page.wait_for_selector("#error", state="visible")
    assert "not an image" in page.inner_text("#error")
    page.fill("#q", "a red square")
    page.click("#search")
    wait_for_status(page, "red square")
    assert not page.is_visible("#error")
    assert page.eval_on_selector_all(".card", CARDS) == shown(index.text_to_images("a red square", 10))
    assert not errors, errors
