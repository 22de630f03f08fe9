"""Lesion-grouped, class-stratified splits: a held-out test set plus K cross-validation folds.

HAM10000 has 2-6 images of many lesions; splitting by image leaks a lesion between train and test
and inflates scores. Every lesion here carries one diagnosis, so stratifying lesions class by class
is exact: each class's lesions are shuffled (seeded) and dealt out, largest first, to the split with
the fewest images of that class. A class with at least K lesions therefore lands in every fold.
The KNDNet notebooks (GroupKFold, fold 0 reported after selecting on it) lacked the test split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kndnet.errors import ConfigError

TEST_FOLD = -1


def _lesions_by_class(table: pd.DataFrame, rng: np.random.Generator) -> dict[str, pd.Series]:
    """Per class: lesion -> image count, in a seeded random order (sizes break ties stably)."""
    out: dict[str, pd.Series] = {}
    for label, rows in sorted(table.groupby("label"), key=lambda item: item[0]):
        sizes = rows.groupby("group").size()
        sizes = sizes.iloc[rng.permutation(len(sizes))]
        out[label] = sizes.sort_values(ascending=False, kind="stable")
    return out


def _deal(sizes: pd.Series, n_bins: int) -> dict[str, int]:
    """Assign lesions to bins, each to the bin with the fewest images so far (greedy, stable)."""
    load = np.zeros(n_bins, dtype=np.int64)
    assignment: dict[str, int] = {}
    for position, (group, size) in enumerate(sizes.items()):
        # round-robin over the first n_bins lesions guarantees every bin one lesion when possible
        target = position if position < n_bins else int(np.argmin(load))
        assignment[group] = target
        load[target] += size
    return assignment


def _pick_test_groups(sizes: pd.Series, fraction: float) -> set[str]:
    n_test = int(round(fraction * len(sizes)))
    if fraction > 0 and n_test == 0 and len(sizes) >= 3:
        n_test = 1
    # evenly spaced through the size order, so the test split mirrors the mix of lesion sizes
    order = list(sizes.index)
    chosen = order[::max(1, len(order) // max(n_test, 1))][:n_test] if n_test else []
    return set(chosen)


def assign_splits(table: pd.DataFrame, folds: int = 5, test_fraction: float = 0.15,
                  seed: int = 42, val_fold: int = 0) -> pd.DataFrame:
    """Add `fold` (0..K-1, or -1 for test) and `split` (train | val | test) columns.

    `table` needs `label` and `group` columns. Deterministic for a given seed and table.
    """
    if folds < 2:
        raise ConfigError(f"folds must be at least 2, got {folds}")
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if not 0 <= val_fold < folds:
        raise ConfigError(f"val_fold must be in 0..{folds - 1}, got {val_fold}")
    rng = np.random.default_rng(seed)
    fold_of_group: dict[str, int] = {}
    for sizes in _lesions_by_class(table, rng).values():
        test_groups = _pick_test_groups(sizes, test_fraction)
        fold_of_group.update({g: TEST_FOLD for g in test_groups})
        fold_of_group.update(_deal(sizes.drop(index=list(test_groups)), folds))
    out = table.copy()
    out["fold"] = out["group"].map(fold_of_group).astype(int)
    out["split"] = np.where(out["fold"] == TEST_FOLD, "test",
                            np.where(out["fold"] == val_fold, "val", "train"))
    return out
