"""Table-level checks of a read data set, and the decision to stop or to drop bad rows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from kndnet.data.formats import RowProblem
from kndnet.data.images import load_rgb
from kndnet.errors import DataError, ImageError

SHOW_FIRST = 5


def find_duplicates(table: pd.DataFrame) -> list[RowProblem]:
    dup = table[table["image_id"].duplicated(keep="first")]
    return [RowProblem(f"row for image {i}", i, "duplicate image id (listed more than once)")
            for i in dup["image_id"]]


def find_conflicting_lesions(table: pd.DataFrame) -> list[RowProblem]:
    labelled = table.dropna(subset=["label"])
    counts = labelled.groupby("group")["label"].nunique()
    problems = []
    for group in counts.index[counts > 1]:
        rows = labelled[labelled["group"] == group]
        pairs = ", ".join(f"{r.image_id}={r.label}" for r in rows.itertuples())
        problems += [RowProblem(f"lesion {group}", r.image_id,
                                f"lesion {group} has conflicting labels ({pairs})")
                     for r in rows.itertuples()]
    return problems


def find_undecodable(table: pd.DataFrame, workers: int = 4) -> list[RowProblem]:
    """Decode every listed image (the --verify pass)."""
    def check(row: tuple[str, str]) -> RowProblem | None:
        image_id, path = row
        try:
            load_rgb(path)
        except ImageError as err:
            return RowProblem(path, image_id, err.reason)
        return None
    rows = [(r.image_id, r.path) for r in table.itertuples() if r.path]
    with ThreadPoolExecutor(workers) as pool:
        return [p for p in pool.map(check, rows) if p is not None]


def summarise(problems: list[RowProblem]) -> str:
    """Group problems by reason: the count, then the first few rows of each."""
    by_reason: dict[str, list[RowProblem]] = {}
    for p in problems:
        by_reason.setdefault(p.reason, []).append(p)
    lines = []
    for reason, items in by_reason.items():
        shown = "; ".join(f"{p.where} ({p.image_id})" for p in items[:SHOW_FIRST])
        more = f" and {len(items) - SHOW_FIRST} more" if len(items) > SHOW_FIRST else ""
        lines.append(f"- {len(items)} x {reason}: {shown}{more}")
    return "\n".join(lines)


def resolve_problems(table: pd.DataFrame, problems: list[RowProblem],
                     drop_bad: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stop with a DataError listing the problems, or (drop_bad) drop those rows.

    Returns the clean table and a table of dropped rows (image_id, where, reason).
    """
    dropped = pd.DataFrame([vars(p) for p in problems], columns=["where", "image_id", "reason"])
    if problems and not drop_bad:
        raise DataError(f"{len(problems)} problem(s) in the data:\n{summarise(problems)}\n"
                        "Fix the rows above, or rerun with --drop-bad to drop them.")
    bad_ids = set(dropped["image_id"])
    clean = table[~table["image_id"].isin(bad_ids) & table["label"].notna() & (table["path"] != "")]
    return clean.reset_index(drop=True), dropped
