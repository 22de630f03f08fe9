"""Temperature scaling (Guo et al., ICML 2017): one scalar T fitted on the validation split.

Dividing logits by T > 1 softens over-confident predictions without changing any argmax, so
accuracy and F1 are untouched while ECE and NLL drop. T is stored in the checkpoint's spec and
applied by evaluate, predict and export.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from kndnet.checkpoint import SPEC_KEY, read_checkpoint
from kndnet.evaluation.metrics import expected_calibration_error
from kndnet.inference import softmax
from kndnet.io import atomic_path


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the NLL of softmax(logits / T)."""
    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(y_true)), y_true].mean())
    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def calibration_summary(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> dict[str, float]:
    return {"calibration_temperature": round(temperature, 4),
            "ece_before": round(expected_calibration_error(y_true, softmax(logits)), 4),
            "ece_after": round(expected_calibration_error(y_true, softmax(logits / temperature)), 4)}


def write_temperature(checkpoint: str | Path, temperature: float, out: str | Path) -> Path:
    """Copy `checkpoint` to `out` with the spec's calibration temperature set (atomic)."""
    return _write_temperature(read_checkpoint(checkpoint), temperature, out)


def _write_temperature(ckpt: dict, temperature: float, out: str | Path) -> Path:
    spec = ckpt[SPEC_KEY]["spec"]
    spec.pop("temperature", None)  # a file written before the rename
    spec["calibration_temperature"] = float(temperature)
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    return Path(out)


def calibrate_checkpoint(model: str | Path, data: str, split: str = "val", fmt: str = "auto",
                         out: str | Path | None = None,
                         logit_adjust: str | None = None) -> tuple[Path, dict[str, float], int]:
    """Fit T on `split` of `data` for `model`; write the calibrated checkpoint. Returns (path, summary, n).

    With `logit_adjust` (a metric name) it first chooses a logit adjustment on the same split
    (evaluation/logit_adjustment.py), folds it into the classifier bias, and fits T on the adjusted logits.
    """
    from torch.utils.data import DataLoader

    from kndnet.config import config_from_dict
    from kndnet.evaluation.run import evaluation_rows
    from kndnet.inference import TorchPredictor, eval_dataset
    predictor = TorchPredictor(model)
    predictor.spec.calibration_temperature = 1.0  # fit on raw logits, even when re-calibrating
    ckpt, summary = read_checkpoint(model), {}
    data_cfg = config_from_dict(ckpt[SPEC_KEY]["config"]).data
    rows = evaluation_rows(data, split, fmt, data_cfg)
    dataset = eval_dataset(rows, predictor.spec)
    logits = np.concatenate([predictor.logits(b["image"]) for b in DataLoader(dataset, batch_size=64)])
    labels = dataset.labels.numpy()
    if logit_adjust:
        logits, summary = _adjust(ckpt, predictor, logits, labels, evaluation_rows(data, "train", fmt, data_cfg),
                                  logit_adjust)
    temperature = fit_temperature(logits, labels)
    target = Path(out or Path(model).with_name(Path(model).stem + "_calibrated.ckpt"))
    _write_temperature(ckpt, temperature, target)
    return target, {**summary, **calibration_summary(logits, labels, temperature)}, len(rows)


def _adjust(ckpt: dict, predictor, logits: np.ndarray, labels: np.ndarray, train_rows,
            metric: str) -> tuple[np.ndarray, dict[str, float]]:
    """Choose tau on these logits, fold tau * log(training prior) into `ckpt`; the adjusted logits."""
    from kndnet.classes import CLASS_CODES
    from kndnet.data.selection import class_counts
    from kndnet.evaluation import logit_adjustment as la
    spec = predictor.spec
    raw = la.unshifted(logits, spec.logit_shift)
    prior_log = la.log_prior(class_counts(train_rows))
    tau, _ = la.choose_tau(raw, labels, prior_log, metric)
    la.fold_shift(ckpt, la.classifier_bias_name(predictor.model, spec.num_classes), tau * prior_log, tau)
    return raw + tau * prior_log, la.adjustment_summary(raw, labels, prior_log, tau, metric,
                                                        CLASS_CODES.index("mel"))
