"""The screenshot in docs/search.md: the search page over a small index of the built-in world.

    python docs/search_screenshot.py [--model runs/demo] [--images 60] [--out docs/search.png]

The model is a trained world CLIP (``vislang demo`` writes one); the index is ~60 world test
images with their captions, written with tests/index_helpers.py (the index layout, without
``vislang index``); the page is served on loopback and driven in Debian's headless chromium
with Playwright: an image is uploaded and labelled with the world's shape names, then a text
query for the commonest object in the index is searched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def world_images(n: int, size: int) -> tuple[list, list[str]]:
    from PIL import Image

    from vislang.data.world import World

    world = World(size)
    samples = [world.sample("test", i) for i in range(n)]
    return [Image.fromarray(image) for image, _, _ in samples], [caption for _, caption, _ in samples]


def commonest_object(n: int) -> str:
    """'a COLOUR SHAPE' for the (colour, shape) that occurs most often among the indexed scenes."""
    from vislang.data.world import World

    world = World(48)
    counts = Counter((o.color, o.shape) for i in range(n) for o in world.sample("test", i)[2].objects)
    colour, shape = counts.most_common(1)[0][0]
    return f"a {colour} {shape}"


def serve(app) -> tuple[object, threading.Thread, str]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}/"


def shoot(url: str, query_image: Path, query: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from vislang.data.world import SHAPES

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=args)
        page = browser.new_page(viewport={"width": 1240, "height": 900}, device_scale_factor=1)
        page.goto(url)
        page.wait_for_function("() => document.getElementById('info').textContent.includes('images')")
        page.set_input_files("#file", str(query_image))
        page.fill("#classes", ", ".join(SHAPES))
        page.click("#label")
        page.wait_for_selector(".label")
        page.select_option("#k", "10")
        page.fill("#q", query)
        page.click("#search")
        page.wait_for_selector(".card")
        page.wait_for_function("() => [...document.querySelectorAll('.card img')].every(i => i.complete)")
        page.screenshot(path=str(out), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT.parent / "runs" / "demo"), help="a trained world CLIP")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=96, help="rendered side in pixels (the model resizes)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "search.png"))
    args = parser.parse_args()

    from index_helpers import build_test_index
    from vislang.search.searcher import SearchIndex
    from vislang.serve.app import create_app
    from vislang.serve.limits import ServeOptions

    images, captions = world_images(args.images + 1, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        build_test_index(root, Path(args.model), images[:-1], captions[:-1], part_size=16)
        query_image = Path(tmp) / "query.png"
        images[-1].save(query_image)  # a test image that is not in the index
        index = SearchIndex(root)
        server, thread, url = serve(create_app(index, ServeOptions(model=Path(args.model).name)))
        query = commonest_object(args.images)
        try:
            shoot(url, query_image, query, Path(args.out))
        finally:
            server.should_exit = True
            thread.join(10)
    print(f"{args.out}: the page after labelling an upload and searching {query!r} ({args.images} images)")


if __name__ == "__main__":
    main()
