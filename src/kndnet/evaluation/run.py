"""`kndnet evaluate`: score a model on a manifest split or any data layout, write the report files.

Outputs: metrics.json (flat, rounded, with model/data/split), predictions.csv, confusion_matrix.png,
reliability.png and report.md. With --tta, TTA metrics are reported beside the plain ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix
from torch.utils.data import DataLoader

from kndnet.classes import CLASS_CODES
from kndnet.config import DataConfig
from kndnet.data.manifest import build_manifest, load_manifest
from kndnet.data.selection import SPLITS, is_manifest, split_rows
from kndnet.errors import ConfigError, DataError
from kndnet.evaluation.colour_cast import colour_cast
from kndnet.evaluation.metrics import bootstrap_ci, classification_metrics
from kndnet.inference import Predictor, eval_dataset, view_probs


@dataclass
class Scored:
    rows: pd.DataFrame
    y_true: np.ndarray
    probs: np.ndarray


def evaluation_rows(data: str, split: str, fmt: str = "auto", data_cfg: DataConfig | None = None) -> pd.DataFrame:
    """The rows of `split` in a manifest or a data folder.

    `data_cfg` is the model's own data config (from its checkpoint): a manifest's val/train rows follow its
    `val_fold`, and a data folder is split exactly as its training run split it (folds, seed, test
    fraction), so `calibrate` fits on that run's validation images. Without it a data folder is external
    data and every image is scored (`kndnet evaluate` on, e.g., the ISIC 2018 test set).
    """
    path = Path(data)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose {', '.join(SPLITS)}")
    val_fold = data_cfg.val_fold if data_cfg else 0
    if is_manifest(path):
        rows = split_rows(load_manifest(path), split, val_fold)
    elif data_cfg is not None:
        split_like_training = replace(data_cfg, path=data, format=fmt)
        rows = split_rows(build_manifest(split_like_training)[0], split, val_fold)
    else:
        return build_manifest(DataConfig(path=data, format=fmt, test_fraction=0.0))[0].reset_index(drop=True)
    if rows.empty:
        raise DataError(f"{path}: it has no {split!r} images (is its test fraction 0?); choose another split "
                        f"or run `kndnet prepare` with --test-fraction above 0")
    return rows


def score(predictor: Predictor, rows: pd.DataFrame, tta: str = "none", batch_size: int = 64,
          workers: int = 0, cast_sigma: float = 0.0) -> tuple[Scored, Scored | None]:
    """Plain scores and, with `tta`, the flip-averaged ones from the same pass (None without TTA).

    `cast_sigma` > 0 scores the images under each one's simulated colour cast (evaluation.colour_cast).
    """
    dataset = eval_dataset(rows, predictor.spec)
    plain, averaged = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        images = batch["image"]
        if cast_sigma:
            images = colour_cast(images, [dataset.image_ids[i] for i in batch["index"]], cast_sigma)
        views = view_probs(predictor, images, tta)
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
