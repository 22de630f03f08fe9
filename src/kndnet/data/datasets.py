"""Datasets over a manifest: JPEG or decoded-cache images, random, fixed or eval views.

Items are dicts of uint8 CxHxW images (normalised later on the device), integer labels, the row
index and, for cached distillation, the teacher's logits on exactly the view returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from kndnet.classes import CLASS_CODES
from kndnet.data.cache import DecodedCache
from kndnet.data.images import load_rgb_array
from kndnet.data.transforms import METHOD_AUGMENT, Augment, apply_view, eval_view, fixed_view, sample_view

UNLABELLED = -1  # the label of a transfer image (distill.transfer_images): only the teacher scores it


class EvalView:
    """Resize only: what evaluation, calibration and export see."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor, i: int, image_id: str) -> dict[str, Any]:
        return {"image": eval_view(image, self.size)}


class RandomView:
    """A fresh random crop-and-flip per access: plain training."""

    def __init__(self, size: int, augment: Augment = METHOD_AUGMENT) -> None:
        self.size, self.augment = size, augment

    def __call__(self, image: torch.Tensor, i: int, image_id: str) -> dict[str, Any]:
        return {"image": apply_view(image, sample_view(*image.shape[-2:], augment=self.augment), self.size)}


class FixedView:
    """View `k` of each image, reproducible from (image id, k, seed): what the teacher cache scores."""

    def __init__(self, size: int, seed: int, k: int, augment: Augment = METHOD_AUGMENT) -> None:
        self.size, self.seed, self.k, self.augment = size, seed, k, augment

    def __call__(self, image: torch.Tensor, i: int, image_id: str) -> dict[str, Any]:
        return {"image": fixed_view(image, image_id, self.k, self.seed, self.size, self.augment)}


class DrawnView:
    """One of K fixed views drawn at random per access, with the teacher's logits on that very view
    when `teacher_logits` (N x K x C, e.g. a float16 memmap) is given: cached distillation.

    Why K views for a student alone too: a cached-KD student sees only K augmentations of each image, a
    plain student endless fresh ones; training the baseline on the same K views makes the ablation
    differ in the loss alone.
    """

    def __init__(self, size: int, seed: int, views: int, teacher_logits: np.ndarray | None = None,
                 augment: Augment = METHOD_AUGMENT) -> None:
        self.size, self.seed, self.teacher_logits, self.augment = size, seed, teacher_logits, augment
        self.views = teacher_logits.shape[1] if teacher_logits is not None else views

    def __call__(self, image: torch.Tensor, i: int, image_id: str) -> dict[str, Any]:
        k = int(torch.randint(0, self.views, ()))
        item: dict[str, Any] = {"image": fixed_view(image, image_id, k, self.seed, self.size, self.augment)}
        if self.teacher_logits is not None:
            item["teacher_logits"] = torch.from_numpy(np.asarray(self.teacher_logits[i, k], np.float32))
        return item


View = Callable[[torch.Tensor, int, str], dict[str, Any]]


class LesionDataset(Dataset):
    """Images of a manifest subset, decoded (from `cache` or the JPEG at `load_size`) and cut by `view`.

    One concern each: the dataset knows rows and decoding, the view knows which pixels a mode returns.
    """

    def __init__(self, rows: pd.DataFrame, view: View, cache: DecodedCache | None = None,
                 load_size: int | None = None) -> None:
        self.image_ids = rows["image_id"].astype(str).tolist()
        self.paths = rows["path"].tolist()
        self.labels = (torch.tensor([CLASS_CODES.index(c) for c in rows["label"]], dtype=torch.long)
                       if "label" in rows else torch.full((len(rows),), UNLABELLED, dtype=torch.long))
        self.view = view
        self.cache = cache
        self.load_size = load_size

    def __len__(self) -> int:
        return len(self.paths)

    def _decoded(self, i: int) -> torch.Tensor:
        array = self.cache[i] if self.cache is not None else load_rgb_array(self.paths[i], self.load_size)
        return torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"label": self.labels[i], "index": i, **self.view(self._decoded(i), i, self.image_ids[i])}


def class_balanced_weights(labels: torch.Tensor, num_classes: int, power: float = 1.0) -> torch.Tensor:
    """Per-sample weights 1/count(class)**power for a WeightedRandomSampler.

    power 1 is the method's sampler: every class equally often, so HAM10000's ~60 dermatofibroma images
    are each drawn ~14 times per epoch. power 0.5 (square-root sampling, Mahajan et al. 2018; Kang et
    al. 2020) halves the imbalance on a log scale instead of removing it.
    """
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).float()
    return counts[labels] ** -power
