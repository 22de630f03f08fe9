"""Readers for the data layouts users have: each turns a folder into one table.

The table has columns image_id, path (absolute), label (class code), group (lesion id, or the image
id where a layout has none). Row-level problems are collected, not raised, so `--drop-bad` can drop
them; structural problems (missing columns, unknown layout) raise DataError at once.

Layouts: the HAM10000 release (Tschandl et al., 2018), the ISIC 2018 Task 3 ground-truth layout
(the official HAM10000 validation/test sets), a generic CSV, and a folder per class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kndnet.classes import CLASS_CODES, ISIC_COLUMNS, normalise_label
from kndnet.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
HAM_METADATA = "HAM10000_metadata.csv"


def image_files_under(folder: Path) -> list[Path]:
    """Every image file under `folder`, sub-folders included, sorted (what a folder of images means here)."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass
class RowProblem:
    """One row that cannot be used: where it came from and why."""
    where: str        # e.g. "HAM10000_metadata.csv row 17" or a file path
    image_id: str
    reason: str


@dataclass
class ReadResult:
    table: pd.DataFrame
    problems: list[RowProblem] = field(default_factory=list)
    source: str = ""


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from err


def _require_columns(frame: pd.DataFrame, required: list[str], path: Path) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found "
                        f"{', '.join(frame.columns)}. Rename the columns or pick --format.")


def _index_images(root: Path) -> dict[str, Path]:
    """Map image stem -> path for every image file under root (the release splits images in parts)."""
    index: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            index.setdefault(path.stem, path.absolute())
    return index


def _labels(frame: pd.DataFrame, column: str, where: Callable[[int], str],
            problems: list[RowProblem]) -> pd.Series:
    codes = frame[column].map(normalise_label)
    for i in frame.index[codes.isna()]:
        problems.append(RowProblem(where(i), str(frame.at[i, "image_id"]),
                                   f"unknown label {frame.at[i, column]!r}; expected one of "
                                   f"{', '.join(CLASS_CODES)} (or their full names)"))
    return codes


def _attach_paths(table: pd.DataFrame, index: dict[str, Path], where: Callable[[int], str],
                  problems: list[RowProblem]) -> pd.DataFrame:
    table["path"] = table["image_id"].map(lambda i: str(index[i]) if i in index else "")
    for i in table.index[table["path"] == ""]:
        problems.append(RowProblem(where(i), table.at[i, "image_id"], "image listed but not found"))
    return table


def read_ham10000(root: Path) -> ReadResult:
    """HAM10000_metadata.csv + <image_id>.jpg anywhere under root."""
    csv_path = root / HAM_METADATA
    frame = _read_csv(csv_path)
    _require_columns(frame, ["lesion_id", "image_id", "dx"], csv_path)
    problems: list[RowProblem] = []
    where = lambda i: f"{csv_path.name} row {i + 2}"  # noqa: E731 (header is line 1)
    table = pd.DataFrame({"image_id": frame["image_id"].str.strip(),
                          "label": _labels(frame, "dx", where, problems),
                          "group": frame["lesion_id"].str.strip()})
    table = _attach_paths(table, _index_images(root), where, problems)
    return ReadResult(table, problems, str(csv_path))


def _find_isic_ground_truth(root: Path) -> Path:
    found = sorted(root.glob("*GroundTruth*.csv")) + sorted(root.glob("*/*GroundTruth*.csv"))
    if not found:
        raise DataError(f"{root}: no ISIC2018_Task3_*_GroundTruth.csv found")
    return found[0]


def read_isic2018(root: Path) -> ReadResult:
    """ISIC 2018 Task 3: one-hot ground-truth CSV + ISIC2018_Task3_*_Input/ images; no lesion ids."""
    csv_path = _find_isic_ground_truth(root)
    frame = _read_csv(csv_path)
    _require_columns(frame, ["image", *ISIC_COLUMNS], csv_path)
    problems: list[RowProblem] = []
    where = lambda i: f"{csv_path.name} row {i + 2}"  # noqa: E731
    onehot = frame[list(ISIC_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    valid = onehot.isin([0.0, 1.0]).all(axis=1) & (onehot.sum(axis=1) == 1)
    labels = pd.Series([CLASS_CODES[int(r.argmax())] for r in onehot.fillna(0).to_numpy()],
                       index=frame.index, dtype=object)
    labels[~valid] = None
    for i in frame.index[~valid]:
        problems.append(RowProblem(where(i), frame.at[i, "image"],
                                   "ground truth is not one-hot (exactly one 1.0 among "
                                   f"{', '.join(ISIC_COLUMNS)})"))
    image_ids = frame["image"].str.strip()
    table = pd.DataFrame({"image_id": image_ids, "label": labels, "group": image_ids})
    table = _attach_paths(table, _index_images(root), where, problems)
    return ReadResult(table, problems, str(csv_path))


def _generic_csv_file(root: Path) -> Path:
    if root.is_file():
        return root
    candidates = [p for p in sorted(root.glob("*.csv"))
                  if {"image", "label"} <= set(_read_csv(p).columns)]
    if len(candidates) != 1:
        raise DataError(f"{root}: expected exactly one CSV with columns image,label; found "
                        f"{len(candidates)}. Pass the CSV file itself as --data.")
    return candidates[0]


def read_csv_layout(root: Path) -> ReadResult:
    """A CSV with `image` (path relative to the CSV), `label` (code or name), optional `group`."""
    csv_path = _generic_csv_file(root)
    base = csv_path.parent.resolve()
    frame = _read_csv(csv_path)
    _require_columns(frame, ["image", "label"], csv_path)
    problems: list[RowProblem] = []
    where = lambda i: f"{csv_path.name} row {i + 2}"  # noqa: E731
    paths = frame["image"].str.strip().map(lambda p: (base / p).resolve())
    image_ids = paths.map(lambda p: p.stem)
    frame["image_id"] = image_ids
    table = pd.DataFrame({"image_id": image_ids, "label": _labels(frame, "label", where, problems),
                          "group": frame["group"].str.strip() if "group" in frame else image_ids,
                          "path": paths.map(str)})
    for i, path in paths.items():
        if not path.is_relative_to(base):
            problems.append(RowProblem(where(i), image_ids[i], f"path {frame.at[i, 'image']!r} "
                                       f"escapes the data folder {base}; keep images under it"))
            table.at[i, "path"] = ""
        elif not path.is_file():
            problems.append(RowProblem(where(i), image_ids[i], "image listed but not found"))
            table.at[i, "path"] = ""
    table.loc[table["group"] == "", "group"] = table["image_id"]
    return ReadResult(table, problems, str(csv_path))


def read_folders(root: Path) -> ReadResult:
    """One sub-folder per class (named by code or full name); each image is its own group."""
    rows, unknown = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        code = normalise_label(folder.name)
        if code is None:
            unknown.append(folder.name)
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                rows.append({"image_id": path.stem, "label": code, "group": path.stem,
                             "path": str(path.absolute())})
    if unknown:
        raise DataError(f"{root}: folder(s) {', '.join(unknown)} are not class names; expected "
                        f"{', '.join(CLASS_CODES)}. Rename or remove them.")
    if not rows:
        raise DataError(f"{root}: no images found in class folders")
    return ReadResult(pd.DataFrame(rows), [], str(root))


READERS: dict[str, Callable[[Path], ReadResult]] = {
    "ham10000": read_ham10000,
    "isic2018": read_isic2018,
    "csv": read_csv_layout,
    "folders": read_folders,
}


def detect_format(root: Path) -> str:
    """Guess the layout of `root` from its files; raise DataError when none fits."""
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"{root}: a data file must be a CSV")
        return "ham10000" if root.name == HAM_METADATA else "csv"
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    if (root / HAM_METADATA).is_file():
        return "ham10000"
    if list(root.glob("*GroundTruth*.csv")) or list(root.glob("*/*GroundTruth*.csv")):
        return "isic2018"
    if list(root.glob("*.csv")):
        return "csv"
    if any(normalise_label(p.name) for p in root.iterdir() if p.is_dir()):
        return "folders"
    raise DataError(f"{root}: cannot tell the data layout (no {HAM_METADATA}, no ISIC "
                    "GroundTruth CSV, no image,label CSV, no class folders); see --format")


def read_dataset(path: str | Path, fmt: str = "auto") -> tuple[ReadResult, str]:
    """Read any supported layout; return the result and the format used.

    Every layout's image paths are resolved and checked against the data root here, once, so a
    symlink to /etc/passwd or to another data set is refused (or dropped) whatever the layout.
    """
    root = Path(path)
    if fmt == "auto":
        fmt = detect_format(root)
    if fmt not in READERS:
        raise DataError(f"unknown --format {fmt!r}; choose auto, {', '.join(READERS)}")
    if fmt in ("ham10000", "csv") and root.is_file():
        root = root.parent
    result = READERS[fmt](root)
    refuse_escaping_paths(result, root)
    return result, fmt


def refuse_escaping_paths(result: ReadResult, root: Path) -> None:
    """Record a problem for (and blank the path of) every image whose resolved path leaves `root`."""
    base = root.resolve()
    table = result.table
    for i in table.index[table["path"] != ""]:
        listed = Path(table.at[i, "path"])
        resolved = listed.resolve()
        if not resolved.is_relative_to(base):
            result.problems.append(RowProblem(str(listed), str(table.at[i, "image_id"]),
                                              f"resolves to {resolved}, outside the data folder {base} (a "
                                              "symlink?); copy the image into the data folder"))
            table.at[i, "path"] = ""
