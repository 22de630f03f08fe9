"""LightningDataModule over a manifest: train / val (the validation fold) / test (held out).

Lightning wraps the samplers for DDP. The decoded cache is built once, in `prepare_data` (rank 0),
then memory-mapped by every rank and loader worker. With `distill.transfer_images` each training batch comes
with a batch of unlabelled transfer images ({"labelled": ..., "transfer": ...}; see kndnet.data.transfer).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, WeightedRandomSampler

from kndnet.config import Config
from kndnet.data.cache import DecodedCache, build_cache
from kndnet.data.datasets import DrawnView, EvalView, LesionDataset, RandomView, View, class_balanced_weights
from kndnet.data.selection import class_counts, split_rows
from kndnet.data.transfer import transfer_rows
from kndnet.data.transforms import Augment, resize_for_training
from kndnet.distill.teacher_cache import TeacherCache
from kndnet.errors import ConfigError

__all__ = ["LesionDataModule", "SAMPLER_POWERS", "class_counts", "prior_exponent", "split_rows"]
SAMPLER_POWERS = {"balanced": 1.0, "sqrt": 0.5}  # "random" shuffles without weights


def prior_exponent(sampler: str) -> float:
    """Drawing class c with per-image weight n_c**-power shows a model the class prior n_c**(1 - power):
    1 for random sampling, 0.5 for `sqrt`, 0 (uniform) for `balanced`."""
    return 1.0 - SAMPLER_POWERS.get(sampler, 0.0)


class LesionDataModule(L.LightningDataModule):
    def __init__(self, cfg: Config, manifest: pd.DataFrame, cache_dir: Path,
                 teacher_cache: TeacherCache | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.manifest = manifest
        self.cache_dir = cache_dir
        self.teacher_cache = teacher_cache
        self.transfer = (transfer_rows(cfg.distill.transfer_images, manifest, cfg.data.val_fold)
                         if cfg.role == "distill" and cfg.distill.transfer_images else None)
        # train views are made at view_size (then shrunk to image_size on the device), eval at image_size
        self.view_size = cfg.data.view_size or cfg.data.image_size
        self.load_size = resize_for_training(self.view_size, cfg.data.resize_ratio)
        self.augment = Augment.of(cfg.data)
        if teacher_cache is not None:
            teacher_cache.check_matches(self.view_size, self.load_size, self.augment)
            if cfg.data.train_views not in (0, teacher_cache.views):
                raise ConfigError(f"data.train_views is {cfg.data.train_views} but the teacher cache holds "
                                  f"{teacher_cache.views} views per image; set it to 0 or "
                                  f"{teacher_cache.views}")

    def prepare_data(self) -> None:
        if self.cfg.data.cache:
            build_cache(self.manifest["path"].tolist(), self.load_size, self.cache_dir)
            if self.transfer is not None:
                build_cache(self.transfer["path"].tolist(), self.load_size, self.cache_dir)

    def _subset_cache(self, rows: pd.DataFrame) -> DecodedCache | None:
        if not self.cfg.data.cache:
            return None
        full = build_cache(self.manifest["path"].tolist(), self.load_size, self.cache_dir)
        return _CacheSubset(full, self.manifest.index[self.manifest["image_id"].isin(rows["image_id"])])

    def dataset(self, split: str, mode: str) -> LesionDataset:
        rows = split_rows(self.manifest, split, self.cfg.data.val_fold)
        cache = self._subset_cache(rows)
        if mode != "train":
            return LesionDataset(rows, EvalView(self.cfg.data.image_size), cache, self.cfg.data.image_size)
        return LesionDataset(rows, self._train_view(rows), cache, self.load_size)

    def _train_view(self, rows: pd.DataFrame) -> View:
        """Fresh random views, or K fixed views (with the cached teacher's logits when distilling)."""
        seed = self.teacher_cache.seed if self.teacher_cache else self.cfg.data.seed  # same views as the KD run
        if self.cfg.role == "distill" and self.teacher_cache is not None:
            logits = self.teacher_cache.logits_for(rows["image_id"].tolist())
            return DrawnView(self.view_size, seed, 0, teacher_logits=logits, augment=self.augment)
        if self.cfg.data.train_views:
            return DrawnView(self.view_size, seed, self.cfg.data.train_views, augment=self.augment)
        return RandomView(self.view_size, self.augment)

    def _loader(self, dataset: LesionDataset, shuffle: bool, sampler=None, draws: int | None = None) -> DataLoader:
        """`draws`: samples per epoch when the sampler draws other than len(dataset) (the transfer loader)."""
        workers = self.cfg.data.num_workers
        # full training batches: one compiled shape, and BatchNorm never sees a batch of one
        drop_last = shuffle and (draws or len(dataset)) > self.cfg.data.batch_size
        return DataLoader(dataset, batch_size=self.cfg.data.batch_size, shuffle=shuffle and sampler is None,
                          sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=False, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train", "train")
        sampler = None
        power = SAMPLER_POWERS.get(self.cfg.train.sampler)
        if power is not None:
            weights = class_balanced_weights(dataset.labels, self.cfg.model.num_classes, power)
            sampler = WeightedRandomSampler(weights, num_samples=len(dataset), replacement=True)
        loader = self._loader(dataset, shuffle=True, sampler=sampler)
        if self.transfer is None:
            return loader
        return CombinedLoader({"labelled": loader, "transfer": self._transfer_loader(len(dataset))}, mode="min_size")

    def _transfer_loader(self, draws: int) -> DataLoader:
        """As many transfer images per epoch as labelled ones, drawn uniformly with replacement, fresh views.

        Why a weighted sampler with equal weights and not RandomSampler: under DDP Lightning swaps a
        RandomSampler for a DistributedSampler over the whole dataset (dropping `num_samples`), while it wraps
        any other sampler and keeps its length, so both loaders stay the same length on every rank.
        """
        cache = (build_cache(self.transfer["path"].tolist(), self.load_size, self.cache_dir)
                 if self.cfg.data.cache else None)
        dataset = LesionDataset(self.transfer, RandomView(self.view_size, self.augment), cache, self.load_size)
        sampler = WeightedRandomSampler(torch.ones(len(dataset)), num_samples=draws, replacement=True)
        return self._loader(dataset, shuffle=True, sampler=sampler, draws=draws)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val", "eval"), shuffle=False)


class _CacheSubset(DecodedCache):
    """Rows of a full-manifest cache, reindexed to a split (no copy: still the same memmap)."""

    def __init__(self, full: DecodedCache, positions: pd.Index) -> None:
        super().__init__(full.array_path, [full.paths[i] for i in positions])
        self.positions = np.asarray(positions)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[self.positions[i]]

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "positions": self.positions}
