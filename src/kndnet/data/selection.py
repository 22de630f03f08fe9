"""Which manifest a run uses, which rows a split holds, and how many images each class has there.

One definition for every caller (training, teacher cache, evaluation, calibration, export): train and
val follow the validation fold (the method validated on fold 0), and the lesion-grouped test split is
never part of either.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kndnet.classes import CLASS_CODES
from kndnet.config import Config
from kndnet.data.manifest import MANIFEST_COLUMNS, MANIFEST_NAME, load_manifest, prepare, write_manifest
from kndnet.errors import ConfigError

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
        raise ConfigError(f"unknown split {split!r}; choose {', '.join(SPLITS)}")
    return rows.reset_index(drop=True)


def class_counts(rows: pd.DataFrame) -> list[int]:
    """Images per class, in class-index order (absent classes count 0)."""
    counts = rows["label"].value_counts()
    return [int(counts.get(code, 0)) for code in CLASS_CODES]


def is_manifest(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".csv"):
        return False
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return False  # not a manifest; the layout readers say what is wrong with it
    return set(MANIFEST_COLUMNS) <= set(header)


def resolve_manifest(cfg: Config, run_dir: Path, refresh: bool = False, write: bool = True) -> pd.DataFrame:
    """Use cfg.data.path as a manifest, or prepare one from a data folder, into the run directory.

    The run's own copy is reused on a resume; `refresh` (`--force`) reads the data again, so a
    retrained run never uses the labels or image list of data that has changed since. Without `write` (a DDP
    rank other than 0, beside rank 0 writing the copy) a given manifest is read, not copied.
    """
    target = run_dir / MANIFEST_NAME
    if target.is_file() and not (refresh and cfg.data.path):
        return load_manifest(target)
    if not cfg.data.path:
        raise ConfigError("no data given: pass --data DIR_OR_MANIFEST or set data.path in the config")
    source = Path(cfg.data.path)
    if is_manifest(source):
        manifest = load_manifest(source)
        if write:
            write_manifest(manifest, target)
        return manifest
    return prepare(cfg.data, run_dir).manifest
