"""Drive a served app in headless Chromium with Playwright for Python (the `app` extra).

Used by the browser tests and benchmarks/bench_app.py. Playwright cannot download browsers here, so
the system Chromium (Debian's `chromium` package) is launched through `executable_path`: set
KNDNET_CHROMIUM to use another binary. The page's automation hooks are described in web/app.js.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kndnet.errors import KNDNetError

PHONE = {"width": 360, "height": 780}
TIMEOUT_MS = 120_000


def chromium_path() -> str:
    """$KNDNET_CHROMIUM, else `chromium` on PATH; a KNDNetError saying how to install it otherwise."""
    found = os.environ.get("KNDNET_CHROMIUM") or shutil.which("chromium")
    if not found:
        raise KNDNetError("no Chromium found: install Debian's package (`apt-get install -y chromium`) or set "
                          "KNDNET_CHROMIUM to a Chromium binary")
    return found


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright Browser) for the block."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise KNDNetError("the app's browser tests need Playwright for Python: pip install -e '.[app]'") from None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Prediction:
    """What the page shows after one file: the hooks' values, or its error message."""
    state: str
    status: str
    top1: str = ""
    probs: dict[str, float] | None = None
    last: dict[str, Any] | None = None  # window.kndnetApp.last: pixels, probs, top, cam, ms, totalMs


def open_app(context: Any, url: str) -> Any:
    """A page on the app, once its model has loaded (raises with the page's message if it did not)."""
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("document.body.dataset.state != 'loading'", timeout=TIMEOUT_MS)
    if page.get_attribute("body", "data-state") != "ready":
        raise KNDNetError(f"the app did not load: {page.inner_text('[data-testid=status]')}")
    return page


def predict(page: Any, path: str | Path, details: bool = False, pixels: bool = False) -> Prediction:
    """Choose `path` in the file input and wait until the page has answered (a result or a message).

    details: also read window.kndnetApp.last (probabilities, class map, timings); pixels: with the model's
    input pixels too (49,152 numbers at 128 px, slow to pass, so only for parity checks)."""
    runs = int(page.get_attribute("body", "data-runs"))
    page.set_input_files("[data-testid=file]", str(path))
    page.wait_for_function(f"Number(document.body.dataset.runs) > {runs}", timeout=TIMEOUT_MS)
    state = page.get_attribute("body", "data-state")
    status = page.inner_text("[data-testid=status]")
    if state != "done":
        return Prediction(state, status)
    last = None
    if details or pixels:
        last = page.evaluate("(all) => ({...window.kndnetApp.last, pixels: all ? Array.from(window.kndnetApp"
                             ".last.pixels) : null})", pixels)
    return Prediction(state, status, page.inner_text("[data-testid=top1]"),
                      json.loads(page.text_content("[data-testid=probs]")), last)
