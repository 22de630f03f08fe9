"""`kndnet prepare`: read a data set, validate it, split it by lesion, write the manifest.

The manifest (image_id, path, label, group, fold, split) is the one input every later stage reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kndnet.classes import CLASS_CODES
from kndnet.config import DataConfig
from kndnet.data.formats import read_dataset
from kndnet.data.splits import assign_splits
from kndnet.data.validate import find_conflicting_lesions, find_duplicates, find_undecodable, resolve_problems
from kndnet.errors import DataError
from kndnet.io import atomic_path

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ["image_id", "path", "label", "group", "fold", "split"]


@dataclass
class PrepareResult:
    manifest: pd.DataFrame
    dropped: pd.DataFrame
    format: str
    manifest_path: Path


def build_manifest(data: DataConfig, verify: bool = False,
                   drop_bad: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Read `data.path` in any layout, check it, and split it. Pure apart from reading files."""
    result, fmt = read_dataset(data.path, data.format)
    table = result.table
    problems = result.problems + find_duplicates(table) + find_conflicting_lesions(table)
    if verify:
        problems += find_undecodable(table[table["path"] != ""])
    table, dropped = resolve_problems(table, problems, drop_bad)
    if table.empty:
        raise DataError(f"{data.path}: no usable images left")
    split = assign_splits(table, data.folds, data.test_fraction, data.seed, data.val_fold)
    return split[MANIFEST_COLUMNS], dropped, fmt


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def prepare(data: DataConfig, out_dir: str | Path, verify: bool = False,
            drop_bad: bool = False) -> PrepareResult:
    """Write `manifest.csv` (and `dropped.csv` when rows were dropped) into `out_dir`."""
    manifest, dropped, fmt = build_manifest(data, verify, drop_bad)
    out = Path(out_dir)
    write_csv_atomic(manifest, out / MANIFEST_NAME)
    if len(dropped):
        write_csv_atomic(dropped, out / "dropped.csv")
    return PrepareResult(manifest, dropped, fmt, out / MANIFEST_NAME)


def load_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by `prepare`, checking its columns and labels."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found; run `kndnet prepare` first")
    frame = pd.read_csv(path, dtype={"image_id": str, "group": str, "label": str, "path": str})
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: not a kndnet manifest (missing {', '.join(missing)})")
    unknown = sorted(set(frame["label"]) - set(CLASS_CODES))
    if unknown:
        raise DataError(f"{path}: unknown label(s) {', '.join(unknown)}")
    return frame


def describe(manifest: pd.DataFrame) -> str:
    """A short human summary: counts per class and per split."""
    counts = manifest["label"].value_counts()
    per_class = " / ".join(f"{c} {counts[c]}" for c in counts.index)
    per_split = ", ".join(f"{s} {n}" for s, n in manifest["split"].value_counts().items())
    return (f"{len(manifest)} images, {manifest['group'].nunique()} lesions; "
            f"classes {per_class}; splits {per_split}")
