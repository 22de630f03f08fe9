"""Seed-pooled comparison: a model given as several training seeds is differenced by its seed mean, and the
interval carries the seeds' noise (bootstrap over seeds and images), not only the test split's."""

from __future__ import annotations

import numpy as np
import pytest

from kndnet.cli import main
from kndnet.evaluation.metrics import PAIRED_METRICS, paired_bootstrap_difference, seed_pooled_difference
from tests.helpers import hand_made_evaluation as _evaluation

IDS = [f"ISIC_{i:07d}" for i in range(40)]


def _onehot_probs(y: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """Confident probabilities: right on every image except those in `wrong` (predicted one class over)."""
    pred = np.where(wrong, (y + 1) % 7, y)
    probs = np.full((len(y), 7), 0.01)
    probs[np.arange(len(y)), pred] = 0.94
    return probs


def _arms(n: int = 350, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 7
    base = _onehot_probs(y, rng.random(n) < 0.40)
    good = _onehot_probs(y, rng.random(n) < 0.15)  # +0.25 accuracy
    bad = _onehot_probs(y, rng.random(n) < 0.40)   # about +0.00
    return y, base, good, bad


def _image_bootstrap(y, probs_a, probs_b, resamples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The paired image bootstrap as it was before seeds (commit eefdea7), written out as the reference."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        rows.append({name: fn(y[idx], probs_b[idx]) - fn(y[idx], probs_a[idx]) for name, fn in PAIRED_METRICS.items()})
    return {name: np.array([row[name] for row in rows]) for name in PAIRED_METRICS}


def test_one_seed_each_is_the_paired_image_bootstrap_draw_for_draw():
    y, base, good, _ = _arms()
    pooled = seed_pooled_difference(y, [base], [good], resamples=200)
    reference = _image_bootstrap(y, base, good, resamples=200)
    for name, draws in reference.items():
        assert pooled[name]["ci_low"] == pytest.approx(np.percentile(draws, 2.5))
        assert pooled[name]["ci_high"] == pytest.approx(np.percentile(draws, 97.5))
        assert pooled[name]["p_not_better"] == pytest.approx(np.mean(draws <= 0))
    assert paired_bootstrap_difference(y, base, good, resamples=200) == pooled


def test_a_repeated_seed_changes_nothing():
    y, base, good, _ = _arms()
    assert seed_pooled_difference(y, [base, base], [good, good], resamples=200) == \
        seed_pooled_difference(y, [base], [good], resamples=200)


def test_the_point_is_the_seed_mean_and_the_interval_spans_the_seeds():
    y, base, good, bad = _arms()
    pooled = seed_pooled_difference(y, [base], [good, bad], resamples=300)["accuracy"]
    one = {name: paired_bootstrap_difference(y, base, p, resamples=300)["accuracy"]
           for name, p in (("good", good), ("bad", bad))}
    assert pooled["difference"] == pytest.approx((one["good"]["difference"] + one["bad"]["difference"]) / 2)
    # a quarter of the resamples hold only the bad seed and a quarter only the good one: the interval reaches
    # past each seed's own point, which an image-only bootstrap of the mean (about +-0.03 here) would not
    assert pooled["ci_low"] < one["bad"]["difference"]
    assert pooled["ci_high"] > one["good"]["difference"]
    assert pooled["p_not_better"] > 0.05


def test_runs_on_other_images_are_refused():
    y, base, good, _ = _arms()
    with pytest.raises(ValueError, match="same images"):
        seed_pooled_difference(y, [base], [good, good[:-1]])
    with pytest.raises(ValueError, match="at least one run"):
        seed_pooled_difference(y, [], [good])


def test_compare_joins_seeds_with_commas(tmp_path, capsys):
    a0 = _evaluation(tmp_path / "alone_s0", "m.csv", IDS, seed=0, score=0.4)
    a1 = _evaluation(tmp_path / "alone_s1", "m.csv", IDS, seed=1, score=0.7)
    kd = _evaluation(tmp_path / "kd", "m.csv", IDS, seed=2)
    assert main(["compare", f"{a0}, {a1}", str(kd), "--out", str(tmp_path / "c")]) == 0
    text = (tmp_path / "c" / "comparison.md").read_text()
    assert "| alone_s0+alone_s1 | 0.550 (seeds: 0.400, 0.700) |" in text
    assert "| model minus alone_s0+alone_s1 |" in text
    assert "bootstrapped over its seeds" in text


def test_a_seed_on_other_images_is_refused_by_id(tmp_path, capsys):
    a0 = _evaluation(tmp_path / "a0", "m.csv", IDS, seed=0)
    a1 = _evaluation(tmp_path / "a1", "m.csv", IDS[:-1] + ["ISIC_9999999"], seed=1)
    kd = _evaluation(tmp_path / "kd", "m.csv", IDS, seed=2)
    assert main(["compare", f"{a0},{a1}", str(kd), "--out", str(tmp_path / "c")]) == 2
    assert f"{a0} and {a1} scored different images" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_missing_seed_folder_is_named(tmp_path, capsys):
    a0 = _evaluation(tmp_path / "a0", "m.csv", IDS, seed=0)
    kd = _evaluation(tmp_path / "kd", "m.csv", IDS, seed=2)
    assert main(["compare", f"{a0},{tmp_path / 'a1'}", str(kd), "--out", str(tmp_path / "c")]) == 2
    assert "a1: no metrics.json or predictions.csv" in capsys.readouterr().err


def test_a_seed_of_another_split_is_named(tmp_path, capsys):
    a0 = _evaluation(tmp_path / "a0", "m.csv", IDS, seed=0)
    a1 = _evaluation(tmp_path / "a1", "m.csv", IDS, seed=1, split="val")
    kd = _evaluation(tmp_path / "kd", "m.csv", IDS, seed=2)
    assert main(["compare", f"{a0},{a1}", str(kd), "--out", str(tmp_path / "c")]) == 2
    assert f"{a1} is an evaluation of another split" in capsys.readouterr().err


@pytest.mark.parametrize(("argument", "message"), [(",", "names no evaluation folder"),
                                                   ("{a0},{a0}", "more than once")])
def test_an_empty_or_repeated_seed_list_is_refused(tmp_path, capsys, argument, message):
    a0 = _evaluation(tmp_path / "a0", "m.csv", IDS, seed=0)
    kd = _evaluation(tmp_path / "kd", "m.csv", IDS, seed=2)
    assert main(["compare", argument.format(a0=a0), str(kd), "--out", str(tmp_path / "c")]) == 2
    assert message in capsys.readouterr().err
