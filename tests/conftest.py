"""Shared fixtures: a small synthetic HAM10000-layout data set, generated once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kndnet.config import DataConfig
from kndnet.data import prepare, write_synthetic

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000"

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, lesions_per_class=12, image_size=64, seed=0)
    return out


@pytest.fixture(scope="session")
def synth_manifest(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("prepared")
    return prepare(DataConfig(path=str(synth_dir)), run).manifest_path


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "HAM10000_metadata.csv").is_file():
        pytest.fail(f"real HAM10000 data expected at {REAL_DATA}")
    return REAL_DATA
