"""Metrics against scikit-learn, CIs, calibration, figures, and the evaluate/calibrate/compare commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn import metrics as skm

from kndnet.checkpoint import load_model
from kndnet.classes import CLASS_CODES
from kndnet.cli import main
from kndnet.evaluation.calibration import fit_temperature
from kndnet.evaluation.compare import aggregate_folds, paired_difference
from kndnet.evaluation.metrics import (
    bootstrap_ci,
    brier_score,
    classification_metrics,
    expected_calibration_error,
    paired_bootstrap_difference,
)
from kndnet.evaluation.run import evaluation_rows, score
from kndnet.inference import eval_dataset, open_predictor, softmax
from kndnet.training.fit import fit
from tests.helpers import tiny_config


def _arrays(seed=0, n=400, c=7):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += 1.5
    return y, softmax(logits)


def test_point_metrics_match_scikit_learn():
    y, p = _arrays()
    pred = p.argmax(1)
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert m["macro_precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["roc_auc"]["macro"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"), abs=1e-9)
    assert m["nll"] == pytest.approx(skm.log_loss(y, p))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    mel = y == 4
    assert m["melanoma_sensitivity"] == pytest.approx(np.mean(pred[mel] == 4))
    assert m["melanoma_specificity"] == pytest.approx(np.mean(pred[~mel] != 4))


def test_brier_is_the_multiclass_squared_error():
    y = np.array([0, 1])
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert brier_score(y, p) == pytest.approx((0 + 0.5) / 2)


def test_bootstrap_ci_contains_the_point_estimate_and_is_seeded():
    y, p = _arrays()
    ci = bootstrap_ci(y, p, resamples=300, seed=1)
    m = classification_metrics(y, p)
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert ci[name][0] <= m[name] <= ci[name][1]
    assert ci == bootstrap_ci(y, p, resamples=300, seed=1)


def test_bootstrap_ci_of_accuracy_is_as_wide_as_a_95_percent_interval():
    """For a proportion the bootstrap CI is close to the normal one, 2 * 1.96 * sqrt(acc (1 - acc) / n) wide:
    a 90% interval (1.645) is 16% narrower, a 99% one (2.576) 31% wider. Measured spread here: +-2.5%."""
    y, p = _arrays(n=1000)
    acc = np.mean(p.argmax(1) == y)
    low, high = bootstrap_ci(y, p, resamples=1000, seed=1)["accuracy"]
    assert high - low == pytest.approx(2 * 1.959964 * np.sqrt(acc * (1 - acc) / len(y)), rel=0.07)


def test_paired_bootstrap_sees_a_real_gain_and_not_a_null_one():
    y, p = _arrays(n=600)
    better = p.copy()
    fixed = np.flatnonzero(p.argmax(1) != y)[:60]  # B corrects 60 of A's errors and nothing else
    better[fixed, y[fixed]] = better[fixed].max(1) + 1
    gain = paired_bootstrap_difference(y, p, better, resamples=300)
    assert gain["accuracy"]["difference"] == pytest.approx(60 / 600)
    assert 0 < gain["accuracy"]["ci_low"] <= 0.1 <= gain["accuracy"]["ci_high"]
    assert gain["accuracy"]["p_not_better"] == 0.0
    same = paired_bootstrap_difference(y, p, p, resamples=100)
    assert same["macro_f1"] == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_not_better": 1.0}
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap_difference(y, p, p[:-1])


def test_perfectly_calibrated_predictions_have_ece_near_zero():
    rng = np.random.default_rng(0)
    n = 40_000
    confidence = rng.uniform(0.3, 1.0, n)
    correct = rng.uniform(size=n) < confidence  # right exactly as often as claimed
    probs = np.zeros((n, 2))
    probs[:, 0], probs[:, 1] = confidence, 1 - confidence
    y = np.where(correct, 0, 1)
    assert expected_calibration_error(y, probs) < 0.01
    overconfident = np.zeros((n, 2))
    overconfident[:, 0] = 0.99
    overconfident[:, 1] = 0.01
    assert expected_calibration_error(y, overconfident) > 0.2


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (5000, 7))
    y = np.array([rng.choice(7, p=row) for row in softmax(logits / 2.5)])
    assert fit_temperature(logits, y) == pytest.approx(2.5, rel=0.1)


def test_fold_aggregation_mean_and_std():
    agg = aggregate_folds([{"acc": 0.7, "name": "a"}, {"acc": 0.8, "name": "b"}, {"acc": 0.9, "name": "c"}])
    assert agg["acc"][0] == pytest.approx(0.8) and agg["acc"][1] == pytest.approx(0.1)
    assert "name" not in agg


@pytest.fixture(scope="module")
def trained(synth_manifest, tmp_path_factory):
    run = tmp_path_factory.mktemp("eval_student")
    summary = fit(tiny_config("student", synth_manifest, **{"train.epochs": 8}), run)
    return summary["best_checkpoint"], synth_manifest


def test_evaluate_writes_every_file_with_real_content(trained, tmp_path, capsys):
    ckpt, manifest = trained
    assert main(["evaluate", "--model", ckpt, "--data", str(manifest), "--tta", "hflip",
                 "--out", str(tmp_path), "--resamples", "200"]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["split"] == "test" and m["images"] == (pd.read_csv(manifest)["split"] == "test").sum()
    assert m["accuracy_ci_low"] <= m["accuracy"] <= m["accuracy_ci_high"]
    assert "tta_macro_f1" in m and "roc_auc_mel" in m
    preds = pd.read_csv(tmp_path / "predictions.csv")
    assert len(preds) == m["images"] and preds.filter(like="prob_").sum(axis=1).round(3).eq(1).all()
    for name in ("confusion_matrix.png", "reliability.png"):
        with Image.open(tmp_path / name) as img:
            assert img.size[0] > 300 and np.asarray(img.convert("L")).std() > 10
    assert "balanced accuracy" in (tmp_path / "report.md").read_text()


def test_tta_scores_come_from_the_plain_pass_and_the_flipped_one(trained):
    ckpt, manifest = trained
    predictor = open_predictor(ckpt)
    rows = evaluation_rows(str(manifest), "test")
    plain, tta = score(predictor, rows, "hflip")
    alone, none = score(predictor, rows)
    assert none is None and np.allclose(plain.probs, alone.probs, atol=1e-6)
    flipped = eval_dataset(rows, predictor.spec)
    images = torch.stack([flipped[i]["image"] for i in range(len(rows))]).flip(-1)
    assert np.allclose(tta.probs, (plain.probs + softmax(predictor.logits(images))) / 2, atol=1e-5)


def _raw_logits(ckpt, manifest, split):
    """The checkpoint's uncalibrated logits on a split, computed here with the model itself, and the labels."""
    model, spec = load_model(ckpt)
    rows = evaluation_rows(str(manifest), split)
    dataset = eval_dataset(rows, spec)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1) * 255, torch.tensor(spec.std).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        return model((images.float() - mean) / std).numpy(), dataset.labels.numpy()


def test_calibrate_stores_the_temperature_fitted_on_the_validation_split(trained, tmp_path, capsys):
    """Without --split, T is fitted on val (never test) and stored as T (not 1/T)."""
    ckpt, manifest = trained
    out = tmp_path / "cal.ckpt"
    assert main(["calibrate", "--model", ckpt, "--data", str(manifest), "--out", str(out)]) == 0
    _, spec = load_model(out)
    logits, labels = _raw_logits(ckpt, manifest, "val")
    assert spec.calibration_temperature == pytest.approx(fit_temperature(logits, labels), rel=1e-3)
    test_logits, test_labels = _raw_logits(ckpt, manifest, "test")
    assert spec.calibration_temperature != pytest.approx(fit_temperature(test_logits, test_labels), rel=1e-3)
    assert "ECE" in capsys.readouterr().out


def test_calibrate_logit_adjust_folds_the_validation_chosen_shift_and_fits_t_after_it(trained, tmp_path, capsys,
                                                                                      monkeypatch):
    """tau is chosen on the val logits with the training prior; the written model scores raw + tau * log prior.
    (The tiny synthetic run's own choice is tau 0, so the choice is recorded and replaced by 0.5.)"""
    from kndnet.evaluation import logit_adjustment as la
    seen = {}
    def choose(logits, labels, prior_log, metric):
        seen.update(logits=logits, labels=labels, prior_log=prior_log, metric=metric)
        return 0.5, {}
    monkeypatch.setattr(la, "choose_tau", choose)
    ckpt, manifest = trained
    out = tmp_path / "adjusted.ckpt"
    assert main(["calibrate", "--model", ckpt, "--data", str(manifest), "--logit-adjust", "accuracy",
                 "--out", str(out)]) == 0
    logits, labels = _raw_logits(ckpt, manifest, "val")
    train = evaluation_rows(str(manifest), "train")["label"].value_counts()
    prior_log = la.log_prior([int(train.get(c, 0)) for c in CLASS_CODES])
    assert np.allclose(seen["logits"], logits, atol=1e-5) and np.array_equal(seen["labels"], labels)
    assert np.allclose(seen["prior_log"], prior_log) and seen["metric"] == "accuracy"
    _, spec = load_model(out)
    assert spec.prior_tau == 0.5 and np.allclose(spec.logit_shift, 0.5 * prior_log)
    adjusted, _ = _raw_logits(out, manifest, "val")
    assert np.allclose(adjusted, logits + 0.5 * prior_log, atol=1e-4)
    assert spec.calibration_temperature == pytest.approx(fit_temperature(adjusted, labels), rel=1e-3)
    assert "logit adjustment tau 0.50: val accuracy" in capsys.readouterr().out


def test_compare_refuses_different_splits(trained, tmp_path):
    ckpt, manifest = trained
    assert main(["evaluate", "--model", ckpt, "--data", str(manifest), "--out", str(tmp_path / "a"),
                 "--resamples", "50"]) == 0
    assert main(["evaluate", "--model", ckpt, "--data", str(manifest), "--split", "val", "--out",
                 str(tmp_path / "b"), "--resamples", "50"]) == 0
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 2
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--names", "x,y",
                 "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "comparison.png").is_file()
    same = ("| y | +0.000 [+0.000, +0.000] | +0.000 [+0.000, +0.000] | +0.000 [+0.000, +0.000] | "
            "+0.000 [+0.000, +0.000] | 1.000 |")
    assert same in (tmp_path / "c" / "comparison.md").read_text()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--baseline", "2",
                 "--out", str(tmp_path / "c")]) == 2


def test_paired_difference_reads_both_prediction_files(trained, tmp_path):
    ckpt, manifest = trained
    weaker = fit(tiny_config("student", manifest, **{"train.epochs": 1}), tmp_path / "weak")
    for name, model in (("strong", ckpt), ("weak", weaker["best_checkpoint"])):
        assert main(["evaluate", "--model", model, "--data", str(manifest), "--out", str(tmp_path / name),
                     "--resamples", "20"]) == 0
    diff = paired_difference(tmp_path / "weak", tmp_path / "strong", resamples=200)
    strong, weak = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("strong", "weak"))
    assert diff["accuracy"]["difference"] == pytest.approx(strong["accuracy"] - weak["accuracy"], abs=1e-3)
    assert diff["macro_f1"]["ci_low"] <= diff["macro_f1"]["difference"] <= diff["macro_f1"]["ci_high"]


def test_evaluate_without_a_shipped_model_says_so(synth_manifest, tmp_path, capsys, monkeypatch):
    import kndnet.shipped
    monkeypatch.setattr(kndnet.shipped, "SHIPPED_CHECKPOINT", tmp_path / "absent.ckpt")
    assert main(["evaluate", "--data", str(synth_manifest), "--out", str(tmp_path)]) == 2
    assert "ships no pretrained student" in capsys.readouterr().err


def test_calibrated_model_reports_ece_before_and_after(trained, tmp_path):
    """evaluate divides the raw logits by the stored T (not multiplies), and undoes it for the 'before' ECE."""
    ckpt, manifest = trained
    assert main(["calibrate", "--model", ckpt, "--data", str(manifest), "--out", str(tmp_path / "cal.ckpt")]) == 0
    assert main(["evaluate", "--model", str(tmp_path / "cal.ckpt"), "--data", str(manifest),
                 "--out", str(tmp_path / "e"), "--resamples", "50"]) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    temperature = load_model(tmp_path / "cal.ckpt")[1].calibration_temperature
    assert m["calibration_temperature"] == pytest.approx(temperature, abs=1e-4)
    logits, labels = _raw_logits(ckpt, manifest, "test")
    probs = pd.read_csv(tmp_path / "e" / "predictions.csv").filter(like="prob_").to_numpy()
    assert np.allclose(probs, softmax(logits / temperature), atol=1e-4)
    assert m["ece"] == pytest.approx(expected_calibration_error(labels, softmax(logits / temperature)), abs=2e-4)
    assert m["ece_uncalibrated"] == pytest.approx(expected_calibration_error(labels, softmax(logits)), abs=2e-4)
    assert "before temperature scaling" in (tmp_path / "e" / "report.md").read_text()


def test_uncalibrated_ece_undoes_the_temperature():
    from kndnet.evaluation.report import uncalibrated_ece
    y, _ = _arrays()
    logits = np.random.default_rng(1).normal(0, 2, (len(y), 7))
    assert uncalibrated_ece(softmax(logits / 3.0), y, 3.0) == pytest.approx(
        expected_calibration_error(y, softmax(logits)), abs=1e-9)


def test_compare_folds_writes_mean_and_std(trained, tmp_path):
    ckpt, manifest = trained
    for split in ("test", "val"):
        assert main(["evaluate", "--model", ckpt, "--data", str(manifest), "--split", split,
                     "--out", str(tmp_path / split), "--resamples", "20"]) == 0
    assert main(["compare", str(tmp_path / "test"), str(tmp_path / "val"), "--folds", "--out", str(tmp_path)]) == 0
    cv = json.loads((tmp_path / "cv.json").read_text())
    assert set(cv["accuracy"]) == {"mean", "std"}


def test_macro_averages_run_over_the_classes_present_in_the_truth():
    """Stated behaviour: with a class absent from the split's labels (here vasc, 6), macro-F1, macro
    precision/recall, balanced accuracy and macro ROC-AUC average over the classes present in y_true; the
    absent class is left out even when the model predicts it (its false alarms still cost the present
    classes recall). scikit-learn's default would average over every label seen in y_true or y_pred."""
    y, p = _arrays(n=300, c=7)
    keep = y != 6
    y, p = y[keep], p[keep]
    p[:20] = np.eye(7)[6] * 0.9 + 0.1 / 7  # 20 images called vasc, which is absent from the truth
    pred = p.argmax(1)
    present = list(range(6))
    m = classification_metrics(y, p)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, labels=present, average="macro"))
    assert m["macro_f1"] > skm.f1_score(y, pred, average="macro") + 0.01  # the all-labels average differs
    assert m["macro_recall"] == pytest.approx(skm.recall_score(y, pred, labels=present, average="macro"))
    assert m["macro_precision"] == pytest.approx(skm.precision_score(y, pred, labels=present, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert np.isnan(m["roc_auc"]["vasc"])
    assert m["roc_auc"]["macro"] == pytest.approx(np.mean([m["roc_auc"][c] for c in CLASS_CODES[:6]]))
    assert m["per_class"]["vasc"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    from kndnet.evaluation.metrics import CI_METRICS
    assert CI_METRICS["macro_f1"](y, p) == pytest.approx(m["macro_f1"])
    assert CI_METRICS["balanced_accuracy"](y, p) == pytest.approx(m["balanced_accuracy"])


def test_figure_titles_name_the_run_or_every_ensemble_member():
    from kndnet.evaluation.report import model_title
    assert model_title("runs/a/teacher/checkpoints/best.ckpt", "teacher") == "teacher (teacher, best)"
    assert model_title("runs/a/teacher/checkpoints/best.ckpt + runs/a/teacher_lite0/checkpoints/best.ckpt",
                       "teacher") == "ensemble of teacher + teacher_lite0 (teacher)"
    assert model_title("export/model_int8.onnx", "student") == "model_int8.onnx (student)"


def test_a_colour_cast_is_per_image_reproducible_and_keeps_brightness():
    from kndnet.evaluation.colour_cast import channel_gains, colour_cast
    gains = channel_gains("ISIC_0024306", 0.2)
    assert np.allclose(gains, channel_gains("ISIC_0024306", 0.2)) and not np.allclose(gains, 1.0)
    assert np.log(gains).sum() == pytest.approx(0.0, abs=1e-9)  # geometric mean 1
    assert not np.allclose(gains, channel_gains("ISIC_0024307", 0.2))
    assert np.allclose(channel_gains("ISIC_0024306", 0.0), 1.0)
    grey = torch.full((2, 3, 4, 4), 100, dtype=torch.uint8)
    cast = colour_cast(grey, ["a", "b"], 0.3)
    expected = [np.round(100 * channel_gains(i, 0.3)) for i in ("a", "b")]
    assert np.array_equal(cast[:, :, 0, 0].numpy(), np.clip(expected, 0, 255))
    bright = colour_cast(torch.full((1, 3, 2, 2), 250, dtype=torch.uint8), ["c"], 1.0)
    raised = channel_gains("c", 1.0) > 1.0
    assert raised.any() and (bright[0, raised] == 255).all()  # clipped, not wrapped round
    with pytest.raises(ValueError, match="2 images but 1 image ids"):
        colour_cast(grey, ["a"], 0.1)
    with pytest.raises(ValueError, match="finite number >= 0"):
        colour_cast(grey, ["a", "b"], float("nan"))


def test_evaluate_under_a_colour_cast_pairs_with_the_plain_evaluation(trained, tmp_path, capsys):
    ckpt, manifest = trained
    outs = {name: tmp_path / name for name in ("plain", "cast", "again")}
    for name, sigma, batch in (("plain", "0", "64"), ("cast", "0.3", "64"), ("again", "0.3", "7")):
        assert main(["evaluate", "--model", ckpt, "--data", str(manifest), "--out", str(outs[name]),
                     "--resamples", "50", "--colour-cast", sigma, "--batch-size", batch]) == 0
    plain, cast, again = (pd.read_csv(outs[n] / "predictions.csv") for n in ("plain", "cast", "again"))
    assert (plain["image_id"] == cast["image_id"]).all()
    probs = plain.filter(like="prob_").to_numpy()
    assert np.abs(probs - cast.filter(like="prob_").to_numpy()).max() > 1e-3  # the cast reaches the model
    assert np.allclose(cast.filter(like="prob_").to_numpy(), again.filter(like="prob_").to_numpy(), atol=1e-5)
    sigmas = [json.loads((outs[n] / "metrics.json").read_text())["colour_cast"] for n in ("plain", "cast")]
    assert sigmas == [0, 0.3]
    assert "simulated colour cast (`--colour-cast 0.3`" in (outs["cast"] / "report.md").read_text()
    assert main(["compare", str(outs["plain"]), str(outs["cast"]), "--baseline", "0",
                 "--out", str(tmp_path / "cmp")]) == 0
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| plain |" in text and "| cast (colour cast 0.3) |" in text  # the folder name need not say it
    # seeds of one model are pooled: a plain and a cast evaluation cannot be two seeds of it
    assert main(["compare", f"{outs['plain']},{outs['cast']}", str(outs["again"]), "--out", str(tmp_path / "c2")]) == 2
    assert "were scored under different colour casts (0.0, 0.3)" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["-0.1", "nan", "strong"])
def test_a_bad_colour_cast_is_refused_before_any_model_loads(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--out", "x", "--colour-cast", bad])
    assert exit_info.value.code == 2 and "--colour-cast" in capsys.readouterr().err
