"""Write the static app: web sources, the model with its class-map output, ONNX Runtime Web's files.

The folder is complete in itself: any static host serves it, and nothing is fetched from elsewhere.
It is built in a staging folder and moved into place (io.staged_folder), so a failed build never
leaves half an app. The model is the int8 export the user names (default: the shipped student) with
the class-map output grafted on (deploy/cam_graph.py): its logits are the export's, unchanged, so no
calibration data is needed and `kndnet predict` on that export gives the same classes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kndnet.app.runtime import LICENSE_FILE, RUNTIME_FILES, WEB, runtime_dir
from kndnet.classes import CLASSES
from kndnet.data.images import MAX_IMAGE_PIXELS
from kndnet.deploy.cam_graph import write_cam_model
from kndnet.errors import CheckpointError
from kndnet.inference import OnnxPredictor
from kndnet.io import atomic_write_json, atomic_write_text, staged_folder
from kndnet.shipped import SHIPPED_NAME, resolve_model

CODE_FILES = ("index.html", "app.js", "classify.js", "preprocess.js", "resample.js", "heatmap.js", "style.css")
WORKER = "sw.js"
MODEL_FILE = "model.onnx"
SPEC_FILE = "model.json"
RUNTIME_FOLDER = "ort"
MAX_FILE_BYTES = 100_000_000  # a photo larger than this is refused before it is read


@dataclass(frozen=True)
class AppBuild:
    """Where the app went and what a first visit downloads (bytes, raw and gzip-compressed)."""
    out: Path
    model_bytes: int
    runtime_bytes: int
    code_bytes: int
    gzip_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.runtime_bytes + self.code_bytes


def resolve_app_model(model: str | None) -> tuple[Path, str]:
    """The ONNX file to ship and its display name: the shipped int8 student unless --model names one."""
    if model in (None, SHIPPED_NAME, f"{SHIPPED_NAME}-int8"):
        return resolve_model(f"{SHIPPED_NAME}-int8"), f"{SHIPPED_NAME}-int8"
    path = Path(model)
    if not path.is_file():
        raise CheckpointError(f"--model {model}: file not found")
    if path.suffix.lower() != ".onnx":
        raise CheckpointError(f"--model {model}: the app runs an ONNX model; export this one first with "
                              f"`kndnet export --model {model} --int8 --calib DATA --out DIR` and pass "
                              "DIR/model_int8.onnx")
    return path, path.stem


def app_spec(model_file: Path, name: str) -> dict[str, Any]:
    """model.json: what the page needs to preprocess and label, read from the ONNX file's own metadata."""
    spec = OnnxPredictor(model_file).spec
    names = {c.code: c.name for c in CLASSES}
    return {"name": name, "file": model_file.name, "bytes": model_file.stat().st_size, "arch": spec.arch,
            "width": spec.width, "input_size": spec.image_size, "load_size": spec.eval_load_size,
            "mean": list(spec.mean), "std": list(spec.std), "calibration_temperature": spec.calibration_temperature,
            "color_constancy": spec.color_constancy,
            "classes": [{"code": code, "name": names[code]} for code in spec.class_codes],
            "limits": {"max_pixels": MAX_IMAGE_PIXELS, "max_bytes": MAX_FILE_BYTES}}


def build_app(out: str | Path, model: str | None = None, runtime: Path | None = None) -> AppBuild:
    """Write the app into `out` (all or nothing); `runtime` is a folder with RUNTIME_FILES (default: npm)."""
    source, name = resolve_app_model(model)
    dist = runtime or runtime_dir()
    out = Path(out)
    with staged_folder(out) as tmp:
        write_cam_model(source, tmp / MODEL_FILE)
        atomic_write_json(tmp / SPEC_FILE, app_spec(tmp / MODEL_FILE, name))
        for file in CODE_FILES:
            shutil.copyfile(WEB / file, tmp / file)
        (tmp / RUNTIME_FOLDER).mkdir()
        for file in RUNTIME_FILES:
            shutil.copyfile(dist / file, tmp / RUNTIME_FOLDER / file)
        if (dist.parent / LICENSE_FILE).is_file():
            shutil.copyfile(dist.parent / LICENSE_FILE, tmp / RUNTIME_FOLDER / LICENSE_FILE)
        _write_worker(tmp)
        weight = page_weight(tmp)  # this build's files only, not older ones the folder may hold
    return replace(weight, out=out)


def _app_files(folder: Path) -> list[str]:
    """Every file of the app a visit may fetch, relative and sorted (the worker and build marker aside)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != WORKER and not p.name.startswith("."))


def _write_worker(folder: Path) -> None:
    """sw.js with this build's file list and a cache name that changes whenever any file does."""
    files = _app_files(folder)
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.encode() + b"\0" + (folder / file).read_bytes())
    text = (WEB / WORKER).read_text()
    text = text.replace("'__KNDNET_VERSION__'", json.dumps(f"kndnet-app-{digest.hexdigest()[:12]}"))
    text = text.replace("__KNDNET_FILES__", json.dumps(["./", *files]))
    atomic_write_text(folder / WORKER, text)


def page_weight(folder: Path) -> AppBuild:
    """Bytes a first visit downloads: model, runtime (ort/ less its licence), code (the rest)."""
    sizes = {"model": 0, "runtime": 0, "code": 0}
    compressed = 0
    for file in [*_app_files(folder), WORKER]:
        path = folder / file
        if file == f"{RUNTIME_FOLDER}/{LICENSE_FILE}":
            continue
        kind = "model" if file == MODEL_FILE else "runtime" if file.startswith(f"{RUNTIME_FOLDER}/") else "code"
        data = path.read_bytes()
        sizes[kind] += len(data)
        compressed += len(gzip.compress(data, compresslevel=6))
    return AppBuild(folder, sizes["model"], sizes["runtime"], sizes["code"], compressed)
