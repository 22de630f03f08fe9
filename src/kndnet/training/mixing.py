"""Mixup and CutMix between the images of a batch, with soft targets (timm's `Mixup`).

Mixup (Zhang et al., ICLR 2018) blends two images and their labels with lambda ~ Beta(a, a); CutMix
(Yun et al., ICCV 2019) pastes a box of one image into another, lambda = the pasted area's complement.
For function-matching distillation (Beyer et al., CVPR 2022, "A good teacher is patient and
consistent") the teacher then scores the very same mixed images, so the student is taught on inputs
far from the training set, where a teacher's soft targets carry most information.
"""

from __future__ import annotations

import torch
from timm.data import Mixup

from kndnet.config import TrainConfig


def build_mixer(train: TrainConfig, num_classes: int) -> Mixup | None:
    """A batch mixer for the config, or None when both mixup and CutMix are off.

    Label smoothing moves into the soft targets (timm's convention equals PyTorch's: eps / C off-target).
    """
    if train.mixup_alpha <= 0 and train.cutmix_alpha <= 0:
        return None
    return Mixup(mixup_alpha=train.mixup_alpha, cutmix_alpha=train.cutmix_alpha, prob=1.0, switch_prob=0.5,
                 mode="batch", label_smoothing=train.label_smoothing, num_classes=num_classes)


def mix_images(mixer: Mixup | None, images: torch.Tensor) -> torch.Tensor:
    """Mix a batch of unlabelled images among themselves (transfer images: the teacher supplies targets)."""
    unused_labels = torch.zeros(len(images), dtype=torch.long, device=images.device)
    return mix_batch(mixer, images, unused_labels)[0]


def mix_batch(mixer: Mixup | None, images: torch.Tensor, labels: torch.Tensor,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a normalised N x 3 x H x W batch; returns (images, N x C soft targets), or the inputs unchanged.

    A batch of odd size (the last one of a tiny split) is left unmixed: pairs come from flipping the batch.
    """
    if mixer is None or len(images) % 2:
        return images, labels
    return mixer(images.clone(), labels)
