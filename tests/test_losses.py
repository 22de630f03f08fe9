"""Distillation losses: invariants of the method, and golden values from an independent numpy code."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kndnet.config import DistillConfig
from kndnet.distill.losses import (
    LOSS_NAMES,
    decoupled_kd,
    distillation_loss,
    kd_term,
    masked_kd,
    relational_kd,
    standardised_kd,
)

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "cmkd_golden.json").read_text())
DKD_GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "dkd_golden.json").read_text())
LSKD_GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "lskd_golden.json").read_text())


def _loss(s, t, y, ce_weight=None, label_smoothing=0.0, **settings):
    """The full loss as a training step computes it: its cross-entropy, then the configured KD mix."""
    ce = F.cross_entropy(s, y, weight=ce_weight, label_smoothing=label_smoothing)
    return distillation_loss(DistillConfig(**settings), s, t, y, ce)


def _batch(seed=0, n=16, c=7):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, generator=g, requires_grad=True), torch.randn(n, c, generator=g) * 3,
            torch.randint(0, c, (n,), generator=g))


@pytest.mark.parametrize("case", GOLDEN["cmkd"], ids=lambda c: f"T{c['temperature']}-a{c['alpha']}-th{c['threshold']}")
def test_cmkd_matches_golden_values(case):
    s, t = torch.tensor(GOLDEN["student_logits"]), torch.tensor(GOLDEN["teacher_logits"])
    loss, parts = _loss(s, t, torch.tensor(GOLDEN["labels"]), loss="cmkd", temperature=case["temperature"],
                        alpha=case["alpha"], threshold=case["threshold"])
    assert loss.item() == pytest.approx(case["loss"], rel=1e-5)
    assert parts["mask_coverage"].item() == pytest.approx(case["mask_coverage"])


@pytest.mark.parametrize("case", DKD_GOLDEN["dkd"],
                         ids=lambda c: f"T{c['temperature']}-a{c['alpha']}-b{c['beta']}-soft{c['soft_labels']}")
def test_dkd_matches_golden_values(case):
    """Catches a swapped TCKD/NCKD weighting, a dropped T^2, or the target class left in NCKD."""
    g = DKD_GOLDEN
    labels = torch.tensor(g["soft_labels"]) if case["soft_labels"] else torch.tensor(g["labels"])
    loss, parts = _loss(torch.tensor(g["student_logits"]), torch.tensor(g["teacher_logits"]), labels,
                        loss="dkd", temperature=case["temperature"], alpha=case["alpha"], dkd_beta=case["beta"])
    assert loss.item() == pytest.approx(case["loss"], rel=1e-5)
    assert parts["kd"].item() == pytest.approx(case["kd"], rel=1e-5)


@pytest.mark.parametrize("case", LSKD_GOLDEN["lskd"], ids=lambda c: f"T{c['temperature']}-a{c['alpha']}")
def test_lskd_matches_golden_values(case):
    """Catches a missing standardisation of either side, the sample std for the population one, or a dropped T^2."""
    g = LSKD_GOLDEN
    loss, parts = _loss(torch.tensor(g["student_logits"]), torch.tensor(g["teacher_logits"]),
                        torch.tensor(g["labels"]), loss="lskd", temperature=case["temperature"], alpha=case["alpha"])
    assert loss.item() == pytest.approx(case["loss"], rel=1e-5)
    assert parts["kd"].item() == pytest.approx(case["kd"], rel=1e-5)


def test_lskd_ignores_the_scale_and_shift_of_either_side():
    """Z-scoring makes the term blind to a logit offset and a positive scale; plain KD is not."""
    s, t, _ = _batch()
    kd, _ = standardised_kd(s, t, temperature=2.0)
    moved, _ = standardised_kd(3.0 * s + 5.0, 0.25 * t - 2.0, temperature=2.0)
    assert moved.item() == pytest.approx(kd.item(), rel=1e-4)
    plain, _ = masked_kd(s, t, temperature=2.0, threshold=-1.0)
    plain_moved, _ = masked_kd(3.0 * s + 5.0, 0.25 * t - 2.0, temperature=2.0, threshold=-1.0)
    assert plain_moved.item() != pytest.approx(plain.item(), rel=1e-2)


def test_lskd_is_zero_when_the_student_is_an_affine_copy_of_the_teacher():
    _, t, _ = _batch()
    kd, parts = standardised_kd(2.0 * t + 1.0, t, temperature=1.0)
    assert kd.item() == pytest.approx(0.0, abs=1e-6) and parts["mask_coverage"].item() == 1.0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_alpha_one_is_plain_cross_entropy(name):
    s, t, y = _batch()
    loss, parts = _loss(s, t, y, loss=name, alpha=1.0)
    assert torch.allclose(loss, F.cross_entropy(s, y))
    assert parts["kd"] > 0  # the KD term was computed, and weighted out


def test_alpha_mixes_ce_and_kd():
    s, t, y = _batch()
    loss, parts = _loss(s, t, y, loss="hinton", alpha=0.3)
    assert loss.item() == pytest.approx(0.3 * parts["ce"].item() + 0.7 * parts["kd"].item(), rel=1e-6)


def test_threshold_below_zero_is_hinton_kd():
    s, t, y = _batch()
    masked, parts = _loss(s, t, y, loss="cmkd", temperature=3.0, alpha=0.3, threshold=0.0)
    hinton, _ = _loss(s, t, y, loss="hinton", temperature=3.0, alpha=0.3, threshold=0.9)
    assert parts["mask_coverage"] == 1.0
    assert torch.allclose(masked, hinton)


def test_kd_term_is_zero_when_no_sample_passes():
    s, t, _ = _batch()
    kd, parts = masked_kd(s, t, temperature=2.0, threshold=1.0)
    assert kd == 0.0 and parts["mask_coverage"] == 0.0


def test_kd_term_scales_with_t_squared():
    s, t, _ = _batch()
    kd, _ = masked_kd(s, t, temperature=4.0, threshold=-1)
    kl = F.kl_div(F.log_softmax(s / 4.0, 1), F.softmax(t / 4.0, 1), reduction="batchmean")
    assert kd.item() == pytest.approx(16.0 * kl.item(), rel=1e-5)


def test_kl_is_averaged_over_masked_samples_only():
    s, t, _ = _batch(n=8)
    t = t.clone()
    t[:2] = 0.0
    t[:2, 0] = 50.0  # two confident rows; the rest made uncertain
    t[2:] = torch.zeros_like(t[2:])
    kd, parts = masked_kd(s, t, temperature=1.0, threshold=0.65)
    kl = F.kl_div(F.log_softmax(s[:2], 1), F.softmax(t[:2], 1), reduction="batchmean")
    assert parts["mask_coverage"] == pytest.approx(0.25)
    assert kd.item() == pytest.approx(kl.item(), rel=1e-5)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_no_gradient_reaches_the_teacher(name):
    s, t, y = _batch()
    t.requires_grad_(True)
    loss, _ = _loss(s, t, y, loss=name)
    loss.backward()
    assert t.grad is None and s.grad is not None


def test_dkd_is_zero_kd_when_student_equals_teacher():
    s, _, y = _batch()
    kd, _ = decoupled_kd(s, s.detach().clone(), y, temperature=2.0, beta=8.0)
    assert kd.item() == pytest.approx(0.0, abs=1e-5)


def test_dispatch_by_name_and_unknown_name():
    s, t, y = _batch()
    for name in ("cmkd", "hinton", "dkd", "lskd", "dist"):
        loss, _ = _loss(s, t, y, loss=name)
        assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="unknown distillation loss 'kld'; choose cmkd, hinton, dkd, lskd, dist"):
        kd_term(DistillConfig(loss="kld"))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_each_config_value_the_loss_uses_reaches_it(name):
    """Changing any one config value a loss uses changes the loss; the others leave it alone."""
    s, t, y = _batch(n=32)
    t = t * 2  # confident enough rows that a threshold of 0.4 masks some and keeps others
    values = {"temperature": 3.5, "alpha": 0.3, "threshold": 0.4, "dkd_beta": 2.0, "dist_beta": 2.0,
              "dist_gamma": 3.0}
    expected, _ = _loss(s, t, y, loss=name, **values)
    used = {"cmkd": ("temperature", "alpha", "threshold"), "hinton": ("temperature", "alpha"),
            "dkd": ("temperature", "alpha", "dkd_beta"), "lskd": ("temperature", "alpha"),
            "dist": ("temperature", "alpha", "dist_beta", "dist_gamma")}[name]
    for key in values:
        other, _ = _loss(s, t, y, loss=name, **{**values, key: values[key] * 0.5})
        changed = abs(other.item() - expected.item()) > 1e-4
        assert changed == (key in used), key


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_class_weights_and_label_smoothing_reach_the_cross_entropy_term(name):
    s, t, y = _batch(n=32)
    weight = torch.linspace(0.5, 2.0, 7)
    loss, parts = _loss(s, t, y, ce_weight=weight, label_smoothing=0.1, loss=name, alpha=1.0)
    expected = F.cross_entropy(s, y, weight=weight, label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["ce"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_teacher_exactly_at_the_threshold_is_not_trusted():
    """The mask is confidence > threshold, strictly: a saturated row (confidence 1.0) fails threshold 1.0."""
    s, t, _ = _batch(n=4)
    t = torch.zeros(4, 7)
    t[0, 3] = 200.0  # softmax saturates to exactly 1.0 in float32
    assert F.softmax(t, 1)[0].max().item() == 1.0
    _, parts = masked_kd(s, t, temperature=1.0, threshold=1.0)
    assert parts["mask_coverage"] == 0.0


def test_one_passing_sample_is_averaged_over_one():
    s, t, _ = _batch(n=6)
    t = torch.zeros(6, 7)
    t[2, 1] = 50.0  # the only confident row
    kd, parts = masked_kd(s, t, temperature=1.0, threshold=0.65)
    kl = F.kl_div(F.log_softmax(s[2:3], 1), F.softmax(t[2:3], 1), reduction="batchmean")
    assert parts["mask_coverage"] == pytest.approx(1 / 6)
    assert kd.item() == pytest.approx(kl.item(), rel=1e-5)


def test_dkd_on_a_batch_without_the_last_class():
    """The one-hot target spans every class of the logits, not only those present in the batch."""
    s, t, _ = _batch(n=8)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])  # no class 6
    kd, _ = decoupled_kd(s, t, y, temperature=2.0, beta=8.0)
    with_six = decoupled_kd(torch.cat([s, s[:1]]), torch.cat([t, t[:1]]), torch.cat([y, torch.tensor([6])]),
                            temperature=2.0, beta=8.0)[0]
    assert torch.isfinite(kd) and kd.item() != pytest.approx(with_six.item())


def test_dkd_reports_that_every_sample_is_distilled():
    """The logged mask coverage is 1 for DKD (no mask): the epoch CSV column exists for every loss."""
    s, t, y = _batch()
    _, parts = decoupled_kd(s, t, y, temperature=2.0, beta=8.0)
    assert parts["mask_coverage"].item() == 1.0


def _numpy_dist(student, teacher, t, beta, gamma):
    """DIST written from the paper with numpy's own Pearson correlation (np.corrcoef), row by row."""
    def softmax(z):
        e = np.exp(z / t - (z / t).max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    p_s, p_t = softmax(student.astype(np.float64)), softmax(teacher.astype(np.float64))
    inter = np.mean([1 - np.corrcoef(p_s[i], p_t[i])[0, 1] for i in range(len(p_s))])
    intra = np.mean([1 - np.corrcoef(p_s[:, c], p_t[:, c])[0, 1] for c in range(p_s.shape[1])])
    return t**2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize("t,beta,gamma", [(1.0, 1.0, 1.0), (4.0, 2.0, 0.5), (2.0, 1.0, 0.0)])
def test_dist_matches_numpy_pearson(t, beta, gamma):
    s, z, _ = _batch(seed=3, n=24)
    kd, parts = relational_kd(s, z, temperature=t, beta=beta, gamma=gamma)
    expected = _numpy_dist(s.detach().numpy(), z.numpy(), t, beta, gamma)
    assert kd.item() == pytest.approx(expected, rel=1e-4)
    assert parts["mask_coverage"].item() == 1.0


def test_dist_is_zero_for_the_teacher_itself_and_ignores_a_shift_of_the_logits():
    """Pearson asks for the same ranking, not the same values: a constant added to a row changes nothing."""
    s, z, _ = _batch(seed=4)
    assert relational_kd(z.clone(), z, 1.0, 1.0, 1.0)[0].item() == pytest.approx(0.0, abs=1e-5)
    shifted = relational_kd(s + 5.0, z, 1.0, 1.0, 1.0)[0]
    assert shifted.item() == pytest.approx(relational_kd(s, z, 1.0, 1.0, 1.0)[0].item(), rel=1e-5)


def test_dist_gradient_reaches_the_student_only():
    s, z, _ = _batch(seed=5)
    z.requires_grad_(True)
    relational_kd(s, z, 1.0, 1.0, 1.0)[0].backward()
    assert z.grad is None and s.grad is not None and s.grad.abs().sum() > 0
