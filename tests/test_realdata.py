"""Real HAM10000 images from ../shared/data/ham10000 (marked realdata; CI runs them)."""

from __future__ import annotations

import pytest

from kndnet.cli import main
from kndnet.data.manifest import load_manifest

pytestmark = pytest.mark.realdata

EXPECTED = {"nv": 4323, "bkl": 583, "mel": 491, "bcc": 264, "akiec": 183, "vasc": 80, "df": 60}


@pytest.fixture(scope="module")
def real_manifest(tmp_path_factory):
    from tests.conftest import REAL_DATA
    if not (REAL_DATA / "HAM10000_metadata.csv").is_file():
        pytest.fail(f"real HAM10000 data expected at {REAL_DATA}")
    out = tmp_path_factory.mktemp("real")
    assert main(["prepare", "--data", str(REAL_DATA), "--out", str(out)]) == 0
    return load_manifest(out / "manifest.csv")


def test_prepare_reads_every_real_image_with_the_published_counts(real_manifest):
    assert len(real_manifest) == 5984
    assert real_manifest["label"].value_counts().to_dict() == EXPECTED


def test_real_folds_are_lesion_grouped_and_hold_every_class(real_manifest):
    assert (real_manifest.groupby("group")["fold"].nunique() == 1).all()
    cv = real_manifest[real_manifest["split"] != "test"]
    for fold in range(5):
        assert set(cv.loc[cv["fold"] == fold, "label"]) == set(EXPECTED), fold
    test_share = (real_manifest["split"] == "test").mean()
    assert 0.13 < test_share < 0.17


def test_a_few_training_steps_on_real_images(real_manifest, tmp_path):
    from kndnet.training.fit import fit
    from tests.helpers import tiny_config
    path = tmp_path / "m.csv"
    real_manifest.groupby("label").head(20).to_csv(path, index=False)
    summary = fit(tiny_config("student", path, **{"data.image_size": 64, "train.epochs": 1}), tmp_path / "run")
    assert summary["epochs_run"] == 1 and summary["parameters"] == 148_855
