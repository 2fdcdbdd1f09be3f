"""The web editor end to end in a real headless browser: Debian's chromium driven by Playwright.

The server runs on a free loopback port in a thread, with the tiny pack and two random boundaries
(see test_server.py). Skipped, with the reason, when Flask, Playwright or chromium is missing;
Playwright never downloads a browser here (``executable_path`` points at the system chromium).
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("flask", reason="the web editor needs Flask: pip install 'flask>=3.0,<4'")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright for Python: pip install playwright")

from idinvert.pack import load_pack  # noqa: E402
from idinvert.server import ServerOptions, create_app, make_server  # noqa: E402
from test_server import make_edit_pack  # noqa: E402

CHROMIUM = os.environ.get("IDINVERT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
TIMEOUT_MS = 30_000
pytestmark = pytest.mark.slow  # a real browser: the slow lane

# The edited face as the page shows it: drawn into a canvas and read back as a data URL.
EDITED_PIXELS = """() => {
  const img = document.getElementById('edited');
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  canvas.getContext('2d').drawImage(img, 0, 0);
  return canvas.toDataURL('image/png');
}"""


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = CHROMIUM if os.path.isfile(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium; or set IDINVERT_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def served(tiny_pack_dir, tmp_path_factory):
    """(base URL, server state) of an editor running in a thread on a free port."""
    folder = tmp_path_factory.mktemp("browser")
    pack = load_pack(make_edit_pack(tiny_pack_dir, folder / "pack"))
    app = create_app(pack, ServerOptions(steps=5, alignment="center", temp_parent=folder, samples={}))
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}/", app.extensions["idinvert"]
    server.shutdown()
    server.server_close()
    app.extensions["idinvert"].close()


@pytest.fixture(scope="module")
def browser(chromium_path):
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        except sync_api.Error as exc:
            pytest.skip(f"chromium at {chromium_path} does not start under Playwright: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


def test_upload_invert_and_move_a_slider_in_a_real_browser(served, browser, tmp_path):
    url, state = served
    photo = tmp_path / "portrait.png"
    rng = np.random.default_rng(3)
    Image.fromarray((rng.random((240, 320, 3)) * 255).astype(np.uint8)).save(photo)

    open_before = {p.name for p in state.store.root.iterdir()}
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("body[data-session=open]", timeout=TIMEOUT_MS)
    assert "Model pack “tiny”" in page.inner_text("#pack-line")
    assert page.locator("#sliders input[type=range]").count() == 2

    page.set_input_files("#file-a", str(photo))
    page.wait_for_selector("body[data-inverted=yes]", timeout=TIMEOUT_MS)  # after the progress bar ran
    page.wait_for_function("() => Number(document.getElementById('edited').dataset.renders) >= 1",
                           timeout=TIMEOUT_MS)
    assert page.locator("#progress-a").is_hidden()
    assert page.locator("#reconstruction-a").evaluate("img => img.complete && img.naturalWidth") == 32
    before = page.evaluate(EDITED_PIXELS)
    renders = int(page.get_attribute("#edited", "data-renders"))

    slider = page.locator("#sliders input[data-attribute=smile]")
    slider.focus()
    page.keyboard.press("End")  # as a user would: the slider jumps to +3
    assert slider.input_value() == "3"
    page.wait_for_function(f"() => Number(document.getElementById('edited').dataset.renders) > {renders}",
                           timeout=TIMEOUT_MS)
    after = page.evaluate(EDITED_PIXELS)
    assert after != before, "moving the slider did not change the shown face"
    assert "ms on the server" in page.inner_text("#latency")
    href = page.get_attribute("#download-photo", "href")
    assert "/download/edited-photo.png?p=" in href and "smile" in href
    assert errors == []

    # Closing the tab sends the beacon: the session and its uploaded photo are deleted.
    (folder,) = [p for p in state.store.root.iterdir() if p.name not in open_before]
    assert (folder / "photo-a.upload").read_bytes() == photo.read_bytes()
    page.close(run_before_unload=True)
    deadline = time.monotonic() + 10
    while folder.exists():
        assert time.monotonic() < deadline, "closing the tab did not end its session"
        time.sleep(0.05)


def test_a_non_image_upload_shows_a_readable_message(served, browser, tmp_path):
    url, _ = served
    bogus = tmp_path / "notes.png"
    bogus.write_text("these are not pixels")
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-session=open]", timeout=TIMEOUT_MS)
    page.set_input_files("#file-a", str(bogus))
    message = page.locator("#message-a.error")
    message.wait_for(timeout=TIMEOUT_MS)
    assert "not an image file" in message.inner_text()
    page.close(run_before_unload=True)

