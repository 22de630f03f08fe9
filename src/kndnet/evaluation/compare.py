"""Compare evaluated models (teacher vs student alone vs KD ...) on the same split; aggregate folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kndnet.classes import CLASS_CODES
from kndnet.errors import DataError
from kndnet.evaluation.figures import comparison_png
from kndnet.evaluation.metrics import paired_bootstrap_difference, with_ci
from kndnet.io import atomic_write_text

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1")


def _load(folder: Path) -> dict:
    missing = [name for name in ("metrics.json", "predictions.csv") if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: no {' or '.join(missing)} (not an evaluation, or one that was interrupted); "
                        f"run `kndnet evaluate --out {folder}` again")
    return json.loads((folder / "metrics.json").read_text())


def _scores(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels, probabilities and image ids from an evaluation's predictions.csv."""
    table = pd.read_csv(folder / "predictions.csv")
    probs = table[[f"prob_{code}" for code in CLASS_CODES]].to_numpy()
    labels = np.array([CLASS_CODES.index(code) for code in table["true_label"]])
    return labels, probs, table["image_id"].astype(str).tolist()


def paired_difference(baseline: Path, other: Path, resamples: int = 1000) -> dict[str, dict[str, float]]:
    """`other` minus `baseline` per headline metric, paired bootstrap over the images both scored."""
    y, base_probs, base_ids = _scores(baseline)
    y_other, other_probs, other_ids = _scores(other)
    if other_ids != base_ids or not np.array_equal(y, y_other):
        raise DataError(f"{baseline} and {other} scored different images; evaluate both on the same split")
    return paired_bootstrap_difference(y, base_probs, other_probs, resamples)


def _difference_table(folders: list[Path], names: list[str], baseline: int) -> str:
    lines = [f"| model minus {names[baseline]} | accuracy | balanced accuracy | macro-F1 | macro ROC-AUC | "
             "P(not better), macro-F1 |", "| --- | --- | --- | --- | --- | --- |"]
    for i, (name, folder) in enumerate(zip(names, folders)):
        if i == baseline:
            continue
        d = paired_difference(folders[baseline], folder)
        cells = [f"{d[k]['difference']:+.3f} [{d[k]['ci_low']:+.3f}, {d[k]['ci_high']:+.3f}]"
                 for k in (*HEADLINE, "roc_auc_macro")]
        lines.append(f"| {name} | {' | '.join(cells)} | {d['macro_f1']['p_not_better']:.3f} |")
    return "\n".join(lines)


def compare(folders: list[Path], out_dir: Path, names: list[str] | None = None, baseline: int = 0) -> str:
    """Write comparison.md and comparison.png; returns the Markdown tables.

    The second table gives each model's difference from the baseline model by a paired bootstrap on
    the same test images: the direct answer to "is the gain real?".
    """
    runs = [_load(f) for f in folders]
    names = names or [f.name for f in folders]
    if len(names) != len(runs):
        raise DataError(f"--names gives {len(names)} labels for {len(runs)} folders")
    # the same images matter, not the same data path: a copied manifest pairs, and the difference table
    # (built before anything is written) refuses other images by id
    if len({(r["split"], r["images"]) for r in runs}) > 1:
        raise DataError("evaluations are on different splits or image counts; compare models on the same split")
    lines = ["| model | accuracy | balanced accuracy | macro-F1 | macro ROC-AUC | mel. sensitivity | ECE |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in zip(names, runs):
        lines.append(f"| {name} | {with_ci(m, 'accuracy')} | {with_ci(m, 'balanced_accuracy')} | "
                     f"{with_ci(m, 'macro_f1')} | {m['roc_auc_macro']:.3f} | {m['melanoma_sensitivity']:.3f} | "
                     f"{m['ece']:.3f} |")
    table = "\n".join(lines) + "\n\n" + _difference_table(folders, names, baseline)
    atomic_write_text(out_dir / "comparison.md",
                      f"# Comparison on `{runs[0]['data']}` ({runs[0]['split']}, {runs[0]['images']} images)\n\n"
                      f"{table}\n\n95% bootstrap CIs in brackets; differences by a paired bootstrap over the same "
                      "images (1,000 resamples).\n\n![comparison](comparison.png)\n")
    comparison_png(names, {k: [m[k] for m in runs] for k in HEADLINE}, out_dir / "comparison.png")
    return table


def aggregate_folds(fold_metrics: list[dict]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of every numeric metric across K cross-validation folds."""
    keys = [k for k, v in fold_metrics[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: (float(np.mean([m[k] for m in fold_metrics])), float(np.std([m[k] for m in fold_metrics], ddof=1)
                                                                   if len(fold_metrics) > 1 else 0.0))
            for k in keys}


def write_fold_summary(folders: list[Path], out_dir: Path) -> str:
    """Mean +- std of the headline metrics over K fold evaluations of one model (cv.md, cv.json)."""
    from kndnet.io import atomic_write_json
    stats = aggregate_folds([_load(f) for f in folders])
    lines = [f"| metric | mean +- std over {len(folders)} folds |", "| --- | --- |"]
    lines += [f"| {k} | {stats[k][0]:.3f} +- {stats[k][1]:.3f} |"
              for k in (*HEADLINE, "macro_precision", "macro_recall", "roc_auc_macro", "ece") if k in stats]
    table = "\n".join(lines)
    atomic_write_json(out_dir / "cv.json",
                      {k: {"mean": round(m, 4), "std": round(s, 4)} for k, (m, s) in stats.items()})
    atomic_write_text(out_dir / "cv.md", f"# Cross-validation\n\n{table}\n")
    return table
