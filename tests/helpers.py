"""Tiny recipes that keep training tests fast on 2 cores."""

from __future__ import annotations

from pathlib import Path

from kndnet.config import Config, load_config

FAST = {"data.image_size": 32, "data.batch_size": 16, "data.num_workers": 0,
        "train.progress_bar": False, "train.compile": False, "train.log_every_n_steps": 1}


def tiny_config(role: str, data: Path, **overrides: object) -> Config:
    extra = {"train.epochs": 2, "train.lr": 3e-3}
    if role == "teacher":
        extra.update({"model.arch": "test_efficientnet", "model.pretrained": "none-quiet"})
    return load_config(role=role, overrides={**FAST, **extra, "data.path": str(data), **overrides})
