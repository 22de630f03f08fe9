"""Build a teacher cache for a config: the training split of its manifest, at its image size."""

from __future__ import annotations

from pathlib import Path

from kndnet.config import Config, teacher_checkpoints
from kndnet.data.cache import build_cache
from kndnet.data.selection import resolve_manifest, split_rows
from kndnet.data.transforms import Augment, resize_for_training
from kndnet.distill.teacher_cache import TeacherCache, build_teacher_cache
from kndnet.errors import ConfigError


def cache_teacher_for_config(cfg: Config, out_dir: str | Path, batch_size: int = 64) -> TeacherCache:
    """Score cfg.distill.views fixed views of every training image with cfg.distill.teacher."""
    if cfg.distill.views < 1:
        raise ConfigError(f"distill.views is {cfg.distill.views}: a teacher cache needs at least one view "
                          "(0 means no cache: the teacher runs online during `distill`)")
    members = len(teacher_checkpoints(cfg.distill))
    if members > 1:
        raise ConfigError(f"distill.teacher names {members} checkpoints; a teacher "
                          "cache scores one teacher. An ensemble teacher runs online: distil without "
                          "--teacher-cache (distill.views 0 in a `run` recipe)")
    out_dir = Path(out_dir)
    manifest = resolve_manifest(cfg, out_dir)
    rows = split_rows(manifest, "train", cfg.data.val_fold)
    load_size = resize_for_training(cfg.data.image_size, cfg.data.resize_ratio)
    cache = None
    if cfg.data.cache:
        cache = build_cache(rows["path"].tolist(), load_size, Path(cfg.data.cache_dir or out_dir / "cache"))
    return build_teacher_cache(cfg.distill.teacher, rows, out_dir, cfg.distill.views, cfg.data.seed,
                               cfg.data.image_size, cache, load_size, batch_size, cfg.data.num_workers,
                               Augment.of(cfg.data))
