"""Which rows of a manifest a split holds, and how many images each class has there.

One definition for every caller (training, teacher cache, evaluation, calibration, export): train and
val follow the validation fold (the method validated on fold 0), and the lesion-grouped test split is
never part of either.
"""

from __future__ import annotations

import pandas as pd

from kndnet.classes import CLASS_CODES

SPLITS = ("train", "val", "test", "all")


def split_rows(manifest: pd.DataFrame, split: str, val_fold: int) -> pd.DataFrame:
    """Rows of one split; train/val follow `val_fold`, so any fold can validate."""
    if split == "test":
        rows = manifest[manifest["split"] == "test"]
    elif split == "val":
        rows = manifest[(manifest["split"] != "test") & (manifest["fold"] == val_fold)]
    elif split == "train":
        rows = manifest[(manifest["split"] != "test") & (manifest["fold"] != val_fold)]
    elif split == "all":
        rows = manifest
    else:
        raise ValueError(f"unknown split {split!r}; choose {', '.join(SPLITS)}")
    return rows.reset_index(drop=True)


def class_counts(rows: pd.DataFrame) -> list[int]:
    """Images per class, in class-index order (absent classes count 0)."""
    counts = rows["label"].value_counts()
    return [int(counts.get(code, 0)) for code in CLASS_CODES]
