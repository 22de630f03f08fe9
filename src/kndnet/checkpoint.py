"""Self-describing checkpoints: everything needed to rebuild the model travels inside the file.

A KNDNet checkpoint is a Lightning checkpoint with one extra key, `kndnet`, holding the model spec
(architecture, width, classes, input size, normalisation, calibration temperature) and the resolved
config. It loads with `torch.load(weights_only=True)`: no pickled code ever runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kndnet.classes import CLASS_CODES
from kndnet.config import IMAGENET_MEAN, IMAGENET_STD, Config, ModelConfig, config_from_dict
from kndnet.errors import CheckpointError

SPEC_KEY = "kndnet"
FORMAT_VERSION = 1


@dataclass
class ModelSpec:
    """What a deployed model needs besides its weights."""
    arch: str
    width: float
    num_classes: int
    dropout: float
    image_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    class_codes: tuple[str, ...] = CLASS_CODES
    temperature: float = 1.0          # set by `kndnet calibrate` (temperature scaling)
    role: str = "student"
    extra: dict[str, Any] = field(default_factory=dict)
    color_constancy: str = "none"     # a layer inside the student (models/colour.py); named here for readers

    @classmethod
    def from_config(cls, cfg: Config) -> "ModelSpec":
        m = cfg.model
        return cls(m.arch, m.width, m.num_classes, m.dropout, cfg.data.image_size, role=cfg.role,
                   color_constancy=m.color_constancy)

    def model_config(self) -> ModelConfig:
        return ModelConfig(arch=self.arch, width=self.width, num_classes=self.num_classes,
                           dropout=self.dropout, pretrained="none", color_constancy=self.color_constancy)

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d.update(mean=list(self.mean), std=list(self.std), class_codes=list(self.class_codes))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        d = dict(d)
        d.update(mean=tuple(d["mean"]), std=tuple(d["std"]), class_codes=tuple(d["class_codes"]))
        return cls(**d)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types; re-raise with the file named
        raise CheckpointError(f"{path}: not a loadable KNDNet checkpoint ({err})") from err
    if not isinstance(ckpt, dict) or SPEC_KEY not in ckpt:
        raise CheckpointError(f"{path}: no '{SPEC_KEY}' model spec inside; was it written by kndnet?")
    return ckpt


EMA_PREFIX = "ema.module."


def model_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's tensors from a LightningModule state dict: the EMA weights (prefix `ema.module.`)
    when the run kept an exponential moving average, since those are what validation selected;
    else the trained weights (prefix `model.`)."""
    prefix = EMA_PREFIX if any(k.startswith(EMA_PREFIX) for k in state_dict) else "model."
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_model(path: str | Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild a model from a checkpoint alone; returned in eval mode on the CPU."""
    from kndnet.models import create_model
    ckpt = read_checkpoint(path)
    spec = ModelSpec.from_dict(ckpt[SPEC_KEY]["spec"])
    model = create_model(spec.model_config(), pretrained=False)
    model.load_state_dict(model_weights(ckpt["state_dict"]))
    return model.eval(), spec


def load_config_from_checkpoint(path: str | Path) -> Config:
    return config_from_dict(read_checkpoint(path)[SPEC_KEY]["config"])


def spec_payload(spec: ModelSpec, cfg: Config) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "spec": spec.to_dict(), "config": cfg.to_dict()}


def save_model_checkpoint(model: nn.Module, spec: ModelSpec, cfg: Config, path: str | Path) -> Path:
    """Write a minimal self-describing checkpoint (weights + spec) for a model built outside training."""
    from kndnet.io import atomic_path
    payload = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
               SPEC_KEY: spec_payload(spec, cfg)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
