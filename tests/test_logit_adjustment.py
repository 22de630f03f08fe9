"""Post-hoc logit adjustment: tau chosen on a split, the shift folded into the classifier bias, undoable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kndnet.checkpoint import SPEC_KEY, ModelSpec, load_model, read_checkpoint, save_model_checkpoint
from kndnet.commands.evaluation import ADJUST_METRICS as CLI_METRICS
from kndnet.errors import CheckpointError, ConfigError
from kndnet.evaluation import logit_adjustment as la
from kndnet.models import create_model
from tests.helpers import tiny_config


def _two_gaussians(n: int = 4000, rare: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class-conditional log-likelihoods of x ~ N(+-1, 1) with a 90/10 prior: what a balanced-trained
    model estimates. The Bayes rule for accuracy adds 1 * log prior; balanced accuracy wants 0."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rare).astype(int)
    x = rng.normal(np.where(y == 1, 1.0, -1.0), 1.0)
    return np.stack([-(x + 1) ** 2 / 2, -(x - 1) ** 2 / 2], axis=1), y


def test_accuracy_picks_the_bayes_tau_and_balanced_accuracy_the_balanced_rule():
    logits, y = _two_gaussians()
    prior_log = np.log([0.9, 0.1])
    assert la.choose_tau(logits, y, prior_log, "accuracy")[0] == pytest.approx(1.0, abs=0.2)
    assert la.choose_tau(logits, y, prior_log, "balanced_accuracy")[0] == pytest.approx(0.0, abs=0.2)
    tau, curve = la.choose_tau(logits, y, prior_log, "macro_f1")
    assert 0.1 <= tau <= 0.9 and curve[tau] == max(curve.values()) and sorted(curve) == list(la.TAU_GRID)


def test_a_sqrt_sampled_model_finds_its_balanced_rule_at_minus_half():
    """Logits of a model that saw the prior n**0.5 (the `sqrt` sampler, or a KD student of such teachers):
    the balanced rule needs tau -0.5, the Bayes rule +0.5; a grid starting at 0 could only stop at 0."""
    logits, y = _two_gaussians()
    prior_log = np.log([0.9, 0.1])
    sqrt_logits = logits + 0.5 * prior_log
    assert la.TAU_GRID[0] == -1.0 and la.TAU_GRID[-1] == 1.0 and 0.0 in la.TAU_GRID
    assert la.choose_tau(sqrt_logits, y, prior_log, "balanced_accuracy")[0] == pytest.approx(-0.5, abs=0.2)
    assert la.choose_tau(sqrt_logits, y, prior_log, "accuracy")[0] == pytest.approx(0.5, abs=0.2)


def test_ties_go_to_the_tau_nearest_zero_and_unknown_metrics_are_refused():
    y = np.array([0, 1, 1, 0])
    separable = np.eye(2)[y] * 10.0
    assert la.choose_tau(separable, y, np.log([0.5, 0.5]))[0] == 0.0
    assert la.choose_tau(separable, y, np.log([0.5, 0.5]), grid=(-0.1, 0.1, 0.0))[0] == 0.0
    with pytest.raises(ConfigError, match="macro_f1"):
        la.choose_tau(separable, y, np.log([0.5, 0.5]), "auc")
    assert sorted(CLI_METRICS) == sorted(la.ADJUST_METRICS)


def test_log_prior_is_smoothed_and_normalised():
    prior = la.log_prior([98, 0, 1])
    assert np.isfinite(prior).all() and np.exp(prior).sum() == pytest.approx(1.0)
    assert prior[1] < prior[2] < prior[0]


@pytest.fixture
def student_ckpt(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config("student", tmp_path / "unused")
    model = create_model(cfg.model, pretrained=False).eval()
    path = save_model_checkpoint(model, ModelSpec.from_config(cfg), cfg, tmp_path / "s.ckpt")
    ckpt = read_checkpoint(path)
    ckpt["state_dict"].update({f"ema.module.{k}": v.clone() for k, v in model.state_dict().items()})
    torch.save(ckpt, path)  # trained and EMA copies, as a training run writes them
    return path, model


def _logits(path, x):
    model, _ = load_model(path)
    with torch.no_grad():
        return model(x).numpy()


def test_a_folded_shift_moves_every_copy_and_a_new_one_replaces_it(student_ckpt, tmp_path):
    path, model = student_ckpt
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        raw = model(x).numpy()
    bias = la.classifier_bias_name(model, 7)
    first, second = np.linspace(-3, 0, 7), np.linspace(0, -1, 7)
    ckpt = la.fold_shift(read_checkpoint(path), bias, first, 1.0)
    torch.save(ckpt, tmp_path / "a.ckpt")
    assert np.allclose(_logits(tmp_path / "a.ckpt", x), raw + first, atol=1e-5)
    assert torch.equal(ckpt["state_dict"][f"model.{bias}"], ckpt["state_dict"][f"ema.module.{bias}"])
    again = la.fold_shift(read_checkpoint(tmp_path / "a.ckpt"), bias, second, 0.3)
    torch.save(again, tmp_path / "b.ckpt")
    assert np.allclose(_logits(tmp_path / "b.ckpt", x), raw + second, atol=1e-5)
    spec = load_model(tmp_path / "b.ckpt")[1]
    assert spec.prior_tau == 0.3 and spec.logit_shift == pytest.approx(tuple(second))
    assert np.allclose(la.unshifted(_logits(tmp_path / "b.ckpt", x), spec.logit_shift), raw, atol=1e-5)


def test_a_spec_with_a_shift_of_the_wrong_length_is_refused(student_ckpt):
    path, _ = student_ckpt
    spec = read_checkpoint(path)[SPEC_KEY]["spec"]
    with pytest.raises(CheckpointError, match="logit shift"):
        ModelSpec.from_dict({**spec, "logit_shift": [0.0, 1.0]})


def test_a_model_without_a_class_sized_linear_layer_is_refused():
    with pytest.raises(CheckpointError, match="classifier bias"):
        la.classifier_bias_name(torch.nn.Sequential(torch.nn.Linear(3, 5, bias=False)), 5)


def test_an_export_of_an_adjusted_checkpoint_carries_the_shift_and_says_so(student_ckpt, tmp_path):
    """The shift lives in the weights, so the ONNX graph applies it; the model card names the decision rule."""
    from kndnet.cli import main
    from kndnet.inference import OnnxPredictor
    path, model = student_ckpt
    shift = np.linspace(-2, 0, 7)
    torch.save(la.fold_shift(read_checkpoint(path), la.classifier_bias_name(model, 7), shift, 0.5),
               tmp_path / "adjusted.ckpt")
    assert main(["export", "--model", str(tmp_path / "adjusted.ckpt"), "--out", str(tmp_path / "export")]) == 0
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    onnx = OnnxPredictor(tmp_path / "export" / "model_fp32.onnx")
    with torch.no_grad():
        raw = model(onnx.spec.normalise(images)).numpy()
    assert np.allclose(onnx.logits(images), raw + shift, atol=1e-4) and onnx.spec.prior_tau == 0.5
    assert "0.5 * log(training class prior)" in (tmp_path / "export" / "MODEL_CARD.md").read_text()
