"""Distillation losses as pure functions of logits: each returns (loss, parts) with parts a dict.

- `cmkd`: confidence-masked KD of KNDNet (Lishad et al., 2025). The teacher's temperature-softened
  distribution p_t = softmax(z_t / T) is trusted only where max(p_t) > threshold:
  loss = alpha * CE(z_s, y) + (1 - alpha) * T^2 * mean_{masked} KL(p_t || softmax(z_s / T)),
  the KL term 0 when no sample passes. T^2 keeps gradient scale independent of T (Hinton et al., 2015).
- `hinton`: the same with every sample distilled (threshold 0).
- `dkd`: decoupled KD (Zhao et al., CVPR 2022): KL split into a target-class part (TCKD, binary
  target vs rest) and a non-target part (NCKD, distribution over wrong classes), weighted alpha/beta:
  loss = alpha_ce * CE + (1 - alpha_ce) * (TCKD + beta * NCKD) * T^2, over all samples.
The teacher logits are always detached: no gradient reaches the teacher. `labels` are class indices
(N) or, under mixup/CutMix, soft targets (N x C) for the cross-entropy term; DKD's target class is then
the dominant one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from kndnet.config import DistillConfig
from kndnet.errors import ConfigError

LossParts = dict[str, torch.Tensor]


def _kl_per_sample(teacher_logits: torch.Tensor, student_logits: torch.Tensor, t: float) -> torch.Tensor:
    """KL(p_t || p_s) per sample at temperature t; N x C logits -> N."""
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)


def confidence_masked_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                         labels: torch.Tensor, temperature: float = 2.0, alpha: float = 0.9,
                         threshold: float = 0.65, ce_weight: torch.Tensor | None = None,
                         label_smoothing: float = 0.0, beta: float | None = None,
                         ) -> tuple[torch.Tensor, LossParts]:
    """The KNDNet loss (`beta` belongs to DKD and is ignored). Shapes: logits N x C, labels N. Returns (loss, parts)."""
    teacher_logits = teacher_logits.detach().float()
    ce = F.cross_entropy(student_logits, labels, weight=ce_weight, label_smoothing=label_smoothing)
    confidence = F.softmax(teacher_logits / temperature, dim=1).amax(dim=1)
    mask = confidence > threshold
    kl = _kl_per_sample(teacher_logits, student_logits, temperature)
    kd = (kl * mask).sum() / mask.sum().clamp(min=1) * temperature**2
    loss = alpha * ce + (1.0 - alpha) * kd
    return loss, {"ce": ce.detach(), "kd": kd.detach(), "mask_coverage": mask.float().mean()}


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              temperature: float = 2.0, alpha: float = 0.9, **kwargs) -> tuple[torch.Tensor, LossParts]:
    """Classic KD (Hinton et al., 2015): confidence-masked KD with every sample passing."""
    kwargs.pop("threshold", None)
    kwargs.pop("beta", None)
    return confidence_masked_kd(student_logits, teacher_logits, labels, temperature, alpha,
                                threshold=-1.0, **kwargs)


def decoupled_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                 temperature: float = 2.0, alpha: float = 0.9, beta: float = 8.0,
                 ce_weight: torch.Tensor | None = None, label_smoothing: float = 0.0,
                 **_: object) -> tuple[torch.Tensor, LossParts]:
    """Decoupled KD (Zhao et al., 2022); TCKD weight 1, NCKD weight `beta`."""
    teacher_logits = teacher_logits.detach().float()
    ce = F.cross_entropy(student_logits, labels, weight=ce_weight, label_smoothing=label_smoothing)
    target_class = labels if labels.dim() == 1 else labels.argmax(dim=1)
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
    loss = alpha * ce + (1.0 - alpha) * kd
    return loss, {"ce": ce.detach(), "kd": kd.detach(), "mask_coverage": torch.ones(())}


LOSSES: dict[str, Callable[..., tuple[torch.Tensor, LossParts]]] = {
    "cmkd": confidence_masked_kd,
    "hinton": hinton_kd,
    "dkd": decoupled_kd,
}


def distillation_loss(cfg: DistillConfig, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      labels: torch.Tensor, **ce_kwargs) -> tuple[torch.Tensor, LossParts]:
    """Dispatch on `cfg.loss` by name with the config's T, alpha, threshold (and DKD beta)."""
    if cfg.loss not in LOSSES:
        raise ConfigError(f"unknown distillation loss {cfg.loss!r}; choose {', '.join(LOSSES)}")
    return LOSSES[cfg.loss](student_logits, teacher_logits, labels, temperature=cfg.temperature,
                            alpha=cfg.alpha, threshold=cfg.threshold, beta=cfg.dkd_beta, **ce_kwargs)
