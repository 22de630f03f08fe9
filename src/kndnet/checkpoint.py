"""Self-describing checkpoints: everything needed to rebuild the model travels inside the file.

A KNDNet checkpoint is a Lightning checkpoint with one extra key, `kndnet`, holding the model spec
(architecture, width, classes, input size, normalisation, calibration temperature, logit adjustment) and the resolved
config. It loads with `torch.load(weights_only=True)`: no pickled code ever runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kndnet.classes import CLASS_CODES
from kndnet.config import CHOICES, IMAGENET_MEAN, IMAGENET_STD, Config, DataConfig, ModelConfig, config_from_dict
from kndnet.data.transforms import resize_for_training
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
    calibration_temperature: float = 1.0  # set by `kndnet calibrate` (temperature scaling); not the KD T
    role: str = "student"
    color_constancy: str = "none"     # a layer inside the student (models/colour.py); named here for readers
    student_block: str = "method"     # the student's block (models/student.py); older files: the published one
    student_activation: str = "silu"  # the student's non-linearity; older files: the published SiLU
    load_size: int = 0                # eval: decode at this size first, as training's decoded cache did
                                      # (0, older files: the default ratio 256/224 of image_size)
    prior_tau: float = 0.0            # logit adjustment already folded into the classifier bias
    logit_shift: tuple[float, ...] = ()  # that bias shift per class, tau * log(training prior) (`calibrate`)

    @classmethod
    def from_config(cls, cfg: Config) -> "ModelSpec":
        m, d = cfg.model, cfg.data
        return cls(m.arch, m.width, m.num_classes, m.dropout, d.image_size, role=cfg.role,
                   color_constancy=m.color_constancy, student_block=m.student_block,
                   student_activation=m.student_activation,
                   load_size=resize_for_training(d.view_size or d.image_size, d.resize_ratio))

    def pixel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as 1 x 3 x 1 x 1 tensors on the 0-255 pixel scale (uint8 images go in as they are)."""
        return (torch.tensor(self.mean).view(1, 3, 1, 1) * 255, torch.tensor(self.std).view(1, 3, 1, 1) * 255)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x H x W -> (x / 255 - mean) / std: the input every exported graph takes."""
        mean, std = (t.to(images.device) for t in self.pixel_stats())
        return (images.float() - mean) / std

    @property
    def eval_load_size(self) -> int:
        """Side images are decoded to before the final resize to image_size.

        Why two steps: training crops views from images decoded once at this size, and its validation
        resizes those; evaluating from the same decoded size keeps train and serve pixels alike (a direct
        224 -> 192 resize cost a teacher 3.5 validation macro-F1 points against the path it was trained on).
        """
        return self.load_size or resize_for_training(self.image_size, DataConfig.resize_ratio)

    def model_config(self) -> ModelConfig:
        return ModelConfig(arch=self.arch, width=self.width, num_classes=self.num_classes,
                           dropout=self.dropout, pretrained="none", color_constancy=self.color_constancy,
                           student_block=self.student_block, student_activation=self.student_activation)

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d.update(mean=list(self.mean), std=list(self.std), class_codes=list(self.class_codes),
                 logit_shift=list(self.logit_shift))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: object = "checkpoint") -> "ModelSpec":
        """Rebuild a spec, refusing one this version cannot use (a crafted or foreign file)."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{source}: model spec is not a mapping")
        required = ("arch", "width", "num_classes", "dropout", "image_size")
        missing = [k for k in required if k not in d]
        if missing:
            raise CheckpointError(f"{source}: model spec lacks {', '.join(missing)}; re-export it with kndnet")
        if "temperature" in d and "calibration_temperature" not in d:  # files written before the rename
            d = {**d, "calibration_temperature": d["temperature"]}
        d = {k: v for k, v in d.items() if k in SPEC_FIELDS}
        try:
            d.update(mean=tuple(d.get("mean", IMAGENET_MEAN)), std=tuple(d.get("std", IMAGENET_STD)),
                     class_codes=tuple(d.get("class_codes", CLASS_CODES)),
                     logit_shift=tuple(d.get("logit_shift", ())))
            spec = cls(**d)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: unreadable model spec ({err})") from err
        return spec.check(source)

    def check(self, source: object = "checkpoint") -> "ModelSpec":
        """Refuse values no model can run with (image size 0, calibration temperature 0, a foreign class count)."""
        problems = []
        if not (isinstance(self.image_size, int) and self.image_size >= 8):
            problems.append(f"image_size {self.image_size!r} (needs an integer of at least 8)")
        t = self.calibration_temperature
        if not (isinstance(t, (int, float)) and t > 0):
            problems.append(f"calibration temperature {t!r} (needs > 0; re-run `kndnet calibrate`)")
        if self.num_classes != len(CLASS_CODES) or tuple(self.class_codes) != CLASS_CODES:
            problems.append(f"{self.num_classes} classes {list(self.class_codes)} (this version knows "
                            f"{len(CLASS_CODES)}: {', '.join(CLASS_CODES)})")
        shift = self.logit_shift
        if len(shift) not in (0, self.num_classes) or not all(isinstance(v, (int, float)) and abs(v) < 1e6
                                                              for v in shift):
            problems.append(f"logit shift {list(shift)} (needs {self.num_classes} finite values; re-run "
                            "`kndnet calibrate --logit-adjust`)")
        blocks = CHOICES["model.student_block"]
        if self.student_block not in blocks:
            problems.append(f"student block {self.student_block!r} (this version knows {', '.join(blocks)})")
        activations = CHOICES["model.student_activation"]
        if self.student_activation not in activations:
            problems.append(f"student activation {self.student_activation!r} (this version knows "
                            f"{', '.join(activations)})")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append(f"normalisation mean {list(self.mean)} / std {list(self.std)} (needs 3 values, std > 0)")
        if problems:
            raise CheckpointError(f"{source}: unusable model spec: " + "; ".join(problems))
        return self


SPEC_FIELDS = {f for f in ModelSpec.__dataclass_fields__}


def torch_load_weights(path: Path, what: str = "checkpoint", mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` with errors that name the file and never suggest unsafe loading.

    Why: PyTorch's own refusal tells the user to retry with weights_only=False, i.e. to run pickled
    code from the file; and a truncated file surfaces as a zip-reader RuntimeError.
    """
    import pickle
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        holds = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{path}: refused to load this {what}: it holds pickled objects{holds} other than "
                              "tensors and plain values, and kndnet never runs code from a file. Save the "
                              "weights as a plain state dict (torch.save(model.state_dict(), PATH))") from None
    except Exception as err:  # zip/reader errors come in many types; name the file, keep the first line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a loadable {what} (truncated, or not a PyTorch file: "
                              f"{first})") from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path}: an ONNX model, not a loadable checkpoint; pass the .ckpt it was "
                              "exported from (or its export folder's model.ckpt)")
    ckpt = torch_load_weights(path, "KNDNet checkpoint")
    if not isinstance(ckpt, dict) or SPEC_KEY not in ckpt:
        raise CheckpointError(f"{path}: no '{SPEC_KEY}' model spec inside; was it written by kndnet?")
    if not isinstance(ckpt[SPEC_KEY], dict) or "spec" not in ckpt[SPEC_KEY]:
        raise CheckpointError(f"{path}: the '{SPEC_KEY}' entry has no model spec; was it written by kndnet?")
    version = ckpt[SPEC_KEY].get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is newer than this kndnet reads "
                              f"({FORMAT_VERSION}); upgrade kndnet (pip install -U kndnet)")
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
    spec = ModelSpec.from_dict(ckpt[SPEC_KEY]["spec"], path)
    model = create_model(spec.model_config(), pretrained=False)
    weights = model_weights(ckpt.get("state_dict") or {})
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit a {spec.arch} with {spec.num_classes} classes "
                              f"({first[1].strip() if len(first) > 1 else first[0]})") from None
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
