"""ONNX Runtime Web for the app, installed from the npm registry with the versions in web/package-lock.json.

`npm ci` runs once per lock file in a cache folder (never inside the package), into a staging folder
renamed into place, so a killed install is never mistaken for a finished one. Only the two files the
WASM bundle loads are copied into an app: the ES-module bundle (which embeds its loader) and the SIMD
WASM binary; the WebGPU/JSEP/JSPI variants are not needed for `numThreads = 1` on the CPU.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from kndnet.errors import KNDNetError

WEB = Path(__file__).parent / "web"
PACKAGE = "onnxruntime-web"
RUNTIME_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")
LICENSE_FILE = "LICENSE"


def cache_root() -> Path:
    """$KNDNET_CACHE, else $XDG_CACHE_HOME/kndnet, else ~/.cache/kndnet."""
    if os.environ.get("KNDNET_CACHE"):
        return Path(os.environ["KNDNET_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kndnet"


def _lock_key() -> str:
    return hashlib.sha256((WEB / "package-lock.json").read_bytes()).hexdigest()[:16]


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise KNDNetError("`kndnet app` needs Node.js and npm to fetch ONNX Runtime Web once (npm ci); install "
                          "them (https://nodejs.org, or `apt-get install nodejs npm`) and run it again")
    return npm


def _install(target: Path) -> None:
    """npm ci into a staging sibling of `target`, renamed onto it when it succeeded."""
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(WEB / name, staging / name)
    command = [_npm(), "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        done = subprocess.run(command, cwd=staging, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise KNDNetError(f"`npm ci` for {PACKAGE} failed in {staging} (exit {done.returncode}): "
                              f"{done.stderr.strip()[-600:]}; check that the npm registry is reachable")
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def runtime_dir(cache: Path | None = None) -> Path:
    """The folder holding RUNTIME_FILES, installing them with npm on first use."""
    target = (cache or cache_root()) / "app-runtime" / _lock_key()
    dist = target / "node_modules" / PACKAGE / "dist"
    if not all((dist / name).is_file() for name in RUNTIME_FILES):
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        _install(target)
    missing = [name for name in RUNTIME_FILES if not (dist / name).is_file()]
    if missing:
        raise KNDNetError(f"{dist}: {PACKAGE} has no {', '.join(missing)}; the version pinned in "
                          f"{WEB / 'package-lock.json'} does not match this kndnet")
    return dist
