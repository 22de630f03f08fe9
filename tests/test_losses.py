"""Distillation losses: invariants of the method, and golden values from an independent numpy code."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kndnet.config import DistillConfig
from kndnet.distill.losses import LOSSES, confidence_masked_kd, decoupled_kd, distillation_loss, hinton_kd

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "cmkd_golden.json").read_text())
DKD_GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "dkd_golden.json").read_text())


def _batch(seed=0, n=16, c=7):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, generator=g, requires_grad=True), torch.randn(n, c, generator=g) * 3,
            torch.randint(0, c, (n,), generator=g))


@pytest.mark.parametrize("case", GOLDEN["cmkd"], ids=lambda c: f"T{c['temperature']}-a{c['alpha']}-th{c['threshold']}")
def test_cmkd_matches_golden_values(case):
    s, t = torch.tensor(GOLDEN["student_logits"]), torch.tensor(GOLDEN["teacher_logits"])
    loss, parts = confidence_masked_kd(s, t, torch.tensor(GOLDEN["labels"]), case["temperature"],
                                       case["alpha"], case["threshold"])
    assert loss.item() == pytest.approx(case["loss"], rel=1e-5)
    assert parts["mask_coverage"].item() == pytest.approx(case["mask_coverage"])


@pytest.mark.parametrize("case", DKD_GOLDEN["dkd"],
                         ids=lambda c: f"T{c['temperature']}-a{c['alpha']}-b{c['beta']}-soft{c['soft_labels']}")
def test_dkd_matches_golden_values(case):
    """Catches a swapped TCKD/NCKD weighting, a dropped T^2, or the target class left in NCKD."""
    g = DKD_GOLDEN
    labels = torch.tensor(g["soft_labels"]) if case["soft_labels"] else torch.tensor(g["labels"])
    loss, parts = decoupled_kd(torch.tensor(g["student_logits"]), torch.tensor(g["teacher_logits"]), labels,
                               temperature=case["temperature"], alpha=case["alpha"], beta=case["beta"])
    assert loss.item() == pytest.approx(case["loss"], rel=1e-5)
    assert parts["kd"].item() == pytest.approx(case["kd"], rel=1e-5)


def test_alpha_one_is_plain_cross_entropy():
    s, t, y = _batch()
    loss, _ = confidence_masked_kd(s, t, y, alpha=1.0)
    assert torch.allclose(loss, F.cross_entropy(s, y))


def test_threshold_zero_is_hinton_kd():
    s, t, y = _batch()
    masked, parts = confidence_masked_kd(s, t, y, temperature=3.0, alpha=0.3, threshold=0.0)
    hinton, _ = hinton_kd(s, t, y, temperature=3.0, alpha=0.3)
    assert parts["mask_coverage"] == 1.0
    assert torch.allclose(masked, hinton)


def test_kd_term_is_zero_when_no_sample_passes():
    s, t, y = _batch()
    _, parts = confidence_masked_kd(s, t, y, threshold=1.0)
    assert parts["kd"] == 0.0 and parts["mask_coverage"] == 0.0


def test_kd_term_scales_with_t_squared():
    s, t, y = _batch()
    _, at_t = confidence_masked_kd(s, t, y, temperature=4.0, threshold=-1)
    kl = F.kl_div(F.log_softmax(s / 4.0, 1), F.softmax(t / 4.0, 1), reduction="batchmean")
    assert at_t["kd"].item() == pytest.approx(16.0 * kl.item(), rel=1e-5)


def test_kl_is_averaged_over_masked_samples_only():
    s, t, y = _batch(n=8)
    t = t.clone()
    t[:2] = 0.0
    t[:2, 0] = 50.0  # two confident rows; the rest made uncertain
    t[2:] = torch.zeros_like(t[2:])
    _, parts = confidence_masked_kd(s, t, y, temperature=1.0, threshold=0.65)
    kl = F.kl_div(F.log_softmax(s[:2], 1), F.softmax(t[:2], 1), reduction="batchmean")
    assert parts["mask_coverage"] == pytest.approx(0.25)
    assert parts["kd"].item() == pytest.approx(kl.item(), rel=1e-5)


@pytest.mark.parametrize("loss_fn", [confidence_masked_kd, hinton_kd, decoupled_kd])
def test_no_gradient_reaches_the_teacher(loss_fn):
    s, t, y = _batch()
    t.requires_grad_(True)
    loss, _ = loss_fn(s, t, y)
    loss.backward()
    assert t.grad is None and s.grad is not None


def test_dkd_is_zero_kd_when_student_equals_teacher():
    s, _, y = _batch()
    _, parts = decoupled_kd(s, s.detach().clone(), y)
    assert parts["kd"].item() == pytest.approx(0.0, abs=1e-5)


def test_dispatch_by_name_and_unknown_name():
    s, t, y = _batch()
    for name in ("cmkd", "hinton", "dkd"):
        loss, _ = distillation_loss(DistillConfig(loss=name), s, t, y)
        assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="unknown distillation loss 'kld'; choose cmkd, hinton, dkd"):
        distillation_loss(DistillConfig(loss="kld"), s, t, y)


@pytest.mark.parametrize("name", ["cmkd", "hinton", "dkd"])
def test_dispatch_passes_the_configs_t_alpha_threshold_and_beta(name):
    """Each config value reaches the loss: changing any one of them alone changes the loss."""
    s, t, y = _batch(n=32)
    t = t * 2  # confident enough rows that a threshold of 0.4 masks some and keeps others
    values = {"temperature": 3.5, "alpha": 0.3, "threshold": 0.4, "beta": 2.0}
    cfg = DistillConfig(loss=name, temperature=3.5, alpha=0.3, threshold=0.4, dkd_beta=2.0)
    loss, _ = distillation_loss(cfg, s, t, y)
    expected, _ = LOSSES[name](s, t, y, **values)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    used = {"cmkd": ("temperature", "alpha", "threshold"), "hinton": ("temperature", "alpha"),
            "dkd": ("temperature", "alpha", "beta")}[name]
    for key in used:
        other, _ = LOSSES[name](s, t, y, **{**values, key: values[key] * 0.5})
        assert abs(other.item() - expected.item()) > 1e-4, key


@pytest.mark.parametrize("name", ["cmkd", "hinton", "dkd"])
def test_loss_defaults_are_the_configs_defaults(name):
    """Called without settings, each loss is the one the default config dispatches (T 2, alpha 0.9, ...)."""
    s, t, y = _batch(n=32)
    t = t * 2
    alone, _ = LOSSES[name](s, t, y)
    configured, _ = distillation_loss(DistillConfig(loss=name), s, t, y)
    assert alone.item() == pytest.approx(configured.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["cmkd", "hinton", "dkd"])
def test_class_weights_and_label_smoothing_reach_the_cross_entropy_term(name):
    s, t, y = _batch(n=32)
    weight = torch.linspace(0.5, 2.0, 7)
    loss, parts = distillation_loss(DistillConfig(loss=name, alpha=1.0), s, t, y, ce_weight=weight,
                                    label_smoothing=0.1)
    expected = F.cross_entropy(s, y, weight=weight, label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["ce"].item() == pytest.approx(expected.item(), rel=1e-6)
