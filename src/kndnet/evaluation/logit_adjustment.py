"""Post-hoc logit adjustment (Menon et al., ICLR 2021): add tau * log(training class prior) to the logits.

Why: the students train on class-balanced batches, so their scores rank classes as if all seven were
equally common. On HAM10000's real mix (72% naevi) that over-calls the rare classes: the shipped KD
student's test macro precision is 0.48 against a macro recall of 0.68. Adding tau * log(prior) moves the
decision rule towards the training prior: tau = 0 keeps the balanced rule (best balanced accuracy),
tau = 1 is the Bayes rule for accuracy, and macro-F1 peaks in between. One scalar, chosen on the
validation split, so the test split stays unseen.

A model that saw another prior, n_c**e, has its balanced rule at tau = -e and its Bayes rule at 1 - e:
e = 0.5 for the `sqrt` sampler (`training.datamodule.prior_exponent`), 1 for `random`, and for a KD
student somewhere towards its teachers' e, since it learns their scores. So tau runs over -1 ... 1 and 0
is always the rule the model was trained for.

The shift is folded into the classifier's bias, so every runtime that runs the weights (PyTorch, ONNX,
int8, LiteRT, TFLite Micro, the web app) applies it without a graph change; the model spec records tau
and the shift so it can be undone or re-chosen. The price is rare-class recall, melanoma sensitivity
among them: `kndnet calibrate` prints it, and the recipe leaves the adjustment off.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from kndnet.checkpoint import EMA_PREFIX, SPEC_KEY
from kndnet.errors import CheckpointError, ConfigError
from kndnet.evaluation.metrics import CI_METRICS

TAU_GRID = tuple(round(0.05 * i, 2) for i in range(-20, 21))  # -1, -0.95, ..., 1
ADJUST_METRICS = tuple(CI_METRICS)  # the metrics evaluate reports with CIs, each scored on the argmax


def log_prior(class_counts: Sequence[int]) -> np.ndarray:
    """log of the training class frequencies, add-one smoothed so that a class absent from training
    gets a finite (very negative) shift rather than -inf."""
    counts = np.asarray(class_counts, dtype=np.float64) + 1.0
    return np.log(counts / counts.sum())


def choose_tau(logits: np.ndarray, y_true: np.ndarray, prior_log: np.ndarray, metric: str = "macro_f1",
               grid: Sequence[float] = TAU_GRID) -> tuple[float, dict[float, float]]:
    """The tau on `grid` whose adjusted argmax scores best on `metric`, and the whole curve.

    Ties go to the tau nearest 0, the rule closest to the one the model was trained for.
    """
    if metric not in ADJUST_METRICS:
        raise ConfigError(f"unknown logit-adjustment metric {metric!r}; choose {', '.join(ADJUST_METRICS)}")
    score = CI_METRICS[metric]
    curve = {float(t): score(y_true, logits + t * prior_log) for t in grid}
    best = max(curve.values())
    return min((t for t, v in curve.items() if v == best), key=abs), curve


def classifier_bias_name(model: nn.Module, num_classes: int) -> str:
    """State-dict name of the bias of the last Linear layer with one output per class (student and timm)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not names or getattr(model.get_submodule(names[-1]), "bias", None) is None:
        raise CheckpointError(f"{type(model).__name__} has no classifier bias with {num_classes} outputs to "
                              "fold a logit adjustment into")
    return f"{names[-1]}.bias"


def fold_shift(ckpt: dict, bias_name: str, shift: np.ndarray, tau: float) -> dict:
    """Put `shift` into the classifier bias of every weight copy in `ckpt` (trained and EMA), replacing
    the shift an earlier adjustment folded in, and record tau and the shift in the spec. In place."""
    spec = ckpt[SPEC_KEY]["spec"]
    previous = np.asarray(spec.get("logit_shift") or np.zeros_like(shift), dtype=np.float64)
    delta = torch.as_tensor(shift - previous, dtype=torch.float32)
    state = ckpt.get("state_dict") or {}
    keys = [prefix + bias_name for prefix in ("model.", EMA_PREFIX) if prefix + bias_name in state]
    if not keys:
        raise CheckpointError(f"the checkpoint has no weights named {bias_name!r} to fold the adjustment into")
    for key in keys:
        state[key] = state[key] + delta.to(state[key].dtype)
    spec["prior_tau"] = float(tau)
    spec["logit_shift"] = [float(v) for v in shift]
    return ckpt


def unshifted(logits: np.ndarray, logit_shift: Sequence[float]) -> np.ndarray:
    """Logits as the model scored before any folded adjustment (so a new tau replaces, not stacks)."""
    return logits - np.asarray(logit_shift, dtype=logits.dtype) if len(logit_shift) else logits


def adjustment_summary(logits: np.ndarray, y_true: np.ndarray, prior_log: np.ndarray, tau: float,
                       metric: str, melanoma: int) -> dict[str, float]:
    """Validation figures before and after, including the melanoma sensitivity the adjustment costs."""
    adjusted = logits + tau * prior_log
    is_mel = y_true == melanoma
    def sensitivity(scores: np.ndarray) -> float:
        return round(float((scores[is_mel].argmax(1) == melanoma).mean()), 4) if is_mel.any() else float("nan")
    return {"prior_tau": tau, "adjust_metric": metric,
            f"{metric}_before": round(CI_METRICS[metric](y_true, logits), 4),
            f"{metric}_after": round(CI_METRICS[metric](y_true, adjusted), 4),
            "melanoma_sensitivity_before": sensitivity(logits),
            "melanoma_sensitivity_after": sensitivity(adjusted)}
