"""`kndnet predict` and `kndnet explain`: run a model on image files, one bad file never stops the rest.

Each file is decoded on its own (EXIF, grayscale, alpha, 16-bit and size limits handled by
data.images); a file that fails gets a one-line error and the exit code reports it.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kndnet.checkpoint import ModelSpec
from kndnet.classes import CLASSES, normalise_label
from kndnet.data.formats import IMAGE_SUFFIXES, image_files_under
from kndnet.errors import ConfigError, DataError, ImageError
from kndnet.inference import load_image, open_predictor, predict_probs
from kndnet.shipped import resolve_model

BATCH = 32


@dataclass
class FileResult:
    path: str
    probs: np.ndarray | None = None
    error: str = ""


def collect_files(inputs: list[str]) -> list[Path]:
    """Files as given, and image files under given folders (sorted).

    Raises DataError when a given folder holds no image, or nothing is left to predict: an empty
    answer with exit code 0 reads as "all fine".
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = image_files_under(path)
            if not found:
                raise DataError(f"{path}: no image files in this folder (looked for "
                                f"{', '.join(sorted(IMAGE_SUFFIXES))}, in sub-folders too)")
            files += found
        else:
            files.append(path)
    return files


def check_top_k(k: int) -> int:
    if not 1 <= k <= len(CLASSES):
        raise ConfigError(f"--top-k {k}: choose 1 to {len(CLASSES)} (the number of classes)")
    return k


def overlay_names(paths: list[str]) -> list[str]:
    """One overlay file name per input: `<stem>_gradcam.png`, made unique when two inputs share a stem.

    Why: two folders often hold files of the same name; one overlay must not overwrite another.
    The parent folder's name is prefixed on a clash, then a counter if that still clashes.
    """
    stems = [Path(p).stem for p in paths]
    names, used = [], set()
    for path, stem in zip(paths, stems):
        name = stem if stems.count(stem) == 1 else f"{Path(path).parent.name}_{stem}"
        base, n = name, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        names.append(f"{name}_gradcam.png")
    return names


def _decode(files: list[Path], spec: ModelSpec) -> tuple[list[torch.Tensor], list[FileResult]]:
    images, results = [], []
    for path in files:
        try:
            images.append(load_image(path, spec))
            results.append(FileResult(str(path)))
        except ImageError as err:
            results.append(FileResult(str(path), error=err.reason))
    return images, results


def predict_files(files: list[Path], model: str | None, tta: str = "none",
                  progress: bool = True) -> list[FileResult]:
    predictor = open_predictor(resolve_model(model))
    out: list[FileResult] = []
    for start in tqdm(range(0, len(files), BATCH), disable=not progress or len(files) <= BATCH,
                      desc="predict", unit="batch", file=sys.stderr):
        images, results = _decode(files[start:start + BATCH], predictor.spec)
        if images:
            probs = predict_probs(predictor, torch.stack(images), tta)
            for result, p in zip([r for r in results if not r.error], probs):
                result.probs = p
        out += results
    return out


def top_k(probs: np.ndarray, k: int) -> list[tuple[str, str, float]]:
    order = np.argsort(-probs)[:k]
    return [(CLASSES[i].code, CLASSES[i].name, float(probs[i])) for i in order]


def format_results(results: list[FileResult], k: int, fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{"file": r.path, "error": r.error or None,
                            "top": [{"class": c, "name": n, "probability": round(p, 4)}
                                    for c, n, p in (top_k(r.probs, k) if r.probs is not None else [])]}
                           for r in results], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["file", "rank", "class", "name", "probability", "error"])
        for r in results:
            if r.error:
                writer.writerow([r.path, "", "", "", "", r.error])
            for rank, (c, n, p) in enumerate(top_k(r.probs, k) if r.probs is not None else [], 1):
                writer.writerow([r.path, rank, c, n, f"{p:.4f}", ""])
        return buffer.getvalue().rstrip("\n")
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.path}: ERROR {r.error}")
            continue
        ranked = "  ".join(f"{c} {p:6.1%}" for c, _, p in top_k(r.probs, k))
        best = top_k(r.probs, 1)[0]
        lines.append(f"{r.path}: {best[1]} | {ranked}")
    return "\n".join(lines)


def explain_files(inputs: list[str], model: str | None, out_dir: Path,
                  target: str | None = None) -> list[FileResult]:
    """Write <stem>_gradcam.png per image; returns the files that failed (and prints why)."""
    from kndnet.checkpoint import load_model
    from kndnet.explain import explain_batch, save_overlay
    path = resolve_model(model)
    if path.suffix in (".onnx", ".tflite"):
        raise DataError(f"Grad-CAM needs gradients: pass the PyTorch checkpoint (.ckpt), not the {path.suffix}")
    net, spec = load_model(path)
    target_index = _target_index(target)
    images, results = _decode(collect_files(inputs), spec)
    good = [r for r in results if not r.error]
    names = overlay_names([r.path for r in good])
    for start in range(0, len(images), BATCH):
        batch = torch.stack(images[start:start + BATCH])
        cams, probs = explain_batch(net, spec, batch, target_index)
        for i, (image, cam, p) in enumerate(zip(batch, cams, probs)):
            save_overlay(image, cam, p, out_dir / names[start + i], target_index)
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"{r.path}: ERROR {r.error}", file=sys.stderr)
    print(f"wrote {len(good)} Grad-CAM overlay(s) to {out_dir}")
    return failed


def _target_index(target: str | None) -> int | None:
    if target is None:
        return None
    code = normalise_label(target)
    if code is None:
        raise DataError(f"--target-class {target!r} is not a class; use one of "
                        + ", ".join(c.code for c in CLASSES))
    return next(c.index for c in CLASSES if c.code == code)
