"""`kndnet prepare`: read a data set, validate it, split it by lesion, write the manifest.

The manifest (image_id, path, label, group, fold, split, root) is the one input every later stage reads;
`path` is relative to `root`, and `root` to the manifest's own folder.
"""

from __future__ import annotations

import os
import sys
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
SPLIT_NAMES = ("train", "val", "test")
ROOT_COLUMN = "root"  # the data root, relative to the manifest's folder


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


def write_manifest(manifest: pd.DataFrame, path: Path) -> None:
    """Write a manifest with image paths relative to the data root, and the root relative to the manifest.

    Why: absolute resolved paths tie a run to one machine's folders; relative ones survive moving the
    project (runs and data together) or a colleague's checkout with the same layout.
    """
    path = Path(path)
    frame = manifest[MANIFEST_COLUMNS].copy()
    absolute = [os.path.abspath(p) for p in frame["path"]]
    root = os.path.commonpath([os.path.dirname(p) for p in absolute]) if absolute else "."
    frame["path"] = [os.path.relpath(p, root) for p in absolute]
    frame[ROOT_COLUMN] = os.path.relpath(root, os.path.abspath(path.parent))
    write_csv_atomic(frame, path)


def _absolute_paths(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Paths of a manifest as absolute ones: `root` (relative to the manifest) joined with `path`.

    Manifests written before the `root` column hold absolute paths and are read as they are.
    """
    if ROOT_COLUMN not in frame.columns:
        return frame
    base = os.path.abspath(path.parent)
    frame["path"] = [os.path.normpath(os.path.join(base, str(r), p)) for r, p in zip(frame[ROOT_COLUMN], frame["path"])]
    return frame.drop(columns=[ROOT_COLUMN])


def prepare(data: DataConfig, out_dir: str | Path, verify: bool = False,
            drop_bad: bool = False) -> PrepareResult:
    """Write `manifest.csv` (and `dropped.csv` when rows were dropped) into `out_dir`."""
    from kndnet.io import clean_stale_temporaries, run_lock
    manifest, dropped, fmt = build_manifest(data, verify, drop_bad)
    for line in small_class_warnings(manifest, data.folds):
        print(f"warning: {line}", file=sys.stderr)
    out = Path(out_dir)
    with run_lock(out) as owned:
        if owned:
            clean_stale_temporaries(out)
        write_manifest(manifest, out / MANIFEST_NAME)
        if len(dropped):
            write_csv_atomic(dropped, out / "dropped.csv")
    return PrepareResult(manifest, dropped, fmt, out / MANIFEST_NAME)


def small_class_warnings(manifest: pd.DataFrame, folds: int) -> list[str]:
    """One line per class with fewer lesions than folds: some folds then lack that class entirely.

    Why: such a class silently gets no validation (or no training) images in some folds; with one
    lesion it is learnt from nothing (training refuses that case, see training.fit).
    """
    lesions = manifest.groupby("label")["group"].nunique()
    images = manifest["label"].value_counts()
    train = manifest[manifest["split"] == "train"]["label"].value_counts()
    return [f"class {code} has {lesions[code]} lesion(s) ({images[code]} images) for {folds} folds: some folds "
            f"have none of it; {train.get(code, 0)} training image(s) with the validation fold held out"
            for code in lesions.index if lesions[code] < folds]


def load_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by `prepare`, checking its columns and labels."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found; run `kndnet prepare` first")
    try:
        frame = pd.read_csv(path, dtype={"image_id": str, "group": str, "label": str, "path": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: not a kndnet manifest (missing {', '.join(missing)})")
    _check_cells(frame, path)
    return _absolute_paths(frame, path)


def _check_cells(frame: pd.DataFrame, path: Path) -> None:
    """Refuse blank cells, unknown labels and splits, naming the first rows (CSV line numbers)."""
    for column in MANIFEST_COLUMNS:
        blank = frame.index[frame[column].isna() | (frame[column].astype(str).str.strip() == "")]
        if len(blank):
            lines = ", ".join(str(i + 2) for i in blank[:5])
            raise DataError(f"{path}: blank {column!r} in {len(blank)} row(s) (line {lines}); fill them in "
                            "or run `kndnet prepare` again")
    for column, allowed in (("label", CLASS_CODES), ("split", SPLIT_NAMES)):
        bad = frame.index[~frame[column].isin(allowed)]
        if len(bad):
            i = bad[0]
            raise DataError(f"{path} line {i + 2}: unknown {column} {frame.at[i, column]!r} "
                            f"({len(bad)} row(s)); expected one of {', '.join(allowed)}")


def describe(manifest: pd.DataFrame) -> str:
    """A short human summary: counts per class and per split."""
    counts = manifest["label"].value_counts()
    per_class = " / ".join(f"{c} {counts[c]}" for c in counts.index)
    per_split = ", ".join(f"{s} {n}" for s, n in manifest["split"].value_counts().items())
    return (f"{len(manifest)} images, {manifest['group'].nunique()} lesions; "
            f"classes {per_class}; splits {per_split}")
