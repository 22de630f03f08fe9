"""Shades-of-Gray colour constancy as a layer of the model (Finlayson & Trezzi, CIC 2004).

Dermoscopes differ in light and white balance; the top ISIC 2018/2019 entries normalised every image
with Shades of Gray: the illuminant of channel c is estimated as the Minkowski p-norm mean of its
pixels, e_c = (mean I_c^p)^(1/p) (p = 6; p = 1 is Gray World, p = inf is max-RGB), and each channel is
scaled by mean(e) / e_c, so the estimated illuminant becomes grey and the brightness is kept.

Why a layer: living inside the network, it travels with every checkpoint and ONNX export, so training,
evaluate, predict, the exported graph and any runtime that executes it apply the very same step.
It takes the normalised input the network takes, undoes the normalisation, corrects, and redoes it.
"""

from __future__ import annotations

import torch
from torch import nn

from kndnet.config import IMAGENET_MEAN, IMAGENET_STD

POWER = 6.0


class ShadesOfGray(nn.Module):
    """N x 3 x H x W normalised images -> the same after per-image Shades-of-Gray white balance."""

    def __init__(self, power: float = POWER, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.power = power
        # not persistent: checkpoints keep the keys of a model without this layer
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x * self.std + self.mean).clamp(0.0, 1.0)
        illuminant = rgb.pow(self.power).mean(dim=(2, 3), keepdim=True).pow(1.0 / self.power)
        gain = illuminant.mean(dim=1, keepdim=True) / illuminant.clamp_min(1e-4)
        return ((rgb * gain).clamp(0.0, 1.0) - self.mean) / self.std


COLOUR_CONSTANCY = {"none": nn.Identity, "shades_of_gray": ShadesOfGray}
