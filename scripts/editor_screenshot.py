"""Take the screenshot of the web editor shown in the README (docs/editor.png).

    python scripts/editor_screenshot.py [--model PACK] [--photo PHOTO] [--second PHOTO] [--out docs/editor.png]

Starts ``idinvert serve``'s app on a free loopback port, opens it in Debian's chromium through
Playwright (``executable_path``; no browser download), uploads the photo (default: scikit-image's
astronaut), waits for the inversion (and the tuning, when the page tunes), moves the age slider 15 years up (the
first sliders by raw distances for a pack without units), adds a second photo when given, and
saves a full-page screenshot. Needs flask, playwright and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

from idinvert.pack import load_pack
from idinvert.server import ServerOptions, create_app, make_server

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
WAIT_MS = 600_000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model pack (default: the bundled default pack)")
    p.add_argument("--photo", type=Path, default=None, help="photo 1 (default: scikit-image's astronaut)")
    p.add_argument("--second", type=Path, default=None, help="photo 2, for the interpolation slider")
    p.add_argument("--out", type=Path, default=Path("docs/editor.png"))
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="editor-shot-"))
    photo = args.photo
    if photo is None:
        from skimage import data

        photo = work / "astronaut.png"
        Image.fromarray(data.astronaut()).save(photo)
    app = create_app(load_pack(args.model), ServerOptions(steps=args.steps, temp_parent=work))
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.port}/"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
            page.wait_for_selector("body[data-session=open]", timeout=WAIT_MS)
            page.set_input_files("#file-a", str(photo))
            page.wait_for_selector("body[data-inverted=yes]", timeout=WAIT_MS)
            if page.locator("#faithful:checked").count():  # wait for the tuned, faithful face
                page.wait_for_selector("#faithful-time:not(:empty)", timeout=WAIT_MS)  # (the page's CSP: no eval)
            sliders = page.locator("#sliders input[type=range]")
            age = page.locator("#sliders input[data-unit=years]")
            if age.count():  # in units: 15 years older than the person's predicted age
                age.first.evaluate("el => { el.value = String(Number(el.value) + 15); "
                                   "el.dispatchEvent(new Event('input')); }")
            else:  # raw distances
                for k, value in zip(range(sliders.count()), ("1.5", "-1.0")):
                    sliders.nth(k).evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
                                            value)
            if args.second is not None:
                page.set_input_files("#file-b", str(args.second))
                page.wait_for_selector("#combine:not([hidden])", timeout=WAIT_MS)
            time.sleep(1.5)  # the last slider's render
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        server.shutdown()
        app.extensions["idinvert"].close()
    print(f"wrote {args.out} ({url}, pack {app.extensions['idinvert'].editor.pack.name!r})")


if __name__ == "__main__":
    main()
