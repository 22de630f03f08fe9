"""evaluation/metrics.py and evaluation/calibration.py on hand-made arrays, checked against values derived here.

Fast on purpose (no training): this file is the mutation-testing judge of both modules. Expected values
come from hand counts written out below, from small reference codes in this file (a Mann-Whitney AUC, a
ceil-indexed ECE) or from scikit-learn functions the module does not call.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax as sp_softmax
from sklearn import metrics as skm

from kndnet.checkpoint import SPEC_KEY, ModelSpec, load_model, read_checkpoint, save_model_checkpoint
from kndnet.classes import CLASS_CODES
from kndnet.evaluation import metrics
from kndnet.evaluation.calibration import (
    calibrate_checkpoint,
    calibration_summary,
    fit_temperature,
    write_temperature,
)
from kndnet.evaluation.metrics import (
    CI_METRICS,
    balanced_accuracy,
    bootstrap_ci,
    brier_score,
    classification_metrics,
    expected_calibration_error,
    negative_log_likelihood,
    paired_bootstrap_difference,
    reliability_bins,
    with_ci,
)
from kndnet.evaluation.run import evaluation_rows
from kndnet.models import create_model
from tests.helpers import tiny_config

# Ten images, seven classes. Truth: classes 0, 1, 2, 4 (mel), 5 present; 3 and 6 absent. The model calls
# one image 6 (absent from the truth) and never calls 5 (present).
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 4, 4, 4, 5])
Y_PRED = np.array([0, 0, 4, 1, 2, 2, 4, 4, 0, 6])
# Per class, counted by hand (tp, fp, fn): 0 (2, 1, 1), 1 (1, 0, 1), 2 (1, 1, 0), 3 (0, 0, 0),
# 4 (2, 1, 1), 5 (0, 0, 1), 6 (0, 1, 0); support 3, 2, 1, 0, 3, 1, 0.
PRECISION = [2 / 3, 1.0, 1 / 2, 0.0, 2 / 3, 0.0, 0.0]  # 0/0 counts as 0 (class 5 never called, 3 never either)
RECALL = [2 / 3, 1 / 2, 1.0, 0.0, 2 / 3, 0.0, 0.0]
F1 = [2 / 3, 2 / 3, 2 / 3, 0.0, 2 / 3, 0.0, 0.0]
SUPPORT = [3, 2, 1, 0, 3, 1, 0]
CONFUSION = [[2, 0, 0, 0, 1, 0, 0],
             [0, 1, 1, 0, 0, 0, 0],
             [0, 0, 1, 0, 0, 0, 0],
             [0, 0, 0, 0, 0, 0, 0],
             [1, 0, 0, 0, 2, 0, 0],
             [0, 0, 0, 0, 0, 0, 1],
             [0, 0, 0, 0, 0, 0, 0]]


def _hand_probs() -> np.ndarray:
    """Rows whose argmax is Y_PRED, with a distinct confidence per image (0.41, 0.46, ... 0.86: none on a
    1/15 bin edge)."""
    confidence = 0.41 + 0.05 * np.arange(len(Y_PRED))
    probs = np.repeat(((1 - confidence) / 6)[:, None], 7, axis=1)
    probs[np.arange(len(Y_PRED)), Y_PRED] = confidence
    return probs


def _mann_whitney_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Share of (positive, negative) pairs ranked right, ties counting half."""
    pos, neg = scores[positive][:, None], scores[~positive][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def _ceil_bin_ece(y: np.ndarray, probs: np.ndarray, bins: int) -> float:
    """ECE with the bin of a confidence c taken as ceil(c * bins) (bins (k/B, (k+1)/B]), no loop over edges."""
    confidence, correct = probs.max(1), probs.argmax(1) == y
    index = np.ceil(confidence * bins).astype(int) - 1
    total = 0.0
    for k in np.unique(index):
        share = np.mean(index == k)
        total += share * abs(correct[index == k].mean() - confidence[index == k].mean())
    return total


def _random_probs(seed: int = 0, n: int = 300, c: int = 7, signal: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += signal
    return y, sp_softmax(logits, axis=1)


# ---------------------------------------------------------------- point metrics

@pytest.mark.filterwarnings("error")  # 0/0 precision or recall is 0 by choice, not sklearn's warning
def test_point_metrics_on_the_hand_counted_example():
    m = classification_metrics(Y_TRUE, _hand_probs())
    assert m["accuracy"] == pytest.approx(6 / 10)
    present = [0, 1, 2, 4, 5]  # macro averages run over the classes in the truth
    assert m["balanced_accuracy"] == pytest.approx(np.mean([RECALL[c] for c in present]))  # 0.5667
    assert m["macro_f1"] == pytest.approx(np.mean([F1[c] for c in present]))  # 8/15
    assert m["macro_precision"] == pytest.approx(np.mean([PRECISION[c] for c in present]))
    assert m["macro_recall"] == pytest.approx(np.mean([RECALL[c] for c in present]))
    weights = np.array([SUPPORT[c] for c in present]) / 10
    assert m["weighted_precision"] == pytest.approx(np.dot(weights, [PRECISION[c] for c in present]))  # 0.65
    assert m["weighted_recall"] == pytest.approx(0.6)
    assert m["weighted_f1"] == pytest.approx(0.6)
    assert m["melanoma_sensitivity"] == pytest.approx(2 / 3)  # two of the three mel images called mel
    assert m["melanoma_specificity"] == pytest.approx(6 / 7)  # one of the seven others called mel
    assert m["confusion_matrix"] == CONFUSION
    assert m["per_class"] == {code: {"precision": pytest.approx(PRECISION[c]), "recall": pytest.approx(RECALL[c]),
                                     "f1": pytest.approx(F1[c]), "support": SUPPORT[c]}
                              for c, code in enumerate(CLASS_CODES)}
    assert all(type(row["support"]) is int for row in m["per_class"].values())


@pytest.mark.filterwarnings("error")  # 0/0 precision or recall is 0 by choice, not sklearn's warning
def test_point_metrics_carry_the_calibration_scores_and_the_auc_table():
    probs = _hand_probs()
    m = classification_metrics(Y_TRUE, probs)
    assert m["ece"] == pytest.approx(_ceil_bin_ece(Y_TRUE, probs, 15))
    assert m["nll"] == pytest.approx(skm.log_loss(Y_TRUE, probs, labels=range(7)))
    assert m["brier"] == pytest.approx(np.mean(np.sum((probs - np.eye(7)[Y_TRUE]) ** 2, axis=1)))
    auc = m["roc_auc"]
    for c in (0, 1, 2, 4, 5):
        assert auc[CLASS_CODES[c]] == pytest.approx(_mann_whitney_auc(Y_TRUE == c, probs[:, c]))
    assert np.isnan(auc[CLASS_CODES[3]]) and np.isnan(auc[CLASS_CODES[6]])  # no positive image
    present = [_mann_whitney_auc(Y_TRUE == c, probs[:, c]) for c in (0, 1, 2, 4, 5)]
    assert auc["macro"] == pytest.approx(np.mean(present))
    assert set(auc) == {*CLASS_CODES, "macro"}


@pytest.mark.filterwarnings("error")  # undefined is nan by the module's own test, not numpy's or sklearn's warning
def test_auc_and_melanoma_rates_are_undefined_without_both_kinds_of_image():
    probs = _hand_probs()
    only_mel = classification_metrics(np.full(10, 4), probs)
    assert all(np.isnan(v) for v in only_mel["roc_auc"].values())  # every class all-positive or all-negative
    assert np.isnan(only_mel["melanoma_specificity"])
    assert only_mel["melanoma_sensitivity"] == pytest.approx(np.mean(Y_PRED == 4))
    no_mel = classification_metrics(np.full(10, 0), probs)
    assert np.isnan(no_mel["melanoma_sensitivity"])
    assert no_mel["melanoma_specificity"] == pytest.approx(np.mean(Y_PRED != 4))


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_in_the_truth():
    assert balanced_accuracy(Y_TRUE, Y_PRED) == pytest.approx((2 / 3 + 1 / 2 + 1 + 2 / 3 + 0) / 5)
    y, p = _random_probs()
    assert balanced_accuracy(y, p.argmax(1)) == pytest.approx(skm.balanced_accuracy_score(y, p.argmax(1)))


def test_the_bootstrap_metrics_on_the_hand_counted_example():
    probs = _hand_probs()
    assert CI_METRICS["accuracy"](Y_TRUE, probs) == pytest.approx(0.6)
    assert CI_METRICS["balanced_accuracy"](Y_TRUE, probs) == pytest.approx(2.8333333 / 5)
    assert CI_METRICS["macro_f1"](Y_TRUE, probs) == pytest.approx(8 / 15)


# ---------------------------------------------------------------- calibration scores

# Four images, two classes, bins of width 1/4: (0, .25], (.25, .5], (.5, .75], (.75, 1].
ECE_Y = np.array([1, 0, 1, 0])
ECE_P = np.array([[0.5, 0.5],   # confidence .5 (a bin's upper edge), argmax 0: wrong
                  [1.0, 0.0],   # confidence 1 (the last edge): right
                  [0.2, 0.8],   # .8: right
                  [0.7, 0.3]])  # .7: right


def test_ece_by_hand_with_confidences_on_bin_edges():
    # (.25, .5]: 1 image, accuracy 0, confidence .5; (.5, .75]: 1, 1 vs .7; (.75, 1]: 2, 1 vs .9
    expected = 1 / 4 * 0.5 + 1 / 4 * 0.3 + 2 / 4 * 0.1
    assert expected_calibration_error(ECE_Y, ECE_P, bins=4) == pytest.approx(expected)  # 0.25


def test_ece_uses_fifteen_bins_by_default():
    # confidences .87 and .93 share the bin (13/15, 14/15] only with 15 bins (14 or 16 separate them)
    y = np.array([0, 1])
    probs = np.array([[0.87, 0.13], [0.93, 0.07]])  # the first right, the second wrong
    together = abs(0.5 - 0.9)
    assert expected_calibration_error(y, probs) == pytest.approx(together)
    assert expected_calibration_error(y, probs, bins=16) == pytest.approx(0.5 * 0.13 + 0.5 * 0.93)


def test_ece_matches_a_ceil_indexed_reference_on_random_predictions():
    y, p = _random_probs(seed=3)
    for bins in (5, 15):
        assert expected_calibration_error(y, p, bins=bins) == pytest.approx(_ceil_bin_ece(y, p, bins))


@pytest.mark.filterwarnings("error")  # an empty bin is nan without numpy's mean-of-empty-slice warning
def test_reliability_bins_by_hand():
    rows = reliability_bins(ECE_Y, ECE_P, bins=4)
    assert [(r["low"], r["high"], r["count"]) for r in rows] == [(0.0, 0.25, 0), (0.25, 0.5, 1), (0.5, 0.75, 1),
                                                                   (0.75, 1.0, 2)]
    assert np.isnan(rows[0]["confidence"]) and np.isnan(rows[0]["accuracy"])
    assert [(r["confidence"], r["accuracy"]) for r in rows[1:]] == [(0.5, 0.0), (0.7, 1.0), (pytest.approx(0.9), 1.0)]
    default = reliability_bins(ECE_Y, ECE_P)
    assert len(default) == 15 and default[1]["low"] == pytest.approx(1 / 15) and default[-1]["high"] == 1.0
    assert sum(r["count"] for r in default) == 4


def test_nll_matches_scikit_learn_and_stays_finite_on_a_zero_probability():
    y, p = _random_probs(seed=1)
    assert negative_log_likelihood(y, p) == pytest.approx(skm.log_loss(y, p))
    sure_and_wrong = np.array([[1.0, 0.0], [0.5, 0.5]])
    nll = negative_log_likelihood(np.array([1, 0]), sure_and_wrong)
    assert np.isfinite(nll) and nll > 10  # -log(0) is clipped to a large finite cost, not inf or nan


def test_brier_by_hand():
    y = np.array([0, 2])
    probs = np.array([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]])
    # (.5^2 + .25^2 + .25^2) = .375; (.2^2 + .2^2 + .4^2) = .24; mean .3075
    assert brier_score(y, probs) == pytest.approx(0.3075)


# ---------------------------------------------------------------- bootstrap

def _recording_metric(monkeypatch):
    """Replace the bootstrap's metrics by one that records the labels of each resample and returns their mean."""
    seen = []

    def record(y, p):
        seen.append(y.copy())
        return float(np.mean(y))
    monkeypatch.setattr(metrics, "CI_METRICS", {"mean_label": record})
    return seen


def test_bootstrap_resamples_images_with_replacement_1000_times_by_default(monkeypatch):
    seen = _recording_metric(monkeypatch)
    n = 6
    y, p = np.arange(n), np.zeros((n, 7))
    ci = bootstrap_ci(y, p)
    assert len(seen) == 1000 and all(len(draw) == n for draw in seen)
    drawn = np.concatenate(seen)
    assert set(drawn.tolist()) == set(range(n))  # every image, the first and the last included, can be drawn
    assert any(len(set(draw.tolist())) < n for draw in seen)  # with replacement
    means = [draw.mean() for draw in seen]
    assert ci["mean_label"] == (pytest.approx(np.percentile(means, 2.5)), pytest.approx(np.percentile(means, 97.5)))
    default_draws = [draw.tolist() for draw in seen]
    seen.clear()
    assert bootstrap_ci(y, p, resamples=1000, seed=0, level=0.95) == ci  # the documented defaults
    assert [draw.tolist() for draw in seen] == default_draws  # the same draws: the seed is used, and is 0
    seen.clear()
    bootstrap_ci(y, p, seed=1)
    assert [draw.tolist() for draw in seen] != default_draws


def test_bootstrap_level_sets_the_percentiles(monkeypatch):
    seen = _recording_metric(monkeypatch)
    y, p = np.arange(8), np.zeros((8, 7))
    ci = bootstrap_ci(y, p, resamples=200, seed=3, level=0.8)
    means = [draw.mean() for draw in seen]
    assert ci["mean_label"] == (pytest.approx(np.percentile(means, 10)), pytest.approx(np.percentile(means, 90)))


def test_bootstrap_ci_of_the_real_metrics_brackets_them():
    y, p = _random_probs(seed=2, n=200)
    ci = bootstrap_ci(y, p, resamples=60, seed=1)
    assert set(ci) == {"accuracy", "balanced_accuracy", "macro_f1"}
    m = classification_metrics(y, p)
    for name, (low, high) in ci.items():
        assert low < m[name] < high


def test_paired_difference_is_b_minus_a_with_a_one_sided_p_value():
    y, p = _random_probs(seed=4, n=200)
    better = p.copy()
    fixed = np.flatnonzero(p.argmax(1) != y)[:30]  # B corrects 30 of A's errors and nothing else
    better[fixed, y[fixed]] = 1.0
    gain = paired_bootstrap_difference(y, p, better, resamples=50, seed=2)
    assert gain["accuracy"]["difference"] == pytest.approx(30 / 200)
    assert gain["accuracy"]["ci_low"] > 0 and gain["accuracy"]["p_not_better"] == 0.0
    loss = paired_bootstrap_difference(y, better, p, resamples=50, seed=2)
    assert loss["accuracy"]["difference"] == pytest.approx(-30 / 200) and loss["accuracy"]["p_not_better"] == 1.0
    tie = paired_bootstrap_difference(y, p, p, resamples=20)
    assert tie["balanced_accuracy"] == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_not_better": 1.0}


def test_paired_difference_defaults_and_percentiles(monkeypatch):
    seen = []

    def first_column_mean(y, p):  # records the labels of each call (B's, then A's, per resample)
        seen.append(y.copy())
        return float(np.mean(p[:, 0]))
    monkeypatch.setattr(metrics, "PAIRED_METRICS", {"m": first_column_mean})
    y, a, b = np.arange(5), np.zeros((5, 7)), np.zeros((5, 7))
    b[:, 0] = [0.0, 0.1, 0.2, 0.3, 0.4]  # B - A on a resample: the mean of its rows' values, seed-dependent
    out = paired_bootstrap_difference(y, a, b)
    assert len(seen) == 2 * 1000 + 2  # 1000 resamples and the point estimate, each scoring B and A
    assert out["m"]["difference"] == pytest.approx(0.2)
    assert [d.tolist() for d in seen[:2]] == [seen[0].tolist()] * 2  # A and B scored on the same resample
    diffs = [b[draw, 0].mean() for draw in seen[:-2:2]]
    assert (out["m"]["ci_low"], out["m"]["ci_high"]) == (pytest.approx(np.percentile(diffs, 2.5)),
                                                         pytest.approx(np.percentile(diffs, 97.5)))
    assert out["m"]["p_not_better"] == pytest.approx(np.mean(np.array(diffs) <= 0))  # draws of image 0 only
    default_draws = [d.tolist() for d in seen]
    seen.clear()
    assert paired_bootstrap_difference(y, a, b, resamples=1000, seed=0, level=0.95) == out  # the defaults
    assert [d.tolist() for d in seen] == default_draws
    seen.clear()
    paired_bootstrap_difference(y, a, b, seed=1)
    assert [d.tolist() for d in seen] != default_draws


def test_binary_auc_is_the_mann_whitney_share_with_ties_counting_half():
    rng = np.random.default_rng(3)
    positives = rng.uniform(size=200) < 0.3
    scores = np.round(rng.normal(positives * 0.8, 1.0), 1)  # rounded: many ties
    assert metrics.binary_auc(positives, scores) == pytest.approx(_mann_whitney_auc(positives, scores))
    assert metrics.binary_auc(positives, scores) == pytest.approx(skm.roc_auc_score(positives, scores))
    assert np.isnan(metrics.binary_auc(np.zeros(5, bool), scores[:5]))
    assert np.isnan(metrics.binary_auc(np.ones(5, bool), scores[:5]))


def test_macro_roc_auc_equals_the_reported_one_and_skips_classes_without_both_outcomes():
    y, p = _random_probs(seed=5, n=150)
    assert metrics.macro_roc_auc(y, p) == pytest.approx(classification_metrics(y, p)["roc_auc"]["macro"])
    present = np.array([0, 0, 1, 1, 1])  # classes 2-6 absent: only 0 and 1 have both outcomes
    scores = np.zeros((5, 7))
    scores[:, 0] = [0.9, 0.2, 0.1, 0.3, 0.4]  # class 0: 0.9 beats all 3 negatives, 0.2 beats 0.1: 4 of 6 pairs
    scores[:, 1] = [0.1, 0.2, 0.3, 0.4, 0.5]  # class 1: all 6 pairs right
    assert metrics.macro_roc_auc(present, scores) == pytest.approx((4 / 6 + 1.0) / 2)
    assert np.isnan(metrics.macro_roc_auc(np.zeros(4, int), np.full((4, 7), 1 / 7)))


def test_paired_difference_ranks_too_a_model_that_orders_images_better_at_the_same_calls():
    """Same argmax everywhere, better ordering: accuracy and F1 do not move, macro ROC-AUC does."""
    y, p = _random_probs(seed=6, n=300, signal=0.5)
    sharper = p.copy()
    rows = np.arange(len(y))
    sharper[rows, y] = np.where(p.argmax(1) == y, p[rows, y], p[rows, y] + 0.5 * (p.max(1) - p[rows, y]))
    assert np.array_equal(sharper.argmax(1), p.argmax(1))
    out = paired_bootstrap_difference(y, p, sharper, resamples=200)
    assert out["accuracy"]["difference"] == 0.0 and out["macro_f1"]["difference"] == 0.0
    expected = metrics.macro_roc_auc(y, sharper) - metrics.macro_roc_auc(y, p)
    assert expected > 0 and out["roc_auc_macro"]["difference"] == pytest.approx(expected)
    assert out["roc_auc_macro"]["ci_low"] > 0 and out["roc_auc_macro"]["p_not_better"] == 0.0


def test_paired_difference_refuses_models_scored_on_other_images():
    y, p = _random_probs(n=20)
    with pytest.raises(ValueError,
                       match="^every run of both models must be scored on the same images, in the same order$"):
        paired_bootstrap_difference(y, p[:-1], p)
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap_difference(y, p, p[:-1])


def test_with_ci_formats_three_decimals():
    m = {"acc": 0.81234, "acc_ci_low": 0.7896, "acc_ci_high": 0.8351}
    assert with_ci(m, "acc") == "0.812 [0.790, 0.835]"


# ---------------------------------------------------------------- temperature scaling

def _nll_at(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    return skm.log_loss(y, sp_softmax(logits / temperature, axis=1), labels=range(logits.shape[1]))


def _tempered_labels(seed: int, temperature: float, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): the NLL-optimal T is close to it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, 7))
    cumulative = np.cumsum(sp_softmax(logits / temperature, axis=1), axis=1)
    y = (rng.uniform(size=(n, 1)) > cumulative).sum(1)
    return logits, np.minimum(y, 6)


def test_fitted_temperature_minimises_the_nll():
    logits, y = _tempered_labels(0, 2.5)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(2.5, rel=0.1)
    assert _nll_at(logits, y, t) <= min(_nll_at(logits, y, t * 1.01), _nll_at(logits, y, t / 1.01))


def test_temperature_fit_survives_huge_logits():
    """Softmax is shift-invariant per row; logits near +-1000 must neither overflow nor underflow the fit (it
    subtracts each row's own max: one max over all rows would leave the rows far below it at exp(-big) = 0)."""
    logits, y = _tempered_labels(1, 0.7)
    assert fit_temperature(logits + 1000.0, y) == pytest.approx(fit_temperature(logits, y), rel=1e-3)
    assert fit_temperature(logits + 1000.0, y) == pytest.approx(0.7, rel=0.1)
    offsets = np.random.default_rng(6).uniform(-1000, 1000, (len(y), 1))
    assert fit_temperature(logits + offsets, y) == pytest.approx(fit_temperature(logits, y), rel=1e-3)


def test_temperature_stays_in_its_bounds():
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 3, (500, 7))
    y = logits.argmax(1)  # always right: the NLL keeps falling as T shrinks
    assert fit_temperature(logits, y) == pytest.approx(0.05, rel=1e-3)
    assert fit_temperature(logits, rng.integers(0, 7, 500)) == pytest.approx(20.0, rel=1e-3)  # pure noise


def test_calibration_summary_rounds_and_divides_by_the_temperature():
    logits, y = _tempered_labels(2, 2.0, n=800)
    summary = calibration_summary(logits, y, 2.123456)
    assert summary["calibration_temperature"] == 2.1235
    before, after = _ceil_bin_ece(y, sp_softmax(logits, 1), 15), _ceil_bin_ece(y, sp_softmax(logits / 2.123456, 1), 15)
    assert summary["ece_before"] == pytest.approx(before, abs=5e-5) and summary["ece_before"] == round(before, 4)
    assert summary["ece_after"] == pytest.approx(after, abs=5e-5) and summary["ece_after"] == round(after, 4)
    assert after < before / 2


@pytest.fixture
def untrained_checkpoint(tmp_path):
    """An untrained student at 32 px saved as a kndnet checkpoint, with its config."""
    torch.manual_seed(0)
    cfg = tiny_config("student", tmp_path / "unused")
    model = create_model(cfg.model, pretrained=False)
    return save_model_checkpoint(model, ModelSpec.from_config(cfg), cfg, tmp_path / "student.ckpt"), model


def test_write_temperature_sets_the_spec_and_keeps_the_weights(untrained_checkpoint, tmp_path):
    path, model = untrained_checkpoint
    ckpt = read_checkpoint(path)
    ckpt[SPEC_KEY]["spec"]["temperature"] = 9.0  # the key a file written before the rename carries
    torch.save(ckpt, tmp_path / "old.ckpt")
    out = write_temperature(tmp_path / "old.ckpt", np.float64(1.75), tmp_path / "sub" / "cal.ckpt")
    assert out == tmp_path / "sub" / "cal.ckpt"
    spec = read_checkpoint(out)[SPEC_KEY]["spec"]
    assert spec["calibration_temperature"] == 1.75 and type(spec["calibration_temperature"]) is float
    assert "temperature" not in spec
    loaded, loaded_spec = load_model(out)
    assert loaded_spec.calibration_temperature == 1.75
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["cal.ckpt"]  # no temporary left


def _constant_predictor(path, model, bias: np.ndarray, stored_temperature: float, tmp_path) -> str:
    """The checkpoint's model with a zero classifier weight and `bias`: its logits are `bias` on every image."""
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    _, spec = load_model(path)
    spec.calibration_temperature = stored_temperature
    from kndnet.checkpoint import load_config_from_checkpoint
    out = tmp_path / f"constant_T{stored_temperature}.ckpt"
    save_model_checkpoint(model, spec, load_config_from_checkpoint(path), out)
    return str(out)


def test_calibrate_fits_on_the_raw_logits_of_the_validation_split(untrained_checkpoint, synth_manifest, tmp_path):
    """Logits equal to log(val class shares) on every image: NLL on val is least at T = 1 exactly (the
    constant prediction that matches the label shares). A stored T of 3 must be ignored, not divided in."""
    path, model = untrained_checkpoint
    val = evaluation_rows(str(synth_manifest), "val")
    shares = val["label"].value_counts(normalize=True).reindex(list(CLASS_CODES)).to_numpy()
    assert (shares > 0).all()
    ckpt = _constant_predictor(path, model, np.log(shares), 3.0, tmp_path)
    target, summary, n = calibrate_checkpoint(ckpt, str(synth_manifest))
    assert target == tmp_path / "constant_T3.0_calibrated.ckpt" and n == len(val)
    fitted = load_model(target)[1].calibration_temperature
    assert fitted == pytest.approx(1.0, abs=2e-3)
    assert summary["calibration_temperature"] == pytest.approx(fitted, abs=1e-4)
    # the same prediction for every image, equal to the label shares, is calibrated: ECE 0 before and after
    assert summary["ece_before"] == pytest.approx(0, abs=1e-3) and summary["ece_after"] == pytest.approx(0, abs=1e-3)
    test = evaluation_rows(str(synth_manifest), "test")
    test_shares = test["label"].value_counts(normalize=True).reindex(list(CLASS_CODES)).fillna(0).to_numpy()
    if not np.allclose(test_shares, shares):  # on the test split the same logits want another T
        target, _, n = calibrate_checkpoint(ckpt, str(synth_manifest), split="test", out=tmp_path / "t.ckpt")
        assert target == tmp_path / "t.ckpt" and n == len(test)
        assert load_model(target)[1].calibration_temperature != pytest.approx(1.0, abs=2e-3)


def test_calibrate_on_a_data_folder_fits_on_the_validation_split_its_training_made(untrained_checkpoint, synth_dir,
                                                                                     tmp_path):
    """Given the image folder itself, calibrate splits it as the model's training config did (not every image)."""
    path, model = untrained_checkpoint
    from kndnet.checkpoint import load_config_from_checkpoint
    val = evaluation_rows(str(synth_dir), "val", data_cfg=load_config_from_checkpoint(path).data)
    shares = val["label"].value_counts(normalize=True).reindex(list(CLASS_CODES)).to_numpy()
    assert (shares > 0).all()
    ckpt = _constant_predictor(path, model, np.log(shares), 1.0, tmp_path)
    target, summary, n = calibrate_checkpoint(ckpt, str(synth_dir))
    assert n == len(val) and n < len(evaluation_rows(str(synth_dir), "val"))  # without the config: every image
    assert load_model(target)[1].calibration_temperature == pytest.approx(1.0, abs=2e-3)
