"""The method's augmentations as explicit, reproducible views.

Train (KNDNet, Lishad et al., 2025): resize 256 -> RandomResizedCrop 224 scale (0.8, 1.0), horizontal
and vertical flips, rotation up to 30 degrees, ColorJitter(0.1, 0.1, 0.05, 0.05), ImageNet
normalisation; eval: resize 224. The random parameters of a view are drawn from a torch.Generator,
so a view is a pure function of (image, generator seed): the teacher-logit cache replays exactly the
view it scored, which torchvision's global-RNG transforms cannot promise. Normalisation happens on
the device, in the model wrapper, so loaders move uint8.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

if TYPE_CHECKING:
    from kndnet.config import DataConfig

CROP_SCALE = (0.8, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
MAX_ROTATION = 30.0
JITTER = {"brightness": 0.1, "contrast": 0.1, "saturation": 0.05, "hue": 0.05}


@dataclass(frozen=True)
class Augment:
    """How strong the random views are (`data.crop_scale_min`, `data.jitter_strength`).

    The defaults are the method's views. Function matching (Beyer et al., CVPR 2022) trains on far more
    aggressive crops ("inception crop", down to 8% of the image) because the teacher, not the label, says
    what a crop shows: a crop that cuts the lesion off gets the teacher's doubt, not a confident wrong label.
    `jitter_strength` scales the brightness, contrast and saturation ranges; hue stays the method's, since
    a lesion's hue carries its class (vascular lesions are red).
    """
    crop_scale_min: float = CROP_SCALE[0]
    jitter_strength: float = 1.0

    @classmethod
    def of(cls, data: DataConfig) -> Augment:
        """The augmentation a config's data section asks for."""
        return cls(data.crop_scale_min, data.jitter_strength)

    def jitter_range(self, name: str) -> float:
        """Half-width of the factor (or, for hue, the shift) drawn around no change for one jitter."""
        return JITTER[name] if name == "hue" else JITTER[name] * self.jitter_strength

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


METHOD_AUGMENT = Augment()


@dataclass(frozen=True)
class ViewParams:
    """Everything random about one augmented view."""
    top: int
    left: int
    height: int
    width: int
    hflip: bool
    vflip: bool
    angle: float
    brightness: float
    contrast: float
    saturation: float
    hue: float


def _uniform(low: float, high: float, gen: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _crop_box(height: int, width: int, gen: torch.Generator | None,
              scale: tuple[float, float] = CROP_SCALE) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, h, w); falls back to the full image after 10 tries."""
    area = height * width
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * _uniform(*scale, gen)
        ratio = math.exp(_uniform(*log_ratio, gen))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=gen))
            left = int(torch.randint(0, width - w + 1, (), generator=gen))
            return top, left, h, w
    return 0, 0, height, width


def sample_view(height: int, width: int, gen: torch.Generator | None = None,
                augment: Augment = METHOD_AUGMENT) -> ViewParams:
    """Draw the parameters of one training view of an image of size height x width."""
    top, left, h, w = _crop_box(height, width, gen, (augment.crop_scale_min, CROP_SCALE[1]))
    jitter = {k: _uniform(max(0.0, 1 - augment.jitter_range(k)), 1 + augment.jitter_range(k), gen)
              for k in JITTER if k != "hue"}
    hue = augment.jitter_range("hue")
    return ViewParams(top, left, h, w,
                      hflip=bool(torch.rand((), generator=gen) < 0.5),
                      vflip=bool(torch.rand((), generator=gen) < 0.5),
                      angle=_uniform(-MAX_ROTATION, MAX_ROTATION, gen),
                      hue=_uniform(-hue, hue, gen), **jitter)


def apply_view(image: torch.Tensor, view: ViewParams, size: int) -> torch.Tensor:
    """Apply a view to a uint8 CxHxW tensor; returns uint8 Cxsizexsize."""
    out = TF.resized_crop(image, view.top, view.left, view.height, view.width, [size, size],
                          antialias=True)
    if view.hflip:
        out = TF.horizontal_flip(out)
    if view.vflip:
        out = TF.vertical_flip(out)
    out = TF.rotate(out, view.angle)
    out = TF.adjust_brightness(out, view.brightness)
    out = TF.adjust_contrast(out, view.contrast)
    out = TF.adjust_saturation(out, view.saturation)
    return TF.adjust_hue(out, view.hue)


def view_seed(seed: int, image_id: str, k: int) -> int:
    """A stable 63-bit seed for view k of an image: independent of row order and process."""
    entropy = [seed, zlib.crc32(image_id.encode()), k]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def fixed_view(image: torch.Tensor, image_id: str, k: int, seed: int, size: int,
               augment: Augment = METHOD_AUGMENT) -> torch.Tensor:
    """View k of an image, identical in every process, epoch and run with the same seed and augment."""
    gen = torch.Generator().manual_seed(view_seed(seed, image_id, k))
    view = sample_view(image.shape[-2], image.shape[-1], gen, augment)
    return apply_view(image, view, size)


def eval_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """The method's evaluation preprocessing: resize to size x size."""
    if tuple(image.shape[-2:]) == (size, size):
        return image
    return TF.resize(image, [size, size], antialias=True)


def resize_for_training(image_size: int, ratio: float) -> int:
    """Side of the square images are resized to before the random crop (256 for 224)."""
    return int(round(image_size * ratio))
