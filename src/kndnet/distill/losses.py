"""Distillation terms as pure functions of logits, and the one place they meet the label loss.

Each KD term returns (kd, parts), with parts a dict of detached diagnostics; the total is
    loss = alpha * CE(z_s, y) + (1 - alpha) * kd,
computed once by `distillation_loss` from the cross-entropy the training step already has.
- `cmkd`: confidence-masked KD of KNDNet (Lishad et al., 2025). The teacher's temperature-softened
  distribution p_t = softmax(z_t / T) is trusted only where max(p_t) > threshold:
  kd = T^2 * mean_{masked} KL(p_t || softmax(z_s / T)), 0 when no sample passes. T^2 keeps the
  gradient scale independent of T (Hinton et al., 2015).
- `hinton`: the same with every sample distilled (no mask).
- `dkd`: decoupled KD (Zhao et al., CVPR 2022): KL split into a target-class part (TCKD, binary
  target vs rest) and a non-target part (NCKD, distribution over wrong classes):
  kd = (TCKD + beta * NCKD) * T^2, over all samples.
- `lskd`: logit-standardised KD (Sun et al., CVPR 2024): each row of logits is z-scored,
  Z(z) = (z - mean(z)) / std(z) over the classes (population std), before the Hinton KL at T, every
  sample: kd = T^2 * mean KL(softmax(Z(z_t) / T) || softmax(Z(z_s) / T)). The student then matches the
  teacher's ranking and relative gaps, not its logit scale, which a 149K-parameter net cannot reach.
- `dist`: DIST (Huang et al., NeurIPS 2022, "Knowledge distillation from a stronger teacher"): with
  p = softmax(z / T), kd = T^2 * (beta * inter + gamma * intra), inter = mean over samples of
  1 - Pearson(p_s[i, :], p_t[i, :]) (each image's ranking of the classes) and intra = mean over classes of
  1 - Pearson(p_s[:, c], p_t[:, c]) (each class's ranking of the batch's images). Correlation, unlike KL,
  asks for no exact match of probabilities: the paper's remedy for a student far weaker than its teacher.
The teacher logits are always detached: no gradient reaches the teacher. Targets are class indices
(N) or, under mixup/CutMix, soft targets (N x C); DKD's target class is then the dominant one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from kndnet.config import DistillConfig
from kndnet.errors import ConfigError

LossParts = dict[str, torch.Tensor]
# (student logits N x C, teacher logits N x C, targets N or N x C) -> (kd term, diagnostics)
KDTerm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, LossParts]]


def _kl_per_sample(teacher_logits: torch.Tensor, student_logits: torch.Tensor, t: float) -> torch.Tensor:
    """KL(p_t || p_s) per sample at temperature t; N x C logits -> N."""
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)


def _every_sample(kd: torch.Tensor) -> tuple[torch.Tensor, LossParts]:
    """A term that distils every sample: its diagnostics, with the mask passing all of them (coverage 1)."""
    return kd, {"kd": kd.detach(), "mask_coverage": torch.ones((), device=kd.device)}


def masked_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
              threshold: float) -> tuple[torch.Tensor, LossParts]:
    """T^2 * KL averaged over the samples whose softened teacher confidence exceeds `threshold`."""
    teacher_logits = teacher_logits.detach().float()
    confidence = F.softmax(teacher_logits / temperature, dim=1).amax(dim=1)
    mask = confidence > threshold
    kl = _kl_per_sample(teacher_logits, student_logits, temperature)
    kd = (kl * mask).sum() / mask.sum().clamp(min=1) * temperature**2
    return kd, {"kd": kd.detach(), "mask_coverage": mask.float().mean()}


def decoupled_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 temperature: float, beta: float) -> tuple[torch.Tensor, LossParts]:
    """Decoupled KD (Zhao et al., 2022): (TCKD + beta * NCKD) * T^2."""
    teacher_logits = teacher_logits.detach().float()
    target_class = targets if targets.dim() == 1 else targets.argmax(dim=1)
    target = F.one_hot(target_class, student_logits.shape[1]).bool()
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    binary_s = torch.stack([p_s[target], 1 - p_s[target]], dim=1).clamp_min(1e-8)
    binary_t = torch.stack([p_t[target], 1 - p_t[target]], dim=1).clamp_min(1e-8)
    tckd = (binary_t * (binary_t.log() - binary_s.log())).sum(dim=1).mean()
    big = 1000.0  # masks the target class out of the non-target distributions
    nckd = _kl_per_sample(teacher_logits - big * target, student_logits - big * target,
                          temperature).mean()
    kd = (tckd + beta * nckd) * temperature**2
    return _every_sample(kd)


def _standardised(logits: torch.Tensor) -> torch.Tensor:
    """Each row z-scored over the classes (population std; the epsilon keeps a constant row finite)."""
    centred = logits - logits.mean(dim=1, keepdim=True)
    return centred / (centred.pow(2).mean(dim=1, keepdim=True).sqrt() + 1e-7)


def standardised_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    temperature: float) -> tuple[torch.Tensor, LossParts]:
    """Logit-standardised KD (Sun et al., 2024): T^2 * KL of the z-scored logits, every sample."""
    teacher_logits = _standardised(teacher_logits.detach().float())
    kl = _kl_per_sample(teacher_logits, _standardised(student_logits), temperature)
    kd = kl.mean() * temperature**2
    return _every_sample(kd)


def _pearson_distance(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """1 - Pearson correlation of a and b along `dim` (the cosine of the centred slices), one value per slice."""
    return 1.0 - F.cosine_similarity(a - a.mean(dim=dim, keepdim=True), b - b.mean(dim=dim, keepdim=True),
                                     dim=dim, eps=1e-8)


def relational_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                  beta: float, gamma: float) -> tuple[torch.Tensor, LossParts]:
    """DIST (Huang et al., 2022): T^2 * (beta * inter-class + gamma * intra-class Pearson distance)."""
    p_t = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    p_s = F.softmax(student_logits / temperature, dim=1)
    inter = _pearson_distance(p_s, p_t, dim=1).mean()
    intra = _pearson_distance(p_s, p_t, dim=0).mean()
    kd = (beta * inter + gamma * intra) * temperature**2
    return _every_sample(kd)


def kd_terms(cfg: DistillConfig) -> dict[str, KDTerm]:
    """Each loss name bound to exactly the config values it uses."""
    t = cfg.temperature
    return {
        "cmkd": lambda s, z, y: masked_kd(s, z, t, cfg.threshold),
        "hinton": lambda s, z, y: masked_kd(s, z, t, threshold=-1.0),
        "dkd": lambda s, z, y: decoupled_kd(s, z, y, t, cfg.dkd_beta),
        "lskd": lambda s, z, y: standardised_kd(s, z, t),
        "dist": lambda s, z, y: relational_kd(s, z, t, cfg.dist_beta, cfg.dist_gamma),
    }


LOSS_NAMES = tuple(kd_terms(DistillConfig()))


def kd_term(cfg: DistillConfig) -> KDTerm:
    """The KD term `cfg.loss` names; ConfigError listing the choices otherwise."""
    if cfg.loss not in LOSS_NAMES:
        raise ConfigError(f"unknown distillation loss {cfg.loss!r}; choose {', '.join(LOSS_NAMES)}")
    return kd_terms(cfg)[cfg.loss]


def distillation_loss(cfg: DistillConfig, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      targets: torch.Tensor, ce: torch.Tensor) -> tuple[torch.Tensor, LossParts]:
    """alpha * ce + (1 - alpha) * the configured KD term; `ce` is the step's label loss, computed once."""
    kd, parts = kd_term(cfg)(student_logits, teacher_logits, targets)
    return cfg.alpha * ce + (1.0 - cfg.alpha) * kd, {"ce": ce.detach(), **parts}
