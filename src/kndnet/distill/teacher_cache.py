"""Teacher logits on K fixed augmented views per image, computed once (`kndnet cache-teacher`).

Running an EfficientNet teacher on every distillation step costs more than the student itself on a
CPU. Instead, view k of image i is a pure function of (seed, image id, k) (see data.transforms), the
teacher scores each view once, and distillation replays a random view k with its stored logits: the
student always sees exactly the pixels the teacher's logits belong to. Logits are float16, N x K x C.
Each view is written atomically to its own file, so an interrupted cache resumes at the next view.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from kndnet.checkpoint import ModelSpec, load_model
from kndnet.data.cache import DecodedCache
from kndnet.data.datasets import FixedView, LesionDataset
from kndnet.data.transforms import METHOD_AUGMENT, Augment
from kndnet.errors import DataError
from kndnet.io import atomic_path, atomic_write_json

INDEX_NAME = "teacher_cache.json"


def file_digest(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]


@dataclass
class TeacherCache:
    image_ids: list[str]
    logits: np.ndarray          # N x K x C float16
    seed: int
    image_size: int
    load_size: int
    augment: Augment = METHOD_AUGMENT

    @property
    def views(self) -> int:
        return self.logits.shape[1]

    @classmethod
    def load(cls, directory: str | Path) -> "TeacherCache":
        directory = Path(directory)
        index_path = directory / INDEX_NAME
        if not index_path.is_file():
            raise DataError(f"{directory}: no {INDEX_NAME}; build it with `kndnet cache-teacher`")
        index = json.loads(index_path.read_text())
        views = [_load_view(directory / f"logits_view{k}.npy") for k in range(int(index["views"]))]
        augment = _augment(index_path, index.get("augment"))
        return cls(list(index["image_ids"]), np.stack(views, axis=1), int(index["seed"]),
                   int(index["image_size"]), int(index["load_size"]), augment)

    def check_matches(self, image_size: int, load_size: int, augment: Augment = METHOD_AUGMENT) -> None:
        """The student must get views of the same geometry and augmentation the teacher scored."""
        if (image_size, load_size) != (self.image_size, self.load_size):
            raise DataError(f"teacher cache was built for {self.image_size}px views (from {self.load_size}px "
                            f"images) but distillation uses {image_size}px (from {load_size}px); rebuild it "
                            "with `kndnet cache-teacher --image-size` matching the student")
        if augment != self.augment:
            raise DataError(f"teacher cache scored views drawn with {self.augment.to_dict()} but distillation "
                            f"asks for {augment.to_dict()} (data.crop_scale_min, data.jitter_strength); set "
                            "those keys as the cache was built, or rebuild it with `kndnet cache-teacher --set "
                            "data.crop_scale_min=... --set data.jitter_strength=...`")

    def logits_for(self, image_ids: list[str]) -> np.ndarray:
        """Logits rows in the order of `image_ids`; every id must be cached."""
        position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        missing = [i for i in image_ids if i not in position]
        if missing:
            raise DataError(f"teacher cache lacks {len(missing)} of the {len(image_ids)} training images "
                            f"(first: {', '.join(missing[:3])}); rebuild it with `kndnet cache-teacher` "
                            "on this manifest")
        return self.logits[[position[i] for i in image_ids]]


def _augment(index_path: Path, recorded: dict | None) -> Augment:
    """The view strength a cache scored (caches from before the keys existed scored the method's)."""
    if recorded is None:
        return METHOD_AUGMENT
    try:
        return Augment(**recorded)
    except TypeError as err:
        raise DataError(f"{index_path}: unreadable 'augment' entry {recorded!r} ({err}); rebuild the cache "
                        "with `kndnet cache-teacher`") from err


def _load_view(path: Path) -> np.ndarray:
    try:
        return np.load(path)  # allow_pickle stays False: a pickled object array is refused, never run
    except ValueError as err:
        raise DataError(f"{path}: not a plain array of teacher logits ({err}); rebuild the cache with "
                        "`kndnet cache-teacher`") from err


@torch.no_grad()
def _score_view(teacher: torch.nn.Module, spec: ModelSpec, dataset: LesionDataset, batch_size: int,
                workers: int) -> np.ndarray:
    out = []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        x = spec.normalise(batch["image"])
        if x.shape[-1] != spec.image_size:
            x = F.interpolate(x, size=(spec.image_size, spec.image_size), mode="bilinear", antialias=True)
        out.append(teacher(x.contiguous(memory_format=torch.channels_last)).float().numpy())
    return np.concatenate(out).astype(np.float16)


def build_teacher_cache(teacher_ckpt: str | Path, rows: pd.DataFrame, out_dir: str | Path, views: int,
                        seed: int, image_size: int, cache: DecodedCache | None, load_size: int,
                        batch_size: int = 64, workers: int = 2,
                        augment: Augment = METHOD_AUGMENT) -> TeacherCache:
    """Score `views` fixed views of every row with the teacher; resumes view by view."""
    out_dir = Path(out_dir)
    teacher, spec = load_model(teacher_ckpt)
    teacher = teacher.to(memory_format=torch.channels_last)
    index = {"image_ids": rows["image_id"].astype(str).tolist(), "views": views, "seed": seed,
             "image_size": image_size, "load_size": load_size, "teacher": str(teacher_ckpt),
             "teacher_sha1": file_digest(teacher_ckpt), "teacher_image_size": spec.image_size,
             "augment": augment.to_dict()}
    _start_or_resume(out_dir, index)
    for k in range(views):
        target = out_dir / f"logits_view{k}.npy"
        if target.is_file():
            continue
        dataset = LesionDataset(rows, FixedView(image_size, seed, k, augment), cache, load_size)
        logits = _score_view(teacher, spec, dataset, batch_size, workers)
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, logits)
    atomic_write_json(out_dir / INDEX_NAME, {**index, "complete": True})
    return TeacherCache.load(out_dir)


def _start_or_resume(out_dir: Path, index: dict) -> None:
    """Keep finished views only if they were made by the same teacher, images, seed and size."""
    pending = out_dir / "pending.json"
    if pending.is_file() and json.loads(pending.read_text()) != index:
        for stale in out_dir.glob("logits_view*.npy"):
            stale.unlink()
    if (out_dir / INDEX_NAME).is_file():
        (out_dir / INDEX_NAME).unlink()
    atomic_write_json(pending, index)
