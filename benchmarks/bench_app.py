"""The in-browser app in headless Chromium: page weight, time to ready, first and steady-state prediction.

Builds the app (`kndnet app`, the shipped int8 student), serves it on 127.0.0.1 and drives the page
with Playwright (the `app` extra) on generated 224 px lesions, the size of the shared HAM10000 JPEGs.
A prediction's time is the page's own: decode + preprocessing + ONNX Runtime Web, from choosing the
file to the probabilities (performance.now in the page). Each run opens a fresh browser context, so the
first prediction includes the runtime's first-inference set-up; the steady state is the median of the
following ones. --screenshot writes the page after a prediction on a generated image (the README's).
Usage: python benchmarks/bench_app.py [--runs 3] [--predictions 20] [--screenshot docs/figures/app.png]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kndnet.app import build_app, serve_folder
from kndnet.app.drive import PHONE, chromium, open_app, predict
from kndnet.data import write_synthetic


def one_run(browser, url: str, images: list[Path], predictions: int) -> dict[str, float]:
    """A fresh context (empty cache): time to ready, then the first and later predictions."""
    context = browser.new_context(viewport=PHONE)
    try:
        started = time.perf_counter()
        page = open_app(context, url)
        ready = time.perf_counter() - started
        times = [predict(page, images[i % len(images)], details=True).last for i in range(predictions + 1)]
        return {"ready_s": ready, "first_ms": times[0]["totalMs"], "first_model_ms": times[0]["ms"],
                "steady_ms": statistics.median(t["totalMs"] for t in times[1:]),
                "steady_model_ms": statistics.median(t["ms"] for t in times[1:])}
    finally:
        context.close()


def screenshot(browser, url: str, image: Path, path: Path) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=1)
    try:
        page = open_app(context, url)
        predict(page, image)
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh browser contexts, each a first visit")
    parser.add_argument("--predictions", type=int, default=20, help="steady-state predictions per run")
    parser.add_argument("--screenshot", type=Path, help="write the page after a prediction here (PNG)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        built = build_app(Path(tmp) / "app")
        write_synthetic(Path(tmp) / "synth", lesions_per_class=2, image_size=224, max_images_per_lesion=1, seed=1)
        images = sorted((Path(tmp) / "synth").rglob("*.jpg"))
        print(f"page weight: model {built.model_bytes / 1024:.0f} KB + runtime {built.runtime_bytes / 1024:.0f} KB"
              f" + code {built.code_bytes / 1024:.0f} KB = {built.total_bytes / 1024:.0f} KB "
              f"({built.gzip_bytes / 1024:.0f} KB gzip-compressed)")
        with serve_folder(built.out) as url, chromium() as browser:
            runs = [one_run(browser, url, images, args.predictions) for _ in range(args.runs)]
            for key, label in [("ready_s", "page load to model ready (s)"),
                               ("first_ms", "first prediction (ms)"), ("first_model_ms", "  of which model (ms)"),
                               ("steady_ms", "steady state, median (ms)"),
                               ("steady_model_ms", "  of which model (ms)")]:
                values = [r[key] for r in runs]
                print(f"  {label:32s} median {statistics.median(values):7.1f}  (runs: "
                      + ", ".join(f"{v:.1f}" for v in values) + ")")
            if args.screenshot:
                screenshot(browser, url, images[0], args.screenshot)
                print(f"wrote {args.screenshot}")


if __name__ == "__main__":
    main()
