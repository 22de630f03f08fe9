"""Lesion-grouped splits: no lesion crosses folds or test, classes in every fold, deterministic."""

import numpy as np
import pandas as pd
import pytest

from kndnet.data.splits import TEST_FOLD, assign_splits


def _table(seed=0, lesions_per_class=(40, 12, 9, 5, 30, 60, 6)):
    rng = np.random.default_rng(seed)
    rows = []
    for label, n in zip("abcdefg", lesions_per_class):
        for lesion in range(n):
            for image in range(int(rng.integers(1, 5))):  # 1-4 images per lesion
                rows.append({"image_id": f"{label}{lesion}_{image}", "label": label,
                             "group": f"{label}{lesion}"})
    return pd.DataFrame(rows)


def test_no_lesion_crosses_folds_or_test():
    out = assign_splits(_table(), folds=5, test_fraction=0.15)
    assert (out.groupby("group")["fold"].nunique() == 1).all()
    assert (out["fold"] == TEST_FOLD).any()


def test_every_class_with_k_lesions_is_in_every_fold():
    table = _table()
    out = assign_splits(table, folds=5, test_fraction=0.15)
    cv = out[out["fold"] != TEST_FOLD]
    lesions = cv.groupby("label")["group"].nunique()
    for label in lesions.index[lesions >= 5]:
        assert set(cv.loc[cv["label"] == label, "fold"]) == set(range(5)), label


def test_same_seed_same_manifest_other_seed_differs():
    table = _table()
    a = assign_splits(table, seed=3)
    assert a.equals(assign_splits(table, seed=3))
    assert not a["fold"].equals(assign_splits(table, seed=4)["fold"])


def test_test_fraction_is_close_per_class():
    out = assign_splits(_table(), folds=5, test_fraction=0.2)
    share = out[out["fold"] == TEST_FOLD].groupby("label")["group"].nunique() / out.groupby("label")["group"].nunique()
    assert share.between(0.1, 0.3).all()


def test_split_column_marks_the_validation_fold():
    out = assign_splits(_table(), folds=5, val_fold=2)
    assert set(out.loc[out["split"] == "val", "fold"]) == {2}
    assert set(out["split"]) == {"train", "val", "test"}


def test_no_test_split_when_fraction_is_zero():
    out = assign_splits(_table(), test_fraction=0.0)
    assert (out["split"] != "test").all()


@pytest.mark.parametrize("kwargs", [{"folds": 1}, {"test_fraction": 1.0}, {"val_fold": 5}])
def test_bad_split_arguments(kwargs):
    with pytest.raises(ValueError):
        assign_splits(_table(), **kwargs)


def test_synthetic_manifest_has_multi_image_lesions_kept_together(synth_manifest):
    manifest = pd.read_csv(synth_manifest)
    assert manifest.groupby("group").size().max() > 1
    assert (manifest.groupby("group")["fold"].nunique() == 1).all()
