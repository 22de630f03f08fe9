"""Datasets over a manifest: JPEG or decoded-cache images, random, fixed or eval views.

Items are dicts of uint8 CxHxW images (normalised later on the device), integer labels, the row
index and, for cached distillation, the teacher's logits on exactly the view returned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from kndnet.classes import CLASS_CODES
from kndnet.data.cache import DecodedCache
from kndnet.data.images import load_rgb_array
from kndnet.data.transforms import apply_view, eval_view, fixed_view, sample_view

MODES = ("train", "eval", "fixed_view")


class LesionDataset(Dataset):
    """Images of a manifest subset.

    mode "train": a fresh random view per access, or, with `train_views` K > 0, view k of K drawn at
    random; "eval": resize only; "fixed_view": view `k` of each image, reproducible (seeded by image id
    and k), as the teacher cache needs. `teacher_logits` (N x K x C, e.g. a float16 memmap) switches on
    cached distillation: K comes from the cache and view k is returned with its logits.

    Why K views for a student alone: a cached-KD student sees only K augmentations of each image, a
    plain student endless fresh ones. Training the baseline on the same K views makes the ablation
    differ in the loss alone.
    """

    def __init__(self, rows: pd.DataFrame, image_size: int, mode: str = "eval",
                 cache: DecodedCache | None = None, load_size: int | None = None,
                 view_seed: int = 0, k: int = 0, teacher_logits: np.ndarray | None = None,
                 train_views: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.image_ids = rows["image_id"].astype(str).tolist()
        self.paths = rows["path"].tolist()
        self.labels = torch.tensor([CLASS_CODES.index(c) for c in rows["label"]], dtype=torch.long)
        self.image_size = image_size
        self.mode = mode
        self.cache = cache
        self.load_size = load_size
        self.view_seed = view_seed
        self.k = k
        self.teacher_logits = teacher_logits
        self.train_views = teacher_logits.shape[1] if teacher_logits is not None else train_views

    def __len__(self) -> int:
        return len(self.paths)

    def _decoded(self, i: int) -> torch.Tensor:
        array = self.cache[i] if self.cache is not None else load_rgb_array(self.paths[i], self.load_size)
        return torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self._decoded(i)
        item: dict[str, Any] = {"label": self.labels[i], "index": i}
        if self.mode == "train" and self.train_views:
            k = int(torch.randint(0, self.train_views, ()))
            item["image"] = fixed_view(image, self.image_ids[i], k, self.view_seed, self.image_size)
            if self.teacher_logits is not None:
                item["teacher_logits"] = torch.from_numpy(np.asarray(self.teacher_logits[i, k], np.float32))
        elif self.mode == "train":
            item["image"] = apply_view(image, sample_view(*image.shape[-2:]), self.image_size)
        elif self.mode == "fixed_view":
            item["image"] = fixed_view(image, self.image_ids[i], self.k, self.view_seed, self.image_size)
        else:
            item["image"] = eval_view(image, self.image_size)
        return item


def class_balanced_weights(labels: torch.Tensor, num_classes: int, power: float = 1.0) -> torch.Tensor:
    """Per-sample weights 1/count(class)**power for a WeightedRandomSampler.

    power 1 is the method's sampler: every class equally often, so HAM10000's ~60 dermatofibroma images
    are each drawn ~14 times per epoch. power 0.5 (square-root sampling, Mahajan et al. 2018; Kang et
    al. 2020) halves the imbalance on a log scale instead of removing it.
    """
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).float()
    return counts[labels] ** -power
