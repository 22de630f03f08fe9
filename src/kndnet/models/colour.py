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
        rgb = white_balance((x * self.std + self.mean).clamp(0.0, 1.0), self.power)
        return (rgb - self.mean) / self.std


def white_balance(rgb: torch.Tensor, power: float = POWER) -> torch.Tensor:
    """N x 3 x H x W RGB in 0..1 -> the same with each image's Shades-of-Gray illuminant made grey."""
    illuminant = rgb.pow(power).mean(dim=(2, 3), keepdim=True).pow(1.0 / power)
    gain = illuminant.mean(dim=1, keepdim=True) / illuminant.clamp_min(1e-4)
    return (rgb * gain).clamp(0.0, 1.0)


def white_balance_pixels(images: torch.Tensor, power: float = POWER) -> torch.Tensor:
    """uint8 N x 3 x H x W pixels -> the same, white-balanced and rounded to uint8.

    Why: a full-integer LiteRT graph cannot hold this layer (its sixth powers and division stay float), so
    the .tflite student is exported without it and the device applies it to the camera pixels first; this is
    that step in Python (the firmware's C is deploy/c_array.py's WHITE_BALANCE_C). Rounding moves a pixel by
    at most half a level, which the int8 input would do anyway.
    """
    balanced = white_balance(images.float() / 255.0, power)
    return (balanced * 255.0).round().to(torch.uint8)


COLOUR_CONSTANCY = {"none": nn.Identity, "shades_of_gray": ShadesOfGray}
