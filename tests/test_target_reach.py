"""scripts/target_reach.py: the best per-class-bias decision rule for a joint macro-F1 / balanced-accuracy target."""

from __future__ import annotations

import numpy as np
import pytest

from kndnet.classes import CLASS_CODES
from kndnet.evaluation.metrics import CI_METRICS
from tests.helpers import load_script, predictions_folder

NV = CLASS_CODES.index("nv")


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(1, keepdims=True))
    return exp / exp.sum(1, keepdims=True)


def _labels(n: int) -> np.ndarray:
    return np.array([NV if i % 3 else i % 7 for i in range(n)])  # nv common, every class present


def test_scores_match_the_projects_metrics_including_a_class_only_predicted():
    """Macro-F1 over the classes present in the labels, as every evaluation of the project reports it."""
    reach = load_script("target_reach")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 300)                  # class 6 never true
    predicted = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 7, 300))
    assert (predicted == 6).any()
    macro_f1, balanced = reach.scores(labels, predicted, 7)
    one_hot = np.eye(7)[predicted]
    assert macro_f1 == pytest.approx(CI_METRICS["macro_f1"](labels, one_hot))
    assert balanced == pytest.approx(CI_METRICS["balanced_accuracy"](labels, one_hot))


def test_a_perfect_ranking_behind_a_wrong_prior_reaches_the_targets(tmp_path):
    """Every image ranks its true class first once nv's extra 1.5 is taken away: a rule problem, not a ranking one."""
    reach = load_script("target_reach")
    labels = _labels(140)
    logits = np.eye(7)[labels]
    logits[:, NV] += 1.5                              # as trained, everything is called nv
    folder = predictions_folder(tmp_path / "e", [f"i{k}" for k in range(140)], _softmax(logits),
                                [CLASS_CODES[k] for k in labels])
    as_trained, best = reach.reach(folder, (0.62, 0.70))
    assert as_trained.balanced_accuracy == pytest.approx(1 / 7)
    assert (best.macro_f1, best.balanced_accuracy) == (1.0, 1.0)
    others = np.delete(best.bias, NV)
    assert others.min() - best.bias[NV] >= 0.5 - 1e-9    # nv's lead over the true class (0.5) taken away
    assert reach.margin(best, (0.62, 0.70)) == pytest.approx(0.30)


def test_an_uninformative_ranking_misses_whatever_the_rule(tmp_path):
    reach = load_script("target_reach")
    labels = _labels(210)
    probs = np.random.default_rng(1).dirichlet(np.ones(7), size=210)
    folder = predictions_folder(tmp_path / "e", [f"i{k}" for k in range(210)], probs,
                                [CLASS_CODES[k] for k in labels])
    _, best = reach.reach(folder, (0.62, 0.70))
    assert reach.margin(best, (0.62, 0.70)) < -0.2


def test_a_missing_folder_exits_2_by_name_and_help_exits_0(tmp_path, capsys):
    reach = load_script("target_reach")
    assert reach.main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere/predictions.csv not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as help_asked:
        reach.main(["--help"])
    assert help_asked.value.code == 0 and "both target scores" in capsys.readouterr().out


def test_a_rule_searched_on_another_folder_is_applied_as_found(tmp_path, capsys):
    """The rule that fixes the biased folder leaves an already unbiased one worse off than its own rule would."""
    reach = load_script("target_reach")
    labels = _labels(140)
    ids, names = [f"i{k}" for k in range(140)], [CLASS_CODES[k] for k in labels]
    biased = np.eye(7)[labels]
    biased[:, NV] += 1.5
    fit_on = predictions_folder(tmp_path / "val", ids, _softmax(biased), names)
    scored = predictions_folder(tmp_path / "test", ids, _softmax(0.4 * np.eye(7)[labels]), names)  # nv not favoured
    _, own = reach.reach(scored, (0.62, 0.70))
    _, carried = reach.reach(scored, (0.62, 0.70), rule_from=fit_on)
    assert own.balanced_accuracy == 1.0 and not own.bias.any()
    assert np.array_equal(carried.bias, reach.reach(fit_on, (0.62, 0.70))[1].bias)
    assert carried.balanced_accuracy < own.balanced_accuracy
    assert reach.main([str(scored), "--rules-from", str(fit_on)]) == 0
    assert "rule from --rules-from" in capsys.readouterr().out
    with pytest.raises(SystemExit) as mismatched:
        reach.main([str(scored), str(fit_on), "--rules-from", str(fit_on)])
    assert mismatched.value.code == 2 and "one folder per EVAL" in capsys.readouterr().err
