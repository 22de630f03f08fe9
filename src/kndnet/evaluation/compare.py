"""Compare evaluated models (teacher vs student alone vs KD ...) on the same split; aggregate folds.

A model may be given as several evaluations, one per training seed: its figures are then the mean over its
seeds, and its difference to the baseline is bootstrapped over seeds as well as images
(`metrics.seed_pooled_difference`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kndnet.classes import CLASS_CODES
from kndnet.errors import DataError
from kndnet.evaluation.figures import comparison_png
from kndnet.evaluation.metrics import seed_pooled_difference, with_ci
from kndnet.io import atomic_write_text

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1")


def _load(folder: Path) -> dict:
    missing = [name for name in ("metrics.json", "predictions.csv") if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: no {' or '.join(missing)} (not an evaluation, or one that was interrupted); "
                        f"run `kndnet evaluate --out {folder}` again")
    return json.loads((folder / "metrics.json").read_text())


def read_scores(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels, probabilities and image ids from an evaluation's predictions.csv."""
    path = folder / "predictions.csv"
    if not path.is_file():
        raise DataError(f"{path} not found: {folder} is not a `kndnet evaluate --out` folder")
    table = pd.read_csv(path)
    probs = table[[f"prob_{code}" for code in CLASS_CODES]].to_numpy()
    labels = np.array([CLASS_CODES.index(code) for code in table["true_label"]])
    return labels, probs, table["image_id"].astype(str).tolist()


Seeds = list[Path]  # the evaluations of one model, one per training seed (often just one)


def paired_difference(baseline: Path | Seeds, other: Path | Seeds,
                      resamples: int = 1000) -> dict[str, dict[str, float]]:
    """`other` minus `baseline` per headline metric, paired bootstrap over the images all runs scored.

    Either side may be several evaluations of one model (its training seeds): the seed-averaged difference.
    """
    baseline, other = ([p] if isinstance(p, Path) else p for p in (baseline, other))
    scored = {folder: read_scores(folder) for folder in (*baseline, *other)}  # each file read once
    y, _, ids = scored[baseline[0]]
    for folder, (y_run, _, ids_run) in scored.items():
        if ids_run != ids or not np.array_equal(y, y_run):
            raise DataError(f"{baseline[0]} and {folder} scored different images; evaluate both on the same split")
    return seed_pooled_difference(y, [scored[f][1] for f in baseline], [scored[f][1] for f in other], resamples)


def _difference_table(models: list[Seeds], names: list[str], baseline: int) -> str:
    lines = [f"| model minus {names[baseline]} | accuracy | balanced accuracy | macro-F1 | macro ROC-AUC | "
             "P(not better), macro-F1 |", "| --- | --- | --- | --- | --- | --- |"]
    for i, (name, seeds) in enumerate(zip(names, models)):
        if i == baseline:
            continue
        d = paired_difference(models[baseline], seeds)
        cells = [f"{d[k]['difference']:+.3f} [{d[k]['ci_low']:+.3f}, {d[k]['ci_high']:+.3f}]"
                 for k in (*HEADLINE, "roc_auc_macro")]
        lines.append(f"| {name} | {' | '.join(cells)} | {d['macro_f1']['p_not_better']:.3f} |")
    return "\n".join(lines)


def _cast_of(seeds: Seeds, runs: list[dict]) -> float:
    """The simulated colour cast a model was scored under (`evaluate --colour-cast`; 0 for plain images).

    Seeds of one model are pooled, so they must share it: a plain and a cast evaluation are two models here."""
    casts = {float(r.get("colour_cast", 0.0)) for r in runs}
    if len(casts) > 1:
        raise DataError(f"{', '.join(map(str, seeds))} were scored under different colour casts "
                        f"({', '.join(map(str, sorted(casts)))}); give them as separate models")
    return casts.pop()


def _default_name(seeds: Seeds, cast: float) -> str:
    """The folder names; a cast evaluation says so, since its folder name need not."""
    name = "+".join(f.name for f in seeds)
    return f"{name} (colour cast {cast:g})" if cast else name


def _model_row(name: str, runs: list[dict]) -> str:
    """One model's line: its metrics with their CIs, or, over several seeds, the mean and each seed's value."""
    if len(runs) == 1:
        m = runs[0]
        cells = [with_ci(m, k) for k in HEADLINE] + [f"{m[k]:.3f}" for k in ("roc_auc_macro", "melanoma_sensitivity",
                                                                             "ece")]
    else:
        cells = [f"{np.mean([m[k] for m in runs]):.3f} (seeds: {', '.join(f'{m[k]:.3f}' for m in runs)})"
                 for k in (*HEADLINE, "roc_auc_macro", "melanoma_sensitivity", "ece")]
    return f"| {name} | {' | '.join(cells)} |"


def compare(models: list[Path | Seeds], out_dir: Path, names: list[str] | None = None, baseline: int = 0) -> str:
    """Write comparison.md and comparison.png; returns the Markdown tables.

    The second table gives each model's difference from the baseline model by a paired bootstrap on
    the same test images: the direct answer to "is the gain real?". A model given as several seeds'
    evaluations is shown as their mean, and its difference is bootstrapped over its seeds too.
    """
    models = [[m] if isinstance(m, Path) else list(m) for m in models]
    runs = [[_load(f) for f in seeds] for seeds in models]
    casts = [_cast_of(seeds, loaded) for seeds, loaded in zip(models, runs)]
    names = names or [_default_name(seeds, cast) for seeds, cast in zip(models, casts)]
    if len(names) != len(runs):
        raise DataError(f"--names gives {len(names)} labels for {len(runs)} models")
    # the same images matter, not the same data path: a copied manifest pairs, and the difference table
    # (built before anything is written) refuses other images by id
    scored = [(folder, (r["split"], r["images"])) for seeds, loaded in zip(models, runs)
              for folder, r in zip(seeds, loaded)]
    other = next((folder for folder, key in scored if key != scored[0][1]), None)
    if other is not None:
        raise DataError(f"{other} is an evaluation of another split or image count than {scored[0][0]}; "
                        "compare models on the same split")
    lines = ["| model | accuracy | balanced accuracy | macro-F1 | macro ROC-AUC | mel. sensitivity | ECE |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [_model_row(name, seeds) for name, seeds in zip(names, runs)]
    table = "\n".join(lines) + "\n\n" + _difference_table(models, names, baseline)
    first = runs[0][0]
    seeds_note = (" A model with several seeds shows their mean, then each seed's value; its differences "
                  "are bootstrapped over its seeds as well as the images." if any(len(s) > 1 for s in runs) else "")
    atomic_write_text(out_dir / "comparison.md",
                      f"# Comparison on `{first['data']}` ({first['split']}, {first['images']} images)\n\n"
                      f"{table}\n\n95% bootstrap CIs in brackets; differences by a paired bootstrap over the same "
                      f"images (1,000 resamples).{seeds_note}\n\n![comparison](comparison.png)\n")
    comparison_png(names, {k: [float(np.mean([m[k] for m in seeds])) for seeds in runs] for k in HEADLINE},
                   out_dir / "comparison.png")
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
