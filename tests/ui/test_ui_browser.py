"""The web page driven in headless Chromium (Debian's `chromium`, installed by .ci/install-browser).

The server is the real gradio app, started in this process in a thread on a free port and closed at the end of
the module. Its model is the tiny random checkpoint, whose generate runs for real and is then replaced by a fixed
answer with <loc> tokens (random weights write noise, and a detect test needs objects to appear).

    UI_SCREENSHOT=docs/ui.png pytest tests/test_ui_browser.py -k detect   # also saves the page as docs/ui.png
"""

from __future__ import annotations

import io
import os
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("UI_CHROMIUM", "/usr/bin/chromium")
# Without these, Chromium keeps dialing Google's services, which on a closed network means a stream of refusals.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PROMPT = "detect cat ; eye ; nose"
# chelsea.png (451 x 300): the cat, its two eyes and its nose, as y0 x0 y1 x1 in 1024 bins.
ANSWER_TOKENS = ["<loc0000>", "<loc0000>", "<loc1023>", "<loc0907>", " cat", " ;"]
ANSWER_TOKENS += [" <loc0290>", "<loc0306>", "<loc0511>", "<loc0476>", " eye", " ;"]
ANSWER_TOKENS += [" <loc0368>", "<loc0662>", "<loc0563>", "<loc0783>", " eye", " ;"]
ANSWER_TOKENS += [" <loc0767>", "<loc0540>", "<loc0904>", "<loc0662>", " nose", "<eos>"]
ANSWER_LOGPROBS = [-0.05] * 5 + [-2.0] + [-0.2] * 5 + [-2.0] + [-0.6] * 5 + [-2.0] + [-0.3] * 5 + [-0.01]

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """URL of the page served from a thread of this process; the server is closed when the module is done."""
    from model import Generation
    from ui.app import build_app, launch
    from ui.logic import Workbench

    folder = tmp_path_factory.mktemp("ui") / "paligemma-tiny-random"  # the name the page shows
    folder.symlink_to(checkpoint("tiny")[0], target_is_directory=True)
    bench = Workbench()
    said = bench.load(str(folder))
    assert said.startswith("Loaded"), said
    real_generate = bench.model.generate

    def generate(images, prompts, max_new_tokens=64, **kwargs):
        gens = real_generate(images, prompts, max_new_tokens=min(max_new_tokens, 4), **kwargs)  # runs for real
        if not prompts[0].startswith("detect"):
            return gens
        ids = list(range(len(ANSWER_TOKENS)))
        return [Generation("".join(ANSWER_TOKENS), ids, list(ANSWER_TOKENS), list(ANSWER_LOGPROBS), True)]

    bench.model.generate = generate
    demo = build_app(bench)
    _, url = launch(demo, port=free_port(), block=False)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():  # make test installs it (.ci/install-browser) or stops saying how
        pytest.fail(f"{CHROMIUM} is missing: run .ci/install-browser (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, server):
    """A fresh page on the app; fails the test if the page asked for anything outside the local server."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    sync_api.expect.set_options(timeout=30_000)  # an answer on a busy 2-core machine can take longer than 5 s
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((server, "data:", "blob:")) else outside.append(r.url))
    page.goto(server)
    sync_api.expect(page.locator("#ui-generate")).to_be_visible()
    yield page
    context.close()
    assert not outside, f"the page fetched from outside the server: {outside}"


def upload(page, path: Path) -> None:
    page.locator("#ui-image input[type=file]").set_input_files(str(path))


@pytest.mark.timeout(120)
def test_detect_draws_the_objects_and_lists_them(page, server, photo_paths, tmp_path):
    expect = sync_api.expect
    photo = photo_paths[1]  # chelsea.png, a cat
    upload(page, photo)
    expect(page.locator("#ui-message")).to_contain_text("chelsea.png: 451 × 300 px")
    page.locator("#ui-task").get_by_label("detect", exact=True).check()
    page.locator("#ui-classes").get_by_role("textbox").fill("cat ; eye ; nose")
    page.locator("#ui-generate").click()

    table = page.locator("#ui-objects")
    expect(table).to_contain_text("nose")
    expect(page.locator("#ui-message")).to_contain_text(f"Prompt {PROMPT}")
    for label in ("cat", "eye", "nose"):
        expect(table).to_contain_text(label)
    expect(table).to_contain_text("0.951")  # the cat's score: exp(-0.05)
    expect(page.locator("#ui-raw").get_by_role("textbox")).to_have_value("".join(ANSWER_TOKENS))

    drawn_img = page.locator("#ui-annotated img")
    expect(drawn_img).to_be_visible()
    src = drawn_img.get_attribute("src")
    drawn = Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")
    original = Image.open(photo).convert("RGB")
    assert drawn.size == original.size and drawn.tobytes() != original.tobytes()

    if os.environ.get("UI_SCREENSHOT"):
        page.locator("#ui-task").scroll_into_view_if_needed()
        page.evaluate("window.scrollTo(0, 0)")
        shot = tmp_path / "ui.png"
        page.screenshot(path=str(shot), full_page=True)
        shutil.copyfile(shot, os.environ["UI_SCREENSHOT"])


@pytest.mark.timeout(120)
def test_unreadable_image_is_reported_on_the_page_and_the_app_keeps_serving(page, photo_paths, tmp_path):
    expect = sync_api.expect
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    upload(page, broken)
    message = page.locator("#ui-message")
    expect(message).to_contain_text("Cannot read image broken.jpg")
    page.locator("#ui-generate").click()
    expect(message).to_contain_text("Error: Cannot read image broken.jpg")
    expect(page.get_by_text("Traceback")).to_have_count(0)

    upload(page, photo_paths[0])  # a good image afterwards: the same page and server answer it
    expect(message).to_contain_text("astronaut.png: 512 × 512 px")
    page.locator("#ui-generate").click()
    expect(message).to_contain_text("Prompt caption en")
    expect(message).to_contain_text("tokens in")
