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


def test_defaults_are_the_documented_ones():
    """5 folds, 15% test lesions, seed 42, validation fold 0: what manifests and checkpoints assume."""
    table = _table()
    assert assign_splits(table).equals(assign_splits(table, folds=5, test_fraction=0.15, seed=42, val_fold=0))


@pytest.mark.parametrize("fraction", [0.15, 0.6])
def test_each_class_gives_exactly_its_share_of_lesions_to_test(fraction):
    out = assign_splits(_table(), folds=3, test_fraction=fraction)
    lesions = out.groupby("label")["group"].nunique()
    tested = out[out["fold"] == TEST_FOLD].groupby("label")["group"].nunique().reindex(lesions.index, fill_value=0)
    expected = [max(int(round(fraction * n)), 1 if n >= 3 else 0) for n in lesions]
    assert tested.tolist() == expected


def test_a_small_class_still_gets_one_test_lesion_from_three():
    table = _table(lesions_per_class=(40, 3, 2, 5, 5, 5, 5))
    out = assign_splits(table, folds=2, test_fraction=0.1)  # round(0.3) = 0 lesions, but 3 lesions allow one
    tested = out[out["fold"] == TEST_FOLD].groupby("label")["group"].nunique()
    assert tested.get("b", 0) == 1 and tested.get("c", 0) == 0


def test_folds_hold_about_the_same_number_of_images_per_class():
    """Lesions go to the fold with the fewest images so far: per class, folds differ by at most one
    lesion's images (4 here)."""
    out = assign_splits(_table(lesions_per_class=(60, 60, 60, 60, 60, 60, 60)), folds=5, test_fraction=0.0)
    images = out.groupby(["label", "fold"]).size().unstack()
    assert ((images.max(axis=1) - images.min(axis=1)) <= 4).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"folds": 1}, r"folds must be at least 2, got 1"),
    ({"test_fraction": 1.0}, r"test_fraction must be in \[0, 1\), got 1.0"),
    ({"val_fold": 5}, r"val_fold must be in 0..4, got 5"),
])
def test_bad_split_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        assign_splits(_table(), **kwargs)


def test_two_folds_are_allowed():
    assert set(assign_splits(_table(), folds=2, test_fraction=0.0)["fold"]) == {0, 1}


def test_fold_is_an_integer_column():
    """manifest.csv stores folds as 0..K-1 and -1, not 0.0 and -1.0."""
    assert assign_splits(_table())["fold"].dtype.kind == "i"
