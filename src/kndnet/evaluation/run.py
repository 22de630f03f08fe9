"""`kndnet evaluate`: score a model on a manifest split or any data layout, write the report files.

Outputs: metrics.json (flat, rounded, with model/data/split), predictions.csv, confusion_matrix.png,
reliability.png and report.md. With --tta, TTA metrics are reported beside the plain ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix
from torch.utils.data import DataLoader

from kndnet.classes import CLASS_CODES
from kndnet.config import DataConfig
from kndnet.data.manifest import build_manifest, load_manifest
from kndnet.data.selection import is_manifest, split_rows
from kndnet.errors import ConfigError, DataError
from kndnet.evaluation.metrics import bootstrap_ci, classification_metrics
from kndnet.inference import Predictor, eval_dataset, view_probs

SPLITS = ("test", "val", "train", "all")


@dataclass
class Scored:
    rows: pd.DataFrame
    y_true: np.ndarray
    probs: np.ndarray


def evaluation_rows(data: str, split: str, fmt: str = "auto", val_fold: int = 0) -> pd.DataFrame:
    """A manifest's split, or every image of a data folder in any layout `prepare` reads."""
    path = Path(data)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose {', '.join(SPLITS)}")
    if is_manifest(path):
        rows = split_rows(load_manifest(path), split, val_fold)
        if rows.empty:
            raise DataError(f"{path}: the manifest has no {split!r} images (is its test fraction 0?); choose "
                            f"another split or run `kndnet prepare` with --test-fraction above 0")
        return rows
    manifest, _, _ = build_manifest(DataConfig(path=data, format=fmt, test_fraction=0.0))
    return manifest.reset_index(drop=True)


def score(predictor: Predictor, rows: pd.DataFrame, tta: str = "none", batch_size: int = 64,
          workers: int = 0) -> tuple[Scored, Scored | None]:
    """Plain scores and, with `tta`, the flip-averaged ones from the same pass (None without TTA)."""
    dataset = eval_dataset(rows, predictor.spec)
    plain, averaged = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        views = view_probs(predictor, batch["image"], tta)
        plain.append(views[0])
        if len(views) > 1:
            averaged.append(np.mean(views, axis=0))
    labels = dataset.labels.numpy()
    tta_scored = Scored(rows, labels, np.concatenate(averaged)) if averaged else None
    return Scored(rows, labels, np.concatenate(plain)), tta_scored


def flat_metrics(scored: Scored, resamples: int = 1000, seed: int = 0, prefix: str = "") -> dict:
    """Point metrics and bootstrap CIs as one flat dict of rounded numbers."""
    m = classification_metrics(scored.y_true, scored.probs)
    flat: dict[str, object] = {}
    for key, value in m.items():
        if key == "roc_auc":
            flat.update({f"roc_auc_{c}": v for c, v in value.items()})
        elif key == "per_class":
            for code, stats in value.items():
                flat.update({f"{code}_{s}": v for s, v in stats.items()})
        elif key != "confusion_matrix":
            flat[key] = value
    for name, (low, high) in bootstrap_ci(scored.y_true, scored.probs, resamples, seed).items():
        flat[f"{name}_ci_low"], flat[f"{name}_ci_high"] = low, high
    return {f"{prefix}{k}": (round(float(v), 4) if isinstance(v, (float, np.floating)) else v)
            for k, v in flat.items()}


def predictions_table(scored: Scored) -> pd.DataFrame:
    table = pd.DataFrame({"image_id": scored.rows["image_id"],
                          "true_label": [CLASS_CODES[i] for i in scored.y_true],
                          "predicted_label": [CLASS_CODES[i] for i in scored.probs.argmax(1)]})
    for i, code in enumerate(CLASS_CODES):
        table[f"prob_{code}"] = np.round(scored.probs[:, i], 5)
    return table


def confusion(scored: Scored) -> np.ndarray:
    labels = list(range(scored.probs.shape[1]))
    return confusion_matrix(scored.y_true, scored.probs.argmax(1), labels=labels)


__all__ = ["Scored", "evaluation_rows", "score", "flat_metrics", "predictions_table", "confusion"]
