"""A simulated change of camera for robustness checks: each image gets its own colour cast.

Why: dermoscopes differ in light source and white balance, and a model trained on one release of
images meets others in the field (the project's external test set is one; it is not held here). A
colour cast is the part of that shift which can be simulated honestly: the von Kries model of a change
of illuminant multiplies each RGB channel by its own gain (Finlayson et al. 1994). `kndnet evaluate
--colour-cast SIGMA` scores a model on images whose channel gains are exp(SIGMA * z), z ~ N(0, 1) per
channel, rescaled to a geometric mean of 1 so the brightness stays; SIGMA 0.1 is a mild cast, 0.3 a
strong one. Each image's gains are drawn from a seed made of its image id, so every model, batch size
and run sees the very same casts, and two evaluations pair image for image in `kndnet compare`.
Shades-of-Gray colour constancy (`model.color_constancy`) is the lever this measures.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch


def channel_gains(image_id: str, sigma: float, seed: int = 0) -> np.ndarray:
    """The three RGB gains of one image: log-normal, geometric mean 1, a function of (id, sigma, seed)."""
    rng = np.random.default_rng([seed, zlib.crc32(image_id.encode())])
    log_gains = sigma * rng.standard_normal(3)
    return np.exp(log_gains - log_gains.mean())


def colour_cast(images: torch.Tensor, image_ids: list[str], sigma: float, seed: int = 0) -> torch.Tensor:
    """uint8 N x 3 x H x W images, each multiplied channel by channel by its gains, clipped to 0..255."""
    if not 0 <= sigma < math.inf:
        raise ValueError(f"colour cast sigma must be a finite number >= 0, got {sigma}")
    if len(image_ids) != len(images):
        raise ValueError(f"{len(images)} images but {len(image_ids)} image ids")
    gains = torch.tensor(np.stack([channel_gains(i, sigma, seed) for i in image_ids]), dtype=torch.float32)
    cast = images.float() * gains.view(-1, 3, 1, 1)
    return cast.round().clamp(0, 255).to(torch.uint8)


__all__ = ["channel_gains", "colour_cast"]
